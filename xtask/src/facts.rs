//! What xtask records of this machine and of the run in every lane's environment.

use mte_results::rerun::shell_word;
use mte_results::Feature;

use crate::apt;
use crate::build::repo_root;
use crate::cli::Options;
use crate::tools::Tools;

/// The suite's revision, `git describe --dirty --always`; "unknown" outside a git checkout.
pub fn revision() -> String {
    std::process::Command::new("git")
        .arg("-C")
        .arg(repo_root())
        .args(["describe", "--dirty", "--always"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// xtask's command line as a shell would take it back: `cargo xtask` and the words, quoted
/// where they are not plain.
fn command_line(args: impl Iterator<Item = String>) -> String {
    std::iter::once("cargo xtask".to_string())
        .chain(args.map(|word| shell_word(&word)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What xtask knows of this machine and of the run, for every lane.
pub fn common(tools: &Tools, options: &Options) -> Vec<Feature> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']));
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()));
    let os = read("/etc/os-release").lines().find_map(|l| {
        l.strip_prefix("PRETTY_NAME=")
            .map(|v| v.trim_matches('"').to_string())
    });
    let mut facts = Vec::new();
    if let Some(qemu) = &tools.qemu {
        facts.push(Feature::new("qemu.version", qemu.version));
        facts.push(Feature::new("qemu.banner", &qemu.banner));
    }
    facts.extend([
        Feature::new("harness.args", options.harness_args.join(" ")),
        Feature::new("host.arch", std::env::consts::ARCH),
        Feature::new("host.kernel", read("/proc/sys/kernel/osrelease").trim()),
        Feature::new("host.name", read("/proc/sys/kernel/hostname").trim()),
        Feature::new(
            "host.cpus",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        ),
        Feature::new("xtask.version", env!("CARGO_PKG_VERSION")),
        Feature::new("suite.revision", revision()),
        Feature::new("xtask.command", command_line(std::env::args().skip(1))),
        Feature::new("xtask.root", apt::is_root()),
    ]);
    if let Some(shard) = options.shard {
        facts.push(Feature::new("shard", shard));
    }
    if let Some(model) = cpu_model {
        facts.push(Feature::new("host.cpu", model));
    }
    if let Some(memory) = memory {
        facts.push(Feature::new("host.memory", memory));
    }
    if let Some(os) = os {
        facts.push(Feature::new("host.os", os));
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_reads_back_in_a_shell() {
        let args = ["run", "--", "it's here", "tags::"].map(String::from);
        assert_eq!(
            command_line(args.into_iter()),
            r"cargo xtask run -- 'it'\''s here' tags::"
        );
        assert!(!revision().is_empty());
    }
}
