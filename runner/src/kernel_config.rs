//! The running kernel's config, where it can be read: /proc/config.gz (a kernel built with
//! CONFIG_IKCONFIG_PROC), else the config xtask put in the emulated machine's initramfs from the
//! kernel's package. The run records the options the suite needs from it; where neither
//! exists, the checks find a missing option by probing (a system call that fails as only a
//! missing option makes it fail: see `mte_suites::kernel_options`).

use std::collections::BTreeMap;
use std::io::Read;

use mte_results::Feature;
use mte_suites::kernel_options::{self, parse_config};

/// The kernel's own copy of its config.
const PROC_CONFIG: &str = "/proc/config.gz";
/// Where xtask puts the config of a kernel from a package (`boot/config-<release>`).
pub const PACKAGED_CONFIG: &str = "/mte/kernel-config";
/// More than any kernel config (a few hundred KiB): a bound on what is read.
const CONFIG_LIMIT: u64 = 16 << 20;

/// The config, and where it came from; `None` where no copy can be read.
pub fn read() -> Option<(BTreeMap<String, String>, &'static str)> {
    if let Some(text) = read_gzip(PROC_CONFIG) {
        return Some((parse_config(&text), PROC_CONFIG));
    }
    let file = std::fs::File::open(PACKAGED_CONFIG).ok()?;
    let mut text = String::new();
    file.take(CONFIG_LIMIT).read_to_string(&mut text).ok()?;
    Some((parse_config(&text), "the kernel package's config"))
}

fn read_gzip(path: &str) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .take(CONFIG_LIMIT)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The options the suite needs, as features of the run's environment: one `kernel config` fact
/// saying where the config came from and which needed options it lacks, then each option.
pub fn features() -> Vec<Feature> {
    let Some((config, source)) = read() else {
        return vec![Feature::new(
            "kernel config",
            "unreadable (no /proc/config.gz: CONFIG_IKCONFIG_PROC); the checks probe for what \
             they need",
        )];
    };
    features_of(&config, source)
}

/// [`features`] of a config read from `source`.
pub fn features_of(config: &BTreeMap<String, String>, source: &str) -> Vec<Feature> {
    let missing: Vec<&str> = kernel_options::ALL
        .iter()
        .filter(|option| kernel_options::value_of(config, option) == "n")
        .map(|option| option.name)
        .collect();
    let summary = match missing.as_slice() {
        [] => format!("from {source}; every option the suite needs is set"),
        missing => format!("from {source}; not set: {}", missing.join(", ")),
    };
    let mut features = vec![Feature::new("kernel config", summary)];
    features.extend(
        kernel_options::ALL
            .iter()
            .map(|option| Feature::new(option.name, kernel_options::value_of(config, option))),
    );
    features
}

/// CONFIG_ARM64_MTE of the config, where there is one.
pub fn arm64_mte() -> Option<bool> {
    let (config, _) = read()?;
    Some(kernel_options::value_of(&config, &kernel_options::ARM64_MTE) != "n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_names_what_is_missing_and_where_it_looked() {
        let config = parse_config("CONFIG_KVM=y\nCONFIG_ARM64_MTE=y\n# CONFIG_UNIX is not set\n");
        let features = features_of(&config, "/proc/config.gz");
        let summary = &features[0].value;
        assert!(
            summary.starts_with("from /proc/config.gz; not set: CONFIG_UNIX, CONFIG_USERFAULTFD"),
            "{summary}"
        );
        let unix = features.iter().find(|f| f.name == "CONFIG_UNIX").unwrap();
        assert_eq!(unix.value, "n");
        let kvm = features.iter().find(|f| f.name == "CONFIG_KVM").unwrap();
        assert_eq!(kvm.value, "y");
    }
}
