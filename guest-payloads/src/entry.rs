//! `_start`: from the VMM's reset state to [`crate::main`].
//!
//! VMMs enter at the ELF entry point with the MMU off, at EL1 (or at EL2 when the machine has
//! one; we then drop to EL1 and keep no EL2 code). Nothing is written to memory before the MMU
//! and the caches are on: writes with the MMU off bypass the caches, and a stale line could later
//! shadow them. x0 (a DTB address on some VMMs) is ignored.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
    .type _start, %function
_start:
    mrs     x19, CurrentEL
    ubfx    x19, x19, #2, #2
    cmp     x19, #2
    b.ne    1f

    // EL2: EL1 runs AArch64 (RW) with allocation tags and the MTE registers untrapped (ATA).
    mov     x0, #(1 << 31)
    orr     x0, x0, #(1 << 56)
    msr     hcr_el2, x0
    // E2H is now clear: the EL1 register writes below must reach EL1, not be redirected.
    isb
    // CPTR_EL2: RES1 bits only, so FP/SIMD is not trapped.
    mov     x0, #0x33ff
    msr     cptr_el2, x0
    // SCTLR_EL1: its RES1 bits, MMU and caches off, little-endian.
    mov     x0, #0x0800
    movk    x0, #0x30d0, lsl #16
    msr     sctlr_el1, x0
    // Return to EL1h with DAIF masked, as a VMM starting at EL1 does.
    mov     x0, #0x3c5
    msr     spsr_el2, x0
    adr     x0, 1f
    msr     elr_el2, x0
    eret

1:  // EL1 from here on; x19 holds the EL we were entered at.
    // FP/SIMD untrapped (CPACR_EL1.FPEN): compiled code uses the vector registers.
    mov     x0, #(3 << 20)
    msr     cpacr_el1, x0
    isb
    adrp    x0, exception_vectors
    add     x0, x0, :lo12:exception_vectors
    msr     vbar_el1, x0
    isb

    bl      mmu_enable

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
"#,
    main = sym crate::main,
);
