//! PSCI: starting the other vCPUs (CPU_ON), stopping the machine (SYSTEM_OFF), or waiting for
//! the host's deadline.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

/// PSCI 0.2 SYSTEM_OFF function ID.
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
/// PSCI 0.2 CPU_ON function ID, SMC64 calling convention.
const PSCI_CPU_ON: u64 = 0xc400_0003;

/// PSCI through SMC rather than HVC. Entered at EL2 we own that level (and keep no code
/// there), so PSCI lives in firmware at EL3; entered at EL1 it is the hypervisor's.
static CONDUIT_SMC: AtomicBool = AtomicBool::new(false);

pub fn init(entered_at_el2: bool) {
    CONDUIT_SMC.store(entered_at_el2, Ordering::Relaxed);
}

/// Power the machine off; if PSCI returns, halt.
pub fn system_off() -> ! {
    // SAFETY: SYSTEM_OFF does not return on success; on failure only the SMCCC registers
    // change.
    unsafe {
        if CONDUIT_SMC.load(Ordering::Relaxed) {
            asm!("smc #0", inout("x0") PSCI_SYSTEM_OFF => _, clobber_abi("C"), options(nostack));
        } else {
            asm!("hvc #0", inout("x0") PSCI_SYSTEM_OFF => _, clobber_abi("C"), options(nostack));
        }
    }
    halt()
}

/// Start the CPU whose MPIDR_EL1 affinity is `target` at `entry`, with `context` in its x0.
/// Returns PSCI's status (0 success, negative an error such as ALREADY_ON).
pub fn cpu_on(target: u64, entry: u64, context: u64) -> i64 {
    let mut status = PSCI_CPU_ON;
    // SAFETY: CPU_ON only starts another CPU at `entry`, which the caller vouches for; only
    // the SMCCC registers change here.
    unsafe {
        if CONDUIT_SMC.load(Ordering::Relaxed) {
            asm!("smc #0", inout("x0") status, in("x1") target, in("x2") entry,
                 in("x3") context, clobber_abi("C"), options(nostack));
        } else {
            asm!("hvc #0", inout("x0") status, in("x1") target, in("x2") entry,
                 in("x3") context, clobber_abi("C"), options(nostack));
        }
    }
    status as i64
}

/// Wait forever; the host's deadline ends the VM.
pub fn halt() -> ! {
    loop {
        // SAFETY: WFI only waits.
        unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
    }
}
