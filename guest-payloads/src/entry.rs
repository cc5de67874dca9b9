//! `_start`: from the VMM's reset state to [`crate::main`]; `secondary_start`: from PSCI
//! CPU_ON to [`crate::secondary_main`] on the other vCPUs.
//!
//! VMMs enter at the ELF entry point with the MMU off, at EL1 (or at EL2 when the machine has
//! one; we then drop to EL1 and keep no EL2 code). Nothing is written to memory before the MMU
//! and the caches are on: writes with the MMU off bypass the caches, and a stale line could later
//! shadow them. x0 (a DTB address on some VMMs) is ignored by `_start`; for `secondary_start`
//! it is the context id vCPU 0 gave CPU_ON: the vCPU's number, which goes to TPIDR_EL1 (see
//! `cpu`). vCPU 0's .bss is zeroed before any other vCPU starts; each other vCPU's stack is a
//! slot of `SECONDARY_STACK` bytes after .bss, for vCPU n the n-th.

use core::arch::global_asm;

/// Each secondary vCPU's stack.
pub const SECONDARY_STACK: u64 = 0x8000;

unsafe extern "C" {
    /// Where PSCI CPU_ON starts the other vCPUs, with their number in x0.
    pub fn secondary_start();
}

global_asm!(
    r#"
    // Leave EL2 for EL1 if entered at EL2; x19 := the EL entered at. Clobbers x9.
    .macro to_el1
    mrs     x19, CurrentEL
    ubfx    x19, x19, #2, #2
    cmp     x19, #2
    b.ne    8f

    // EL2: EL1 runs AArch64 (RW) with allocation tags and the MTE registers untrapped (ATA).
    mov     x9, #(1 << 31)
    orr     x9, x9, #(1 << 56)
    msr     hcr_el2, x9
    // E2H is now clear: the EL1 register writes below must reach EL1, not be redirected.
    isb
    // CPTR_EL2: RES1 bits only, so FP/SIMD is not trapped.
    mov     x9, #0x33ff
    msr     cptr_el2, x9
    // SCTLR_EL1: its RES1 bits, MMU and caches off, little-endian.
    mov     x9, #0x0800
    movk    x9, #0x30d0, lsl #16
    msr     sctlr_el1, x9
    // Return to EL1h with DAIF masked, as a VMM starting at EL1 does.
    mov     x9, #0x3c5
    msr     spsr_el2, x9
    adr     x9, 8f
    msr     elr_el2, x9
    eret
8:
    .endm

    // EL1: FP/SIMD untrapped (CPACR_EL1.FPEN: compiled code uses the vector registers), the
    // vectors installed, the MMU and the caches on. Clobbers x0-x2.
    .macro el1_setup
    mov     x0, #(3 << 20)
    msr     cpacr_el1, x0
    isb
    adrp    x0, exception_vectors
    add     x0, x0, :lo12:exception_vectors
    msr     vbar_el1, x0
    isb
    bl      mmu_enable
    .endm

    .section .text.boot, "ax"
    .global _start
    .type _start, %function
_start:
    to_el1
    el1_setup
    msr     tpidr_el1, xzr

    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
2:  cmp     x0, x1
    b.hs    3f
    stp     xzr, xzr, [x0], #16
    b       2b

3:  adrp    x0, __stack_top
    add     x0, x0, :lo12:__stack_top
    mov     sp, x0
    cmp     x19, #2
    cset    x0, eq
    bl      {main}
    b       .
    .size _start, . - _start

    .global secondary_start
    .type secondary_start, %function
secondary_start:
    mov     x20, x0
    to_el1
    el1_setup
    // The vCPU's number, checked by vCPU 0 before CPU_ON; its stack is the top of slot n.
    msr     tpidr_el1, x20
    adrp    x0, __secondary_stacks
    add     x0, x0, :lo12:__secondary_stacks
    mov     x1, #{stack}
    madd    x0, x20, x1, x0
    mov     sp, x0
    mov     x0, x20
    bl      {secondary_main}
    b       .
    .size secondary_start, . - secondary_start
"#,
    main = sym crate::main,
    secondary_main = sym crate::secondary_main,
    stack = const SECONDARY_STACK,
);
