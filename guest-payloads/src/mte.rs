//! MTE registers and tag instructions at EL1.
//!
//! Everything here but [`init`], [`level`] and [`has_tag_storage`] needs tag storage
//! (ID_AA64PFR1_EL1.MTE >= 2); callers check first.
//!
//! Set up by [`init`]: GCR_EL1 with RRND = 0 (the architected generator) and Exclude = 0x0001,
//! so IRG never picks tag 0 and a random tag always differs from that of untouched memory;
//! RGSR_EL1 seeded non-zero from the counter; TFSR_EL1 and TFSRE0_EL1 clear; PSTATE.TCO clear;
//! SCTLR_EL1.ATA = 1 and TCF = sync; EL0 gets no checks (TCF0 = 0, ATA0 as reset left it).

use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};
use mte_protocol::{tag_of, tcf};

use crate::sysreg;

/// GCR_EL1.Exclude: tags IRG must not choose (bit n excludes tag n).
const EXCLUDE_TAG_0: u64 = 0x0001;
/// SCTLR_EL1.TCF (tag check fault in EL1), bits 41:40.
const SCTLR_TCF_SHIFT: u32 = 40;
const SCTLR_TCF_MASK: u64 = 3 << SCTLR_TCF_SHIFT;
/// SCTLR_EL1.ATA: EL1 may access allocation tags.
const SCTLR_ATA: u64 = 1 << 43;
/// SCTLR_EL1.TCF0 (tag check fault in EL0), bits 39:38.
const SCTLR_TCF0_MASK: u64 = 3 << 38;

/// ID_AA64PFR1_EL1.MTE, read once: ID registers may trap to the hypervisor.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// Read the MTE level and, with tag storage, set MTE up. Returns the level.
pub fn init() -> u8 {
    let level = ((sysreg::read!("id_aa64pfr1_el1") >> 8) & 0xf) as u8;
    LEVEL.store(level, Ordering::Relaxed);
    if !has_tag_storage() {
        return level;
    }
    let seed = (sysreg::read!("cntvct_el0") & 0xffff) | 1;
    let sctlr = sysreg::read!("sctlr_el1") & !(SCTLR_TCF_MASK | SCTLR_TCF0_MASK);
    // SAFETY: the runtime's own memory keeps allocation tag 0 and is reached through tag-0
    // pointers, so enabling checks cannot fault it.
    unsafe {
        sysreg::write!("gcr_el1", EXCLUDE_TAG_0);
        sysreg::write!("rgsr_el1", seed << 8);
        sysreg::write!("tfsr_el1", 0);
        sysreg::write!("tfsre0_el1", 0);
        asm!(".arch_extension memtag", "msr tco, #0", options(nostack));
        sysreg::write!(
            "sctlr_el1",
            sctlr | SCTLR_ATA | tcf::SYNC << SCTLR_TCF_SHIFT
        );
    }
    level
}

/// ID_AA64PFR1_EL1.MTE: 0 none, 1 instructions only, 2 tag storage (MTE2), 3 MTE3.
pub fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

/// MTE2 or later: allocation tags exist and are checked.
pub fn has_tag_storage() -> bool {
    level() >= 2
}

/// IRG: `addr` with a random tag that GCR_EL1.Exclude allows.
pub fn random_tag(addr: u64) -> u64 {
    random_tag_excluding(addr, 0)
}

/// IRG with an exclude operand: `addr` with a random tag that neither GCR_EL1.Exclude nor
/// `xm` (bits 15:0) excludes.
pub fn random_tag_excluding(addr: u64, xm: u64) -> u64 {
    let tagged: u64;
    // SAFETY: IRG only computes a value (and advances RGSR_EL1).
    unsafe {
        asm!(
            ".arch_extension memtag",
            "irg {t}, {a}, {m}",
            t = out(reg) tagged,
            a = in(reg) addr,
            m = in(reg) xm,
            options(nomem, nostack, preserves_flags),
        )
    };
    tagged
}

/// GCR_EL1.Exclude, bits 15:0.
const GCR_EXCLUDE_MASK: u64 = 0xffff;

/// Set GCR_EL1.Exclude (its other fields kept); returns GCR_EL1 as it was, for [`restore_gcr`].
pub fn set_exclude(exclude: u64) -> u64 {
    let gcr = sysreg::read!("gcr_el1");
    // SAFETY: GCR_EL1 only steers which tags IRG, ADDG and SUBG choose.
    unsafe {
        sysreg::write!(
            "gcr_el1",
            gcr & !GCR_EXCLUDE_MASK | exclude & GCR_EXCLUDE_MASK
        )
    };
    gcr
}

/// Put back a GCR_EL1 value [`set_exclude`] returned.
pub fn restore_gcr(gcr: u64) {
    // SAFETY: as in `set_exclude`.
    unsafe { sysreg::write!("gcr_el1", gcr) };
}

/// `$insn ptr, [ptr]`: one of the tag stores that take the tag and the address from one
/// register (STG, STZG, ST2G, STZ2G). Tag Unchecked. The caller's `unsafe` block upholds what
/// [`store_tag`] asks, for every granule the instruction covers.
macro_rules! tag_store_insn {
    ($insn:literal, $ptr:expr) => {
        core::arch::asm!(
            ".arch_extension memtag",
            concat!($insn, " {p}, [{p}]"),
            p = in(reg) $ptr,
            options(nostack, preserves_flags),
        )
    };
}

/// `dc $op, ptr`: DC GVA (tags only) or DC GZVA (tags and zeroed data) of the DCZID_EL0.BS
/// block holding `ptr`, which gets `ptr`'s tag. Not tag checked. The caller's `unsafe` block
/// upholds what [`store_tag`] asks, for the whole block.
macro_rules! dc_tags_insn {
    ($op:literal, $ptr:expr) => {
        core::arch::asm!(
            ".arch_extension memtag",
            concat!("dc ", $op, ", {p}"),
            p = in(reg) $ptr,
            options(nostack, preserves_flags),
        )
    };
}

pub(crate) use {dc_tags_insn, tag_store_insn};

/// STG: give the granule at `ptr` the tag in `ptr`'s bits 59:56.
///
/// # Safety
/// The granule must be Normal-Tagged memory that nothing else relies on being tagged otherwise.
pub unsafe fn store_tag(ptr: u64) {
    // SAFETY: the caller gives a granule of Normal-Tagged memory free to retag.
    unsafe { tag_store_insn!("stg", ptr) };
}

/// STGM: set the tags of the GMID_EL1.BS block holding `addr` from the nibbles of `tags`
/// (EL1 only, which the payload is).
///
/// # Safety
/// As [`store_tag`], for the whole block.
pub unsafe fn store_tags_block(addr: u64, tags: u64) {
    // SAFETY: the caller gives a block of Normal-Tagged memory free to retag.
    unsafe {
        asm!(
            ".arch_extension memtag",
            "stgm {t}, [{a}]",
            t = in(reg) tags,
            a = in(reg) addr,
            options(nostack, preserves_flags),
        )
    };
}

/// LDG: the allocation tag of the granule at `addr`.
///
/// # Safety
/// `addr` must be mapped (LDG does not check tags but does translate).
pub unsafe fn load_tag(addr: u64) -> u8 {
    let mut ptr = addr;
    // SAFETY: the caller gives a mapped address; LDG only reads its tag.
    unsafe {
        asm!(
            ".arch_extension memtag",
            "ldg {p}, [{p}]",
            p = inout(reg) ptr,
            options(nostack, preserves_flags, readonly),
        )
    };
    tag_of(ptr)
}

/// Set SCTLR_EL1.TCF to `mode` (a `tcf` value) and clear TFSR_EL1; returns the previous mode.
/// Faults still pending from the previous mode are flushed into TFSR_EL1 and dropped.
pub fn set_tcf(mode: u64) -> u64 {
    let sctlr = sysreg::read!("sctlr_el1");
    // SAFETY: tag checks only apply to test memory accesses, which expect them.
    unsafe {
        asm!("dsb sy", "isb", options(nostack, preserves_flags));
        sysreg::write!(
            "sctlr_el1",
            sctlr & !SCTLR_TCF_MASK | (mode & 3) << SCTLR_TCF_SHIFT
        );
        sysreg::write!("tfsr_el1", 0);
    }
    (sctlr & SCTLR_TCF_MASK) >> SCTLR_TCF_SHIFT
}

/// TFSR_EL1 once every earlier access has reported, then cleared.
pub fn take_tfsr() -> u64 {
    // SAFETY: barriers only.
    unsafe { asm!("dsb sy", "isb", options(nostack, preserves_flags)) };
    let tfsr = sysreg::read!("tfsr_el1");
    // SAFETY: a status register only.
    unsafe { sysreg::write!("tfsr_el1", 0) };
    tfsr
}
