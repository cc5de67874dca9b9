//! The host steps of the KVM backend, on top of the mailbox protocol: the VMM owns the mapping
//! of guest RAM and the VM, so it can copy tags with KVM_ARM_MTE_COPY_TAGS, advise, protect and
//! inspect the mapping, fork, race the guest, open a second VM on the same memory, and migrate
//! the guest with the suite's own engine.

use std::time::Duration;

use mte_protocol::{RAM_IPA, RAM_SIZE};
use mte_suites::host_mm::{
    Advice, Backing, ForkPlan, ForkedChild, KsmKnob, KsmState, PageState, Protection, SwapDevice,
    TagPeer,
};
use mte_suites::kernel_options::{self, Call};
use mte_suites::migration_plan::{MigrationPlan, SavedStream, StreamFault};
use mte_suites::race_plan::{RaceLog, RacePlan};
use mte_suites::vmm::{CopyTagsArgs, Guest, VmmError};
use mte_vmm::host_kernel as host;
use mte_vmm::HostSteps;

use crate::vm::io_error;
use crate::{copy_tags, fork, memory, migration_engine, peer, race};
use crate::{KvmGuest, KvmTransport};

/// The offset into guest RAM of a page-aligned range inside it.
fn ram_range(ipa: u64, len: u64) -> Result<usize, VmmError> {
    let page = memory::page_size() as u64;
    if ipa < RAM_IPA || ipa % page != 0 || len % page != 0 || ipa - RAM_IPA + len > RAM_SIZE {
        return Err(VmmError::Host(format!(
            "{ipa:#x}+{len:#x} is not a page-aligned range of guest RAM"
        )));
    }
    Ok((ipa - RAM_IPA) as usize)
}

/// The migration engine moves guests of one vCPU (both ends build their VM the same way).
fn one_vcpu(guest: &KvmGuest, step: &str) -> Result<(), VmmError> {
    match guest.vcpu_count() {
        1 => Ok(()),
        n => Err(VmmError::Unsupported(format!(
            "{step} a guest of {n} vCPUs: the suite's migration engine moves guests of one vCPU"
        ))),
    }
}

impl HostSteps for KvmTransport {
    fn host_read_tags(guest: &mut KvmGuest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        copy_tags::read(guest.transport().vm.raw_fd(), ipa, len)
    }

    fn host_write_tags(guest: &mut KvmGuest, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        copy_tags::write(guest.transport().vm.raw_fd(), ipa, tags)
    }

    fn copy_tags_raw(
        guest: &mut KvmGuest,
        args: CopyTagsArgs,
        buffer: &mut [u8],
        readable: Option<usize>,
    ) -> Result<Result<i64, i32>, VmmError> {
        let vm = guest.transport().vm.raw_fd();
        Ok(crate::abi::copy_tags_checked(vm, args, buffer, readable))
    }

    fn ram_backing(guest: &KvmGuest) -> Result<Backing, VmmError> {
        Ok(guest.transport().vm.ram.backing())
    }

    fn madvise(guest: &mut KvmGuest, ipa: u64, len: u64, advice: Advice) -> Result<(), VmmError> {
        let offset = ram_range(ipa, len)?;
        let done = guest
            .transport()
            .vm
            .ram
            .madvise(offset, len as usize, advice.value());
        match done.map_err(|e| e.raw_os_error().unwrap_or(0)) {
            Ok(()) => Ok(()),
            // A kernel built without THP knows no MADV_NOHUGEPAGE, and maps no huge pages: what
            // the advice asks holds already.
            Err(libc::EINVAL) if advice == Advice::NoHugePage => Ok(()),
            Err(errno) => {
                let what = format!("madvise({})", advice.name());
                Err(kernel_options::call_error(
                    Call::Madvise(advice),
                    &what,
                    errno,
                ))
            }
        }
    }

    fn protect(guest: &mut KvmGuest, ipa: u64, len: u64, prot: Protection) -> Result<(), VmmError> {
        let offset = ram_range(ipa, len)?;
        let (bits, name) = match prot {
            Protection::ReadOnly => (libc::PROT_READ, "PROT_READ"),
            Protection::ReadWrite => (libc::PROT_READ | libc::PROT_WRITE, "PROT_READ|PROT_WRITE"),
        };
        guest
            .transport()
            .vm
            .ram
            .mprotect(offset, len as usize, bits)
            .map_err(|e| io_error(&format!("mprotect({name})"), e))
    }

    fn page_states(guest: &mut KvmGuest, ipa: u64, len: u64) -> Result<Vec<PageState>, VmmError> {
        let offset = ram_range(ipa, len)?;
        guest
            .transport()
            .vm
            .ram
            .page_states(offset, len as usize)
            .map_err(|e| io_error("mincore and /proc/self/pagemap", e))
    }

    fn swap_devices(_guest: &KvmGuest) -> Result<Vec<SwapDevice>, VmmError> {
        host::swap_devices()
    }

    fn vmstat(_guest: &KvmGuest) -> Result<Vec<(String, u64)>, VmmError> {
        host::vmstat()
    }

    fn swap_off_and_on(_guest: &mut KvmGuest, device: &SwapDevice) -> Result<Duration, VmmError> {
        host::swap_off_and_on(device)
    }

    fn ksm_state(_guest: &KvmGuest) -> Result<KsmState, VmmError> {
        host::ksm_state()
    }

    fn ksm_set(_guest: &mut KvmGuest, knob: KsmKnob, value: u64) -> Result<(), VmmError> {
        host::ksm_set(knob, value)
    }

    fn fork(guest: &mut KvmGuest, plan: &ForkPlan) -> Result<Box<dyn ForkedChild>, VmmError> {
        let child = fork::spawn(&guest.transport().vm.ram, plan, guest.deadline())?;
        Ok(Box::new(child))
    }

    fn tag_peer(guest: &mut KvmGuest) -> Result<Box<dyn TagPeer>, VmmError> {
        Ok(Box::new(peer::KvmPeer::open(&guest.transport().vm.ram)?))
    }

    fn race(guest: &mut KvmGuest, plan: &RacePlan) -> Result<RaceLog, VmmError> {
        race::race(guest, plan)
    }

    fn migrate(guest: KvmGuest, plan: &MigrationPlan) -> Result<Box<dyn Guest>, VmmError> {
        one_vcpu(&guest, "migrating")?;
        migration_engine::migrate(guest, plan)
    }

    fn save(guest: KvmGuest, fault: Option<StreamFault>) -> Result<SavedStream, VmmError> {
        one_vcpu(&guest, "saving")?;
        migration_engine::save(guest, fault)
    }
}
