//! `PriorityAccess`: single accesses that could raise more than one kind of data abort at once
//! (misaligned and tag-mismatched, untranslated and tag-mismatched), so that the host can see
//! which one the CPU reports.
//!
//! The `*_PAN` forms access RAM through its EL0 alias with PSTATE.PAN set (EL1 may not touch
//! what EL0 may), so that a permission fault and a tag check fault are due at once; the runtime
//! never touches EL0's memory, so its handler is unaffected, and PAN is clear again after.
//!
//! SCTLR_EL1.A (alignment checks for ordinary loads and stores) is clear everywhere else in the
//! runtime; the `*_ALIGNMENT_CHECKED` forms set it for their one access and clear it again,
//! whether the access aborted or not. The exception handler runs with A set in between, which
//! it tolerates: its own accesses are naturally aligned.

use core::arch::asm;
use mte_protocol::{UNTRANSLATED_VA, el0_alias, priority_form as form};

use crate::args::{PROHIBITED, Refusal, check_access, require_tag_storage, untagged};
use crate::{mailbox, sysreg, vectors};

/// SCTLR_EL1.A: alignment fault checking for EL1 and EL0.
const SCTLR_A: u64 = 1 << 1;

/// `PriorityAccess`: `result = [value, faulted]`.
pub fn access(ptr: u64, form: u64, value: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    if untagged(ptr) < UNTRANSLATED_VA {
        check_access(ptr)?;
    }
    if form > form::LAST {
        return Err(1);
    }
    if matches!(form, form::ATOMIC_ADD | form::COMPARE_AND_SWAP) && !has_lse() {
        return Err(PROHIBITED);
    }
    if matches!(form, form::LOAD_PAN | form::STORE_PAN) && !has_pan() {
        return Err(PROHIBITED);
    }
    let (loaded, faulted) = match form {
        form::LOAD_ALIGNMENT_CHECKED | form::STORE_ALIGNMENT_CHECKED => {
            with_alignment_checks(|| vectors::catching_aborts(|| one_access(ptr, form, value)))
        }
        form::LOAD_PAN | form::STORE_PAN => {
            with_pan(|| vectors::catching_aborts(|| one_access(el0_alias(ptr), form, value)))
        }
        form::LOAD_EL0_ALIAS => {
            vectors::catching_aborts(|| one_access(el0_alias(ptr), form, value))
        }
        _ => vectors::catching_aborts(|| one_access(ptr, form, value)),
    };
    mailbox::set_result(0, loaded);
    mailbox::set_result(1, faulted as u64);
    Ok(())
}

/// ID_AA64ISAR0_EL1.Atomic >= 2: the LSE atomics (LDADD, CAS, ...).
fn has_lse() -> bool {
    (sysreg::read!("id_aa64isar0_el1") >> 20) & 0xf >= 2
}

/// ID_AA64MMFR1_EL1.PAN >= 1: FEAT_PAN.
fn has_pan() -> bool {
    (sysreg::read!("id_aa64mmfr1_el1") >> 20) & 0xf >= 1
}

/// PSTATE.PAN by its system register (S3_0_C4_C2_3, PAN at bit 22).
const PAN_BIT: u64 = 1 << 22;

/// Run `access` with PSTATE.PAN set, then clear it.
fn with_pan<R>(access: impl FnOnce() -> R) -> R {
    // SAFETY: PAN only forbids EL1 accesses to memory EL0 may access, which the runtime never
    // makes outside the access under test.
    unsafe { sysreg::write!("S3_0_C4_C2_3", PAN_BIT) };
    let result = access();
    // SAFETY: PAN clear, as the runtime runs.
    unsafe { sysreg::write!("S3_0_C4_C2_3", 0) };
    result
}

/// Run `access` with SCTLR_EL1.A set, then restore SCTLR_EL1.
fn with_alignment_checks<R>(access: impl FnOnce() -> R) -> R {
    let sctlr = sysreg::read!("sctlr_el1");
    // SAFETY: alignment checks only add faults; the runtime's code between here and the
    // restore (the abort catcher and handler) makes naturally aligned accesses only.
    unsafe { sysreg::write!("sctlr_el1", sctlr | SCTLR_A) };
    let result = access();
    // SAFETY: SCTLR_EL1 as it was.
    unsafe { sysreg::write!("sctlr_el1", sctlr) };
    result
}

/// The access itself: exactly one instruction may abort, as `catching_aborts` requires. The
/// destination register starts at 0, so an aborted load leaves 0.
fn one_access(ptr: u64, form: u64, value: u64) -> u64 {
    let mut out = 0u64;
    // SAFETY: `ptr`'s 8 bytes are RAM the host gave over (checked by `access`; directly or
    // through its EL0 alias), or `ptr` is untranslated and aborts; an abort is caught and
    // skipped.
    unsafe {
        match form {
            form::LOAD | form::LOAD_ALIGNMENT_CHECKED | form::LOAD_PAN | form::LOAD_EL0_ALIAS => {
                asm!("ldr {o}, [{p}]", o = inout(reg) out, p = in(reg) ptr, options(nostack))
            }
            form::STORE | form::STORE_ALIGNMENT_CHECKED | form::STORE_PAN => {
                asm!("str {v}, [{p}]", v = in(reg) value, p = in(reg) ptr, options(nostack))
            }
            form::LOAD_EXCLUSIVE => {
                asm!("ldxr {o}, [{p}]", o = inout(reg) out, p = in(reg) ptr, options(nostack))
            }
            form::LOAD_ACQUIRE_EXCLUSIVE => {
                asm!("ldaxr {o}, [{p}]", o = inout(reg) out, p = in(reg) ptr, options(nostack))
            }
            form::STORE_EXCLUSIVE => asm!(
                "stxr {s:w}, {v}, [{p}]",
                s = inout(reg) out,
                v = in(reg) value,
                p = in(reg) ptr,
                options(nostack),
            ),
            form::ATOMIC_ADD => asm!(
                ".arch_extension lse",
                "ldadd {v}, {o}, [{p}]",
                v = in(reg) value,
                o = inout(reg) out,
                p = in(reg) ptr,
                options(nostack),
            ),
            _ => asm!(
                ".arch_extension lse",
                "cas {o}, {v}, [{p}]",
                o = inout(reg) out,
                v = in(reg) value,
                p = in(reg) ptr,
                options(nostack),
            ),
        }
    }
    out
}
