//! What the runner can see of the machine it runs on, for the run's environment record.

use mte_results::{Environment, Feature, Lane};

/// `uname` fields: (release, version, machine).
pub fn uname() -> (String, String, String) {
    // SAFETY: utsname is plain bytes, for which all zeros is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct with NUL-terminated strings.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (
            "unknown".into(),
            "unknown".into(),
            std::env::consts::ARCH.into(),
        );
    }
    // c_char is i8 on x86_64 and u8 on arm64: the cast is a no-op on one of them.
    #[allow(clippy::unnecessary_cast)]
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.release), field(&u.version), field(&u.machine))
}

/// The CPU features the kernel reports (the `Features` line of /proc/cpuinfo).
pub fn cpu_features() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo.lines().find_map(|l| {
        l.strip_prefix("Features")
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
    })
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The environment as far as the runner sees it; the backend adds its own facts.
pub fn probe(lane: Lane, extra: Vec<Feature>) -> Environment {
    let (kernel_release, kernel_version, machine) = uname();
    let mut features = Vec::new();
    if let Some(flags) = cpu_features() {
        let mte = flags.split_whitespace().any(|f| f == "mte");
        let mte3 = flags.split_whitespace().any(|f| f == "mte3");
        features.push(Feature::new(
            "host kernel sees MTE (hwcap mte / mte3)",
            format!("{mte} / {mte3}"),
        ));
        features.push(Feature::new("cpu features", flags));
    }
    if let Some(midr) = read_trimmed("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1") {
        features.push(Feature::new("MIDR_EL1 (cpu0)", midr));
    }
    features.push(Feature::new(
        "online CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    features.extend(extra);
    Environment {
        lane,
        // Which boot of the lane this is, xtask knows and stamps.
        boot: 0,
        kernel_release,
        kernel_version,
        machine,
        runner_version: env!("CARGO_PKG_VERSION").into(),
        features,
        host: Vec::new(),
    }
}
