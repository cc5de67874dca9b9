//! The bulk buffer: what the guest hands the host (tag maps one byte a granule, data,
//! instruction results as 64-bit words) and what the host hands the guest (tags to store).
//! Every access is volatile: the host reads and writes the buffer behind the guest's back.

use mte_protocol::{BULK_IPA, BULK_SIZE};

/// Byte `index`.
pub fn byte(index: usize) -> u8 {
    assert!((index as u64) < BULK_SIZE, "bulk byte {index} out of range");
    // SAFETY: inside the bulk buffer, RAM reserved for it and identity mapped.
    unsafe { (BULK_IPA as *const u8).add(index).read_volatile() }
}

/// Set byte `index`.
pub fn set_byte(index: usize, value: u8) {
    assert!((index as u64) < BULK_SIZE, "bulk byte {index} out of range");
    // SAFETY: as in `byte`.
    unsafe { (BULK_IPA as *mut u8).add(index).write_volatile(value) }
}

/// The 64-bit word `index` (little-endian, as the host reads it).
#[cfg(feature = "selftest")]
pub fn word(index: usize) -> u64 {
    assert!(
        (index as u64 + 1) * 8 <= BULK_SIZE,
        "bulk word {index} out of range"
    );
    // SAFETY: as in `byte`; the buffer is page aligned, so the word is aligned.
    unsafe { (BULK_IPA as *const u64).add(index).read_volatile() }
}

/// Set the 64-bit word `index`.
pub fn set_word(index: usize, value: u64) {
    assert!(
        (index as u64 + 1) * 8 <= BULK_SIZE,
        "bulk word {index} out of range"
    );
    // SAFETY: as in `word`.
    unsafe { (BULK_IPA as *mut u64).add(index).write_volatile(value) }
}
