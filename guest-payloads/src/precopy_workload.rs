//! The guest's side of the pre-copy migration check: a workload that keeps changing tags (and
//! only tags) while the host copies its memory round after round, until the host asks it to
//! stop.

use mte_protocol::STOP_ARG;

use crate::args::Refusal;
use crate::tags::{for_each_granule, read_tags};
use crate::{mailbox, mte};

/// `RetagUntilStopped`: IRG+STG over the range until the host asks to stop, then LDG of every
/// granule into the bulk buffer. `result = [passes]`.
pub fn retag_until_stopped(addr: u64, len: u64) -> Result<(), Refusal> {
    let mut passes = 0u64;
    loop {
        for_each_granule(addr, len, |_, granule| {
            // SAFETY: test RAM (checked by `for_each_granule`), Normal-Tagged, given over by
            // the host.
            unsafe { mte::store_tag(mte::random_tag(granule)) };
        })?;
        passes += 1;
        mailbox::set_result(0, passes);
        if stop_requested() {
            break;
        }
    }
    read_tags(addr, len)
}

/// Whether the host has set the stop argument while the command ran. Volatile: the host writes
/// it behind the guest's back.
fn stop_requested() -> bool {
    // SAFETY: a field of this vCPU's mailbox page, identity mapped RAM.
    unsafe { mailbox::arg_address(STOP_ARG).read_volatile() != 0 }
}
