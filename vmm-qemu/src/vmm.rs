//! QEMU as the VMM under test, one process per guest.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use mte_results::Lane;
use mte_suites::vmm::{AbiVm, BootOptions, Guest, Vmm, VmmError};
use mte_vmm::{MailboxGuest, PayloadDir};

use crate::binary::{QemuBinary, Version};
use crate::transport::GdbTransport;

/// QEMU as the VMM under test, one process per guest.
pub struct QemuVmm {
    lane: Lane,
    binary: QemuBinary,
    /// `qemu-x.y.z`: the lane has no guest kernel, so QEMU's version stands in for it.
    release: String,
    payloads: PayloadDir,
    /// How long the guest may take to reach its next doorbell.
    deadline: Duration,
    /// What the first guest's gdbstub answered to `qSupported`.
    stub_features: OnceLock<Vec<String>>,
}

impl QemuVmm {
    /// Check the QEMU at `qemu` (a bare name is looked up on PATH): it must run and be 9.2 or
    /// newer, else [`VmmError::Unsupported`] says what to install.
    pub fn open(
        lane: Lane,
        qemu: PathBuf,
        payload_dir: PathBuf,
        deadline: Duration,
    ) -> Result<Self, VmmError> {
        let binary = QemuBinary::probe(&qemu)?;
        Ok(QemuVmm {
            lane,
            release: format!("qemu-{}", binary.version),
            binary,
            payloads: PayloadDir::new(payload_dir),
            deadline,
            stub_features: OnceLock::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.binary.path
    }

    pub fn version(&self) -> Version {
        self.binary.version
    }

    /// QEMU's own words for its version: the first line of `--version`.
    pub fn banner(&self) -> &str {
        &self.binary.banner
    }

    /// The features the gdbstub announced (`qSupported`), once a guest has booted.
    pub fn stub_features(&self) -> Option<&[String]> {
        self.stub_features.get().map(Vec::as_slice)
    }
}

impl Vmm for QemuVmm {
    fn lane(&self) -> Lane {
        self.lane
    }

    fn kernel_release(&self) -> &str {
        &self.release
    }
    fn without_injection(&self) -> &dyn Vmm {
        self
    }

    fn boot(&self, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
        let payload = self.payloads.get(options.payload)?;
        let transport = GdbTransport::start(&self.binary.path, payload, options.mte, None)?;
        let _ = self.stub_features.set(transport.stub_features().to_vec());
        let mte_on = "QEMU runs the guest with mte=on";
        let guest = MailboxGuest::boot(transport, options, self.deadline, mte_on)?;
        Ok(Box::new(guest))
    }

    fn abi_vm(&self, _mte: bool) -> Result<Box<dyn AbiVm>, VmmError> {
        Err(VmmError::Unsupported(
            "QEMU is the VMM in the qemu lane; KVM_ARM_MTE_COPY_TAGS is a KVM ioctl".into(),
        ))
    }

    fn mte_capable(&self) -> Result<(), VmmError> {
        Ok(())
    }
}
