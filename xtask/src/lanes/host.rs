//! The host lane: the runner, built for this machine, is the VMM on this machine's own KVM, as in
//! a hardware lab (an arm64 host with MTE and /dev/kvm). Its records come back on its stdout,
//! read like the emulated machine's console.
//!
//! Anywhere else the runner finds no arm64 KVM with MTE and every check is a skip with the
//! reason; xtask says so before the run, from what it sees of the machine here.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Result;
use mte_results::{Feature, Lane};

use super::{LaneDriver, LaneRun, Needs};
use crate::groundwork::Groundwork;
use crate::runner_process::{self, ProcessLane};
use crate::ui;

pub struct HostLane;

impl LaneDriver for HostLane {
    fn needs(&self) -> Needs {
        Needs {
            kernels: false,
            qemu: false,
            host_runner: true,
            guest_qemu: false,
        }
    }

    /// Only an arm64 machine's KVM can run an arm64 guest.
    fn in_all(&self, arm64: bool) -> bool {
        arm64
    }

    /// What the lane will find here; the runner still runs, and each check records the same
    /// reason as its skip.
    fn announce(&self) {
        let machine = machine();
        match &machine.unready {
            None => ui::note(&format!(
                "host lane: an arm64 host with /dev/kvm and MTE, kernel {}",
                machine.kernel_release
            )),
            Some(why) => ui::note(&format!(
                "{} the host lane needs an arm64 host with /dev/kvm and MTE, and here {why}: \
                 every check of the host lane will be a skip saying why",
                ui::yellow("note:")
            )),
        }
    }

    fn run_hint(&self, _: &Groundwork) -> Vec<String> {
        vec![machine().kernel_release.clone()]
    }

    fn prepare(&self, ground: &Groundwork) -> Result<Vec<Box<dyn LaneRun>>> {
        let machine = machine();
        let lane = ProcessLane {
            lane: Lane::Host,
            lane_args: vec!["--lane".into(), Lane::Host.to_string()],
            payload_dir: "target/mte-host/payloads",
            heading: format!(
                "host lane: the runner is the VMM on this machine's KVM, kernel {}",
                machine.kernel_release
            ),
            kernel: machine.kernel_release.clone(),
            facts: machine.facts.clone(),
        };
        runner_process::prepare(lane, ground)
    }
}

/// This machine, surveyed once.
fn machine() -> &'static HostMachine {
    static MACHINE: OnceLock<HostMachine> = OnceLock::new();
    MACHINE.get_or_init(survey)
}

/// What this machine is, as far as the host lane is concerned.
#[derive(Clone, Debug, PartialEq)]
struct HostMachine {
    /// The running kernel's release.
    kernel_release: String,
    /// Facts for the run's record: CPU (MIDR, MTE level), machine, KVM.
    facts: Vec<Feature>,
    /// Why the lane's checks cannot run here; `None` on an arm64 host with /dev/kvm and MTE.
    unready: Option<String>,
}

/// Look at this machine: `/proc/cpuinfo`, the MIDR of CPU 0, the device tree's model or the
/// DMI names, /dev/kvm.
fn survey() -> HostMachine {
    survey_under(Path::new("/"), std::env::consts::ARCH)
}

/// The kernel release and facts of a device that ran the bundle: its driver saved the files
/// [`survey_under`] reads under `device/` of its run, with `device/arch` (`uname -m`).
pub fn device_facts(device_run: &Path) -> (String, Vec<Feature>) {
    let root = device_run.join("device");
    let arch = std::fs::read_to_string(root.join("arch")).unwrap_or_default();
    let machine = survey_under(&root, arch.trim());
    let mut facts = machine.facts;
    facts.push(Feature::new("host.arch", arch.trim()));
    if let Ok(name) = std::fs::read_to_string(root.join("proc/sys/kernel/hostname")) {
        facts.push(Feature::new("host.name", name.trim()));
    }
    (machine.kernel_release, facts)
}

/// The machine whose `/` is `root`, of architecture `arch`.
fn survey_under(root: &Path, arch: &str) -> HostMachine {
    let path = |p: &str| root.join(p.trim_start_matches('/'));
    let read = |p: &str| std::fs::read_to_string(path(p)).ok();
    let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
    let midr = read("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1");
    let model = machine_model(
        std::fs::read(path("/sys/firmware/devicetree/base/model")).ok(),
        read("/sys/class/dmi/id/sys_vendor"),
        read("/sys/class/dmi/id/product_name"),
    );
    let kvm = path("/dev/kvm").exists();
    let mte = mte_level(&cpuinfo);
    let mut facts = vec![
        Feature::new("host.cpu.mte", mte.describe()),
        Feature::new(
            "host.kvm",
            if kvm {
                "/dev/kvm present"
            } else {
                "no /dev/kvm"
            },
        ),
        Feature::new("host.machine", model.as_deref().unwrap_or("unknown")),
        Feature::new(
            "host.kernel_version",
            read("/proc/sys/kernel/version").unwrap_or_default().trim(),
        ),
    ];
    if let Some(midr) = midr.as_deref().and_then(parse_hex) {
        facts.insert(0, Feature::new("host.cpu.midr_el1", describe_midr(midr)));
    }
    HostMachine {
        kernel_release: read("/proc/sys/kernel/osrelease")
            .map(|r| r.trim().to_string())
            .unwrap_or_else(|| "unknown".into()),
        facts,
        unready: unready(arch, kvm, mte),
    }
}

/// What the kernel's hwcaps say of MTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MteLevel {
    /// No `Features` line: not an arm64 CPU.
    NotArm64,
    None,
    /// hwcap `mte`: FEAT_MTE2, tag checks in synchronous and asynchronous modes.
    Mte2,
    /// hwcap `mte3` too: FEAT_MTE3, with the asymmetric mode.
    Mte3,
}

impl MteLevel {
    fn describe(self) -> &'static str {
        match self {
            MteLevel::NotArm64 => "none: not an arm64 CPU",
            MteLevel::None => "none: the kernel reports no mte hwcap",
            MteLevel::Mte2 => "MTE2 (hwcap mte)",
            MteLevel::Mte3 => "MTE3 (hwcaps mte, mte3)",
        }
    }
}

/// The MTE level from `/proc/cpuinfo`'s `Features` line (the hwcaps, as arm64 prints them).
fn mte_level(cpuinfo: &str) -> MteLevel {
    let Some(features) = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("Features")
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']))
    }) else {
        return MteLevel::NotArm64;
    };
    let has = |flag: &str| features.split_whitespace().any(|f| f == flag);
    match (has("mte"), has("mte3")) {
        (_, true) => MteLevel::Mte3,
        (true, false) => MteLevel::Mte2,
        (false, false) => MteLevel::None,
    }
}

/// Why the host lane's checks cannot run here, if they cannot.
fn unready(arch: &str, kvm: bool, mte: MteLevel) -> Option<String> {
    let mut missing = Vec::new();
    if arch != "aarch64" {
        missing.push(format!("this machine is {arch}"));
    }
    if !kvm {
        missing.push("it has no /dev/kvm".to_string());
    }
    if !matches!(mte, MteLevel::Mte2 | MteLevel::Mte3) && arch == "aarch64" {
        missing.push("its kernel reports no MTE (hwcap mte)".to_string());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The machine's name: the device tree's model (NUL-terminated), else the DMI vendor and product.
fn machine_model(
    devicetree: Option<Vec<u8>>,
    vendor: Option<String>,
    product: Option<String>,
) -> Option<String> {
    if let Some(bytes) = devicetree {
        let model = String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .trim()
            .to_string();
        if !model.is_empty() {
            return Some(model);
        }
    }
    let dmi: Vec<String> = [vendor, product]
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    (!dmi.is_empty()).then(|| dmi.join(" "))
}

fn parse_hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// MIDR_EL1 in words: implementer, part, variant and revision.
fn describe_midr(midr: u64) -> String {
    let implementer = ((midr >> 24) & 0xff) as u8;
    let variant = (midr >> 20) & 0xf;
    let part = ((midr >> 4) & 0xfff) as u16;
    let revision = midr & 0xf;
    let who = implementer_name(implementer)
        .map_or_else(|| format!("implementer {implementer:#04x}"), String::from);
    let what = (implementer == 0x41)
        .then(|| arm_part_name(part))
        .flatten()
        .map_or_else(|| format!("part {part:#05x}"), String::from);
    format!("{midr:#010x}: {who} {what}, r{variant}p{revision}")
}

fn implementer_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x41 => "Arm",
        0x42 => "Broadcom",
        0x43 => "Cavium",
        0x46 => "Fujitsu",
        0x48 => "HiSilicon",
        0x4e => "NVIDIA",
        0x51 => "Qualcomm",
        0x61 => "Apple",
        0x6d => "Microsoft",
        0xc0 => "Ampere",
        _ => return None,
    })
}

/// Arm's own cores, those with MTE among them.
fn arm_part_name(part: u16) -> Option<&'static str> {
    Some(match part {
        0xd0c => "Neoverse N1",
        0xd40 => "Neoverse V1",
        0xd46 => "Cortex-A510",
        0xd47 => "Cortex-A710",
        0xd48 => "Cortex-X2",
        0xd49 => "Neoverse N2",
        0xd4d => "Cortex-A715",
        0xd4e => "Cortex-X3",
        0xd4f => "Neoverse V2",
        0xd80 => "Cortex-A520",
        0xd81 => "Cortex-A720",
        0xd82 => "Cortex-X4",
        0xd84 => "Neoverse V3",
        0xd85 => "Cortex-X925",
        0xd87 => "Cortex-A725",
        0xd8e => "Neoverse N3",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mte_level_comes_from_the_hwcaps() {
        let arm =
            |features: &str| format!("processor\t: 0\nFeatures\t: {features}\nCPU part\t: 0xd47\n");
        assert_eq!(mte_level(&arm("fp asimd mte mte3 sve")), MteLevel::Mte3);
        assert_eq!(mte_level(&arm("fp asimd mte")), MteLevel::Mte2);
        assert_eq!(mte_level(&arm("fp asimd mtex")), MteLevel::None);
        assert_eq!(
            mte_level("processor\t: 0\nflags\t\t: fpu vme sse2\n"),
            MteLevel::NotArm64
        );
    }

    #[test]
    fn what_the_lane_lacks_is_said_in_words() {
        assert_eq!(unready("aarch64", true, MteLevel::Mte3), None);
        assert_eq!(
            unready("x86_64", true, MteLevel::NotArm64).as_deref(),
            Some("this machine is x86_64")
        );
        assert_eq!(
            unready("aarch64", false, MteLevel::None).as_deref(),
            Some("it has no /dev/kvm, its kernel reports no MTE (hwcap mte)")
        );
    }

    #[test]
    fn the_machine_is_named_by_its_device_tree_or_dmi() {
        assert_eq!(
            machine_model(Some(b"Google Pixel 8\0".to_vec()), None, None).as_deref(),
            Some("Google Pixel 8")
        );
        assert_eq!(
            machine_model(
                Some(b"\0".to_vec()),
                Some("Ampere\n".into()),
                Some("Mt.Jade\n".into())
            )
            .as_deref(),
            Some("Ampere Mt.Jade")
        );
        assert_eq!(machine_model(None, None, Some(" \n".into())), None);
    }

    #[test]
    fn midr_reads_as_implementer_part_and_revision() {
        assert_eq!(
            describe_midr(0x410f_d471),
            "0x410fd471: Arm Cortex-A710, r0p1"
        );
        assert_eq!(
            describe_midr(0x000f_0510),
            "0x000f0510: implementer 0x00 part 0x051, r0p0"
        );
        assert_eq!(
            describe_midr(0x611f_0221),
            "0x611f0221: Apple part 0x022, r1p1"
        );
        assert_eq!(parse_hex("0x00000000410fd471\n"), Some(0x410f_d471));
    }
}
