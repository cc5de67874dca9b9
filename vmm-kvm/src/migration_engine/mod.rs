//! The suite's reference migration engine for MTE guests: the source VM's memory, tags and vCPU
//! state into a versioned stream ([`stream`]) and out of it into a destination VM, which resumes
//! after the doorbell the source stopped at. Methods: stop-and-copy into a VM of this process
//! ([`in_process`]) or of a new process started from this executable ([`to_new_process`],
//! [`destination_process`]), iterative pre-copy with KVM dirty logging ([`in_process`],
//! [`dirty`]), and post-copy with userfaultfd ([`postcopy`], each page put in place by
//! [`fill`]); and a stream saved into memory and restored from it ([`saved`]), to carry a
//! guest to another kernel. Faults a stream may suffer on the way ([`send::in_transit`]) serve
//! the suite's fault injection.
//!
//! The stream carries what the guest has (RAM, tags, every register KVM_GET_REG_LIST names),
//! not how the VM was built: both ends create their VM and vCPU the same way (MTE on, one vCPU,
//! PSCI 0.2), as a VMM's configuration would on both hosts.

mod arrived;
mod control;
mod destination_process;
mod dirty;
pub(crate) mod fill;
mod in_process;
mod postcopy;
mod receive;
mod saved;
mod send;
mod source;
pub mod stream;
mod to_new_process;
mod vcpu_state;

use mte_suites::migration_plan::{Method, MigrationPlan, SavedStream, StreamFault};
use mte_suites::vmm::{Guest, VmmError};

use crate::KvmGuest;
use arrived::MigratedGuest;

pub use destination_process::{serve_migration_destination_if_asked, DESTINATION_FLAG};

/// Save `source` into a stream in memory ([`saved`]).
pub(crate) fn save(source: KvmGuest, fault: Option<StreamFault>) -> Result<SavedStream, VmmError> {
    saved::save(source, fault)
}

/// A guest restored from a saved stream ([`saved`]).
pub(crate) fn restore(
    stream: &[u8],
    fault: Option<StreamFault>,
    deadline: std::time::Duration,
) -> Result<Box<dyn Guest>, VmmError> {
    Ok(Box::new(saved::restore(stream, fault, deadline)?))
}

/// Move `source` to a destination as `plan` says.
pub(crate) fn migrate(source: KvmGuest, plan: &MigrationPlan) -> Result<Box<dyn Guest>, VmmError> {
    let fault = plan.fault;
    let (inner, report) = match &plan.method {
        Method::StopAndCopy => in_process::stop_and_copy(source, fault)?,
        Method::PreCopy {
            workload,
            max_rounds,
        } => in_process::pre_copy(source, workload, *max_rounds, fault)?,
        Method::StopAndCopyNewProcess => {
            return Ok(Box::new(to_new_process::stop_and_copy_to_new_process(
                source, fault,
            )?))
        }
        Method::PostCopy => return Ok(Box::new(postcopy::post_copy(source, fault)?)),
    };
    Ok(Box::new(MigratedGuest {
        server: None,
        inner,
        report,
    }))
}
