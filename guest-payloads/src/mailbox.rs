//! The guest half of the transport: the mailbox page and the doorbell.
//!
//! Each vCPU has its own mailbox (`mte_protocol::mailbox_ipa`), picked by its number
//! (`cpu`). The host reads and writes a vCPU's mailbox while that vCPU is stopped at a
//! doorbell, so every access is volatile. The doorbell is `mte_doorbell`: a barrier, then a 32-bit store of the new
//! `seq` to `DOORBELL_IPA` at the global label `mte_doorbell_store`. That store leaves the guest
//! (an MMIO exit on KVM; a debugger backend stops on the label and steps over it); when the guest
//! runs again the host's reply is in the mailbox.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};
use mte_protocol::{
    DOORBELL_IPA, FaultRecord, GuestIds, MAILBOX_MAGIC, MAX_VCPUS, Mailbox, PROTOCOL_VERSION,
    Status, mailbox_ipa,
};

use crate::{cpu, power};

/// This vCPU's mailbox.
fn mine() -> *mut Mailbox {
    mailbox_ipa(cpu::index()) as *mut Mailbox
}

/// A raw pointer to one field of this vCPU's mailbox; used in `unsafe` blocks, which are sound
/// because the mailbox page is RAM, identity mapped and reserved for it.
macro_rules! field {
    ($($path:tt)+) => {
        &raw mut (*mine()).$($path)+
    };
}

unsafe extern "C" {
    /// Ring the doorbell with `seq`; returns when the host resumes the guest.
    fn mte_doorbell(seq: u32);
}

global_asm!(
    r#"
    .section .text.mte_doorbell, "ax"
    .global mte_doorbell
    .global mte_doorbell_store
    .type mte_doorbell, %function
mte_doorbell:
    dsb     sy
    ldr     x1, ={doorbell}
mte_doorbell_store:
    str     w0, [x1]
    dsb     sy
    ret
    .size mte_doorbell, . - mte_doorbell
"#,
    doorbell = const DOORBELL_IPA,
);

/// Set once a vCPU has reported a panic: it then only waits to be stopped.
static STOPPED: [AtomicBool; MAX_VCPUS] = [const { AtomicBool::new(false) }; MAX_VCPUS];

/// Publish the guest's identity and `Booted` (the caller then rings the doorbell). The rest of
/// the page starts from zero, whatever the VMM left there (a DTB, say).
pub fn boot(ids: GuestIds) {
    let mailbox = Mailbox {
        magic: MAILBOX_MAGIC,
        version: PROTOCOL_VERSION,
        status: Status::Booted as u32,
        ids,
        ..Mailbox::zeroed()
    };
    // SAFETY: the mailbox page, see `field!`.
    unsafe { mine().write_volatile(mailbox) };
}

/// Hand the mailbox to the host and wait for it to give it back.
pub fn ring() {
    // SAFETY: mailbox field; the doorbell routine only stores to the doorbell.
    unsafe {
        let next = field!(seq).read_volatile().wrapping_add(1);
        field!(seq).write_volatile(next);
        mte_doorbell(next as u32);
    }
}

/// The address of argument `index` of this vCPU's mailbox, for a command the host may steer
/// while it runs.
pub fn arg_address(index: usize) -> *const u64 {
    // SAFETY: a field of the mailbox page; only its address is taken.
    unsafe { field!(args[index]) }
}

/// The host's command code and arguments.
pub fn command() -> (u32, [u64; 8]) {
    // SAFETY: mailbox fields.
    unsafe {
        (
            field!(command).read_volatile(),
            field!(args).read_volatile(),
        )
    }
}

/// Forget the previous command's results and exceptions.
pub fn begin_command() {
    // SAFETY: mailbox fields.
    unsafe {
        field!(result).write_volatile([0; 8]);
        field!(fault).write_volatile(FaultRecord::default());
    }
}

pub fn set_result(index: usize, value: u64) {
    // SAFETY: mailbox field; the index is checked.
    unsafe { field!(result[index]).write_volatile(value) }
}

pub fn set_status(status: Status) {
    // SAFETY: mailbox field.
    unsafe { field!(status).write_volatile(status as u32) }
}

/// Count an exception and keep its syndrome for the host.
pub fn record_fault(esr: u64, far: u64, elr: u64, vector: u64) {
    // SAFETY: mailbox field.
    unsafe {
        let count = field!(fault).read_volatile().count;
        field!(fault).write_volatile(FaultRecord {
            count: count + 1,
            esr,
            far,
            elr,
            vector,
        });
    }
}

/// Whether this vCPU has already reported a panic.
pub fn stopped() -> bool {
    STOPPED[cpu::index()].load(Ordering::Relaxed)
}

/// Report `Panic` (with whatever the fault record holds) and stop. An exception raised while
/// doing so (the doorbell itself may fault where no host answers it) finds [`stopped`] set and
/// halts without touching the record.
pub fn stop_with_panic() -> ! {
    if !STOPPED[cpu::index()].swap(true, Ordering::Relaxed) {
        set_status(Status::Panic);
        ring();
    }
    power::halt()
}

/// Play the host: post a command as it would.
#[cfg(feature = "selftest")]
pub fn post(command: u32, args: &[u64]) {
    let mut all = [0; 8];
    all[..args.len()].copy_from_slice(args);
    // SAFETY: mailbox fields.
    unsafe {
        field!(command).write_volatile(command);
        field!(args).write_volatile(all);
    }
}

/// Play the host: read the whole mailbox.
#[cfg(feature = "selftest")]
pub fn snapshot() -> Mailbox {
    // SAFETY: the mailbox page, see `field!`.
    unsafe { mine().read_volatile() }
}
