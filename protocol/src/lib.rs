//! The host/guest protocol: guest memory layout, the mailbox and the commands.
//!
//! Shared by the bare-metal payloads (guest side) and the runner (host side), so it is `no_std`
//! and free of dependencies. The guest is a small interpreter of host commands: it boots, fills
//! in its identity (ID registers), rings the doorbell and waits; on every doorbell the host reads
//! the results of the previous command from the mailbox, acts on the host side (copy tags, fork,
//! page out, migrate, ...), writes the next command and resumes the guest. Scenario logic thus
//! lives on the host and is the same for every VMM.
//!
//! Layout of guest physical memory (identity mapped by the payload):
//!
//! | IPA range                   | what                                             |
//! |-----------------------------|--------------------------------------------------|
//! | `0x0900_0000`               | PL011 data register: guest console bytes         |
//! | [`DOORBELL_IPA`]            | doorbell: a 32-bit store exits to the VMM        |
//! | [`ABORTING_DEVICE_IPA`]     | a read takes an external abort the VMM injects   |
//! | [`MAILBOX_IPA`], 4 KiB      | the [`Mailbox`] of vCPU 0; vCPU n's is n pages on ([`mailbox_ipa`]) |
//! | [`START_BARRIER_IPA`]       | the [`StartBarrier`] that lines vCPUs up         |
//! | [`BULK_IPA`], [`BULK_SIZE`] | vCPU 0's bulk buffer: tag maps and data patterns |
//! | [`PAYLOAD_IPA`]             | payload image, stacks, page tables               |
//! | [`SECONDARY_BULK_IPA`]      | the other vCPUs' bulk buffers ([`bulk`])         |
//! | [`TEST_RAM_IPA`] ..         | test RAM: the memory scenarios tag and touch     |
//!
//! The 1 GiB block holding RAM is mapped Normal-Tagged (MAIR 0xF0). The same physical RAM is
//! also visible untagged (Normal, MAIR 0xFF) at [`UNTAGGED_ALIAS_VA`], and tagged but open to
//! EL0 at [`EL0_ALIAS_VA`], where the payload's EL0 code runs.
//!
//! A guest may have up to [`MAX_VCPUS`] vCPUs. vCPU 0 boots at the payload's entry; it starts
//! the others with PSCI CPU_ON when the host asks ([`Command::CpuOn`]). Each vCPU has its own
//! mailbox, bulk buffer and stack, rings the same doorbell (the VMM knows which vCPU exited)
//! and serves its own commands; a command posted with [`START_TOGETHER`] waits at the
//! [`StartBarrier`] until the host lets every waiting vCPU go at once.
#![no_std]

/// Protocol version: bump on any incompatible change to the mailbox or the commands.
pub const PROTOCOL_VERSION: u32 = 3;
/// Written by the guest into [`Mailbox::magic`] once its runtime is up.
pub const MAILBOX_MAGIC: u32 = 0x4d54_4531; // "MTE1"

pub const RAM_IPA: u64 = 0x4000_0000;
/// Guest RAM size the KVM backend gives every VM.
pub const RAM_SIZE: u64 = 64 << 20;
pub const MAILBOX_IPA: u64 = RAM_IPA;
pub const BULK_IPA: u64 = RAM_IPA + 0x1_0000;
pub const BULK_SIZE: u64 = 0x7_0000;
/// Link address of every payload (QEMU's virt machine keeps its DTB below it).
pub const PAYLOAD_IPA: u64 = RAM_IPA + 0x8_0000;
/// The most vCPUs a guest may have (its vCPU ids, and so MPIDR_EL1.Aff0, are 0 to 7).
pub const MAX_VCPUS: usize = 8;
/// The page of the [`StartBarrier`], after the mailboxes of every vCPU.
pub const START_BARRIER_IPA: u64 = MAILBOX_IPA + MAX_VCPUS as u64 * PAGE_SIZE;
/// The bulk buffers of vCPUs 1 and up, [`SECONDARY_BULK_SIZE`] each, above the payload image.
pub const SECONDARY_BULK_IPA: u64 = RAM_IPA + 0x40_0000;
pub const SECONDARY_BULK_SIZE: u64 = 0x1_0000;
pub const TEST_RAM_IPA: u64 = RAM_IPA + 0x100_0000;
pub const TEST_RAM_SIZE: u64 = RAM_IPA + RAM_SIZE - TEST_RAM_IPA;
/// VA at which RAM is mapped a second time, Normal but not tagged.
pub const UNTAGGED_ALIAS_VA: u64 = 0x8000_0000;
/// VA at which RAM is mapped a third time, Normal-Tagged and open to EL0 (read, write,
/// execute; never executable at EL1): where the payload's EL0 code runs and accesses memory.
pub const EL0_ALIAS_VA: u64 = 0xc000_0000;

/// The EL0 alias of a pointer into RAM, its top byte (the tag) kept.
pub const fn el0_alias(ptr: u64) -> u64 {
    ptr - RAM_IPA + EL0_ALIAS_VA
}

/// A store here leaves the guest: KVM_EXIT_MMIO on KVM (no memslot covers it).
pub const DOORBELL_IPA: u64 = 0x0b00_0000;
/// PL011 UART data register, as on QEMU's virt machine.
pub const UART_IPA: u64 = 0x0900_0000;

pub const PAGE_SIZE: u64 = 4096;
/// One MTE tag covers one granule of 16 bytes.
pub const GRANULE: u64 = 16;

/// Where a pointer's logical tag lives: bits 59:56.
pub const TAG_SHIFT: u32 = 56;

// The layout is ordered and page aligned; checked when either side compiles.
const _: () = {
    assert!(MAILBOX_IPA + PAGE_SIZE <= BULK_IPA);
    assert!(START_BARRIER_IPA + PAGE_SIZE <= BULK_IPA);
    assert!(BULK_IPA + BULK_SIZE <= PAYLOAD_IPA);
    assert!(PAYLOAD_IPA < SECONDARY_BULK_IPA);
    assert!(SECONDARY_BULK_IPA + (MAX_VCPUS as u64 - 1) * SECONDARY_BULK_SIZE <= TEST_RAM_IPA);
    assert!(core::mem::size_of::<StartBarrier>() <= PAGE_SIZE as usize);
    assert!(TEST_RAM_IPA % PAGE_SIZE == 0 && TEST_RAM_SIZE % PAGE_SIZE == 0);
    assert!(core::mem::size_of::<Mailbox>() <= PAGE_SIZE as usize);
};

/// Where vCPU `vcpu`'s mailbox lives.
pub const fn mailbox_ipa(vcpu: usize) -> u64 {
    MAILBOX_IPA + vcpu as u64 * PAGE_SIZE
}

/// Where vCPU `vcpu`'s bulk buffer lives and how long it is: vCPU 0 has the large one.
pub const fn bulk(vcpu: usize) -> (u64, u64) {
    match vcpu {
        0 => (BULK_IPA, BULK_SIZE),
        n => (
            SECONDARY_BULK_IPA + (n as u64 - 1) * SECONDARY_BULK_SIZE,
            SECONDARY_BULK_SIZE,
        ),
    }
}

/// Give `addr` the logical tag `tag` (bits 59:56).
pub const fn with_tag(addr: u64, tag: u8) -> u64 {
    (addr & !(0xf << TAG_SHIFT)) | (((tag & 0xf) as u64) << TAG_SHIFT)
}

/// The logical tag of a pointer.
pub const fn tag_of(addr: u64) -> u8 {
    ((addr >> TAG_SHIFT) & 0xf) as u8
}

/// Number of granules in `len` bytes.
pub const fn granules(len: u64) -> usize {
    (len / GRANULE) as usize
}

/// Guest -> host: what the guest reports with a doorbell.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not yet written (the mailbox is zero at boot).
    Empty = 0,
    /// The runtime is up; ID registers are filled in; waiting for the first command.
    Booted = 1,
    /// The previous command completed; its results are in the mailbox.
    Done = 2,
    /// The previous command was malformed (unknown code, bad range); `result[0]` says which
    /// argument.
    BadCommand = 3,
    /// An exception the runtime did not expect; the [`Mailbox::fault`] record says which. The
    /// guest stops after reporting it.
    Panic = 4,
}

impl Status {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Empty,
            1 => Self::Booted,
            2 => Self::Done,
            3 => Self::BadCommand,
            4 => Self::Panic,
            _ => return None,
        })
    }
}

/// Host -> guest: the next thing to do. Arguments go in [`Mailbox::args`]; addresses are guest
/// VAs (identity mapped, so equal to IPAs except for a pointer tag in bits 59:56 and the untagged
/// alias). Ranges must be granule aligned.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Do nothing; report Done.
    Nop = 0,
    /// `args = [addr, len]`: give every granule a random tag (IRG, honouring GCR_EL1's exclude
    /// mask) and store it (STG). The chosen tags go to the bulk buffer, one byte per granule.
    TagRandom = 1,
    /// `args = [addr, len]`: store the tags found in the bulk buffer (one byte per granule, low
    /// nibble) with STG.
    TagFromBulk = 2,
    /// `args = [addr, len]`: read every granule's tag with LDG into the bulk buffer.
    ReadTags = 3,
    /// `args = [ptr]`: a 64-bit load through `ptr` (tag in bits 59:56).
    /// `result = [value, faulted]`; a fault fills [`Mailbox::fault`].
    Load = 4,
    /// `args = [ptr, value]`: a 64-bit store through `ptr`. `result = [faulted]`.
    Store = 5,
    /// `args = [tcf]`: set SCTLR_EL1.TCF (0 none, 1 sync, 2 async, 3 asymmetric). Clears
    /// TFSR_EL1. `result = [previous tcf]`.
    SetTcf = 6,
    /// `args = [addr, len, seed]`: fill the range with a data pattern derived from `seed`
    /// (untagged alias, so tags are not checked and stay as they are).
    FillPattern = 7,
    /// `args = [addr, len, seed]`: check the range against that pattern. `result = [mismatches,
    /// first mismatching offset or u64::MAX]`.
    CheckPattern = 8,
    /// `result = [TFSR_EL1]`, then clear TFSR_EL1.
    ReadTfsr = 9,
    /// PSCI SYSTEM_OFF: the guest powers off; no reply.
    PowerOff = 10,
    /// Spin forever with interrupts masked; no reply. Only the VMM's deadline ends it, which
    /// is what the suite's self-checks of that deadline need.
    Spin = 11,
    /// `args = [tbi0, tcma0]` (each 0 or 1): set TCR_EL1.TBI0 (bit 37) and TCR_EL1.TCMA0
    /// (bit 57), then invalidate the TLB (both fields may be cached there). `result = [previous
    /// TCR_EL1]`.
    SetTagTcr = 12,
    /// `args = [ptr, writeback]`: a 64-bit load from `ptr + 8` with SP as the base register:
    /// SP_EL0 is selected and set to `ptr` (16-byte aligned), then `ldr xt, [sp, #8]`, or with
    /// `writeback = 1` the pre-indexed `ldr xt, [sp, #8]!`, then SP_EL1 is selected again.
    /// `result = [value, faulted]`; a fault fills [`Mailbox::fault`] (vector 4: taken from SP_EL0).
    LoadViaSp = 13,
    /// `args = [ptr, value, writeback]`: the store of `value` to `ptr + 8` in the same way
    /// (`str xt, [sp, #8]` or `str xt, [sp, #8]!`). `result = [faulted]`.
    StoreViaSp = 14,
    /// `args = [exclude, count, xm]`: with GCR_EL1.Exclude = `exclude` (16 bits) for the duration,
    /// run `irg xd, xn, xm` `count` times with `xm` as the exclude operand and write each chosen
    /// tag to the bulk buffer, one byte each. GCR_EL1 is restored after. `result = [GCR_EL1 as
    /// it was and is again]`.
    IrgSample = 15,
    /// `args = [addr, exclude]`: with GCR_EL1.Exclude = `exclude` for the duration, for each
    /// encoding `e` of [`ADDSUBG_ENCODINGS`] and each start tag `t` in 0..16, compute
    /// `addg` and `subg` of `with_tag(addr, t)` and write the 64-bit results to the bulk buffer
    /// as little-endian words: word `(e * 16 + t) * 2` is ADDG's, the next SUBG's.
    /// `result = [words written]`.
    AddSubTag = 16,
    /// `args = [addr, masks[0..GMI_MASKS]]`: for each tag `t` in 0..16 and each mask `k`, write
    /// `gmi xd, with_tag(addr, t), masks[k]` to bulk word `t * GMI_MASKS + k` (little-endian).
    Gmi = 17,
    /// `args = [form, addr, len, seed]`: store the tags found in the bulk buffer (one byte per
    /// granule) over the range with one of the [`tag_store`] forms. The pair forms (ST2G,
    /// STZ2G) take the tag of every even granule for it and the next one (`len` a multiple of
    /// 32); STGP stores the data pair `pattern_word(seed, o)`, `pattern_word(seed, o + 8)` with
    /// `o` the granule's offset from `addr`.
    StoreTags = 18,
    /// `args = [addr, tags]`: `stgm tags, [addr]`: the tags of the GMID_EL1.BS block holding
    /// `addr`, from the nibbles of `tags` (nibble `(a >> 4) & 0xf` for the granule at `a`).
    StoreTagsBlock = 19,
    /// `args = [addr]`: `ldgm xt, [addr]`; the 64-bit result goes to the bulk buffer
    /// (little-endian, 8 bytes).
    LoadTagsBlock = 20,
    /// `args = [op, ptr]`: `dc gva, ptr` (`op` [`dc_tags::GVA`]) or `dc gzva, ptr`
    /// ([`dc_tags::GZVA`]) on the DCZID_EL0.BS block holding `ptr`. Refused with
    /// [`refusal::PROHIBITED`] where DCZID_EL0.DZP is set.
    DcTags = 21,
    /// `args = [addr, len]`: copy the bytes of the range to the bulk buffer through the
    /// untagged alias (so neither checking nor changing tags).
    ReadData = 22,
    /// `args = [addr, len]`: re-tag the range pass after pass, each pass giving every granule a
    /// fresh random tag (IRG+STG) and setting `result[0]` to the passes done, until the host
    /// writes a nonzero value to `args[STOP_ARG]` while it runs; then read every granule's tag
    /// with LDG into the bulk buffer (the tags the guest leaves behind). Its writes change tags
    /// only, never data: what a migration's dirty tracking must still notice.
    RetagUntilStopped = 23,
    /// `args = [family, addr, passes, tcf]`: with SCTLR_EL1.TCF = `tcf` (a [`tcf`] value) for
    /// the duration, run `passes` passes of one [`timed`] instruction family over the 4 KiB
    /// page at `addr` (page aligned, in test RAM), timed with the guest's virtual counter.
    /// `result = [CNTVCT_EL0 ticks of all passes, CNTFRQ_EL0]`. Leaves the page's tags (and,
    /// for the zeroing forms, its data) as the last pass wrote them.
    TimeInstructions = 24,
    /// `args = [count]`: start vCPUs 1 to `count - 1` with PSCI CPU_ON (MPIDR_EL1 = the vCPU's
    /// number, context id = the same), each at the payload's secondary entry, where it sets up
    /// its MMU and MTE registers as vCPU 0 did, fills in its mailbox and rings the doorbell.
    /// Only vCPU 0 takes it. `result[n - 1]` = PSCI's return value for vCPU n (0 success).
    CpuOn = 25,
    /// `args = [addr, len, kind, tag]`: one 64-bit access of [`access_kind`] `kind` to the
    /// first word of every granule of the range, through a pointer with logical tag `tag`,
    /// tag checked as SCTLR_EL1.TCF says; a tag check fault is recorded and skipped. The bulk
    /// buffer gets one byte a granule: 1 where the access faulted. `result = [faults]`.
    AccessRange = 26,
    /// `args = [addr]` (a granule of test RAM): what the guest can do with tags whatever its ID
    /// registers say, each step's UNDEFINED exception caught instead of being a panic. With
    /// SCTLR_EL1.ATA set for the duration: STG of tag [`PROBE_TAG`] to `addr`, LDG of it,
    /// and a read of GCR_EL1. Never refused for want of MTE. The bulk buffer gets four
    /// little-endian words: the ESR of STG's exception (0 for none), LDG's, the tag LDG read
    /// (0 where it raised one) and GCR_EL1's read's.
    ProbeTagAccess = 27,
    /// `args = [tcf0]`: set SCTLR_EL1.TCF0 (a [`tcf`] value: how EL0's accesses, and EL1's
    /// unprivileged ones, are tag checked) and SCTLR_EL1.ATA0 = 1 (without it EL0's accesses
    /// are Tag Unchecked); clears TFSRE0_EL1. `result = [previous tcf0]`.
    SetTcf0 = 28,
    /// `args = [kind, ptr, value]`: one 64-bit access of [`access_kind`] `kind` run at EL0,
    /// through `ptr`'s EL0 alias ([`el0_alias`]: the tag kept). A data abort from EL0 is
    /// recorded in [`Mailbox::fault`] (vector 8: lower EL) and skipped. `result = [value
    /// loaded (0 for a store or where the load faulted), faulted]`.
    El0Access = 29,
    /// `args = [kind, ptr, value]`: the same access from EL1 with the unprivileged forms
    /// (LDTR, STTR) through `ptr`'s EL0 alias; a data abort is recorded (vector 0) and skipped.
    /// `result = [value, faulted]`.
    UnprivilegedAccess = 30,
    /// `result = [SCTLR_EL1, GCR_EL1, RGSR_EL1, TFSR_EL1, TFSRE0_EL1]`, read after a DSB (so
    /// every asynchronous fault so far is in the TFSRs), nothing cleared.
    ReadMteRegisters = 31,
    /// `args = [ptr, form, value]`: one 64-bit access of [`priority_form`] `form` through `ptr`
    /// (any alignment; its 8 bytes in RAM or its untagged alias, or `ptr` at or above
    /// [`UNTRANSLATED_VA`]), a data abort recorded and skipped. The `*_ALIGNMENT_CHECKED` forms
    /// set SCTLR_EL1.A for the access alone. `result = [value loaded (0 if it aborted; the
    /// status for STXR), faulted]`; a fault fills [`Mailbox::fault`].
    PriorityAccess = 32,
    /// `args = [len]`: enable SVE at EL1 (CPACR_EL1.ZEN = 0b11) and ask for a vector length of
    /// `len + 1` quadwords (ZCR_EL1.LEN, 0..=15; the CPU gives the largest it has up to that).
    /// Refused with [`refusal::NO_SVE`] where ID_AA64PFR0_EL1.SVE is 0. `result = [vector length
    /// in bytes (RDVL), ID_AA64PFR0_EL1, ID_AA64ZFR0_EL1, ZCR_EL1 as read back]`.
    SveEnable = 33,
    /// `args = [op, ptr]`: one SVE access of [`sve_op`] `op`, all elements active, tag checked
    /// as SCTLR_EL1.TCF says; a data abort is recorded and skipped. Needs [`Command::SveEnable`]
    /// first (else refused with [`refusal::NO_SVE`]). The bulk buffer, with VL the vector
    /// length in bytes: `[0, VL)` the data vector (what a load read; what a store stores, from
    /// the host), `[VL, 2 VL)` the 64-bit pointers of a gather or scatter (from the host; `ptr`
    /// unused), `[2 VL, 2 VL + VL / 8)` the FFR after the access (set before it), one bit a
    /// byte of the vector. `result = [faulted]`.
    SveAccess = 34,
    /// `args = [trigger, tco]`: set PSTATE.TCO to `tco` (0 or 1), raise one synchronous
    /// exception of [`exception_trigger`] `trigger` at EL1, and skip it in the handler. The
    /// bulk buffer gets [`exception_tco`]'s bytes: PSTATE.TCO on entry to the handler, SPSR_EL1.TCO
    /// there, and PSTATE.TCO after the handler's ERET. `result = [ESR_EL1, SPSR_EL1, caught,
    /// ID_AA64DFR0_EL1]`.
    /// PSTATE.TCO is 0 again after the command. Refused with [`refusal::NO_MTE`] without
    /// FEAT_MTE (no TCO to set).
    ExceptionTco = 35,
}

/// The order of [`Command::ReadMteRegisters`]'s results.
pub mod mte_registers {
    pub const SCTLR_EL1: usize = 0;
    pub const GCR_EL1: usize = 1;
    pub const RGSR_EL1: usize = 2;
    pub const TFSR_EL1: usize = 3;
    pub const TFSRE0_EL1: usize = 4;
}

/// SCTLR_EL1's tag-check fields: TCF (EL1) and TCF0 (EL0 and unprivileged accesses).
pub mod sctlr {
    pub const fn tcf(sctlr: u64) -> u64 {
        (sctlr >> 40) & 3
    }
    pub const fn tcf0(sctlr: u64) -> u64 {
        (sctlr >> 38) & 3
    }
    /// ATA0: EL0 may use allocation tags, and its accesses can be tag checked.
    pub const fn ata0(sctlr: u64) -> bool {
        sctlr & (1 << 42) != 0
    }
}

/// Reads here are answered by the suite's KVM VMM with an external data abort it asks KVM to
/// inject (KVM_SET_VCPU_EVENTS, `ext_dabt_pending`), as a VMM does for an access no device
/// decodes. Mapped as Device memory in the guest, no memslot covers it.
pub const ABORTING_DEVICE_IPA: u64 = 0x0c00_0000;

/// The exceptions [`Command::ExceptionTco`] raises, and who raises each.
pub mod exception_trigger {
    /// `udf #0`: UNDEFINED, raised by the CPU.
    pub const UNDEFINED_INSTRUCTION: u64 = 0;
    /// A load from [`crate::UNTRANSLATED_VA`]: a translation fault at stage 1, raised by the CPU
    /// without leaving the guest.
    pub const TRANSLATION_FAULT: u64 = 1;
    /// A load from [`crate::ABORTING_DEVICE_IPA`]: an MMIO exit, answered with an external data
    /// abort that KVM injects at the VMM's request.
    pub const INJECTED_EXTERNAL_ABORT: u64 = 2;
    /// `mrs x, pmcr_el0` where ID_AA64DFR0_EL1.PMUVer is 0: in a KVM vCPU without a PMU the
    /// read traps to KVM (MDCR_EL2.TPM), which hides the register and injects UNDEFINED.
    pub const HIDDEN_PMU_REGISTER: u64 = 3;
    pub const LAST: u64 = HIDDEN_PMU_REGISTER;
}

/// Where [`Command::ExceptionTco`] puts its bytes in the bulk buffer (each 0 or 1).
pub mod exception_tco {
    /// PSTATE.TCO read first thing in the exception handler.
    pub const ON_ENTRY: usize = 0;
    /// SPSR_EL1.TCO (bit 25) in the handler: the interrupted PSTATE.TCO as saved.
    pub const SAVED: usize = 1;
    /// PSTATE.TCO after the handler's ERET, back in the command.
    pub const AFTER_RETURN: usize = 2;
    pub const LEN: usize = 3;
}

/// SPSR_ELx.TCO: PSTATE.TCO as saved on exception entry.
pub const SPSR_TCO: u64 = 1 << 25;

/// The first VA the guest's TTBR0 does not translate (TCR_EL1.T0SZ = 32): an access at or
/// above it takes a translation fault.
pub const UNTRANSLATED_VA: u64 = 1 << 32;

/// The forms of [`Command::PriorityAccess`], each one instruction on a 64-bit register.
pub mod priority_form {
    /// LDR, SCTLR_EL1.A clear (misaligned accesses allowed).
    pub const LOAD: u64 = 0;
    /// STR of `value`, SCTLR_EL1.A clear.
    pub const STORE: u64 = 1;
    /// LDR with SCTLR_EL1.A set.
    pub const LOAD_ALIGNMENT_CHECKED: u64 = 2;
    /// STR of `value` with SCTLR_EL1.A set.
    pub const STORE_ALIGNMENT_CHECKED: u64 = 3;
    /// LDXR.
    pub const LOAD_EXCLUSIVE: u64 = 4;
    /// LDAXR.
    pub const LOAD_ACQUIRE_EXCLUSIVE: u64 = 5;
    /// STXR of `value` (no LDXR before it: the monitor is open, so it may fail, never
    /// write).
    pub const STORE_EXCLUSIVE: u64 = 6;
    /// LDADD of `value` (FEAT_LSE; refused with `PROHIBITED` without it).
    pub const ATOMIC_ADD: u64 = 7;
    /// CAS comparing with 0, swapping in `value` (FEAT_LSE).
    pub const COMPARE_AND_SWAP: u64 = 8;
    /// LDR through `ptr`'s EL0 alias ([`crate::el0_alias`], the tag kept) with PSTATE.PAN
    /// set: EL1 may not access memory EL0 may (FEAT_PAN; refused with `PROHIBITED` without
    /// it).
    pub const LOAD_PAN: u64 = 9;
    /// STR of `value` the same way.
    pub const STORE_PAN: u64 = 10;
    /// LDR through `ptr`'s EL0 alias with PSTATE.PAN clear: the control of [`LOAD_PAN`].
    pub const LOAD_EL0_ALIAS: u64 = 11;
    pub const LAST: u64 = LOAD_EL0_ALIAS;
}

/// The tag [`Command::ProbeTagAccess`] stores.
pub const PROBE_TAG: u8 = 0x5;

/// The mailbox argument the host sets (nonzero) to end [`Command::RetagUntilStopped`].
pub const STOP_ARG: usize = 7;

/// A bit of [`Mailbox::command`]: wait at the [`StartBarrier`] before running the command.
pub const START_TOGETHER: u32 = 1 << 31;

/// The kinds of [`Command::AccessRange`].
pub mod access_kind {
    pub const LOAD: u64 = 0;
    pub const STORE: u64 = 1;
}

/// The start barrier at [`START_BARRIER_IPA`], which lines up the vCPUs of a race. The host
/// sets `arrived` and `go` to 0 and each vCPU's `spins`, then posts commands with
/// [`START_TOGETHER`]. Each such vCPU adds one to `arrived` (an atomic add), waits until `go`
/// is nonzero, spins `spins[vcpu]` times and runs its command; the host, once `arrived` says
/// every vCPU is there, sets `go` when its own side of the race is ready, so the vCPUs leave
/// within a few instructions of each other and of the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartBarrier {
    pub arrived: u32,
    pub go: u32,
    /// Busy-wait iterations each vCPU makes after `go`, before its command.
    pub spins: [u64; MAX_VCPUS],
}

/// Byte offsets of the [`StartBarrier`]'s fields.
pub mod barrier_offsets {
    use super::StartBarrier;
    use core::mem::offset_of;
    pub const ARRIVED: usize = offset_of!(StartBarrier, arrived);
    pub const GO: usize = offset_of!(StartBarrier, go);
    pub const SPINS: usize = offset_of!(StartBarrier, spins);
}

impl Command {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Nop,
            1 => Self::TagRandom,
            2 => Self::TagFromBulk,
            3 => Self::ReadTags,
            4 => Self::Load,
            5 => Self::Store,
            6 => Self::SetTcf,
            7 => Self::FillPattern,
            8 => Self::CheckPattern,
            9 => Self::ReadTfsr,
            10 => Self::PowerOff,
            11 => Self::Spin,
            12 => Self::SetTagTcr,
            13 => Self::LoadViaSp,
            14 => Self::StoreViaSp,
            15 => Self::IrgSample,
            16 => Self::AddSubTag,
            17 => Self::Gmi,
            18 => Self::StoreTags,
            19 => Self::StoreTagsBlock,
            20 => Self::LoadTagsBlock,
            21 => Self::DcTags,
            22 => Self::ReadData,
            23 => Self::RetagUntilStopped,
            24 => Self::TimeInstructions,
            25 => Self::CpuOn,
            26 => Self::AccessRange,
            27 => Self::ProbeTagAccess,
            28 => Self::SetTcf0,
            29 => Self::El0Access,
            30 => Self::UnprivilegedAccess,
            31 => Self::ReadMteRegisters,
            32 => Self::PriorityAccess,
            33 => Self::SveEnable,
            34 => Self::SveAccess,
            35 => Self::ExceptionTco,
            _ => return None,
        })
    }
}

/// `result[0]` of a [`Status::BadCommand`] other than an argument index.
pub mod refusal {
    /// The CPU lacks the MTE feature the command needs (tag storage, or MTE3 for asymmetric).
    pub const NO_MTE: u64 = 0xffff_ffff_ffff_fffe;
    /// The command code is unknown to this payload.
    pub const UNKNOWN_COMMAND: u64 = u64::MAX;
    /// The CPU has the feature, but its ID registers forbid the instruction here (DCZID_EL0.DZP
    /// set for DC GVA/GZVA; a GMID_EL1.BS or DCZID_EL0.BS block size that is not architected
    /// for tags).
    pub const PROHIBITED: u64 = 0xffff_ffff_ffff_fffd;
    /// The CPU has no SVE (ID_AA64PFR0_EL1.SVE = 0), or the guest has not enabled it.
    pub const NO_SVE: u64 = 0xffff_ffff_ffff_fffc;
}

/// The accesses of [`Command::SveAccess`], every element active (PTRUE).
pub mod sve_op {
    /// `ld1b {z0.b}, p0/z, [ptr]`: VL bytes from `ptr`.
    pub const LD1B: u64 = 0;
    /// `st1b {z0.b}, p0, [ptr]`.
    pub const ST1B: u64 = 1;
    /// `ld1d {z0.d}, p0/z, [ptr]`: VL / 8 doublewords from `ptr`.
    pub const LD1D: u64 = 2;
    /// `st1d {z0.d}, p0, [ptr]`.
    pub const ST1D: u64 = 3;
    /// `ldff1d {z0.d}, p0/z, [ptr, xzr, lsl #3]`: first-faulting.
    pub const LDFF1D: u64 = 4;
    /// `ldnf1d {z0.d}, p0/z, [ptr]`: non-faulting.
    pub const LDNF1D: u64 = 5;
    /// `ld1d {z0.d}, p0/z, [z1.d]`: a gather, element `i` from the bulk buffer's pointer `i`.
    pub const GATHER_LD1D: u64 = 6;
    /// `st1d {z0.d}, p0, [z1.d]`: a scatter, element `i` to pointer `i`.
    pub const SCATTER_ST1D: u64 = 7;
    /// The largest op.
    pub const LAST: u64 = SCATTER_ST1D;
}

/// Where [`Command::SveAccess`] keeps its vectors in the bulk buffer, for a vector length of
/// `vl` bytes: the data vector, the pointer vector and the FFR.
pub const fn sve_bulk_layout(vl: u64) -> (u64, u64, u64) {
    (0, vl, 2 * vl)
}

/// The forms of [`Command::StoreTags`].
pub mod tag_store {
    pub const STG: u64 = 0;
    pub const STZG: u64 = 1;
    pub const ST2G: u64 = 2;
    pub const STZ2G: u64 = 3;
    pub const STGP: u64 = 4;
}

/// The instruction families [`Command::TimeInstructions`] times, each over a whole 4 KiB page.
pub mod timed {
    /// `stg`: one granule's tag per instruction (256 a page).
    pub const STG: u64 = 0;
    /// `st2g`: two granules' tags per instruction (128 a page).
    pub const ST2G: u64 = 1;
    /// `stzg`: one granule's tag and zero data (256 a page).
    pub const STZG: u64 = 2;
    /// `dc gzva`: the tags and zero data of a DCZID_EL0.BS block per instruction.
    pub const DC_GZVA: u64 = 3;
    /// `stgm`: the tags of a GMID_EL1.BS block per instruction (EL1 only).
    pub const STGM: u64 = 4;
    /// `str`: 64-bit data stores through a pointer whose tag matches the page's (512 a page):
    /// the tag-checked access the other families are compared with.
    pub const STR: u64 = 5;
    /// Every family, in order, with the name the host reports it under.
    pub const ALL: [(u64, &str); 6] = [
        (STG, "stg"),
        (ST2G, "st2g"),
        (STZG, "stzg"),
        (DC_GZVA, "dc_gzva"),
        (STGM, "stgm"),
        (STR, "str"),
    ];
}

/// The operations of [`Command::DcTags`].
pub mod dc_tags {
    /// DC GVA: set the tags of a block, keep its data.
    pub const GVA: u64 = 0;
    /// DC GZVA: set the tags of a block and zero its data.
    pub const GZVA: u64 = 1;
}

/// The ADDG/SUBG encodings [`Command::AddSubTag`] runs: `(byte offset, tag offset)`, i.e.
/// `uimm6 * 16` (0..=1008) and `uimm4` (0..=15). The guest assembles them as immediates.
pub const ADDSUBG_ENCODINGS: [(u64, u64); 6] =
    [(0, 0), (0, 1), (16, 3), (80, 7), (512, 9), (1008, 15)];

/// The number of masks [`Command::Gmi`] takes.
pub const GMI_MASKS: usize = 7;

/// Fields of the ID registers the tag instructions depend on.
pub mod id {
    /// GMID_EL1.BS: the bytes LDGM and STGM cover (`4 << BS`), where BS is one the
    /// architecture allows (2..=6, 16 to 256 bytes).
    pub const fn gmid_block_bytes(gmid: u64) -> Option<u64> {
        match gmid & 0xf {
            bs @ 2..=6 => Some(4 << bs),
            _ => None,
        }
    }
    /// DCZID_EL0.BS: the bytes DC ZVA, DC GVA and DC GZVA cover (`4 << BS`).
    pub const fn dczid_block_bytes(dczid: u64) -> u64 {
        4 << (dczid & 0xf)
    }
    /// DCZID_EL0.DZP: DC ZVA, DC GVA and DC GZVA are prohibited.
    pub const fn dczid_prohibited(dczid: u64) -> bool {
        dczid & (1 << 4) != 0
    }
}

/// Values of SCTLR_EL1.TCF.
pub mod tcf {
    pub const NONE: u64 = 0;
    pub const SYNC: u64 = 1;
    pub const ASYNC: u64 = 2;
    pub const ASYMMETRIC: u64 = 3;
}

/// What the guest's exception vectors saw. The runtime handles a synchronous data abort raised
/// by a [`Command::Load`], [`Command::Store`], [`Command::LoadViaSp`] or [`Command::StoreViaSp`]
/// by recording it here and skipping the faulting instruction; any other exception is a
/// [`Status::Panic`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultRecord {
    /// Exceptions taken since the command started.
    pub count: u64,
    pub esr: u64,
    pub far: u64,
    pub elr: u64,
    /// Which vector: the kind (0 sync, 1 IRQ, 2 FIQ, 3 SError) plus 4 × the origin (0 current
    /// EL with SP_ELx, where the runtime runs; 1 current EL with SP_EL0, as in
    /// [`Command::LoadViaSp`]; 2 lower EL, AArch64; 3 lower EL, AArch32).
    pub vector: u64,
}

/// The guest's ID registers, read once at boot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestIds {
    pub midr_el1: u64,
    pub id_aa64pfr1_el1: u64,
    /// Zero where the CPU has no MTE (GMID_EL1 is then undefined and is not read).
    pub gmid_el1: u64,
    pub dczid_el0: u64,
    pub sctlr_el1: u64,
    pub tcr_el1: u64,
    pub gcr_el1: u64,
    pub rgsr_el1: u64,
}

impl GuestIds {
    /// ID_AA64PFR1_EL1.MTE: 0 none, 1 instructions only (EL0), 2 MTE2 (tag storage), 3 MTE3.
    pub fn mte_level(&self) -> u8 {
        ((self.id_aa64pfr1_el1 >> 8) & 0xf) as u8
    }
}

/// The mailbox page at [`MAILBOX_IPA`]. Every field is naturally aligned and the struct has no
/// padding, so host and guest agree on offsets without further ado.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// [`MAILBOX_MAGIC`] once the guest runtime is up.
    pub magic: u32,
    /// [`PROTOCOL_VERSION`] of the payload.
    pub version: u32,
    /// Incremented by the guest on every doorbell.
    pub seq: u64,
    /// A [`Status`], written by the guest.
    pub status: u32,
    /// A [`Command`], written by the host.
    pub command: u32,
    pub args: [u64; 8],
    pub result: [u64; 8],
    pub fault: FaultRecord,
    pub ids: GuestIds,
}

impl Mailbox {
    pub const fn zeroed() -> Self {
        Mailbox {
            magic: 0,
            version: 0,
            seq: 0,
            status: 0,
            command: 0,
            args: [0; 8],
            result: [0; 8],
            fault: FaultRecord {
                count: 0,
                esr: 0,
                far: 0,
                elr: 0,
                vector: 0,
            },
            ids: GuestIds {
                midr_el1: 0,
                id_aa64pfr1_el1: 0,
                gmid_el1: 0,
                dczid_el0: 0,
                sctlr_el1: 0,
                tcr_el1: 0,
                gcr_el1: 0,
                rgsr_el1: 0,
            },
        }
    }

    /// The mailbox as bytes, for a host that copies it out of guest memory.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: repr(C), only integers, no padding (checked by the size test below).
        unsafe {
            core::slice::from_raw_parts(
                self as *const Self as *const u8,
                core::mem::size_of::<Self>(),
            )
        }
    }

    /// Rebuild a mailbox from bytes read out of guest memory.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: every bit pattern is a valid Mailbox (integers only); unaligned read.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const Self) })
    }
}

/// Byte offsets of the fields the host writes, so it can update them without rewriting the
/// whole page.
pub mod offsets {
    use super::Mailbox;
    use core::mem::offset_of;
    pub const STATUS: usize = offset_of!(Mailbox, status);
    pub const COMMAND: usize = offset_of!(Mailbox, command);
    pub const ARGS: usize = offset_of!(Mailbox, args);
    pub const RESULT: usize = offset_of!(Mailbox, result);
    pub const FAULT: usize = offset_of!(Mailbox, fault);
}

/// The data pattern of [`Command::FillPattern`]: one 64-bit word per 8-byte offset, so that both
/// sides can compute it. Deliberately never all-zero for a whole granule.
pub const fn pattern_word(seed: u64, offset: u64) -> u64 {
    let mut x = seed ^ offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x | 1
}

/// Exception syndrome helpers shared by both sides.
pub mod esr {
    /// ESR_ELx.EC.
    pub const fn ec(esr: u64) -> u8 {
        ((esr >> 26) & 0x3f) as u8
    }
    /// Data abort taken without a change of exception level.
    pub const EC_DABT_CUR: u8 = 0x25;
    /// Data abort taken from a lower exception level (EL0 into EL1).
    pub const EC_DABT_LOWER: u8 = 0x24;
    /// Unknown reason: an UNDEFINED instruction, or a system register access the CPU (or the
    /// hypervisor) does not give.
    pub const EC_UNKNOWN: u8 = 0x00;
    /// ISS.DFSC of a data abort.
    pub const fn dfsc(esr: u64) -> u8 {
        (esr & 0x3f) as u8
    }
    /// DFSC 0b010001: synchronous tag check fault.
    pub const DFSC_TAG_CHECK: u8 = 0x11;
    /// DFSC 0b100001: alignment fault.
    pub const DFSC_ALIGNMENT: u8 = 0x21;
    /// DFSC 0b000100: translation fault, level 0 (also an address outside TTBR0's range).
    pub const DFSC_TRANSLATION_L0: u8 = 0x04;
    /// Permission fault, level 1 (a level 1 block descriptor).
    pub const DFSC_PERMISSION_L1: u8 = 0x0d;
    /// ISS.WnR: the abort was caused by a write.
    pub const fn is_write(esr: u64) -> bool {
        esr & (1 << 6) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_fits_a_page_without_padding() {
        let size = core::mem::size_of::<Mailbox>();
        assert!(size <= PAGE_SIZE as usize);
        // 4+4+8+4+4 + 8*8 + 8*8 + 5*8 + 8*8
        assert_eq!(size, 24 + 64 + 64 + 40 + 64);
        assert_eq!(offsets::ARGS % 8, 0);
    }

    #[test]
    fn every_vcpu_has_its_own_mailbox_and_bulk_buffer() {
        let (first, _) = bulk(1);
        assert_eq!(first, SECONDARY_BULK_IPA);
        for a in 0..MAX_VCPUS {
            assert!(mailbox_ipa(a) < START_BARRIER_IPA);
            for b in a + 1..MAX_VCPUS {
                assert_ne!(mailbox_ipa(a), mailbox_ipa(b));
                let ((x, xl), (y, yl)) = (bulk(a), bulk(b));
                assert!(
                    x + xl <= y || y + yl <= x,
                    "bulk buffers of {a} and {b} overlap"
                );
            }
        }
        assert_eq!(barrier_offsets::SPINS % 8, 0);
    }

    #[test]
    fn pointer_tags_round_trip() {
        let p = with_tag(TEST_RAM_IPA, 0xb);
        assert_eq!(tag_of(p), 0xb);
        assert_eq!(with_tag(p, 0), TEST_RAM_IPA);
    }

    #[test]
    fn codes_round_trip() {
        for v in 0..=35 {
            assert_eq!(Command::from_u32(v).unwrap() as u32, v);
        }
        assert!(Command::from_u32(36).is_none());
        assert!(Command::from_u32(Command::Nop as u32 | START_TOGETHER).is_none());
        for v in 0..=4 {
            assert_eq!(Status::from_u32(v).unwrap() as u32, v);
        }
    }

    #[test]
    fn block_sizes_decode_from_the_id_registers() {
        // Seen under QEMU: GMID_EL1 = 0x6 (256 bytes), DCZID_EL0 = 0x4 (64 bytes).
        assert_eq!(id::gmid_block_bytes(0x6), Some(256));
        assert_eq!(id::gmid_block_bytes(0x4), Some(64));
        assert_eq!(id::gmid_block_bytes(0x2), Some(16));
        assert_eq!(id::gmid_block_bytes(0x1), None);
        assert_eq!(id::gmid_block_bytes(0x7), None);
        assert_eq!(id::gmid_block_bytes(0), None);
        assert_eq!(id::dczid_block_bytes(0x4), 64);
        assert_eq!(id::dczid_block_bytes(0x14), 64);
        assert!(!id::dczid_prohibited(0x4));
        assert!(id::dczid_prohibited(0x14));
    }

    #[test]
    fn addsubg_encodings_fit_their_fields() {
        for (offset, tag_offset) in ADDSUBG_ENCODINGS {
            assert!(offset % 16 == 0 && offset / 16 < 64, "uimm6 of {offset}");
            assert!(tag_offset < 16, "uimm4 {tag_offset}");
        }
    }

    #[test]
    fn tag_check_syndrome_decodes() {
        // Seen on 6.12 under QEMU: a load through a mismatched tag.
        let esr = 0x9600_0011;
        assert_eq!(esr::ec(esr), esr::EC_DABT_CUR);
        assert_eq!(esr::dfsc(esr), esr::DFSC_TAG_CHECK);
        assert!(!esr::is_write(esr));
    }
}
