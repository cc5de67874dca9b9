//! KVM steps timed for the performance suite, where the `Vmm` and `Guest` traits are too coarse:
//! a VM's life step by step (create, MTE capability, memslot, vCPU, first run, teardown), and an
//! MTE VM whose tags and data the host copies out and in.

use std::time::{Duration, Instant};

use mte_protocol::{RAM_IPA, RAM_SIZE};
use mte_suites::host_mm::Backing;
use mte_suites::vmm::{Vmm, VmmError};
use mte_vmm::{Stop, Transport};

use crate::copy_tags;
use crate::ipa;
use crate::memory::GuestRam;
use crate::transport::KvmTransport;
use crate::vm::{add_ram_memslot, add_vcpu, enable_mte, Vm};
use crate::KvmVmm;

/// How long each step of one VM's life took.
#[derive(Clone, Copy, Debug, Default)]
pub struct LifeSteps {
    /// KVM_CREATE_VM.
    pub create: Duration,
    /// KVM_ENABLE_CAP(KVM_CAP_ARM_MTE); zero for a VM without MTE.
    pub mte_cap: Duration,
    /// The RAM mapping and KVM_SET_USER_MEMORY_REGION.
    pub memslot: Duration,
    /// KVM_CREATE_VCPU, KVM_ARM_VCPU_INIT and the entry point.
    pub vcpu: Duration,
    /// KVM_RUN from the payload's entry to its first doorbell (its boot).
    pub first_doorbell: Duration,
    /// Closing the vCPU and the VM and unmapping the RAM.
    pub teardown: Duration,
}

/// Time `step`, adding its duration to `into`.
fn lap<T>(into: &mut Duration, step: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = step();
    *into += started.elapsed();
    value
}

impl KvmVmm {
    /// Create, boot to its first doorbell and tear down one VM (with MTE if `mte`), timing each
    /// step. Loading the payload into RAM is not timed: it is the VMM's copy, not KVM's work.
    pub fn timed_life(&self, mte: bool) -> Result<LifeSteps, VmmError> {
        if mte {
            self.mte_capable()?;
        }
        let mut steps = LifeSteps::default();
        let fd = lap(&mut steps.create, || {
            ipa::create_vm(&self.kvm, ipa::SUITE_IPA_BITS)
        })?;
        if mte {
            lap(&mut steps.mte_cap, || enable_mte(&fd))?;
        }
        let mut vm = lap(&mut steps.memslot, || {
            GuestRam::with_backing(RAM_SIZE as usize, Backing::PrivateAnonymous)
                .and_then(|ram| add_ram_memslot(fd, ram))
        })?;
        let entry = vm.load(&*self.payloads.get("mte-guest.elf")?);
        let vcpu = lap(&mut steps.vcpu, || add_vcpu(&vm, entry))?;
        let mut transport = KvmTransport::new(vcpu, vm, Vec::new());
        let deadline = self.deadline;
        match lap(&mut steps.first_doorbell, || {
            transport.run_to_doorbell("boot", deadline)
        })? {
            Stop::Doorbell => {}
            stop => {
                return Err(VmmError::Guest(format!(
                    "the guest stopped ({stop:?}) instead of ringing its first doorbell"
                )))
            }
        }
        // The VMM's own watchdog thread goes first, untimed: the teardown is KVM's and the
        // memory's.
        let KvmTransport {
            vcpu, vm, watchdog, ..
        } = transport;
        drop(watchdog);
        lap(&mut steps.teardown, || drop((vcpu, vm)));
        Ok(steps)
    }

    /// An MTE VM with its RAM memslot and no vCPU: the host's side of tag copies.
    pub fn tag_copy_vm(&self) -> Result<TagCopyVm, VmmError> {
        Ok(TagCopyVm {
            vm: self.create_vm(true, Backing::PrivateAnonymous)?,
        })
    }
}

/// An MTE VM whose tags (KVM_ARM_MTE_COPY_TAGS) and data (a plain copy) the host reads and
/// writes.
pub struct TagCopyVm {
    vm: Vm,
}

impl TagCopyVm {
    /// The tags of `[ipa, ipa + 16 * tags.len())` into `tags` (FROM_GUEST).
    pub fn read_tags(&self, ipa: u64, tags: &mut [u8]) -> Result<(), VmmError> {
        copy_tags::read_into(self.vm.raw_fd(), ipa, tags)
    }

    /// Set the tags of `[ipa, ipa + 16 * tags.len())` from `tags` (TO_GUEST).
    pub fn write_tags(&self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        copy_tags::write(self.vm.raw_fd(), ipa, tags)
    }

    /// The data of `[ipa, ipa + out.len())`, copied out of the VMM's mapping with memcpy.
    pub fn copy_data(&self, ipa: u64, out: &mut [u8]) {
        self.vm.ram.copy_out((ipa - RAM_IPA) as usize, out);
    }
}
