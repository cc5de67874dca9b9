//! The KVM backend: a minimal VMM on kvm-ioctls that boots one payload per VM and talks to it
//! through the mailbox ([`KvmTransport`] under `mte_vmm`'s mailbox guest), with the host steps
//! only a VMM that owns guest RAM can take (madvise, fork, racing tag copies, a second VM on the
//! same memory) and the suite's reference migration engine ([`migration_engine`]).
//!
//! A program that embeds it must call [`serve_migration_destination_if_asked`] first thing in
//! `main`: the engine's new-process method starts the program's own executable as the
//! destination.

mod abi;
mod aborting_device;
mod backing;
pub mod copy_tags;
mod fork;
mod held_copy;
mod host_mte;
mod host_steps;
mod ioctls;
pub mod ipa;
mod memory;
pub mod migration_engine;
mod mte_view;
mod peer;
mod race;
mod sve;
pub mod timing;
mod transport;
mod uffd;
mod vcpu;
mod vm;
mod vmm;
mod watchdog;

pub use migration_engine::serve_migration_destination_if_asked;
pub use transport::KvmTransport;
pub use vmm::KvmVmm;

/// A payload booted in its own VM, on KVM.
pub type KvmGuest = mte_vmm::MailboxGuest<KvmTransport>;
