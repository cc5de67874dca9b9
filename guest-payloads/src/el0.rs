//! Code at EL0, and the accesses EL1 makes as if it were EL0 (LDTR, STTR): what SCTLR_EL1.TCF0
//! and TFSRE0_EL1 govern.
//!
//! EL0 runs small leaf routines of this module, each ending in `svc #0`, from their EL0 alias
//! (`mte_protocol::EL0_ALIAS_VA`: RAM mapped Normal-Tagged, EL0 read/write/execute, never
//! executable at EL1) and accesses memory through that alias too. [`run_at_el0`] enters one with
//! `eret` (SPSR = EL0t, interrupts masked) after saving the callee-saved registers on the EL1
//! stack; EL0 never touches SP_EL1, so the SVC's exception is taken on that same stack and
//! [`handle_exception`] turns it into a return to `el0_return` at EL1h, which restores them and
//! returns to the caller with EL0's x0. A data abort from EL0 (a tag check fault: EC 0x24) is
//! recorded in the mailbox and skipped, as `vectors::catching_aborts` does at EL1.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};
use mte_protocol::{MAX_VCPUS, RAM_IPA, RAM_SIZE, access_kind, el0_alias, esr, mte_registers};

use crate::args::{Refusal, require_tag_storage, tcf_mode, untagged};
use crate::vectors::{self, Resume};
use crate::{cpu, mailbox, sysreg};

/// SPSR_EL1 for entering EL0: EL0t, D, A, I and F masked (the runtime takes no interrupts).
const SPSR_EL0T: u64 = 0x3c0;
/// SPSR_EL1 for the return to the caller: EL1h, D, A, I and F masked, as the runtime runs.
const SPSR_EL1H: u64 = 0x3c5;
/// ESR_EL1.EC of an SVC from AArch64.
const EC_SVC64: u8 = 0x15;

/// SCTLR_EL1.TCF0 (bits 39:38) and ATA0 (bit 42).
const SCTLR_TCF0_SHIFT: u32 = 38;
const SCTLR_TCF0_MASK: u64 = 3 << SCTLR_TCF0_SHIFT;
const SCTLR_ATA0: u64 = 1 << 42;

/// Data aborts taken from EL0 and skipped, one count a vCPU.
static EL0_ABORTS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

unsafe extern "C" {
    /// Save x19-x30 on the stack and `eret` to `entry` with `spsr`, x0 and x1 as given.
    fn el0_enter(x0: u64, x1: u64, entry: u64, spsr: u64) -> u64;
    /// Where the SVC returns to at EL1: restores what `el0_enter` saved and returns from it.
    fn el0_return();
    /// EL0: x0 = the 64-bit load through x0 (0 where it faulted).
    fn el0_load();
    /// EL0: the 64-bit store of x1 through x0.
    fn el0_store();
}

global_asm!(
    r#"
    .section .text.el0, "ax"
    .global el0_enter
    .type el0_enter, %function
el0_enter:
    stp     x29, x30, [sp, #-96]!
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    msr     elr_el1, x2
    msr     spsr_el1, x3
    eret
    .size el0_enter, . - el0_enter

    .global el0_return
    .type el0_return, %function
el0_return:
    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldp     x29, x30, [sp], #96
    ret
    .size el0_return, . - el0_return

    .global el0_load
    .type el0_load, %function
el0_load:
    mov     x1, xzr
    ldr     x1, [x0]
    mov     x0, x1
    svc     #0
    .size el0_load, . - el0_load

    .global el0_store
    .type el0_store, %function
el0_store:
    str     x1, [x0]
    mov     x0, xzr
    svc     #0
    .size el0_store, . - el0_store
"#
);

/// A synchronous exception from EL0: the SVC that ends a routine, or a data abort to record
/// and skip. Returns false for anything else, which the caller reports as a panic.
pub fn handle_exception(resume: &mut Resume, esr: u64, far: u64, vector: u64) -> bool {
    match esr::ec(esr) {
        EC_SVC64 => {
            resume.elr = el0_return as *const () as usize as u64;
            resume.spsr = SPSR_EL1H;
            true
        }
        esr::EC_DABT_LOWER => {
            mailbox::record_fault(esr, far, resume.elr, vector);
            EL0_ABORTS[cpu::index()].fetch_add(1, Ordering::Relaxed);
            resume.elr += 4;
            true
        }
        _ => false,
    }
}

/// Run `routine` at EL0 from its EL0 alias with x0 and x1; its x0 when it made its SVC, and
/// whether it took a data abort on the way.
fn run_at_el0(routine: unsafe extern "C" fn(), x0: u64, x1: u64) -> (u64, bool) {
    let aborts = &EL0_ABORTS[cpu::index()];
    let before = aborts.load(Ordering::Relaxed);
    let entry = el0_alias(routine as usize as u64);
    // SAFETY: the routine is one of this module's, which end in an SVC that returns here with
    // x19-x30 and SP as they were (`el0_return`); x0-x18 are caller-saved. EL0 reaches only its
    // alias of RAM, and only the one word the command's pointer names.
    let value = unsafe { el0_enter(x0, x1, entry, SPSR_EL0T) };
    (value, aborts.load(Ordering::Relaxed) != before)
}

/// An 8-byte access inside RAM (tagged mapping), which has an EL0 alias.
fn check_ram(ptr: u64, index: u64) -> Result<u64, Refusal> {
    let addr = untagged(ptr);
    if addr >= RAM_IPA && addr - RAM_IPA <= RAM_SIZE - 8 {
        Ok(el0_alias(ptr))
    } else {
        Err(index)
    }
}

fn check_kind(kind: u64) -> Result<u64, Refusal> {
    if kind > access_kind::STORE {
        return Err(0);
    }
    Ok(kind)
}

/// `SetTcf0`: `result = [previous TCF0]`.
pub fn set_tcf0(mode: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    let mode = tcf_mode(mode, 0)?;
    let sctlr = sysreg::read!("sctlr_el1");
    // SAFETY: TCF0 and ATA0 govern EL0's accesses and EL1's unprivileged ones, which only the
    // commands of this module make; the barriers first let earlier accesses report.
    unsafe {
        asm!("dsb sy", "isb", options(nostack, preserves_flags));
        sysreg::write!(
            "sctlr_el1",
            sctlr & !SCTLR_TCF0_MASK | SCTLR_ATA0 | mode << SCTLR_TCF0_SHIFT
        );
        sysreg::write!("tfsre0_el1", 0);
    }
    mailbox::set_result(0, (sctlr & SCTLR_TCF0_MASK) >> SCTLR_TCF0_SHIFT);
    Ok(())
}

/// `El0Access`: `result = [value, faulted]`.
pub fn el0_access(kind: u64, ptr: u64, value: u64) -> Result<(), Refusal> {
    let kind = check_kind(kind)?;
    let alias = check_ram(ptr, 1)?;
    let (loaded, faulted) = match kind {
        access_kind::LOAD => run_at_el0(el0_load, alias, 0),
        _ => (0, run_at_el0(el0_store, alias, value).1),
    };
    mailbox::set_result(0, loaded);
    mailbox::set_result(1, faulted as u64);
    Ok(())
}

/// `UnprivilegedAccess`: `result = [value, faulted]`.
pub fn unprivileged_access(kind: u64, ptr: u64, value: u64) -> Result<(), Refusal> {
    let kind = check_kind(kind)?;
    let alias = check_ram(ptr, 1)?;
    let (loaded, faulted) = vectors::catching_aborts(|| {
        let mut loaded = 0u64;
        // SAFETY: 8 bytes of RAM's EL0 alias (checked), which the host gave over; an abort is
        // caught and skipped.
        unsafe {
            if kind == access_kind::LOAD {
                asm!("ldtr {v}, [{p}]", v = inout(reg) loaded, p = in(reg) alias, options(nostack));
            } else {
                asm!("sttr {v}, [{p}]", v = in(reg) value, p = in(reg) alias, options(nostack));
            }
        }
        loaded
    });
    mailbox::set_result(0, loaded);
    mailbox::set_result(1, faulted as u64);
    Ok(())
}

/// `ReadMteRegisters`: SCTLR_EL1, GCR_EL1, RGSR_EL1, TFSR_EL1, TFSRE0_EL1, nothing cleared.
pub fn read_mte_registers() -> Result<(), Refusal> {
    require_tag_storage()?;
    // SAFETY: barriers only: every asynchronous fault so far reaches the TFSRs first.
    unsafe { asm!("dsb sy", "isb", options(nostack, preserves_flags)) };
    mailbox::set_result(mte_registers::SCTLR_EL1, sysreg::read!("sctlr_el1"));
    mailbox::set_result(mte_registers::GCR_EL1, sysreg::read!("gcr_el1"));
    mailbox::set_result(mte_registers::RGSR_EL1, sysreg::read!("rgsr_el1"));
    mailbox::set_result(mte_registers::TFSR_EL1, sysreg::read!("tfsr_el1"));
    mailbox::set_result(mte_registers::TFSRE0_EL1, sysreg::read!("tfsre0_el1"));
    Ok(())
}
