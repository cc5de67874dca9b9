//! KVM as the VMM under test, on this machine: one VM per guest, built from the payload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kvm_bindings::KVM_CAP_ARM_MTE;
use kvm_ioctls::Kvm;
use mte_protocol::RAM_SIZE;
use mte_results::Lane;
use mte_suites::host_mm::Backing;
use mte_suites::migration_plan::StreamFault;
use mte_suites::vmm::{
    AbiVm, BootOptions, Guest, HostMte, IpaProbe, IpaSizes, SveOffer, Vmm, VmmError,
};
use mte_vmm::{MailboxGuest, PayloadDir};

use crate::abi::KvmAbiVm;
use crate::ipa;
use crate::memory::GuestRam;
use crate::migration_engine;
use crate::transport::KvmTransport;
use crate::vm::{add_vcpus, Vm};

/// KVM as the VMM under test, on this machine.
pub struct KvmVmm {
    pub(crate) kvm: Kvm,
    lane: Lane,
    kernel_release: String,
    pub(crate) payloads: PayloadDir,
    /// How long the guest may take to reach its next doorbell.
    pub(crate) deadline: Duration,
    /// Why VMs here have no MTE, where the lane found out more than KVM's capability says.
    no_mte_because: Option<String>,
}

impl KvmVmm {
    /// Open /dev/kvm. Fails with [`VmmError::Unsupported`] where no arm64 KVM exists.
    pub fn open(
        lane: Lane,
        kernel_release: &str,
        payload_dir: PathBuf,
        deadline: Duration,
    ) -> Result<Self, VmmError> {
        if !cfg!(target_arch = "aarch64") {
            return Err(VmmError::Unsupported(format!(
                "this machine is {}, and only arm64 KVM runs arm64 guests; the emulated lane \
                 (`cargo xtask run`) brings an arm64 machine",
                std::env::consts::ARCH
            )));
        }
        let kvm = Kvm::new().map_err(|e| {
            VmmError::Unsupported(format!(
                "/dev/kvm cannot be opened ({e}): no KVM on this kernel or machine"
            ))
        })?;
        Ok(KvmVmm {
            kvm,
            lane,
            kernel_release: kernel_release.into(),
            payloads: PayloadDir::new(payload_dir),
            deadline,
            no_mte_because: None,
        })
    }

    /// This VMM, its checks that need MTE skipping with `why` (which layer of the machine lacks
    /// it) rather than with KVM's missing capability alone.
    pub fn without_mte_because(self, why: String) -> Self {
        KvmVmm {
            no_mte_because: Some(why),
            ..self
        }
    }

    /// KVM_CHECK_EXTENSION(KVM_CAP_ARM_MTE).
    pub fn has_mte_cap(&self) -> bool {
        self.kvm.check_extension_raw(KVM_CAP_ARM_MTE.into()) > 0
    }

    pub fn api_version(&self) -> i32 {
        self.kvm.get_api_version()
    }

    /// The IPA size of the VMs the suite makes, and the host's limit, in words.
    pub fn describe_ipa_size(&self) -> String {
        ipa::describe(&self.kvm)
    }

    /// A VM with its RAM memslot on `backing`, and MTE enabled if asked.
    pub(crate) fn create_vm(&self, mte: bool, backing: Backing) -> Result<Vm, VmmError> {
        if mte {
            self.mte_capable()?;
        }
        let ram = GuestRam::with_backing(RAM_SIZE as usize, backing)?;
        Vm::new(&self.kvm, mte, ram)
    }
}

impl Vmm for KvmVmm {
    fn lane(&self) -> Lane {
        self.lane
    }

    fn kernel_release(&self) -> &str {
        &self.kernel_release
    }
    fn without_injection(&self) -> &dyn Vmm {
        self
    }

    fn boot(&self, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
        let backing = options.backing.unwrap_or_default();
        if options.sve {
            crate::sve::capable(&self.kvm)?;
        }
        let mut vm = self.create_vm(options.mte, backing)?;
        let entry = vm.load(&*self.payloads.get(options.payload)?);
        let mut vcpus = add_vcpus(&vm, entry, options.vcpus.max(1), options.sve)?;
        let first = vcpus.remove(0);
        let transport = KvmTransport::with_others(first, vcpus, Arc::new(vm), Vec::new());
        let mte_on = "KVM_CAP_ARM_MTE is enabled";
        let guest = MailboxGuest::boot(transport, options, self.deadline, mte_on)?;
        Ok(Box::new(guest))
    }

    fn mte_capable(&self) -> Result<(), VmmError> {
        match (&self.no_mte_because, self.has_mte_cap()) {
            (Some(why), _) => Err(VmmError::Unsupported(why.clone())),
            (None, true) => Ok(()),
            (None, false) => Err(VmmError::Unsupported(
                "KVM has no KVM_CAP_ARM_MTE (a CPU without MTE, or a kernel before 5.13)".into(),
            )),
        }
    }

    fn restore(
        &self,
        stream: &[u8],
        fault: Option<StreamFault>,
    ) -> Result<Box<dyn Guest>, VmmError> {
        migration_engine::restore(stream, fault, self.deadline)
    }

    fn abi_vm(&self, mte: bool) -> Result<Box<dyn AbiVm>, VmmError> {
        let vm = self.create_vm(mte, Backing::PrivateAnonymous)?;
        Ok(Box::new(KvmAbiVm::new(vm)))
    }

    fn ipa_sizes(&self) -> Result<IpaSizes, VmmError> {
        Ok(IpaSizes {
            suite_bits: ipa::SUITE_IPA_BITS,
            host_limit: ipa::host_limit(&self.kvm),
        })
    }

    fn ipa_probe(&self, bits: u32, top: u64) -> Result<IpaProbe, VmmError> {
        ipa::probe(&self.kvm, bits, top)
    }

    fn host_mte(&self) -> Result<HostMte, VmmError> {
        crate::host_mte::host_mte()
    }

    fn sve_offer(&self) -> Result<SveOffer, VmmError> {
        crate::sve::offer(&self.kvm)
    }
}
