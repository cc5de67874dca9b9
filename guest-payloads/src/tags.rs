//! The tags of a range through the bulk buffer, one byte a granule: random tags the guest
//! chooses (IRG), tags the host gives it, and the tags it reads back (LDG).

use mte_protocol::{GRANULE, granules, tag_of, with_tag};

use crate::args::{Refusal, bulk_range, require_tag_storage};
use crate::{bulk, mte};

/// `TagRandom`: IRG+STG over the range, the chosen tags to the bulk buffer.
pub fn tag_random(addr: u64, len: u64) -> Result<(), Refusal> {
    for_each_granule(addr, len, |i, granule| {
        let ptr = mte::random_tag(granule);
        // SAFETY: test RAM (checked by `for_each_granule`), Normal-Tagged, given over by the
        // host.
        unsafe { mte::store_tag(ptr) };
        bulk::set_byte(i, tag_of(ptr));
    })
}

/// `TagFromBulk`: STG of the tags in the bulk buffer over the range.
pub fn tag_from_bulk(addr: u64, len: u64) -> Result<(), Refusal> {
    for_each_granule(addr, len, |i, granule| {
        // SAFETY: as in `tag_random`.
        unsafe { mte::store_tag(with_tag(granule, bulk::byte(i))) };
    })
}

/// `ReadTags`: LDG of every granule of the range into the bulk buffer.
pub fn read_tags(addr: u64, len: u64) -> Result<(), Refusal> {
    for_each_granule(addr, len, |i, granule| {
        // SAFETY: test RAM (checked by `for_each_granule`), mapped.
        bulk::set_byte(i, unsafe { mte::load_tag(granule) });
    })
}

/// Run `visit(index, address)` for each granule of a bulk range, on a CPU with tag storage.
pub fn for_each_granule(
    addr: u64,
    len: u64,
    mut visit: impl FnMut(usize, u64),
) -> Result<(), Refusal> {
    require_tag_storage()?;
    let (addr, len) = bulk_range(addr, len)?;
    for i in 0..granules(len) {
        visit(i, addr + i as u64 * GRANULE);
    }
    Ok(())
}
