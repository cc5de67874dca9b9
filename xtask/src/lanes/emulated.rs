//! The emulated lane: QEMU (TCG, with EL2 and MTE) boots each kernel under test with the runner
//! as `/init`; the runner is the VMM on that kernel's KVM, and its records come over the
//! machine's console. A kernel's runner may send artifacts (a saved migration stream) that the
//! next kernel's initramfs carries.

use std::path::{Path, PathBuf};

use anyhow::Result;
use mte_results::artifact::NEXT_KERNEL_WORD;
use mte_results::{Feature, Lane, KERNEL_IMAGE_SHA256};
use sha2::{Digest, Sha256};

use super::{LaneDriver, LaneRun, Needs, Recorded};
use crate::artifacts::Incoming;
use crate::console::{self, Deadlines, Ending, Flow};
use crate::groundwork::{Groundwork, KernelUnderTest};
use crate::initramfs;
use crate::session::Source;
use crate::tools::Version;
use crate::ui;

pub struct EmulatedLane;

impl LaneDriver for EmulatedLane {
    fn needs(&self) -> Needs {
        Needs {
            kernels: true,
            qemu: true,
            host_runner: false,
            guest_qemu: false,
        }
    }

    fn run_hint(&self, ground: &Groundwork) -> Vec<String> {
        ground.kernels.iter().map(|k| k.kernel.hint()).collect()
    }

    fn prepare(&self, ground: &Groundwork) -> Result<Vec<Box<dyn LaneRun>>> {
        let qemu = ground.tools.qemu();
        let count = ground.kernels.len();
        let boots = ground.kernels.iter().zip(&ground.built.initramfs);
        Ok(boots
            .enumerate()
            .map(|(index, (kernel, initramfs))| {
                Box::new(Boot {
                    machine: Machine {
                        qemu: qemu.path.clone(),
                        kernel: kernel.kernel.image.clone(),
                        initramfs: initramfs.path.clone(),
                        next_kernel: index + 1 < count,
                    },
                    kernel: kernel.clone(),
                    modules: initramfs.modules.clone(),
                    position: (index + 1, count),
                    boot: u32::try_from(index + 1).unwrap_or(u32::MAX),
                    resumes: None,
                    incoming: None,
                    qemu_version: qemu.version,
                    runner_build: format!("{:?}", ground.tools.cross),
                    runner: ground.built.runner.clone(),
                    payload: ground.built.payload.clone(),
                    runner_args: ground.runner_args.clone(),
                }) as Box<dyn LaneRun>
            })
            .collect())
    }
}

/// One kernel's boot.
#[derive(Clone)]
struct Boot {
    machine: Machine,
    kernel: KernelUnderTest,
    /// What its initramfs loads, in words.
    modules: String,
    /// Which of the run's kernels this is, counted from 1, and how many there are.
    position: (usize, usize),
    /// Which boot of the lane this is: the kernel's position, or after the last kernel's for a
    /// boot that resumes another.
    boot: u32,
    /// The boot this one resumes, whose kernel stopped its machine.
    resumes: Option<u32>,
    /// What the kernel before left, which its initramfs carries.
    incoming: Option<Incoming>,
    qemu_version: Version,
    /// How the runner was built, for the record.
    runner_build: String,
    /// What its initramfs is made of, to make it again with what the kernel before left.
    runner: PathBuf,
    payload: PathBuf,
    runner_args: Vec<String>,
}

impl LaneRun for Boot {
    fn lane(&self) -> Lane {
        Lane::Emulated
    }

    /// `emulated lane`, or `emulated lane, boot 3 (6.1)` where it boots several times: the
    /// prefix of this boot's error in the run's (see junit's `names_boot`).
    fn label(&self) -> String {
        match (self.position, self.resumes) {
            ((_, 1), None) => "emulated lane".into(),
            (_, None) => format!(
                "emulated lane, boot {} ({})",
                self.boot,
                self.kernel.kernel.hint()
            ),
            (_, Some(stopped)) => format!(
                "emulated lane, boot {} ({}, resuming boot {stopped})",
                self.boot,
                self.kernel.kernel.hint()
            ),
        }
    }

    fn heading(&self) -> String {
        let (index, count) = self.position;
        let kernel = &self.kernel.kernel;
        let resuming = match self.resumes {
            Some(stopped) => format!(", boot {} resuming boot {stopped}", self.boot),
            None => String::new(),
        };
        format!(
            "emulated lane, kernel {index} of {count}{resuming}: booting {} {} under QEMU {}",
            kernel.package, kernel.version, self.qemu_version
        )
    }

    fn record(&self) -> Recorded {
        let kernel = &self.kernel.kernel;
        let tree = kernel.tree.as_ref();
        let image_sha256 =
            sha256_of_file(&kernel.image).unwrap_or_else(|e| format!("unreadable: {e}"));
        Recorded {
            boot: self.boot,
            kernel: kernel.release().unwrap_or_else(|| kernel.hint()),
            source: Source::Machine,
            facts: vec![
                Feature::new("qemu.command", self.machine.command_line()),
                Feature::new("kernel.package", &kernel.package),
                Feature::new("kernel.package_version", &kernel.version),
                Feature::new("kernel.image", kernel.image.display()),
                Feature::new(KERNEL_IMAGE_SHA256, image_sha256),
                Feature::new(
                    "kernel.tree",
                    tree.map_or(String::new(), |t| t.display().to_string()),
                ),
                Feature::new("kernel.requested", &self.kernel.requested),
                Feature::new("machine.modules", &self.modules),
                Feature::new("runner.build", &self.runner_build),
            ],
        }
    }

    fn hands_on_artifacts(&self) -> bool {
        true
    }

    /// Its initramfs, rewritten in place with what the kernel before left: the machine that
    /// booted from it before has exited.
    fn receive(&mut self, incoming: &Incoming) {
        let kernel = &self.kernel.kernel;
        let written = initramfs::for_kernel(
            kernel,
            &self.runner,
            &self.payload,
            &self.runner_args,
            Some(incoming),
        );
        match written {
            Ok(_) => self.incoming = Some(incoming.clone()),
            Err(e) => ui::error(&format!(
                "{}: the artifacts of {} are not passed on: {e:#}",
                kernel.hint(),
                incoming.saved_on
            )),
        }
    }

    /// Its initramfs, rewritten in place for the fresh boot: the machine that booted from it
    /// has exited.
    fn resume(&self, judged: &[String], boot: u32) -> Result<Option<Box<dyn LaneRun>>> {
        let mut resumed = self.clone();
        for trial in judged {
            resumed
                .runner_args
                .extend(["--already-judged".to_string(), trial.clone()]);
        }
        initramfs::for_kernel(
            &resumed.kernel.kernel,
            &resumed.runner,
            &resumed.payload,
            &resumed.runner_args,
            resumed.incoming.as_ref(),
        )?;
        resumed.boot = boot;
        resumed.resumes = Some(self.boot);
        Ok(Some(Box::new(resumed)))
    }

    fn execute(
        &self,
        deadlines: Deadlines,
        on_line: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Ending> {
        console::run(&self.machine.qemu, &self.machine.args(), deadlines, on_line)
    }
}

/// The SHA-256 of a file, in hex: what tells two builds of one kernel release apart.
pub(super) fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// What lets a kernel that locks up say so on the console while the suite still listens (it
/// stops a machine 30-60 s after its runner went quiet): the soft-lockup watchdog at 5 s (it
/// reports after twice that, 10-13 s under TCG), and pseudo-NMIs, without which a kernel
/// whose two CPUs both spin with interrupts masked reported nothing in 60 s (7.3 in the race
/// checks: "watchdog: BUG: soft lockup - CPU#0 stuck for 13s!" with them, silence without).
/// Neither costs a default run measurably (19.0-19.3 s against 18.4-19.2 s).
const KERNEL_WATCHDOG: &str = "irqchip.gicv3_pseudo_nmi=1 watchdog_thresh=5";

/// The machine to boot (the qemu-kvm lane boots the same machine with its own initramfs, the
/// device test its busybox one).
#[derive(Clone, Debug)]
pub struct Machine {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Whether a next kernel of the run takes this one's artifacts: its runner sends them
    /// only then.
    pub next_kernel: bool,
}

impl Machine {
    /// QEMU's arguments. `virtualization=on` gives the guest EL2 so its kernel runs KVM;
    /// `mte=on` with `-cpu max` gives it MTE (and MTE3); `pauth-impdef` keeps pointer
    /// authentication cheap under TCG. The console is the first serial port on stdout; there is
    /// no monitor, display or network, and `-no-reboot` turns the runner's power-off (and a
    /// panic's reboot) into QEMU's exit. The kernel's command line lets it say what is stuck
    /// before the suite stops a silent machine ([`KERNEL_WATCHDOG`]).
    pub fn args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        let mut command_line =
            format!("console=ttyAMA0 rdinit=/init quiet panic=-1 {KERNEL_WATCHDOG}");
        if self.next_kernel {
            command_line = format!("{command_line} {NEXT_KERNEL_WORD}");
        }
        [
            "-M",
            "virt,virtualization=on,mte=on,gic-version=3",
            "-cpu",
            "max,pauth-impdef=on",
            "-smp",
            "2",
            "-m",
            "2048",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-nic",
            "none",
            "-no-reboot",
            "-kernel",
            &path(&self.kernel),
            "-initrd",
            &path(&self.initramfs),
            "-append",
            &command_line,
        ]
        .map(String::from)
        .to_vec()
    }

    /// The command line as a person would type it, for the run's record.
    pub fn command_line(&self) -> String {
        console::command_line(&self.qemu, &self.args())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            qemu: "/usr/bin/qemu-system-aarch64".into(),
            kernel: "/k/vmlinuz-6.12".into(),
            initramfs: "/t/initramfs.cpio".into(),
            next_kernel: false,
        }
    }

    #[test]
    fn the_machine_has_el2_mte_and_a_console_on_stdout() {
        let args = machine().args().join(" ");
        assert!(args.contains("-M virt,virtualization=on,mte=on,gic-version=3"));
        assert!(args.contains("-serial stdio"));
        assert!(args.contains("-no-reboot"));
        assert!(args.ends_with("-kernel /k/vmlinuz-6.12 -initrd /t/initramfs.cpio -append console=ttyAMA0 rdinit=/init quiet panic=-1 irqchip.gicv3_pseudo_nmi=1 watchdog_thresh=5"));
        let followed = Machine {
            next_kernel: true,
            ..machine()
        };
        assert!(followed
            .args()
            .join(" ")
            .ends_with(&format!("watchdog_thresh=5 {NEXT_KERNEL_WORD}")));
    }

    #[test]
    fn an_image_is_known_by_its_sha256() {
        let file = std::env::temp_dir().join(format!("mte-sha-{}", std::process::id()));
        std::fs::write(&file, b"abc").unwrap();
        let hash = sha256_of_file(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_command_line_is_quoted_for_a_shell() {
        let line = machine().command_line();
        assert!(line.starts_with(
            "/usr/bin/qemu-system-aarch64 -M virt,virtualization=on,mte=on,gic-version=3 "
        ));
        assert!(line.ends_with("-append 'console=ttyAMA0 rdinit=/init quiet panic=-1 irqchip.gicv3_pseudo_nmi=1 watchdog_thresh=5'"));
    }
}
