//! Exception vectors: record every exception in the mailbox; skip the data abort of a command's
//! test access ([`catching_aborts`]), whether the access ran on SP_EL1 as the runtime does or
//! with SP_EL0 selected (the SP-based access forms); report anything else as a panic and stop.
//!
//! Synchronous exceptions from EL0 go to `el0` first (its SVC return and skipped aborts).
//!
//! The recorded `vector` is the kind (0 sync, 1 IRQ, 2 FIQ, 3 SError) plus 4 × the origin
//! (0 current EL with SP_EL1, where the runtime runs; 1 current EL with SP_EL0; 2 lower EL,
//! AArch64; 3 lower EL, AArch32), so the runtime's own exceptions are 0..=3.
//!
//! Every entry saves the whole interrupted state (x0-x30, ELR_EL1, SPSR_EL1, q0-q31) on the
//! stack and restores it before `eret`: a skipped access resumes compiled code that relies on
//! every register it had, and the handler is compiled code too (it may use vector registers).

use core::arch::global_asm;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering, compiler_fence};
use mte_protocol::{MAX_VCPUS, esr};

use crate::{cpu, el0, exception_entry, mailbox, power, sysreg};

/// The kinds and origins of the exception that may be skipped: synchronous, from the current
/// EL, with SP_EL1 (the runtime's own stack) or SP_EL0 selected.
const SYNC_CURRENT_EL: u64 = 0;
const SYNC_CURRENT_EL_SP_EL0: u64 = 4;
/// Synchronous, from EL0 (AArch64).
const SYNC_LOWER_EL: u64 = 8;
/// Bytes saved per exception: x0-x30, ELR, SPSR, padding, then q0-q31.
const FRAME_SIZE: usize = 272 + 32 * 16;
/// Where ELR_EL1 is saved in the frame, SPSR_EL1 after it: the [`Resume`] that `eret` takes.
const ELR_OFFSET: usize = 31 * 8;

/// ELR_EL1 and SPSR_EL1 as saved in the frame: where, and at which EL, `eret` resumes.
#[repr(C)]
pub struct Resume {
    pub elr: u64,
    pub spsr: u64,
}

/// [`catching_aborts`] state, one a vCPU.
const IDLE: u8 = 0;
const ARMED: u8 = 1;
const CAUGHT: u8 = 2;
static ABORT_CATCHERS: [AtomicU8; MAX_VCPUS] = [const { AtomicU8::new(IDLE) }; MAX_VCPUS];
/// [`catching_undefined`] state, one a vCPU, and the ESR of what each caught.
static UNDEFINED_CATCHERS: [AtomicU8; MAX_VCPUS] = [const { AtomicU8::new(IDLE) }; MAX_VCPUS];
static UNDEFINED_ESRS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

/// This vCPU's catcher.
fn catcher() -> &'static AtomicU8 {
    &ABORT_CATCHERS[cpu::index()]
}

global_asm!(
    r#"
    .macro exception_vector_entry code
    .balign 0x80
    sub     sp, sp, #{frame_size}
    stp     x0, x1, [sp]
    mov     x1, #\code
    b       exception_entry
    .endm

    .section .text.vectors, "ax"
    .global exception_vectors
    .balign 0x800
exception_vectors:
    exception_vector_entry 4
    exception_vector_entry 5
    exception_vector_entry 6
    exception_vector_entry 7
    exception_vector_entry 0
    exception_vector_entry 1
    exception_vector_entry 2
    exception_vector_entry 3
    exception_vector_entry 8
    exception_vector_entry 9
    exception_vector_entry 10
    exception_vector_entry 11
    exception_vector_entry 12
    exception_vector_entry 13
    exception_vector_entry 14
    exception_vector_entry 15

exception_entry:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x30, x2, [sp, #240]
    str     x3, [sp, #256]
    stp     q0, q1, [sp, #272]
    stp     q2, q3, [sp, #304]
    stp     q4, q5, [sp, #336]
    stp     q6, q7, [sp, #368]
    stp     q8, q9, [sp, #400]
    stp     q10, q11, [sp, #432]
    stp     q12, q13, [sp, #464]
    stp     q14, q15, [sp, #496]
    stp     q16, q17, [sp, #528]
    stp     q18, q19, [sp, #560]
    stp     q20, q21, [sp, #592]
    stp     q22, q23, [sp, #624]
    stp     q24, q25, [sp, #656]
    stp     q26, q27, [sp, #688]
    stp     q28, q29, [sp, #720]
    stp     q30, q31, [sp, #752]

    add     x0, sp, #{elr_offset}
    bl      {handler}

    ldp     q0, q1, [sp, #272]
    ldp     q2, q3, [sp, #304]
    ldp     q4, q5, [sp, #336]
    ldp     q6, q7, [sp, #368]
    ldp     q8, q9, [sp, #400]
    ldp     q10, q11, [sp, #432]
    ldp     q12, q13, [sp, #464]
    ldp     q14, q15, [sp, #496]
    ldp     q16, q17, [sp, #528]
    ldp     q18, q19, [sp, #560]
    ldp     q20, q21, [sp, #592]
    ldp     q22, q23, [sp, #624]
    ldp     q24, q25, [sp, #656]
    ldp     q26, q27, [sp, #688]
    ldp     q28, q29, [sp, #720]
    ldp     q30, q31, [sp, #752]
    ldr     x3, [sp, #256]
    ldp     x30, x2, [sp, #240]
    msr     elr_el1, x2
    msr     spsr_el1, x3
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp]
    add     sp, sp, #{frame_size}
    eret
"#,
    frame_size = const FRAME_SIZE,
    elr_offset = const ELR_OFFSET,
    handler = sym handle_exception,
);

/// `resume` is the saved ELR_EL1 and SPSR_EL1, where the exception returns to.
extern "C" fn handle_exception(resume: &mut Resume, vector: u64) {
    exception_entry::note_entry(resume.spsr);
    if mailbox::stopped() {
        power::halt();
    }
    let esr = sysreg::read!("esr_el1");
    let far = sysreg::read!("far_el1");
    if vector == SYNC_LOWER_EL && el0::handle_exception(resume, esr, far, vector) {
        return;
    }
    let elr = &mut resume.elr;
    mailbox::record_fault(esr, far, *elr, vector);

    if (vector == SYNC_CURRENT_EL || vector == SYNC_CURRENT_EL_SP_EL0)
        && esr::ec(esr) == esr::EC_DABT_CUR
        && catcher().load(Ordering::Relaxed) == ARMED
    {
        catcher().store(CAUGHT, Ordering::Relaxed);
        *elr += 4;
        return;
    }
    if vector == SYNC_CURRENT_EL
        && esr::ec(esr) == esr::EC_UNKNOWN
        && UNDEFINED_CATCHERS[cpu::index()].load(Ordering::Relaxed) == ARMED
    {
        UNDEFINED_CATCHERS[cpu::index()].store(CAUGHT, Ordering::Relaxed);
        UNDEFINED_ESRS[cpu::index()].store(esr, Ordering::Relaxed);
        *elr += 4;
        return;
    }
    println!("mte-guest: exception {vector}: ESR {esr:#x} FAR {far:#x} ELR {elr:#x}");
    mailbox::stop_with_panic();
}

/// Run `access`, which must be one load or store instruction (in inline asm), so that a data
/// abort it raises is recorded in the mailbox and skipped rather than being a panic. The
/// instruction may run with SP_EL0 selected: the exception is then taken on SP_EL1 all the
/// same, and the `eret` returns to SP_EL0 and the instruction after it, which must be the one
/// that selects SP_EL1 again. Returns
/// what `access` returned (its output registers unchanged if it aborted) and whether it did.
pub fn catching_aborts<R>(access: impl FnOnce() -> R) -> (R, bool) {
    let catcher = catcher();
    catcher.store(ARMED, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    let value = access();
    compiler_fence(Ordering::SeqCst);
    let caught = catcher.load(Ordering::Relaxed) == CAUGHT;
    catcher.store(IDLE, Ordering::Relaxed);
    (value, caught)
}

/// Run `step`, which must be one instruction (in inline asm) that may be UNDEFINED here, so
/// that the exception it raises is recorded and skipped rather than being a panic. Returns what
/// `step` returned (its output registers unchanged if it raised one) and the exception's ESR.
pub fn catching_undefined<R>(step: impl FnOnce() -> R) -> (R, Option<u64>) {
    let vcpu = cpu::index();
    let catcher = &UNDEFINED_CATCHERS[vcpu];
    catcher.store(ARMED, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    let value = step();
    compiler_fence(Ordering::SeqCst);
    let caught = catcher.load(Ordering::Relaxed) == CAUGHT;
    catcher.store(IDLE, Ordering::Relaxed);
    (
        value,
        caught.then(|| UNDEFINED_ESRS[vcpu].load(Ordering::Relaxed)),
    )
}
