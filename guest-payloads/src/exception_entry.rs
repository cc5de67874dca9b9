//! `ExceptionTco`: what exception entry and return do to PSTATE.TCO, for an exception the CPU
//! raises and for one KVM injects.
//!
//! The Arm ARM (AArch64.TakeException) sets PSTATE.TCO to 1 on every exception taken to
//! AArch64 where FEAT_MTE is implemented, and saves the interrupted value in SPSR_ELx.TCO;
//! ERET restores it. The exception handler calls [`note_entry`] before anything else, so that
//! PSTATE.TCO is read as entry left it.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use mte_protocol::{
    ABORTING_DEVICE_IPA, MAX_VCPUS, SPSR_TCO, UNTRANSLATED_VA, exception_tco, exception_trigger,
};

use crate::args::{NO_MTE, Refusal};
use crate::{bulk, cpu, mailbox, mte, sysreg, vectors};

/// PSTATE.TCO as a system register: the bit sits where SPSR_ELx keeps it.
const TCO: u64 = SPSR_TCO;

/// PSTATE.TCO on entry and SPSR_EL1 of the last exception this vCPU took.
static ENTRY_TCO: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
static ENTRY_SPSR: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

/// Called first by the exception handler, with the SPSR_EL1 it saved: keep PSTATE.TCO as the
/// exception entry set it (nothing before this writes TCO) and the saved SPSR_EL1.
pub fn note_entry(spsr: u64) {
    let tco = if mte::level() >= 1 {
        sysreg::read!("tco")
    } else {
        0
    };
    ENTRY_TCO[cpu::index()].store(tco, Ordering::Relaxed);
    ENTRY_SPSR[cpu::index()].store(spsr, Ordering::Relaxed);
}

/// `ExceptionTco`: `result = [ESR_EL1, SPSR_EL1, caught]`, the TCO bytes in the bulk buffer.
pub fn exception_tco(trigger: u64, tco: u64) -> Result<(), Refusal> {
    if mte::level() < 1 {
        return Err(NO_MTE);
    }
    if trigger > exception_trigger::LAST {
        return Err(0);
    }
    if tco > 1 {
        return Err(1);
    }
    ENTRY_TCO[cpu::index()].store(u64::MAX, Ordering::Relaxed);
    let tco = tco * TCO;
    let (after, esr) = match trigger {
        exception_trigger::UNDEFINED_INSTRUCTION => {
            let (after, esr) = vectors::catching_undefined(|| undefined_instruction(tco));
            (after, esr.unwrap_or(0))
        }
        exception_trigger::HIDDEN_PMU_REGISTER => {
            let (after, esr) = vectors::catching_undefined(|| read_pmcr(tco));
            (after, esr.unwrap_or(0))
        }
        _ => {
            let ptr = match trigger {
                exception_trigger::TRANSLATION_FAULT => UNTRANSLATED_VA,
                _ => ABORTING_DEVICE_IPA,
            };
            let (after, caught) = vectors::catching_aborts(|| load(ptr, tco));
            (after, if caught { sysreg::read!("esr_el1") } else { 0 })
        }
    };
    let caught = ENTRY_TCO[cpu::index()].load(Ordering::Relaxed) != u64::MAX;
    let spsr = ENTRY_SPSR[cpu::index()].load(Ordering::Relaxed);
    let bit = |value: u64| (value & TCO != 0) as u8;
    bulk::set_byte(
        exception_tco::ON_ENTRY,
        bit(ENTRY_TCO[cpu::index()].load(Ordering::Relaxed)),
    );
    bulk::set_byte(exception_tco::SAVED, bit(spsr));
    bulk::set_byte(exception_tco::AFTER_RETURN, bit(after));
    mailbox::set_result(0, esr);
    mailbox::set_result(1, spsr);
    mailbox::set_result(2, caught as u64);
    mailbox::set_result(3, sysreg::read!("id_aa64dfr0_el1"));
    Ok(())
}

/// Set PSTATE.TCO to `tco`, `udf #0`, read PSTATE.TCO back as the handler's ERET left it, and
/// clear it again. Returns what was read back.
fn undefined_instruction(tco: u64) -> u64 {
    let after: u64;
    // SAFETY: TCO only suppresses tag checks; the UNDEFINED instruction is caught and skipped
    // (`catching_undefined`), and TCO is 0 again, as the runtime keeps it, when the block ends.
    unsafe {
        asm!(
            ".arch_extension memtag",
            "msr tco, {tco}",
            "udf #0",
            "mrs {after}, tco",
            "msr tco, xzr",
            tco = in(reg) tco,
            after = out(reg) after,
            options(nostack),
        )
    };
    after
}

/// Set PSTATE.TCO to `tco`, read PMCR_EL0 (UNDEFINED where the vCPU has no PMU), read
/// PSTATE.TCO back as the handler's ERET left it, and clear it again. Returns what was read
/// back.
fn read_pmcr(tco: u64) -> u64 {
    let after: u64;
    // SAFETY: reading PMCR_EL0 has no effect; where it is UNDEFINED the exception is caught
    // and skipped (`catching_undefined`); TCO ends at 0, as the runtime keeps it.
    unsafe {
        asm!(
            ".arch_extension memtag",
            "msr tco, {tco}",
            "mrs {scratch}, pmcr_el0",
            "mrs {after}, tco",
            "msr tco, xzr",
            tco = in(reg) tco,
            scratch = out(reg) _,
            after = out(reg) after,
            options(nostack),
        )
    };
    after
}

/// Set PSTATE.TCO to `tco`, load from `ptr` (which aborts), read PSTATE.TCO back as the
/// handler's ERET left it, and clear it again. Returns what was read back.
fn load(ptr: u64, tco: u64) -> u64 {
    let after: u64;
    // SAFETY: `ptr` is untranslated or a device no memslot backs: the load aborts and the
    // abort is caught and skipped (`catching_aborts`); TCO ends at 0, as the runtime keeps it.
    unsafe {
        asm!(
            ".arch_extension memtag",
            "msr tco, {tco}",
            "ldr {scratch}, [{ptr}]",
            "mrs {after}, tco",
            "msr tco, xzr",
            tco = in(reg) tco,
            ptr = in(reg) ptr,
            scratch = out(reg) _,
            after = out(reg) after,
            options(nostack),
        )
    };
    after
}
