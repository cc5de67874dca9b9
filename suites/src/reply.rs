//! What the guest answered to one command, as every VMM hands it back.

use mte_protocol::{FaultRecord, Status};

/// What the guest answered to a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub result: [u64; 8],
    pub fault: FaultRecord,
}
