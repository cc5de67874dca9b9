//! What the guest reports through its bulk buffer, which the host poisons first so that a guest
//! that reports nothing is caught.

use mte_protocol::Command;

use super::command::run;
use crate::error::VmmError;
use crate::vmm::Guest;

/// What the bulk buffer holds where the guest did not write: no tag, and no plausible result.
pub const NOT_WRITTEN: u8 = 0xff;

/// Poison the first `len` bytes of the bulk buffer, run `command`, read them back: a guest
/// that reports nothing is caught.
pub fn bulk_report(
    guest: &mut dyn Guest,
    len: usize,
    command: Command,
    args: &[u64],
) -> Result<Vec<u8>, VmmError> {
    guest.write_bulk(&vec![NOT_WRITTEN; len])?;
    run(guest, command, args)?;
    guest.read_bulk(len)
}

/// The tag map a command reports for `[ipa, ipa + len)`, one tag per granule (ReadTags for
/// LDG, TagRandom for the tags IRG chose).
pub fn tag_map_report(
    guest: &mut dyn Guest,
    command: Command,
    ipa: u64,
    len: u64,
) -> Result<Vec<u8>, VmmError> {
    bulk_report(guest, mte_protocol::granules(len), command, &[ipa, len])
}

/// The guest's copy of the data of `[ipa, ipa + len)`.
pub fn guest_data(guest: &mut dyn Guest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
    bulk_report(guest, len as usize, Command::ReadData, &[ipa, len])
}
