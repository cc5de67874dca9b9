//! Tag maps of a range, one tag a granule: what the guest stores and reads (STG, IRG, LDG through
//! the bulk buffer) and what the host reads, compared with what they must be.

use mte_protocol::{Command, GRANULE};

use super::bulk::tag_map_report;
use super::command::run;
use crate::check::Checks;
use crate::error::VmmError;
use crate::vmm::Guest;

/// The guest's LDG of every granule of `[ipa, ipa + len)`.
pub fn guest_ldg(guest: &mut dyn Guest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
    tag_map_report(guest, Command::ReadTags, ipa, len)
}

/// The guest tags every granule of `[ipa, ipa + len)` with IRG+STG; returns the tags it chose.
pub fn guest_tag_random(guest: &mut dyn Guest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
    tag_map_report(guest, Command::TagRandom, ipa, len)
}

/// The guest stores `tags` (one per granule) from `ipa` on with STG.
pub fn guest_store_tags(guest: &mut dyn Guest, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
    guest.write_bulk(tags)?;
    run(
        guest,
        Command::TagFromBulk,
        &[ipa, tags.len() as u64 * GRANULE],
    )?;
    Ok(())
}

/// The comparisons of a guest's tag maps, which read them from the guest or the host first.
impl Checks {
    /// The guest's LDG of `[ipa, ipa + len)` must equal `expected`; returns what it read.
    pub fn expect_guest_tags(
        &mut self,
        guest: &mut dyn Guest,
        (ipa, len): (u64, u64),
        expected: (&str, &[u8]),
        observed_from: &str,
    ) -> Result<Vec<u8>, VmmError> {
        let ldg = guest_ldg(guest, ipa, len)?;
        self.tags_equal(ipa, expected, (observed_from, &ldg));
        Ok(ldg)
    }

    /// The host's read of the tags of `[ipa, ipa + len)` must equal `expected`; returns what
    /// it read.
    pub fn expect_host_tags(
        &mut self,
        guest: &mut dyn Guest,
        (ipa, len): (u64, u64),
        expected: (&str, &[u8]),
        observed_from: &str,
    ) -> Result<Vec<u8>, VmmError> {
        let host = guest.host_read_tags(ipa, len)?;
        self.note_host_view(guest);
        self.tags_equal(ipa, expected, (observed_from, &host));
        Ok(host)
    }

    /// Say, once a check, how the host's tag steps reach the tags in this lane, where that is
    /// not the ioctl the checks name.
    pub fn note_host_view(&mut self, guest: &dyn Guest) {
        if let Some(view) = guest.host_tag_view() {
            self.note_once(format!("the host's view of the tags here: {view}"));
        }
    }
}
