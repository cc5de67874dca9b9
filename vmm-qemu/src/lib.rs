//! QEMU as the VMM under test: every guest is its own `qemu-system-aarch64` (virt machine)
//! booting the payload ELF directly, driven through QEMU's gdbstub ([`GdbTransport`] under
//! `mte_vmm`'s mailbox guest), and migrated with QEMU's own migration over QMP. In the qemu
//! lane QEMU emulates the CPU (TCG); in the qemu-kvm lane it runs the guest on the host's KVM
//! inside the emulated machine, where the runner reads the tags through its own PROT_MTE
//! mapping of QEMU's shared memfd RAM ([`tag_view`]) and acts on QEMU's memory from outside
//! ([`qemu_ram`]). What QEMU versions are known to refuse is data ([`expectations`]).
//!
//! The doorbell is a breakpoint on the payload's `mte_doorbell_store`. That store never runs:
//! nothing answers at `DOORBELL_IPA` on virt, so it would be an external abort. The guest
//! resumes at the next instruction instead. The host's tag steps are the gdbstub's
//! memory-tagging packets (see [`memtags`]).

mod binary;
pub mod expectations;
// The protocol clients are public so that the fuzz targets (fuzz/) reach what they read.
pub mod gdb;
mod host_steps;
mod machine;
pub mod memtags;
mod pool;
pub mod qemu_ram;
pub mod qmp;
pub mod tag_view;
mod transport;
mod vmm;

pub use binary::Version;
pub use machine::Accel;
pub use transport::GdbTransport;
pub use vmm::QemuVmm;

/// A payload booted in its own QEMU.
pub type QemuGuest = mte_vmm::MailboxGuest<GdbTransport>;
