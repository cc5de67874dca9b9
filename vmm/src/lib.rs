//! What every VMM backend of the suite shares. A backend implements a [`Transport`] (guest
//! memory, and a vCPU run to the doorbell) and the [`HostSteps`] it offers; [`MailboxGuest`]
//! speaks the mailbox protocol over it and is the [`Guest`](mte_suites::vmm::Guest) the
//! scenarios drive. Payloads are read and checked by [`payload`].

pub mod boot_check;
mod guest;
pub mod host_kernel;
pub mod payload;
mod transport;

pub use guest::{HostSteps, MailboxGuest, Vcpu};
pub use payload::{Payload, PayloadDir};
pub use transport::{Stop, Transport};
