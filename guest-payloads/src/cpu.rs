//! Which vCPU this is: vCPU 0 boots at the entry point, the others start with PSCI CPU_ON
//! (`power::cpu_on`), and each keeps its number in TPIDR_EL1, set by the entry code before
//! any Rust runs on it. The number picks the vCPU's mailbox, bulk buffer and per-vCPU state.

use mte_protocol::MAX_VCPUS;

/// This vCPU's number, 0 to `MAX_VCPUS - 1`.
pub fn index() -> usize {
    let index = crate::sysreg::read!("tpidr_el1") as usize;
    // The entry code only ever stores numbers below MAX_VCPUS; clamp all the same, so that
    // per-vCPU arrays are never indexed out of range.
    index.min(MAX_VCPUS - 1)
}
