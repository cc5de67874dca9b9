//! The qemu-kvm lane: QEMU with `-accel kvm` is the VMM under test, the pairing production
//! runs. The emulated machine boots each kernel under test as in the emulated lane, but its
//! initramfs also holds Debian's arm64 QEMU with its libraries, and the runner (its /init)
//! drives that QEMU on the kernel's KVM as the qemu lane drives QEMU (gdbstub and QMP).

use anyhow::Result;
use mte_results::{Feature, Lane, KERNEL_IMAGE_SHA256};

use super::emulated::{sha256_of_file, Machine};
use super::{LaneDriver, LaneRun, Needs, Recorded};
use crate::console::{self, Deadlines, Ending, Flow};
use crate::groundwork::{Groundwork, KernelUnderTest};
use crate::initramfs::{self, Initramfs, LaneImage};
use crate::qemu_package::{self, QemuPackage};
use crate::session::Source;
use crate::ui;

/// Where each kernel's initramfs of this lane goes.
const INITRAMFS_DIR: &str = "target/mte-qemu-kvm";

/// What `cargo xtask test` runs of the lane: a share of each family the lane exists for (tags
/// with the host's view and QEMU's mte=off under KVM, faults, access forms, tag instructions,
/// the guest's EL0 state across QEMU's exits, SVE as QEMU configures the vCPU, QEMU's
/// migration and its own memory paths), with their fault-injection proofs. Every QEMU
/// the runner starts costs about a second inside the emulated machine, so the whole lane
/// (`cargo xtask run --lane qemu-kvm`) is left to `run`; the checks that fail on QEMU's own
/// bugs (its gdbstub's tag packets under KVM) are in `run` only, where they are findings, not
/// the gate CI holds.
pub const TEST_SHARE: &[&str] = &[
    "tags::guest_tags_seen_by_host",
    "tags::host_tags_seen_by_guest",
    "tags::vm_without_mte_has_no_tag_storage",
    "faults::sync_mismatched_load_faults",
    "faults::async_mismatch_sets_tfsr_without_exception",
    "access::load_across_pages_checks_both_tags",
    "tag_instructions::stg_sets_tags_and_keeps_data",
    "el0::tcf0_sync_faults_mismatched_el0_accesses_only",
    "mte_state::tfsre0_survives_exits_and_sleeps",
    "sve::gather_checks_each_element_against_its_pointer",
    "migration::vmm_migration_keeps_tags",
    "qemu::guest_ram_paged_out_by_the_host_keeps_tags",
];

pub struct QemuKvmLane;

impl LaneDriver for QemuKvmLane {
    fn needs(&self) -> Needs {
        Needs {
            kernels: true,
            qemu: true,
            host_runner: false,
            guest_qemu: true,
        }
    }

    /// The kernels, then the QEMU inside (`arm64-qemu-10.0.2`).
    fn run_hint(&self, ground: &Groundwork) -> Vec<String> {
        let kernels = ground.kernels.iter().map(|k| k.kernel.hint());
        let qemu = (ground.guest_qemu.as_ref())
            .and_then(|q| q.upstream_version())
            .map(|v| format!("arm64-qemu-{v}"));
        kernels.chain(qemu).collect()
    }

    fn prepare(&self, ground: &Groundwork) -> Result<Vec<Box<dyn LaneRun>>> {
        let qemu = ground
            .guest_qemu
            .clone()
            .expect("the lane's needs fetch the arm64 QEMU");
        let mut lane_args = vec!["--qemu".to_string(), format!("/{}", qemu_package::BINARY)];
        if ground.for_test {
            lane_args.extend(
                TEST_SHARE
                    .iter()
                    .flat_map(|name| ["--select".into(), name.to_string()]),
            );
        }
        let image = LaneImage {
            lane: Lane::QemuKvm,
            lane_args,
            dir: INITRAMFS_DIR,
            files: qemu.image_files()?,
        };
        let count = ground.kernels.len();
        let mut runs: Vec<Box<dyn LaneRun>> = Vec::new();
        for (index, kernel) in ground.kernels.iter().enumerate() {
            let initramfs = initramfs::for_lane(
                &image,
                &kernel.kernel,
                &ground.built.runner,
                &ground.built.payload,
                &ground.runner_args,
                None,
            )?;
            runs.push(Box::new(Boot {
                machine: Machine {
                    qemu: ground.tools.qemu().path.clone(),
                    kernel: kernel.kernel.image.clone(),
                    initramfs: initramfs.path.clone(),
                    // The lane hands nothing on from one kernel to the next.
                    next_kernel: false,
                },
                kernel: kernel.clone(),
                initramfs,
                libraries: image.files.len() - 1,
                qemu: qemu.clone(),
                position: (index + 1, count),
                share: ground.for_test,
            }));
        }
        Ok(runs)
    }
}

/// One kernel's boot with QEMU inside.
struct Boot {
    machine: Machine,
    kernel: KernelUnderTest,
    initramfs: Initramfs,
    /// The files QEMU loads besides itself (its interpreter and libraries).
    libraries: usize,
    qemu: QemuPackage,
    /// Which of the run's kernels this is, counted from 1, and how many there are.
    position: (usize, usize),
    /// Whether it runs [`TEST_SHARE`] only.
    share: bool,
}

impl LaneRun for Boot {
    fn lane(&self) -> Lane {
        Lane::QemuKvm
    }

    fn label(&self) -> String {
        match self.position {
            (_, 1) => "qemu-kvm lane".into(),
            _ => format!("qemu-kvm lane on {}", self.kernel.kernel.hint()),
        }
    }

    fn heading(&self) -> String {
        let (index, count) = self.position;
        let kernel = &self.kernel.kernel;
        format!(
            "qemu-kvm lane, kernel {index} of {count}: booting {} {} with QEMU {} (arm64, -accel \
             kvm) inside{}",
            kernel.package,
            kernel.version,
            self.qemu.version,
            if self.share {
                format!(", a share of {} checks", TEST_SHARE.len())
            } else {
                String::new()
            }
        )
    }

    fn record(&self) -> Recorded {
        let kernel = &self.kernel.kernel;
        let mut facts = vec![
            Feature::new("qemu.command", self.machine.command_line()),
            Feature::new("kernel.package", &kernel.package),
            Feature::new("kernel.package_version", &kernel.version),
            Feature::new("kernel.image", kernel.image.display()),
            Feature::new(
                KERNEL_IMAGE_SHA256,
                sha256_of_file(&kernel.image).unwrap_or_else(|e| format!("unreadable: {e}")),
            ),
            Feature::new("kernel.requested", &self.kernel.requested),
            Feature::new("machine.modules", &self.initramfs.modules),
            Feature::new(
                "qemu-kvm.package",
                format!(
                    "{}:arm64 {} ({})",
                    qemu_package::PACKAGE,
                    self.qemu.version,
                    self.qemu.suite
                ),
            ),
            Feature::new(
                "qemu-kvm.initramfs",
                format!(
                    "{} with QEMU and {} files it loads ({} bytes)",
                    ui::size(self.initramfs.size),
                    self.libraries,
                    self.initramfs.size
                ),
            ),
        ];
        if self.share {
            facts.push(Feature::new(
                "qemu-kvm.share",
                format!(
                    "`cargo xtask test` runs {} checks of the lane: {}",
                    TEST_SHARE.len(),
                    TEST_SHARE.join(", ")
                ),
            ));
        }
        Recorded {
            boot: u32::try_from(self.position.0).unwrap_or(u32::MAX),
            kernel: kernel.release().unwrap_or_else(|| kernel.hint()),
            source: Source::Machine,
            facts,
        }
    }

    fn execute(
        &self,
        deadlines: Deadlines,
        on_line: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Ending> {
        console::run(&self.machine.qemu, &self.machine.args(), deadlines, on_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_share_names_checks_of_the_suite() {
        let names: Vec<&str> = mte_suites::all().iter().map(|s| s.name).collect();
        for check in TEST_SHARE {
            assert!(names.contains(check), "{check} is not a check of the suite");
        }
    }
}
