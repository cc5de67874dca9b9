//! The guest's part in migration checks: a workload that keeps changing tags (and only tags)
//! while the host copies its memory round after round.

use mte_protocol::{GRANULE, MAILBOX_IPA, STOP_ARG, granules, offsets};

use crate::commands::{Refusal, bulk, bulk_range, require_tag_storage};
use crate::{mailbox, mte};

/// `RetagUntilStopped`: IRG+STG over the range until the host asks to stop, then LDG of every
/// granule into the bulk buffer.
pub fn retag_until_stopped(addr: u64, len: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    let (addr, len) = bulk_range(addr, len)?;
    let mut passes = 0u64;
    loop {
        for i in 0..granules(len) {
            let ptr = mte::random_tag(addr + i as u64 * GRANULE);
            // SAFETY: test RAM (checked by `bulk_range`), Normal-Tagged, given over by the host.
            unsafe { mte::store_tag(ptr) };
        }
        passes += 1;
        mailbox::set_result(0, passes);
        if stop_requested() {
            break;
        }
    }
    for i in 0..granules(len) {
        // SAFETY: as above; the bulk index is within BULK_SIZE (checked by `bulk_range`).
        unsafe {
            let tag = mte::load_tag(addr + i as u64 * GRANULE);
            bulk().add(i).write_volatile(tag);
        }
    }
    Ok(())
}

/// Whether the host has set the stop argument while the command ran. Volatile: the host writes
/// it behind the guest's back.
fn stop_requested() -> bool {
    let stop = (MAILBOX_IPA as usize + offsets::ARGS + STOP_ARG * 8) as *const u64;
    // SAFETY: a field of the mailbox page, identity mapped RAM.
    unsafe { stop.read_volatile() != 0 }
}
