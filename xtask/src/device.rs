//! The bundle tested as a lab runs it: the emulated machine boots the default kernel as a
//! *device*, from an initramfs of Debian's busybox-static (arm64) and the bundle's tarball. Its
//! `/init` mounts what a distribution's init would, unpacks the bundle and starts the steps of a
//! LAVA test shell (`run.sh`, then `run.sh lava`); the driver's records come back over the
//! console into the host lane's session, and their verdicts must be those the emulated lane gave
//! for the same checks in the same `cargo xtask test`.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mte_results::rundir::RunDir;
use mte_results::{Feature, Lane, Outcome, Verdict};
use xshell::{cmd, Shell};

use crate::apt::Apt;
use crate::build::{self, relative, repo_root};
use crate::bundle::{self, Parts};
use crate::console::{self, Deadlines};
use crate::cpio::CpioWriter;
use crate::groundwork::KernelUnderTest;
use crate::kernels;
use crate::lanes::Machine;
use crate::session::{Session, Source};
use crate::tools::CrossRoute;
use crate::ui;

/// The checks the device runs, one or a few of each family the host lane takes whole, and
/// what each needs of the machine beyond KVM with MTE: a few seconds under TCG.
pub const DEVICE_SHARE: &[&str] = &[
    "tags::guest_tags_seen_by_host",
    "tags::host_tags_seen_by_guest",
    "tags::vm_without_mte_has_no_tag_storage",
    "faults::sync_mismatched_load_faults",
    "faults::async_mismatch_sets_tfsr_without_exception",
    "access::load_across_pages_checks_both_tags",
    "tag_instructions::stg_sets_tags_and_keeps_data",
    "copy_tags_abi::ipa_without_memslot_is_efault",
    "shared::anonymous_shared_ram_keeps_tags",
    "mm::mprotect_keeps_tags",
    "cow::tags_survive_fork_on_both_sides_small_pages",
    "migration::stop_and_copy_keeps_sparse_tags",
    "swap::tags_survive_swap_out_and_in",
];

/// Checks whose verdict on the device is not the emulated lane's by design, and why.
pub const EXPECTED_DIFFERENCES: &[(&str, Outcome, &str)] = &[(
    "swap::tags_survive_swap_out_and_in",
    Outcome::Skip,
    "the device's busybox system has no swap device (the emulated lane's /init sets up zram)",
)];

/// The Debian package whose static busybox is the device's userland.
const BUSYBOX_PACKAGE: &str = "busybox-static:arm64";
/// Where the device's initramfs and its runs go (its own root: `latest` of the suite's runs
/// stays the suite's).
const DEVICE_DIR: &str = "target/mte-device";
/// Where the tarball sits in the device's initramfs, as a lab deploys it.
const TARBALL_IN_IMAGE: &str = "deploy/mte-suite-arm64.tar.gz";

/// The device's `/init`: what a distribution's init and a LAVA test shell do, no more.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# Kernel messages on the console would cut the records apart; the log stays in /dev/kmsg.
echo 1 > /proc/sys/kernel/printk
mkdir -p /opt && tar -xzf /deploy/mte-suite-arm64.tar.gz -C /opt
sh /lava/steps.sh
sync
sleep 1
poweroff -f
"#;

/// `cargo xtask device [--kernel K] [--against RUN]` and `test`'s device step: run the bundle on
/// the emulated device booted with `kernel`, and set its verdicts beside those of the emulated
/// lane's first boot in `against` (a run directory). Whether every check of the share agreed, or
/// differed by design.
pub fn step(kernel_word: &str, against: &Path) -> Result<bool> {
    ui::step(&format!(
        "device: the bundle on the emulated machine booted as a device (busybox), kernel {kernel_word}"
    ));
    let emulated = crate::reports::load(against)?.summary().verdicts;
    let mut apt = Apt::new()?;
    let tools = crate::tools::ensure(&mut apt, true)?;
    let spec = kernels::KernelSpec::parse(kernel_word)?;
    let kernel = KernelUnderTest {
        requested: kernel_word.to_string(),
        kernel: kernels::resolve(&spec, &mut apt)?,
    };
    let device = run(&mut apt, &tools.cross, &tools.qemu().path, &kernel)?;
    ui::note(&format!(
        "device: {} verdicts, {} lava-test-case lines, {:.1} s from power-on to power-off; bundle {}",
        device.verdicts.len(),
        device.lava_cases,
        device.wall.as_secs_f64(),
        ui::size(device.bundle_size)
    ));
    let mut held = true;
    if let Some(error) = &device.error {
        ui::error(&format!("device run: {error}"));
        held = false;
    }
    if device.lava_cases != device.verdicts.len() {
        ui::error(&format!(
            "run.sh lava printed {} cases for {} verdicts",
            device.lava_cases,
            device.verdicts.len()
        ));
        held = false;
    }
    let show = |o: Option<Outcome>| o.map_or_else(|| "missing".to_string(), |o| o.to_string());
    for d in differences(&emulated, &device.verdicts) {
        let line = format!(
            "{}: emulated lane {}, device {}",
            d.test,
            show(d.emulated),
            show(d.device)
        );
        match d.expected {
            Some(why) => ui::note(&format!("differs by design: {line} ({why})")),
            None => {
                ui::error(&format!("differs: {line}"));
                held = false;
            }
        }
    }
    ui::note(&format!(
        "device run: {} (against {})",
        relative(&device.dir).display(),
        relative(against).display()
    ));
    Ok(held)
}

/// One device run: what it gave, set beside the emulated lane's.
pub struct DeviceRun {
    pub dir: PathBuf,
    pub verdicts: Vec<Verdict>,
    pub error: Option<String>,
    /// The `lava-test-case` lines the driver printed.
    pub lava_cases: usize,
    pub wall: Duration,
    pub bundle_size: u64,
}

/// Fetch busybox, build the bundle's tarball and the device's initramfs, boot it with
/// `kernel`, and read its records into a run directory under [`DEVICE_DIR`].
pub fn run(
    apt: &mut Apt,
    cross: &CrossRoute,
    qemu: &Path,
    kernel: &KernelUnderTest,
) -> Result<DeviceRun> {
    let busybox = busybox(apt)?;
    let payload = build::payload(cross)?;
    let runner = build::runner(cross)?;
    let root = repo_root().join(DEVICE_DIR);
    let tarball = root.join("mte-suite-arm64.tar.gz");
    let parts = Parts {
        runner: &runner,
        payload: &payload,
        revision: crate::facts::revision(),
    };
    let bundle_size = bundle::write_tarball(&tarball, &parts)?;
    let initramfs = root.join("initramfs.cpio");
    write_initramfs(&initramfs, &busybox, &tarball)?;
    ui::note(&format!(
        "device: bundle {} ({}), initramfs {}",
        relative(&tarball).display(),
        ui::size(bundle_size),
        relative(&initramfs).display()
    ));
    let machine = Machine {
        qemu: qemu.to_path_buf(),
        kernel: kernel.kernel.image.clone(),
        initramfs,
        next_kernel: false,
    };
    let run_dir = RunDir::create(root.join("runs"), Lane::Host.name(), &kernel.kernel.hint())
        .context("creating the device's run directory")?;
    let facts = vec![
        Feature::new("device.emulated_by", machine.command_line()),
        Feature::new(
            "device.userland",
            "busybox-static (Debian arm64), the bundle's run.sh",
        ),
    ];
    let started = Instant::now();
    let mut session = Session::new(
        &run_dir,
        Lane::Host,
        1,
        &kernel.kernel.hint(),
        Source::Machine,
        facts,
        started,
    );
    let mut lava_cases = 0;
    let ended = console::run(
        &machine.qemu,
        &machine.args(),
        Deadlines::with_overall(Duration::from_secs(600)),
        &mut |line| {
            if line.trim_start().starts_with("lava-test-case ") {
                lava_cases += 1;
            }
            session.on_line(line)
        },
    );
    let wall = started.elapsed();
    let (summary, selection) = match ended {
        Ok(ending) => session.conclude(&ending),
        Err(e) => session.conclude_with_error(format!("{e:#}")),
    };
    crate::import::finish(&run_dir, &summary, &selection)?;
    Ok(DeviceRun {
        dir: run_dir.path().to_path_buf(),
        verdicts: summary.verdicts,
        error: summary.error,
        lava_cases,
        wall,
        bundle_size,
    })
}

/// The device's initramfs: busybox, `/init`, the LAVA steps and the bundle's tarball.
fn write_initramfs(out: &Path, busybox: &Path, tarball: &Path) -> Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    for dir in ["bin", "dev", "proc", "sys", "tmp", "opt", "lava", "deploy"] {
        cpio.directory(dir, 0o755)?;
    }
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    cpio.file("bin/busybox", 0o755, &read(busybox)?)?;
    cpio.file("init", 0o755, INIT.as_bytes())?;
    cpio.file("lava/steps.sh", 0o755, lava_steps().as_bytes())?;
    cpio.file(TARBALL_IN_IMAGE, 0o644, &read(tarball)?)?;
    cpio.finish()?;
    Ok(())
}

/// The steps of the LAVA test definition, as its test shell runs them, on the share.
fn lava_steps() -> String {
    let filters = DEVICE_SHARE.join(" ");
    format!(
        "cd /tmp\n\
         /opt/{top}/run.sh --out /tmp/mte-run -- --exact {filters} || echo \"run.sh exited with $?\"\n\
         /opt/{top}/run.sh lava /tmp/mte-run\n",
        top = bundle::TOP
    )
}

/// Debian's static busybox for arm64, downloaded and unpacked once into the cache.
fn busybox(apt: &mut Apt) -> Result<PathBuf> {
    let dir = kernels::cache_root().join("busybox");
    let binary = dir.join("root/bin/busybox");
    if binary.is_file() {
        return Ok(binary);
    }
    apt.add_architecture("arm64")?;
    let policy = apt.policy_of(BUSYBOX_PACKAGE)?;
    let version = candidate(&policy)
        .ok_or_else(|| anyhow!("apt offers no {BUSYBOX_PACKAGE} (apt-cache policy: {policy})"))?;
    let staging = dir.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let deb = apt.download(BUSYBOX_PACKAGE, &version, &staging)?;
    let unpacked = staging.join("root");
    let sh = Shell::new()?;
    cmd!(sh, "dpkg-deb -x {deb} {unpacked}")
        .quiet()
        .run()
        .with_context(|| format!("unpacking {}", deb.display()))?;
    if !unpacked.join("bin/busybox").is_file() {
        bail!("{} holds no bin/busybox", deb.display());
    }
    let _ = std::fs::remove_dir_all(dir.join("root"));
    std::fs::rename(&unpacked, dir.join("root"))?;
    std::fs::write(dir.join("version"), &version)?;
    let _ = std::fs::remove_dir_all(&staging);
    ui::note(&format!(
        "busybox: {BUSYBOX_PACKAGE} {version}, unpacked into {}",
        dir.display()
    ));
    Ok(binary)
}

/// The version apt would install, from `apt-cache policy`.
fn candidate(policy: &str) -> Option<String> {
    let version = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))?
        .trim();
    (!version.is_empty() && version != "(none)").then(|| version.to_string())
}

/// Where the device's verdicts are not the emulated lane's for a check of the share: check,
/// emulated, device, and why when that is by design.
#[derive(Debug, PartialEq)]
pub struct Difference {
    pub test: String,
    pub emulated: Option<Outcome>,
    pub device: Option<Outcome>,
    pub expected: Option<&'static str>,
}

/// Set the device's verdicts beside the emulated lane's first boot, check by check of the share.
pub fn differences(emulated: &[Verdict], device: &[Verdict]) -> Vec<Difference> {
    let outcomes = |verdicts: &[Verdict], lane: Lane| -> BTreeMap<String, Outcome> {
        (verdicts.iter())
            .filter(|v| v.lane == lane && v.boot == 1)
            .map(|v| (v.test.clone(), v.outcome))
            .collect()
    };
    let (emulated, device) = (
        outcomes(emulated, Lane::Emulated),
        outcomes(device, Lane::Host),
    );
    DEVICE_SHARE
        .iter()
        .filter_map(|&test| {
            let (e, d) = (emulated.get(test).copied(), device.get(test).copied());
            if e == d {
                return None;
            }
            let expected = EXPECTED_DIFFERENCES
                .iter()
                .find(|(name, outcome, _)| *name == test && d == Some(*outcome))
                .map(|(_, _, why)| *why);
            Some(Difference {
                test: test.to_string(),
                emulated: e,
                device: d,
                expected,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::verdict;

    #[test]
    fn apt_policy_names_the_candidate() {
        let policy =
            "busybox-static:arm64:\n  Installed: (none)\n  Candidate: 1:1.35.0-4+deb12u1+b1\n";
        assert_eq!(candidate(policy).as_deref(), Some("1:1.35.0-4+deb12u1+b1"));
        assert_eq!(candidate("x:\n  Candidate: (none)\n"), None);
    }

    #[test]
    fn the_device_is_set_beside_the_emulated_lane_check_by_check() {
        let on = |lane: Lane, test: &str, outcome| {
            let mut v = verdict(test, outcome);
            v.lane = lane;
            v
        };
        let emulated = [
            on(Lane::Emulated, DEVICE_SHARE[0], Outcome::Pass),
            on(Lane::Emulated, DEVICE_SHARE[1], Outcome::Pass),
            on(
                Lane::Emulated,
                "swap::tags_survive_swap_out_and_in",
                Outcome::Pass,
            ),
        ];
        let device = [
            on(Lane::Host, DEVICE_SHARE[0], Outcome::Pass),
            on(Lane::Host, DEVICE_SHARE[1], Outcome::Fail),
            on(
                Lane::Host,
                "swap::tags_survive_swap_out_and_in",
                Outcome::Skip,
            ),
        ];
        let found = differences(&emulated, &device);
        let unexpected: Vec<&str> = (found.iter())
            .filter(|d| d.expected.is_none())
            .map(|d| d.test.as_str())
            .collect();
        // The second differs; the swap check by design; every other check of the share is
        // missing from both, which is no difference.
        assert_eq!(unexpected, [DEVICE_SHARE[1]]);
        assert!(found.iter().any(|d| d.expected.is_some()));
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn the_lava_steps_run_the_share_exactly() {
        let steps = lava_steps();
        assert!(
            steps.contains("run.sh --out /tmp/mte-run -- --exact tags::guest_tags_seen_by_host ")
        );
        assert!(steps.contains("run.sh lava /tmp/mte-run"));
    }
}
