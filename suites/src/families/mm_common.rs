//! Steps and helpers the memory-management families share: guest tag maps and data through the
//! bulk buffer, seeded tag patterns, boots with a given backing, timing.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use mte_protocol::{pattern_word, Command, PAGE_SIZE};
use mte_results::Evidence;

use crate::check::{self, run, tag_map_report, Checks};
use crate::host_mm::{Backing, PageState};
use crate::vmm::{BootOptions, Guest, Vmm, VmmError};

/// A fork of the VMM shares every page of every guest in the process with the child until it
/// exits: MADV_PAGEOUT leaves such pages alone, shared huge pages are not split, and a write
/// moves a page to a new frame. Checks that fork hold this exclusively; checks that rely on
/// their guest's pages being the process's own hold it shared.
static FORKS: RwLock<()> = RwLock::new(());

/// Held by a check that forks the VMM.
pub fn forking() -> RwLockWriteGuard<'static, ()> {
    FORKS.write().unwrap_or_else(PoisonError::into_inner)
}

/// Held by a check whose pages must not be shared with a forked child meanwhile.
pub fn no_forks_meanwhile() -> RwLockReadGuard<'static, ()> {
    FORKS.read().unwrap_or_else(PoisonError::into_inner)
}

/// A small deterministic generator (SplitMix64), so that a seed replays a check exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0), near enough for scheduling choices.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Tags for `n` granules, none of them 0 (so a zeroed tag is always caught), varied.
pub fn nonzero_tags(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| 1 + rng.below(15) as u8).collect()
}

/// Pages `[first, first + count)` of test RAM, as an IPA range.
pub fn pages(first_page: u64, count: u64) -> (u64, u64) {
    (
        mte_protocol::TEST_RAM_IPA + first_page * PAGE_SIZE,
        count * PAGE_SIZE,
    )
}

/// Boot a guest with MTE on `backing`; skip where the guest CPU has no tag storage.
pub fn boot_tagged(vmm: &dyn Vmm, backing: Backing) -> Result<Box<dyn Guest>, VmmError> {
    check::boot_tagged(
        vmm,
        &BootOptions {
            backing,
            ..BootOptions::default()
        },
    )
}

/// Boot a guest without MTE (its pages are never tagged): the control of cost measurements.
pub fn boot_untagged(vmm: &dyn Vmm) -> Result<Box<dyn Guest>, VmmError> {
    vmm.boot(&BootOptions {
        mte: false,
        ..BootOptions::default()
    })
}

/// Skip unless the lane's VMM owns the mapping of guest RAM (and made it as asked).
pub fn require_backing(guest: &dyn Guest, wanted: Backing) -> Result<(), VmmError> {
    let actual = guest.ram_backing()?;
    if actual != wanted {
        return Err(VmmError::Host(format!(
            "asked for guest RAM backed by {}, the VMM made {}",
            wanted.describe(),
            actual.describe()
        )));
    }
    Ok(())
}

/// The guest's LDG of every granule of the range.
pub fn guest_ldg(guest: &mut dyn Guest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
    tag_map_report(guest, Command::ReadTags, ipa, len)
}

/// The guest stores `tags` (one per granule) over the range with STG.
pub fn guest_store_tags(guest: &mut dyn Guest, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
    guest.write_bulk(tags)?;
    run(
        guest,
        Command::TagFromBulk,
        &[ipa, tags.len() as u64 * mte_protocol::GRANULE],
    )?;
    Ok(())
}

/// The guest tags every granule of the range with IRG+STG; returns the tags it chose.
pub fn guest_tag_random(guest: &mut dyn Guest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
    tag_map_report(guest, Command::TagRandom, ipa, len)
}

/// The guest fills the range with the data pattern of `seed` (untagged alias: tags untouched).
pub fn guest_fill(guest: &mut dyn Guest, ipa: u64, len: u64, seed: u64) -> Result<(), VmmError> {
    run(guest, Command::FillPattern, &[ipa, len, seed])?;
    Ok(())
}

/// How many 8-byte words of the range differ from the pattern of `seed`, as the guest reads
/// them (untagged alias).
pub fn guest_pattern_mismatches(
    guest: &mut dyn Guest,
    ipa: u64,
    len: u64,
    seed: u64,
) -> Result<u64, VmmError> {
    Ok(run(guest, Command::CheckPattern, &[ipa, len, seed])?.result[0])
}

/// The guest's copy of the range's data (through the bulk buffer).
pub fn guest_data(guest: &mut dyn Guest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
    guest.write_bulk(&vec![0x5a; len as usize])?;
    run(guest, Command::ReadData, &[ipa, len])?;
    guest.read_bulk(len as usize)
}

/// The bytes of the data pattern of `seed` over `len` bytes.
pub fn pattern_bytes(seed: u64, len: u64) -> Vec<u8> {
    (0..len)
        .step_by(8)
        .flat_map(|offset| pattern_word(seed, offset).to_le_bytes())
        .collect()
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
    let mismatches = guest_pattern_mismatches(guest, ipa, len, seed)?;
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

/// Page states as one letter a page (see [`PageState::letter`]).
pub fn letters(states: &[PageState]) -> String {
    states.iter().map(PageState::letter).collect()
}

/// Run `f` and time it.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

/// A measurement for the record: it lands in the verdict's evidence as a value.
pub fn measured(checks: &mut Checks, what: &str, how: &str, value: String) {
    checks.evidence(Evidence::Values {
        what: what.into(),
        expected: format!("measured: {how}"),
        observed: value,
    });
}

/// A note for the record.
pub fn note(checks: &mut Checks, text: impl Into<String>) {
    checks.evidence(Evidence::Note { text: text.into() });
}

/// Microseconds with one decimal.
pub fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_tags_are_varied_and_never_zero() {
        let tags = nonzero_tags(7, 1024);
        assert!(tags.iter().all(|&t| (1..16).contains(&t)));
        for t in 1..16u8 {
            assert!(tags.contains(&t));
        }
        assert_eq!(tags, nonzero_tags(7, 1024));
        assert_ne!(tags, nonzero_tags(8, 1024));
    }

    #[test]
    fn a_shuffle_is_a_permutation_that_the_seed_replays() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        Rng::new(3).shuffle(&mut a);
        Rng::new(3).shuffle(&mut b);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, sorted);
    }

    #[test]
    fn pattern_bytes_follow_the_protocol_words() {
        let bytes = pattern_bytes(5, 32);
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[8..16], &pattern_word(5, 8).to_le_bytes());
    }
}
