//! The identity map and `mmu_enable`.
//!
//! 4 KiB granule, 32-bit VAs (TCR_EL1.T0SZ = 32), so a single level-1 table of four 1 GiB blocks:
//!
//! | VA                                | PA            | attributes                        |
//! |-----------------------------------|---------------|-----------------------------------|
//! | 0 .. 1 GiB                        | same          | Device-nGnRnE (UART, doorbell)    |
//! | `RAM_IPA` .. +1 GiB               | same          | Normal-Tagged (MAIR 0xF0)         |
//! | `UNTAGGED_ALIAS_VA` .. +1 GiB     | `RAM_IPA` ..  | Normal, untagged (MAIR 0xFF)      |
//! | `EL0_ALIAS_VA` .. +1 GiB          | `RAM_IPA` ..  | Normal-Tagged, EL0 RW, PXN (`el0`) |
//!
//! Only the EL0 alias is open to EL0: memory writable at EL0 is never executable at EL1, so
//! the runtime's own mapping of RAM stays EL1-only.
//!
//! The RAM block's attribute index holds 0xF0 only where the CPU has tag storage (MTE2);
//! elsewhere it holds 0xFF, since 0xF0 is reserved there. The table is constant data in the
//! image, so the runtime never writes it, least of all with the caches off.
//!
//! TCR_EL1.TBI0 makes the top byte (the pointer tag) ignored by translation; TCMA0 = 0 keeps
//! tag-0 pointers checked like any other. [`set_tag_bits`] changes both at run time.

use core::arch::{asm, global_asm};
use mte_protocol::{EL0_ALIAS_VA, RAM_IPA, UNTAGGED_ALIAS_VA};

const GIB: u64 = 1 << 30;
const _: () = assert!(RAM_IPA == GIB && UNTAGGED_ALIAS_VA == 2 * GIB && EL0_ALIAS_VA == 3 * GIB);

/// MAIR_EL1 attribute indices.
const ATTR_DEVICE: u64 = 0;
const ATTR_RAM: u64 = 1;
const ATTR_UNTAGGED: u64 = 2;

/// Device-nGnRnE, Normal-Tagged, Normal write-back (inner and outer, read/write-allocate).
/// (Attribute 0, Device-nGnRnE, is the byte 0x00.)
const MAIR_TAGGED: u64 = (0xf0 << (8 * ATTR_RAM)) | (0xff << (8 * ATTR_UNTAGGED));
const MAIR_UNTAGGED: u64 = (0xff << (8 * ATTR_RAM)) | (0xff << (8 * ATTR_UNTAGGED));

/// T0SZ = 32, table walks inner/outer write-back write-allocate and inner shareable, 4 KiB
/// granule, no TTBR1 walks (EPD1), top byte ignored (TBI0). IPS is added at run time.
const TCR: u64 = 32 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23 | TCR_TBI0;

/// TCR_EL1.TBI0: the top byte of a TTBR0 address is ignored by translation (and, with MTE,
/// holds the pointer tag; without TBI no access is tag checked).
const TCR_TBI0: u64 = 1 << 37;
/// TCR_EL1.TCMA0: accesses through TTBR0 pointers whose bits 59:55 are all zero (or all ones)
/// are Tag Unchecked.
const TCR_TCMA0: u64 = 1 << 57;

/// SCTLR_EL1: set M (MMU), C (data cache), I (instruction cache).
const SCTLR_SET: u64 = 1 << 0 | 1 << 2 | 1 << 12;
/// SCTLR_EL1: clear A (alignment checks), WXN, E0E and EE (big-endian data).
const SCTLR_CLEAR: u64 = 1 << 1 | 1 << 19 | 1 << 24 | 1 << 25;

/// Level-1 block descriptor fields.
const BLOCK: u64 = 0b01;
const INNER_SHAREABLE: u64 = 3 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
/// AP[1]: EL0 may access (read and write, with AP[2] = 0) as EL1 may.
const AP_EL0: u64 = 1 << 6;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

const fn block(pa: u64, attr: u64, flags: u64) -> u64 {
    pa | BLOCK | attr << 2 | ACCESS_FLAG | flags
}

/// A table of fewer than eight entries must be 64-byte aligned.
#[repr(C, align(64))]
struct Level1([u64; 4]);

static LEVEL1: Level1 = Level1([
    block(0, ATTR_DEVICE, PXN | UXN),
    block(RAM_IPA, ATTR_RAM, INNER_SHAREABLE | UXN),
    block(RAM_IPA, ATTR_UNTAGGED, INNER_SHAREABLE | PXN | UXN),
    block(RAM_IPA, ATTR_RAM, INNER_SHAREABLE | AP_EL0 | PXN),
]);

// mmu_enable: a leaf routine (no stack, no memory writes) that the entry code calls with the
// MMU off. Clobbers x0-x2.
global_asm!(
    r#"
    .section .text.boot, "ax"
    .global mmu_enable
    .type mmu_enable, %function
mmu_enable:
    mrs     x0, id_aa64pfr1_el1
    ubfx    x0, x0, #8, #4
    cmp     x0, #2
    ldr     x1, ={mair_tagged}
    ldr     x2, ={mair_untagged}
    csel    x1, x1, x2, hs
    msr     mair_el1, x1

    // IPS = the PA size the CPU implements, at most 48 bits (the 4 KiB granule's limit here).
    mrs     x0, id_aa64mmfr0_el1
    and     x0, x0, #0xf
    mov     x1, #5
    cmp     x0, x1
    csel    x0, x0, x1, ls
    ldr     x1, ={tcr}
    bfi     x1, x0, #32, #3
    msr     tcr_el1, x1

    adrp    x0, {table}
    add     x0, x0, :lo12:{table}
    msr     ttbr0_el1, x0
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb

    mrs     x0, sctlr_el1
    ldr     x1, ={sctlr_set}
    orr     x0, x0, x1
    ldr     x1, ={sctlr_clear}
    bic     x0, x0, x1
    msr     sctlr_el1, x0
    isb
    ret
    .size mmu_enable, . - mmu_enable
"#,
    mair_tagged = const MAIR_TAGGED,
    mair_untagged = const MAIR_UNTAGGED,
    tcr = const TCR,
    sctlr_set = const SCTLR_SET,
    sctlr_clear = const SCTLR_CLEAR,
    table = sym LEVEL1,
);

/// Set TCR_EL1.TBI0 and TCR_EL1.TCMA0, then invalidate this CPU's TLB, since either may be
/// cached in TLB entries. Returns TCR_EL1 as it was.
///
/// # Safety
/// The runtime's own pointers have a zero top byte and allocation tag 0 (with TBI0 clear they
/// still translate; TCMA0 can only remove checks), so only the test accesses that follow are
/// affected, which is what the caller wants.
pub unsafe fn set_tag_bits(tbi0: bool, tcma0: bool) -> u64 {
    let previous = crate::sysreg::read!("tcr_el1");
    let mut tcr = previous & !(TCR_TBI0 | TCR_TCMA0);
    if tbi0 {
        tcr |= TCR_TBI0;
    }
    if tcma0 {
        tcr |= TCR_TCMA0;
    }
    // SAFETY: the caller accepts the new tag bits (this function's contract); the TLB
    // maintenance only drops cached translations.
    unsafe {
        crate::sysreg::write!("tcr_el1", tcr);
        asm!(
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        );
    }
    previous
}
