//! The data of a range: the pattern of a seed written and checked, and the data copied to the
//! bulk buffer. Through the untagged alias, so these neither check nor change tags; the
//! pattern is `pattern_word(seed, offset)` with `offset` the byte offset of each 8-byte word
//! from `addr`.

use mte_protocol::pattern_word;

use crate::args::{Refusal, test_range, untagged_alias};
use crate::{bulk, mailbox};

/// Each 8-byte word of a range in test RAM, by its offset, through the untagged alias.
fn words(addr: u64, len: u64) -> Result<impl Iterator<Item = (u64, *mut u64)>, Refusal> {
    let (addr, len) = test_range(addr, len)?;
    let alias = untagged_alias(addr);
    Ok((0..len)
        .step_by(8)
        .map(move |offset| (offset, (alias + offset) as *mut u64)))
}

/// `FillPattern`.
pub fn fill_pattern(addr: u64, len: u64, seed: u64) -> Result<(), Refusal> {
    for (offset, word) in words(addr, len)? {
        // SAFETY: test RAM (checked by `words`) through its untagged alias.
        unsafe { word.write_volatile(pattern_word(seed, offset)) };
    }
    Ok(())
}

/// `CheckPattern`: how many words differ from the pattern, and the first one's offset.
pub fn check_pattern(addr: u64, len: u64, seed: u64) -> Result<(), Refusal> {
    let (mut mismatches, mut first) = (0u64, u64::MAX);
    for (offset, word) in words(addr, len)? {
        // SAFETY: as in `fill_pattern`.
        if unsafe { word.read_volatile() } != pattern_word(seed, offset) {
            mismatches += 1;
            first = first.min(offset);
        }
    }
    mailbox::set_result(0, mismatches);
    mailbox::set_result(1, first);
    Ok(())
}

/// `ReadData`: the range's data to the bulk buffer.
pub fn read_data(addr: u64, len: u64) -> Result<(), Refusal> {
    let words = words(addr, len)?;
    if len > bulk::size() {
        return Err(1);
    }
    for (offset, word) in words {
        // SAFETY: as in `fill_pattern`.
        bulk::set_word(offset as usize / 8, unsafe { word.read_volatile() });
    }
    Ok(())
}
