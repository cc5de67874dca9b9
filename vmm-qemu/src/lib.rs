//! QEMU as the VMM under test (the qemu lane): every guest is its own `qemu-system-aarch64`
//! (TCG, virt machine) booting the payload ELF directly, driven through QEMU's gdbstub
//! ([`GdbTransport`] under `mte_vmm`'s mailbox guest), and migrated with QEMU's own migration
//! over QMP.
//!
//! The doorbell is a breakpoint on the payload's `mte_doorbell_store`. That store never runs:
//! nothing answers at `DOORBELL_IPA` on virt, so it would be an external abort. The guest
//! resumes at the next instruction instead. The host's tag steps are the gdbstub's
//! memory-tagging packets (see [`memtags`]).

mod binary;
// The protocol clients are public so that the fuzz targets (fuzz/) reach what they read.
pub mod gdb;
mod host_steps;
mod machine;
pub mod memtags;
pub mod qmp;
mod transport;
mod vmm;

pub use binary::Version;
pub use transport::GdbTransport;
pub use vmm::QemuVmm;

/// A payload booted in its own QEMU.
pub type QemuGuest = mte_vmm::MailboxGuest<GdbTransport>;
