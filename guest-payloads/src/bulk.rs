//! The bulk buffer: what the guest hands the host (tag maps one byte a granule, data,
//! instruction results as 64-bit words) and what the host hands the guest (tags to store).
//! Each vCPU has its own (`mte_protocol::bulk`). Every access is volatile: the host reads and
//! writes the buffer behind the guest's back.

use crate::cpu;

/// This vCPU's bulk buffer: its address and its size in bytes.
fn mine() -> (u64, u64) {
    mte_protocol::bulk(cpu::index())
}

/// The size of this vCPU's bulk buffer, in bytes.
pub fn size() -> u64 {
    mine().1
}

/// Byte `index`.
pub fn byte(index: usize) -> u8 {
    let (base, size) = mine();
    assert!((index as u64) < size, "bulk byte {index} out of range");
    // SAFETY: inside the bulk buffer, RAM reserved for it and identity mapped.
    unsafe { (base as *const u8).add(index).read_volatile() }
}

/// Set byte `index`.
pub fn set_byte(index: usize, value: u8) {
    let (base, size) = mine();
    assert!((index as u64) < size, "bulk byte {index} out of range");
    // SAFETY: as in `byte`.
    unsafe { (base as *mut u8).add(index).write_volatile(value) }
}

/// The 64-bit word `index` (little-endian, as the host reads it).
#[cfg(feature = "selftest")]
pub fn word(index: usize) -> u64 {
    let (base, size) = mine();
    assert!(
        (index as u64 + 1) * 8 <= size,
        "bulk word {index} out of range"
    );
    // SAFETY: as in `byte`; the buffer is page aligned, so the word is aligned.
    unsafe { (base as *const u64).add(index).read_volatile() }
}

/// Set the 64-bit word `index`.
pub fn set_word(index: usize, value: u64) {
    let (base, size) = mine();
    assert!(
        (index as u64 + 1) * 8 <= size,
        "bulk word {index} out of range"
    );
    // SAFETY: as in `word`.
    unsafe { (base as *mut u64).add(index).write_volatile(value) }
}
