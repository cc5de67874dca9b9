//! The host's side of guest RAM: pages of test RAM as IPA ranges, what the host kernel says of
//! them, and the lock that keeps a fork of the VMM from sharing another check's pages.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use mte_protocol::{PAGE_SIZE, TEST_RAM_IPA};

use crate::host_mm::PageState;

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

/// Pages `[first, first + count)` of test RAM, as an IPA range.
pub fn pages(first_page: u64, count: u64) -> (u64, u64) {
    (TEST_RAM_IPA + first_page * PAGE_SIZE, count * PAGE_SIZE)
}

/// Page states as one letter a page (see [`PageState::letter`]).
pub fn letters(states: &[PageState]) -> String {
    states.iter().map(PageState::letter).collect()
}
