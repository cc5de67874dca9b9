//! The data of a range: the pattern of a seed the guest writes and checks (through the untagged
//! alias, so tags are neither checked nor changed), and what it must read back.

use mte_protocol::{pattern_word, Command};

use super::bulk::guest_data;
use super::command::run;
use crate::check::Checks;
use crate::error::VmmError;
use crate::vmm::Guest;

/// The guest fills `[ipa, ipa + len)` with the data pattern of `seed`.
pub fn guest_fill(guest: &mut dyn Guest, ipa: u64, len: u64, seed: u64) -> Result<(), VmmError> {
    run(guest, Command::FillPattern, &[ipa, len, seed])?;
    Ok(())
}

/// The 8-byte words of `[ipa, ipa + len)` that differ from the pattern of `seed`, as the guest
/// reads them: how many, and the first one's offset (`u64::MAX` for none).
pub fn guest_pattern_mismatches(
    guest: &mut dyn Guest,
    ipa: u64,
    len: u64,
    seed: u64,
) -> Result<(u64, u64), VmmError> {
    let reply = run(guest, Command::CheckPattern, &[ipa, len, seed])?;
    Ok((reply.result[0], reply.result[1]))
}

/// The bytes of the data pattern of `seed` over `len` bytes.
pub fn pattern_bytes(seed: u64, len: u64) -> Vec<u8> {
    (0..len)
        .step_by(8)
        .flat_map(|offset| pattern_word(seed, offset).to_le_bytes())
        .collect()
}

/// The 8 bytes of the pattern of `seed` at `offset` from its start, at any alignment.
pub fn pattern_bytes_at(seed: u64, offset: u64) -> u64 {
    let bytes: Vec<u8> = (offset..offset + 8)
        .map(|o| pattern_word(seed, o & !7).to_le_bytes()[(o & 7) as usize])
        .collect();
    u64::from_le_bytes(bytes.try_into().expect("eight bytes"))
}

/// Where `observed` first differs from `expected`, over the bytes both have.
pub fn first_difference(observed: &[u8], expected: &[u8]) -> Option<usize> {
    observed.iter().zip(expected).position(|(a, b)| a != b)
}

/// Record that the guest reads the pattern of `seed` over the range.
pub fn expect_pattern(
    checks: &mut Checks,
    what: &str,
    guest: &mut dyn Guest,
    ipa: u64,
    len: u64,
    seed: u64,
) -> Result<bool, VmmError> {
    let (mismatches, _) = guest_pattern_mismatches(guest, ipa, len, seed)?;
    Ok(checks.equal(
        &format!("{what}: 8-byte words differing from the data written"),
        0,
        mismatches,
    ))
}

/// Record that the guest reads all-zero data over the range (through the bulk buffer).
pub fn expect_zero_data(
    checks: &mut Checks,
    what: &str,
    guest: &mut dyn Guest,
    ipa: u64,
    len: u64,
) -> Result<bool, VmmError> {
    let data = guest_data(guest, ipa, len)?;
    let nonzero: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|(_, &b)| b != 0)
        .map(|(i, _)| i)
        .collect();
    Ok(checks.holds(
        &format!("{what}: data reads all zero"),
        nonzero.is_empty(),
        format!("{len} zero bytes"),
        match nonzero.first() {
            None => format!("{len} zero bytes"),
            Some(first) => format!(
                "{} non-zero bytes, the first at offset {first:#x}",
                nonzero.len()
            ),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_bytes_follow_the_protocol_words() {
        let bytes = pattern_bytes(5, 32);
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[8..16], &pattern_word(5, 8).to_le_bytes());
    }

    #[test]
    fn pattern_bytes_straddle_words() {
        let seed = 0x6d74_6531;
        assert_eq!(pattern_bytes_at(seed, 0), pattern_word(seed, 0));
        assert_eq!(pattern_bytes_at(seed, 16), pattern_word(seed, 16));
        let straddling = pattern_word(seed, 8) >> 32 | pattern_word(seed, 16) << 32;
        assert_eq!(pattern_bytes_at(seed, 12), straddling);
    }
}
