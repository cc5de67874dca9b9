//! Several vCPUs: vCPU 0 starts the others (`CpuOn`), and commands posted with
//! `START_TOGETHER` wait at the start barrier in guest memory until the host lets them go, so
//! that the racing accesses of several vCPUs begin within a few instructions of each other.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};
use mte_protocol::{MAX_VCPUS, START_BARRIER_IPA, StartBarrier};

use crate::args::Refusal;
use crate::{cpu, entry, mailbox, power};

/// `CpuOn`: start vCPUs 1 to `count - 1`; `result[n - 1]` = PSCI's status for vCPU n.
pub fn cpu_on(count: u64) -> Result<(), Refusal> {
    if cpu::index() != 0 || count == 0 || count > MAX_VCPUS as u64 {
        return Err(0);
    }
    for vcpu in 1..count {
        // KVM gives vCPU n the MPIDR_EL1 affinity n (Aff0) for n below 16.
        let status = power::cpu_on(vcpu, entry::secondary_start as *const () as u64, vcpu);
        mailbox::set_result(vcpu as usize - 1, status as u64);
    }
    Ok(())
}

fn barrier() -> *mut StartBarrier {
    START_BARRIER_IPA as *mut StartBarrier
}

/// Arrive at the start barrier, wait until the host says go, then spin as many times as the
/// host asked of this vCPU.
pub fn wait_at_start() {
    // SAFETY: the barrier page is RAM reserved for it and identity mapped; `arrived` is only
    // ever changed atomically by the vCPUs (and set by the host while none waits), and
    // AtomicU32 has the layout of the u32 it stands for.
    let arrived = unsafe { AtomicU32::from_ptr(&raw mut (*barrier()).arrived) };
    arrived.fetch_add(1, Ordering::AcqRel);
    // SAFETY: a field of the barrier page.
    let go = unsafe { &raw const (*barrier()).go };
    loop {
        let value: u32;
        // LDAXR arms the exclusive monitor on `go`: the host's store to it clears the monitor,
        // which wakes the WFE at once (no event stream needed, no go missed between the two).
        // SAFETY: an exclusive load of a field of the barrier page, then a wait for an event.
        unsafe {
            asm!("ldaxr {v:w}, [{p}]", v = out(reg) value, p = in(reg) go,
                 options(nostack, readonly, preserves_flags));
        }
        if value != 0 {
            break;
        }
        // SAFETY: WFE only waits for an event.
        unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
    }
    // SAFETY: a field of the barrier page, the vCPU's own slot.
    let spins = unsafe { (&raw const (*barrier()).spins[cpu::index()]).read_volatile() };
    for _ in 0..spins {
        // SAFETY: a hint only; the asm keeps the loop from being optimised away.
        unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
    }
}
