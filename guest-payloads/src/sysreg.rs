//! System register access by name.
//!
//! Every access carries `.arch_extension memtag` so that the MTE registers (GCR_EL1, RGSR_EL1,
//! TFSR_EL1, GMID_EL1, ...) assemble whatever target features the crate is built with. Neither
//! macro is `nomem`: writes change how later memory accesses behave, and reads such as TFSR_EL1
//! must not move across the accesses they report on.

/// `mrs`: the value of a system register, e.g. `read!("sctlr_el1")`.
macro_rules! read {
    ($reg:literal) => {{
        let value: u64;
        // SAFETY: reading a system register has no effect on memory safety.
        unsafe {
            core::arch::asm!(
                ".arch_extension memtag",
                concat!("mrs {}, ", $reg),
                out(reg) value,
                options(nostack, preserves_flags),
            )
        };
        value
    }};
}

/// `msr` then `isb`, so the new value applies to the instructions that follow.
///
/// # Safety
/// The caller upholds whatever the register controls (translation, tag checks, ...).
macro_rules! write {
    ($reg:literal, $value:expr) => {{
        let value: u64 = $value;
        core::arch::asm!(
            ".arch_extension memtag",
            concat!("msr ", $reg, ", {}"),
            "isb",
            in(reg) value,
            options(nostack, preserves_flags),
        )
    }};
}

pub(crate) use {read, write};
