//! The loads and stores the host asks for, and the controls that decide whether and how they
//! are tag checked: SCTLR_EL1.TCF (and TFSR_EL1, where asynchronous faults are recorded),
//! TCR_EL1.TBI0 and TCMA0, and SP as the base register.
//!
//! The SP forms run on SP_EL0, so that the runtime's own stack (SP_EL1) stays intact whatever
//! the test pointer is: `msr spsel, #0`, `mov sp, ptr`, the access, `msr spsel, #1`, all in one
//! asm block. An abort of the access is taken on SP_EL1 (vector origin "current EL with
//! SP_EL0"), skipped by `vectors`, and the `eret` resumes with SP_EL0 at the `msr spsel, #1`,
//! so SP and SPSel are restored on both paths.

use core::arch::asm;
use mte_protocol::{access_kind, with_tag};

use crate::args::{Refusal, bulk_range, check_access, require_tag_storage, tcf_mode};
use crate::{bulk, mailbox, mmu, mte, vectors};

/// What the SP forms add to SP: the immediate of `[sp, #8]`.
const SP_OFFSET: u64 = 8;

/// `Load`: a 64-bit load through `ptr`; `result = [value, faulted]`.
pub fn load(ptr: u64) -> Result<(), Refusal> {
    check_access(ptr)?;
    let (value, faulted) = vectors::catching_aborts(|| {
        let mut value = 0u64;
        // SAFETY: 8 bytes of RAM (checked); an abort is caught and skipped.
        unsafe { asm!("ldr {v}, [{p}]", v = inout(reg) value, p = in(reg) ptr, options(nostack)) };
        value
    });
    mailbox::set_result(0, value);
    mailbox::set_result(1, faulted as u64);
    Ok(())
}

/// `Store`: a 64-bit store through `ptr`; `result = [faulted]`.
pub fn store(ptr: u64, value: u64) -> Result<(), Refusal> {
    check_access(ptr)?;
    let ((), faulted) = vectors::catching_aborts(|| {
        // SAFETY: 8 bytes of RAM (checked) that the host gave over; an abort is caught.
        unsafe { asm!("str {v}, [{p}]", v = in(reg) value, p = in(reg) ptr, options(nostack)) };
    });
    mailbox::set_result(0, faulted as u64);
    Ok(())
}

/// `AccessRange`: one load or store through tag `tag` at each granule of the range; a fault is
/// caught and recorded in the bulk buffer (1 a faulting granule). `result = [faults]`.
pub fn access_range(addr: u64, len: u64, kind: u64, tag: u64) -> Result<(), Refusal> {
    let (addr, len) = bulk_range(addr, len)?;
    if kind > access_kind::STORE {
        return Err(2);
    }
    if tag > 0xf {
        return Err(3);
    }
    let mut faults = 0u64;
    for (i, granule) in (addr..addr + len).step_by(16).enumerate() {
        let ptr = with_tag(granule, tag as u8);
        let ((), faulted) = vectors::catching_aborts(|| {
            // SAFETY: the first word of a granule of test RAM (checked by `bulk_range`), which
            // the host gave over; an abort is caught and skipped.
            unsafe {
                if kind == access_kind::LOAD {
                    asm!("ldr xzr, [{p}]", p = in(reg) ptr, options(nostack, readonly));
                } else {
                    asm!("str {p}, [{p}]", p = in(reg) ptr, options(nostack));
                }
            }
        });
        bulk::set_byte(i, faulted as u8);
        faults += faulted as u64;
    }
    mailbox::set_result(0, faults);
    Ok(())
}

/// `SetTcf`: `result = [previous mode]`.
pub fn set_tcf(mode: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    let mode = tcf_mode(mode, 0)?;
    mailbox::set_result(0, mte::set_tcf(mode));
    Ok(())
}

/// `ReadTfsr`: `result = [TFSR_EL1]`, cleared after.
pub fn read_tfsr() -> Result<(), Refusal> {
    require_tag_storage()?;
    mailbox::set_result(0, mte::take_tfsr());
    Ok(())
}

pub fn set_tag_tcr(tbi0: u64, tcma0: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    if tbi0 > 1 {
        return Err(0);
    }
    if tcma0 > 1 {
        return Err(1);
    }
    // SAFETY: see `set_tag_bits`.
    let previous = unsafe { mmu::set_tag_bits(tbi0 == 1, tcma0 == 1) };
    mailbox::set_result(0, previous);
    Ok(())
}

/// A pointer SP may hold for the SP forms: 16-byte aligned (SCTLR_EL1.SA may check it), its
/// accessed word in RAM or the untagged alias.
fn check_sp_pointer(ptr: u64) -> Result<(), Refusal> {
    if !ptr.is_multiple_of(16) {
        return Err(0);
    }
    check_access(ptr + SP_OFFSET)
}

/// `$access` (a load or store of `{v}` at `[sp, #{offset}]`) with SP_EL0 selected and set to
/// `{p}`, then SP_EL1 selected again.
macro_rules! on_sp_el0 {
    ($access:literal, $($operands:tt)*) => {
        asm!(
            "msr spsel, #0",
            "mov sp, {p}",
            $access,
            "msr spsel, #1",
            $($operands)*
            offset = const SP_OFFSET,
            options(nostack),
        )
    };
}

pub fn load_via_sp(ptr: u64, writeback: u64) -> Result<(), Refusal> {
    check_sp_pointer(ptr)?;
    if writeback > 1 {
        return Err(1);
    }
    let (value, faulted) = vectors::catching_aborts(|| {
        let mut value = 0u64;
        // SAFETY: SP_EL1 is untouched (only SP_EL0, which nothing else uses, takes the test
        // pointer); the accessed word is RAM (checked); an abort is caught and skipped to the
        // `msr spsel, #1`. Interrupts are masked.
        unsafe {
            if writeback == 1 {
                on_sp_el0!("ldr {v}, [sp, #{offset}]!", v = inout(reg) value, p = in(reg) ptr,)
            } else {
                on_sp_el0!("ldr {v}, [sp, #{offset}]", v = inout(reg) value, p = in(reg) ptr,)
            }
        };
        value
    });
    mailbox::set_result(0, value);
    mailbox::set_result(1, faulted as u64);
    Ok(())
}

pub fn store_via_sp(ptr: u64, value: u64, writeback: u64) -> Result<(), Refusal> {
    check_sp_pointer(ptr)?;
    if writeback > 1 {
        return Err(2);
    }
    let ((), faulted) = vectors::catching_aborts(|| {
        // SAFETY: as in `load_via_sp`; the word is RAM the host gave over.
        unsafe {
            if writeback == 1 {
                on_sp_el0!("str {v}, [sp, #{offset}]!", v = in(reg) value, p = in(reg) ptr,)
            } else {
                on_sp_el0!("str {v}, [sp, #{offset}]", v = in(reg) value, p = in(reg) ptr,)
            }
        };
    });
    mailbox::set_result(0, faulted as u64);
    Ok(())
}
