//! What the commands check of their arguments before they touch memory, and why a command is
//! refused: the index of the bad argument, or one of the protocol's refusals.
//!
//! Ranges (`addr`, `len`) must be granule aligned and inside test RAM; their pointer tag is
//! ignored. Bulk commands take at most as many granules as the vCPU's bulk buffer has bytes. Loads and stores
//! take any pointer whose 8 bytes lie in RAM or in its untagged alias, with any tag.

use mte_protocol::{
    GRANULE, RAM_IPA, RAM_SIZE, TEST_RAM_IPA, TEST_RAM_SIZE, UNTAGGED_ALIAS_VA, granules, tcf,
};

use crate::{bulk, mte};

pub use mte_protocol::refusal::{NO_MTE, PROHIBITED, UNKNOWN_COMMAND};

/// Why a command was refused: an argument index, [`NO_MTE`], [`PROHIBITED`] or
/// [`UNKNOWN_COMMAND`].
pub type Refusal = u64;

pub fn require_tag_storage() -> Result<(), Refusal> {
    if mte::has_tag_storage() {
        Ok(())
    } else {
        Err(NO_MTE)
    }
}

/// A tag-check mode (SCTLR_EL1.TCF) given as argument `index`: asymmetric checking needs
/// MTE3.
pub fn tcf_mode(mode: u64, index: u64) -> Result<u64, Refusal> {
    if mode > tcf::ASYMMETRIC {
        return Err(index);
    }
    if mode == tcf::ASYMMETRIC && mte::level() < 3 {
        return Err(NO_MTE);
    }
    Ok(mode)
}

/// The address without its top byte (pointer tag and the rest of what TBI ignores).
pub fn untagged(ptr: u64) -> u64 {
    ptr & 0x00ff_ffff_ffff_ffff
}

pub fn untagged_alias(addr: u64) -> u64 {
    addr - RAM_IPA + UNTAGGED_ALIAS_VA
}

/// A granule-aligned range inside test RAM, untagged.
pub fn test_range(addr: u64, len: u64) -> Result<(u64, u64), Refusal> {
    let addr = untagged(addr);
    let end = TEST_RAM_IPA + TEST_RAM_SIZE;
    if !addr.is_multiple_of(GRANULE) || !(TEST_RAM_IPA..end).contains(&addr) {
        return Err(0);
    }
    if !len.is_multiple_of(GRANULE) || len > end - addr {
        return Err(1);
    }
    Ok((addr, len))
}

/// A [`test_range`] whose tag map fits the bulk buffer.
pub fn bulk_range(addr: u64, len: u64) -> Result<(u64, u64), Refusal> {
    let (addr, len) = test_range(addr, len)?;
    if granules(len) as u64 > bulk::size() {
        return Err(1);
    }
    Ok((addr, len))
}

/// An 8-byte access inside RAM or its untagged alias.
pub fn check_access(ptr: u64) -> Result<(), Refusal> {
    let addr = untagged(ptr);
    let inside = |base: u64| addr >= base && addr - base <= RAM_SIZE - 8;
    if inside(RAM_IPA) || inside(UNTAGGED_ALIAS_VA) {
        Ok(())
    } else {
        Err(0)
    }
}
