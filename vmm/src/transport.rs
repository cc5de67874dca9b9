//! What a VMM backend must give the mailbox protocol: guest memory to read and write, and a
//! vCPU to run until it rings the doorbell. Everything else of the protocol (posting a command,
//! reading the reply, the bulk buffer, the boot check) is [`MailboxGuest`](crate::MailboxGuest)'s,
//! written once for every backend.
//!
//! A transport is one vCPU's view of its VM: memory is the VM's, the run is the vCPU's. A guest
//! of several vCPUs gets one transport (and one mailbox) per vCPU, each from vCPU 0's
//! ([`Transport::other_vcpu`]), and each vCPU may run on a thread of its own.

use std::time::Duration;

use mte_suites::vmm::VmmError;

/// Why the vCPU stopped running.
#[derive(Debug)]
pub enum Stop {
    /// It rang the doorbell: the mailbox holds its answer, and it waits for the next command.
    Doorbell,
    /// It powered off (PSCI SYSTEM_OFF): no step follows.
    PoweredOff,
    /// It stopped where the protocol does not let it (a signal or breakpoint elsewhere, the VMM
    /// gone or stopped by its deadline): `error` is this step's, `why` is given to every later
    /// step, which is refused.
    Ended { error: VmmError, why: String },
}

/// A backend's access to one vCPU of a guest and to the guest's memory.
pub trait Transport {
    /// `len` bytes of guest memory from `ipa`.
    fn read(&mut self, ipa: u64, len: usize) -> Result<Vec<u8>, VmmError>;

    /// Write `bytes` to guest memory at `ipa`.
    fn write(&mut self, ipa: u64, bytes: &[u8]) -> Result<(), VmmError>;

    /// Run the vCPU until it rings the doorbell, powers off or stops otherwise, for at most
    /// `deadline` (then [`VmmError::Timeout`], or [`Stop::Ended`] where the guest cannot go on
    /// after it). `what` names the step in errors.
    fn run_to_doorbell(&mut self, what: &str, deadline: Duration) -> Result<Stop, VmmError>;

    /// What the guest printed on its console so far.
    fn console(&self) -> String;

    /// The transport of vCPU `index` (1 and up) of the same VM, before vCPU 0 first runs: a
    /// vCPU that stays off until the guest starts it with PSCI CPU_ON. A backend that drives
    /// one vCPU a guest says why ([`VmmError::Unsupported`]).
    fn other_vcpu(&mut self, _index: usize) -> Result<Self, VmmError>
    where
        Self: Sized,
    {
        Err(VmmError::Unsupported(
            "guests of several vCPUs: this VMM backend drives one vCPU a guest".into(),
        ))
    }
}
