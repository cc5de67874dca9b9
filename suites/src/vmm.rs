//! What a scenario may ask of the VMM under test. A lane (KVM in the emulated machine, KVM on an
//! MTE host, QEMU as the VMM) implements these traits once; every scenario is written against
//! them and so runs wherever its steps exist.

use std::time::Duration;

use mte_protocol::{Command, GuestIds};
use mte_results::Lane;

pub use crate::error::{errno_name, VmmError};
use crate::host_mm::{
    Advice, Backing, ForkPlan, ForkedChild, KsmKnob, KsmState, PageState, Protection, SwapDevice,
    TagPeer,
};
use crate::migration_plan::{
    IncomingStream, MigrationPlan, MigrationReport, SavedStream, StreamFault,
};
use crate::race_plan::{RaceLog, RacePlan};
pub use crate::reply::Reply;

/// A booted payload under the VMM, stopped at a doorbell.
pub trait Guest {
    /// The guest's ID registers, read by its runtime at boot.
    fn ids(&self) -> GuestIds;

    /// Run one guest command to its next doorbell.
    fn exec(&mut self, command: Command, args: &[u64]) -> Result<Reply, VmmError>;

    /// Read `len` bytes of the guest's bulk buffer (tag maps, one byte per granule).
    fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError>;

    /// Write the start of the guest's bulk buffer.
    fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError>;

    /// The host's view of the tags of `[ipa, ipa + len)`, one byte per granule
    /// (KVM_ARM_MTE_COPY_TAGS with KVM_ARM_TAGS_FROM_GUEST on KVM).
    fn host_read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError>;

    /// Set the tags of the granules from `ipa` on, one byte per granule
    /// (KVM_ARM_MTE_COPY_TAGS with KVM_ARM_TAGS_TO_GUEST on KVM).
    fn host_write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError>;

    /// What the guest printed on its console so far.
    fn console(&self) -> String;

    /// KVM_ARM_MTE_COPY_TAGS on this guest's VM with the arguments as given. Where `readable`
    /// is given, the user buffer lies in a mapping of its own whose pages from byte `readable`
    /// on (page aligned, inside the buffer) are PROT_NONE, a buffer that stops being accessible
    /// midway, and only its first `readable` bytes come back into `buffer`. Ok(what the kernel
    /// answered: its return value or errno).
    fn copy_tags_raw(
        &mut self,
        _args: CopyTagsArgs,
        _buffer: &mut [u8],
        _readable: Option<usize>,
    ) -> Result<Result<i64, i32>, VmmError> {
        Err(not_here(
            "KVM_ARM_MTE_COPY_TAGS with arguments of the check's choosing",
        ))
    }

    /// How the host's tag steps reach the tags, where a lane's view is not the KVM ioctl the
    /// checks name (QEMU's gdbstub; the runner's PROT_MTE mapping of QEMU's memory), for the
    /// verdicts to say which view they used.
    fn host_tag_view(&self) -> Option<String> {
        None
    }

    /// The VMM's debug stub's memory-tag packets: whether it advertises them and, with
    /// `probe = Some((ipa, tag))`, what they do on the granule at `ipa` (tagged by the guest):
    /// read its tag, set it to `tag`, ask whether it is tagged; each sent only while the VMM
    /// lives, and none where the stub does not advertise them.
    fn stub_tag_packets(&mut self, _probe: Option<(u64, u8)>) -> Result<StubTagPackets, VmmError> {
        Err(VmmError::Unsupported(
            "a debug stub with memory-tag packets: QEMU's gdbstub, in the qemu lanes".into(),
        ))
    }

    // Several vCPUs ([`BootOptions::vcpus`]): each has its own mailbox and bulk buffer, and
    // vCPU 0 is the one the methods above drive.

    /// How many vCPUs serve commands.
    fn vcpus(&self) -> usize {
        1
    }

    /// Run one command on vCPU `vcpu`.
    fn exec_on(&mut self, vcpu: usize, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        match vcpu {
            0 => self.exec(command, args),
            _ => Err(no_such_vcpu(vcpu, self.vcpus())),
        }
    }

    /// Read `len` bytes of vCPU `vcpu`'s bulk buffer.
    fn read_bulk_on(&mut self, vcpu: usize, len: usize) -> Result<Vec<u8>, VmmError> {
        match vcpu {
            0 => self.read_bulk(len),
            _ => Err(no_such_vcpu(vcpu, self.vcpus())),
        }
    }

    /// Write the start of vCPU `vcpu`'s bulk buffer.
    fn write_bulk_on(&mut self, vcpu: usize, bytes: &[u8]) -> Result<(), VmmError> {
        match vcpu {
            0 => self.write_bulk(bytes),
            _ => Err(no_such_vcpu(vcpu, self.vcpus())),
        }
    }

    /// Run the vCPUs' commands of `plan`, let go together, while a host thread does the
    /// plan's host part on the same pages.
    fn race(&mut self, _plan: &RacePlan) -> Result<RaceLog, VmmError> {
        Err(not_here("host threads racing the guest's vCPUs"))
    }

    // Host memory-management steps on the guest's RAM (see [`crate::host_mm`]). Only a VMM
    // that owns the mapping of guest RAM can take them; the others keep these defaults, and
    // the checks that need them skip.

    /// What backs the guest's RAM memslot, as the VMM made it.
    fn ram_backing(&self) -> Result<Backing, VmmError> {
        Err(not_here("choosing what backs guest RAM"))
    }

    /// madvise(2) on the VMM's mapping of `[ipa, ipa + len)` (page aligned).
    fn madvise(&mut self, _ipa: u64, _len: u64, advice: Advice) -> Result<(), VmmError> {
        Err(not_here(&format!(
            "{} on the VMM's mapping of guest RAM",
            advice.name()
        )))
    }

    /// mprotect(2) of the VMM's mapping of `[ipa, ipa + len)` (page aligned).
    fn protect(&mut self, _ipa: u64, _len: u64, _prot: Protection) -> Result<(), VmmError> {
        Err(not_here("mprotect of the VMM's mapping of guest RAM"))
    }

    /// The host kernel's view of each page of `[ipa, ipa + len)` in the VMM's mapping.
    fn page_states(&mut self, _ipa: u64, _len: u64) -> Result<Vec<PageState>, VmmError> {
        Err(not_here("mincore and /proc/self/pagemap of guest RAM"))
    }

    /// The active swap devices of the host kernel (/proc/swaps).
    fn swap_devices(&self) -> Result<Vec<SwapDevice>, VmmError> {
        Err(not_here("the VMM host's swap"))
    }

    /// The host kernel's memory counters (/proc/vmstat), by name.
    fn vmstat(&self) -> Result<Vec<(String, u64)>, VmmError> {
        Err(not_here("the VMM host's /proc/vmstat"))
    }

    /// swapoff(2) of an active swap device of the host kernel, which brings every page it holds
    /// back into memory through the kernel's unuse path, then swapon(2) of it again with its
    /// priority. The time swapoff took.
    fn swap_off_and_on(&mut self, _device: &SwapDevice) -> Result<Duration, VmmError> {
        Err(not_here("swapoff of the VMM host's swap"))
    }

    /// The host kernel's KSM state (/sys/kernel/mm/ksm).
    fn ksm_state(&self) -> Result<KsmState, VmmError> {
        Err(not_here("the VMM host's KSM"))
    }

    /// Set a KSM knob of the host kernel.
    fn ksm_set(&mut self, _knob: KsmKnob, _value: u64) -> Result<(), VmmError> {
        Err(not_here("the VMM host's KSM"))
    }

    /// Fork the VMM while the guest is stopped at its doorbell; the child follows `plan` and
    /// waits for [`ForkedChild::finish`] after its first look.
    fn fork(&mut self, _plan: &ForkPlan) -> Result<Box<dyn ForkedChild>, VmmError> {
        Err(not_here("forking the VMM"))
    }

    /// A second VM (with MTE) whose RAM memslot is a second mapping of this guest's memory.
    fn tag_peer(&mut self) -> Result<Box<dyn TagPeer>, VmmError> {
        Err(not_here("a second VM on the same memory"))
    }

    // Migration (see [`crate::migration_plan`]): the KVM lanes move the guest with the runner's own
    // engine; other lanes keep these defaults until their VMM's migration is driven.

    /// Move the guest, stopped at its doorbell, to a destination VM as `plan` says. What
    /// comes back is the destination, stopped after the same doorbell; the source is gone.
    fn migrate(self: Box<Self>, _plan: &MigrationPlan) -> Result<Box<dyn Guest>, VmmError> {
        Err(not_here("migration by the suite's own engine"))
    }

    /// What the migration that made this guest did and cost (for post-copy: so far).
    fn migration_report(&mut self) -> Result<MigrationReport, VmmError> {
        Err(not_here("migration by the suite's own engine"))
    }

    /// Save the guest, stopped at its doorbell, into a migration stream in memory (pages of
    /// zeros left out), broken on the way as `fault` says; the guest is gone after. The stream
    /// goes to another kernel's [`Vmm::restore`].
    fn save(self: Box<Self>, _fault: Option<StreamFault>) -> Result<SavedStream, VmmError> {
        Err(not_here("saving a guest into the suite's migration stream"))
    }

    /// Move the guest, stopped at its doorbell, with the VMM's own migration (QEMU: `migrate`
    /// to a file, then a new QEMU started with `-incoming` on it). What comes back is the
    /// destination, stopped at the same doorbell, and what the VMM said of the move.
    fn migrate_by_vmm(self: Box<Self>) -> Result<(Box<dyn Guest>, VmmMigration), VmmError> {
        Err(VmmError::Unsupported(
            "the VMM's own migration: a step of the qemu lane (the KVM lanes' VMM is the \
             suite's runner, whose migration the other migration checks take)"
                .into(),
        ))
    }
}

/// What a VMM's debug stub did with its memory-tag packets ([`Guest::stub_tag_packets`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubTagPackets {
    /// What the stub announced of them (`memory-tagging+` in QEMU's `qSupported`).
    pub advertised: bool,
    /// The announcement in the stub's words.
    pub features: String,
    /// The read of one granule's tag (`qMemTags`), the write of it (`QMemTags`) and the
    /// question whether the address is tagged (`qIsAddressTagged`), in that order.
    pub exchanges: Vec<StubExchange>,
}

/// One packet to the stub and what came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubExchange {
    pub packet: String,
    /// The stub's reply, or what became of the VMM instead (it was killed by a signal), or why
    /// the packet was not sent.
    pub reply: Result<String, String>,
}

/// What a VMM's own migration said of itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VmmMigration {
    /// How, in words, e.g. "QEMU 10.0.2: migrate to file, -incoming in a new QEMU".
    pub how: String,
    /// Bytes of the migration stream.
    pub stream_bytes: u64,
    /// The VMM's own figures for the move and its downtime.
    pub total: std::time::Duration,
    pub downtime: std::time::Duration,
}

/// What a guest answers for a vCPU it does not have.
fn no_such_vcpu(vcpu: usize, vcpus: usize) -> VmmError {
    VmmError::Host(format!("vCPU {vcpu} asked of a guest of {vcpus} vCPU(s)"))
}

/// What a lane answers for a host step its VMM does not offer.
fn not_here(step: &str) -> VmmError {
    VmmError::Unsupported(format!(
        "{step}: a step of the KVM lanes, where the suite's runner is the VMM"
    ))
}

/// How to boot a guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// The payload to boot, by file name (e.g. `mte-guest.elf`).
    pub payload: &'static str,
    /// Enable MTE for the VM (KVM_CAP_ARM_MTE). Off gives an untagged guest.
    pub mte: bool,
    /// How long the guest may take to reach each doorbell; the lane's default if `None`.
    pub deadline: Option<std::time::Duration>,
    /// What backs the RAM memslot; `None` for the lane's usual RAM (private anonymous memory
    /// where the runner is the VMM; a shared memfd under QEMU with KVM, whose tags the runner
    /// can read). Lanes that cannot choose it answer [`Guest::ram_backing`] with
    /// [`VmmError::Unsupported`].
    pub backing: Option<Backing>,
    /// vCPUs, all started at boot (up to `mte_protocol::MAX_VCPUS`). Lanes whose VMM cannot
    /// run several vCPUs of a guest apart answer [`VmmError::Unsupported`].
    pub vcpus: usize,
    /// Give the vCPUs SVE (KVM_ARM_VCPU_SVE, with every vector length KVM offers). Off, a KVM
    /// lane's guest has none; lanes whose VMM decides itself (QEMU's `-cpu`) give what it
    /// gives, which the guest finds in its ID registers.
    pub sve: bool,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            payload: "mte-guest.elf",
            mte: true,
            deadline: None,
            backing: None,
            vcpus: 1,
            sve: false,
        }
    }
}

/// The raw arguments of KVM_ARM_MTE_COPY_TAGS, unchecked, so that scenarios can probe the ABI
/// with bad ones (layout of `struct kvm_arm_copy_mte_tags`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyTagsArgs {
    pub guest_ipa: u64,
    pub length: u64,
    pub flags: u64,
    pub reserved: [u64; 2],
}

/// KVM_ARM_TAGS_TO_GUEST.
pub const TAGS_TO_GUEST: u64 = 0;
/// KVM_ARM_TAGS_FROM_GUEST.
pub const TAGS_FROM_GUEST: u64 = 1;

/// A VM (with its memory, without a running guest) on which the KVM ABI can be probed.
pub trait AbiVm {
    /// Issue KVM_ARM_MTE_COPY_TAGS; `buffer` is the user buffer (at least `length / 16` bytes
    /// for valid calls). Ok(return value) or Err(errno).
    fn copy_tags_raw(&mut self, args: CopyTagsArgs, buffer: &mut [u8]) -> Result<i64, i32>;
    /// KVM_ENABLE_CAP(KVM_CAP_ARM_MTE) now. Ok or Err(errno).
    fn enable_mte(&mut self) -> Result<(), i32>;
    /// Create the next vCPU. Ok or Err(errno).
    fn create_vcpu(&mut self) -> Result<(), i32>;
    /// Where the VM's RAM memslot starts and how long it is.
    fn ram(&self) -> (u64, u64);
    /// The host kernel's page size: the alignment KVM_ARM_MTE_COPY_TAGS demands.
    fn page_size(&self) -> u64;
}

/// The host kernel's MTE, from its hwcaps (getauxval(AT_HWCAP2)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMte {
    /// As ID_AA64PFR1_EL1.MTE counts: 0 none, 2 MTE2 (HWCAP2_MTE), 3 MTE3 (HWCAP2_MTE3).
    pub level: u8,
    /// Where it was read, and the raw bits, in words.
    pub source: String,
}

/// The SVE the lane's VMM can give a vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SveOffer {
    /// The vector lengths offered, in bytes, shortest first.
    pub vector_lengths: Vec<u32>,
    /// Where they were read, in words, with the raw bits.
    pub source: String,
}

/// The IPA (guest physical address) sizes a VM may have (`KVM_VM_TYPE_ARM_IPA_SIZE` at
/// KVM_CREATE_VM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpaSizes {
    /// The size of the VMs the lane makes for the checks.
    pub suite_bits: u32,
    /// The largest the host's KVM gives (KVM_CAP_ARM_VM_IPA_SIZE); `None` without the
    /// capability, where every VM has KVM's default.
    pub host_limit: Option<u32>,
}

/// A VM created with an IPA space of some size, offered a one-page memslot on the last page
/// below an IPA and one at it, and closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpaProbe {
    /// KVM_CREATE_VM.
    pub create: std::time::Duration,
    /// KVM_SET_USER_MEMORY_REGION of the last page below the IPA: Ok or errno.
    pub below: Result<(), i32>,
    /// KVM_SET_USER_MEMORY_REGION of the page at the IPA: Ok or errno.
    pub at: Result<(), i32>,
    /// Closing the VM's fd: its stage-2 tables freed.
    pub teardown: std::time::Duration,
}

/// The VMM under test, as a lane offers it.
pub trait Vmm: Sync {
    /// Where this VMM runs.
    fn lane(&self) -> Lane;

    /// Boot a payload and run it to its first doorbell.
    fn boot(&self, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError>;

    /// A bare VM for ABI probes: created, RAM memslot added, MTE enabled if `mte`, no vCPU.
    /// Lanes without KVM answer [`VmmError::Unsupported`].
    fn abi_vm(&self, mte: bool) -> Result<Box<dyn AbiVm>, VmmError>;

    /// Ok if VMs here can have MTE (KVM_CAP_ARM_MTE), else why not.
    fn mte_capable(&self) -> Result<(), VmmError>;

    /// The kernel release under test, e.g. `6.12.95+deb12-arm64`.
    fn kernel_release(&self) -> &str;

    /// A guest in a new VM from a saved migration stream ([`Guest::save`], maybe on another
    /// kernel), stopped after the doorbell it was saved at; `fault` breaks the stream's tags as
    /// it is read (fault injection).
    fn restore(
        &self,
        _stream: &[u8],
        _fault: Option<StreamFault>,
    ) -> Result<Box<dyn Guest>, VmmError> {
        Err(not_here("restoring the suite's migration stream"))
    }

    /// Hand `bytes` to the host side, which keeps them with the run under `name` and gives
    /// them to the run's next kernel. Ok(false) where nothing is kept.
    fn keep_artifact(&self, _name: &str, _bytes: &[u8]) -> Result<bool, VmmError> {
        Ok(false)
    }

    /// The migration stream `name` that the run's previous kernel saved, if this boot was
    /// given one.
    fn incoming_stream(&self, _name: &str) -> Result<Option<IncomingStream>, VmmError> {
        Ok(None)
    }

    /// Whether a fault is injected here: the verdict shows that a comparison can fail, not
    /// what the VMM does. No report keeps the figures measured under injection, so a check
    /// that repeats a measurement takes it once; and proofs may share the set-up the injection
    /// does not touch (see [`Vmm::without_injection`]).
    fn under_injection(&self) -> bool {
        false
    }

    /// This VMM without the fault injected, for a set-up the proofs of one check share (a
    /// source guest saved once): what the proof breaks must stay on the injected VMM.
    fn without_injection(&self) -> &dyn Vmm;

    /// The MTE the host's kernel offers its own processes: what a VM with KVM_CAP_ARM_MTE should
    /// see. Lanes without KVM answer [`VmmError::Unsupported`].
    fn host_mte(&self) -> Result<HostMte, VmmError> {
        Err(not_here("reading the host's hwcaps"))
    }

    /// The SVE a vCPU booted with [`BootOptions::sve`] gets here. Lanes whose VMM gives no
    /// SVE on request answer [`VmmError::Unsupported`].
    fn sve_offer(&self) -> Result<SveOffer, VmmError> {
        Err(not_here("giving a vCPU SVE (KVM_ARM_VCPU_SVE)"))
    }

    /// The IPA sizes VMs may have here. Lanes without KVM answer [`VmmError::Unsupported`].
    fn ipa_sizes(&self) -> Result<IpaSizes, VmmError> {
        Err(not_here("choosing a VM's IPA size"))
    }

    /// Create a VM with an IPA space of `bits`, offer it memslots on the page below `top` and
    /// at `top`, and close it, timed.
    fn ipa_probe(&self, _bits: u32, _top: u64) -> Result<IpaProbe, VmmError> {
        Err(not_here("choosing a VM's IPA size"))
    }
}
