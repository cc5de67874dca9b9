//! The host's side of guest RAM: pages of test RAM as IPA ranges, what the host kernel says of
//! them, the lock that keeps a fork of the VMM from sharing another check's pages, and the
//! turns checks take at KSM.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use mte_protocol::{PAGE_SIZE, TEST_RAM_IPA};

use crate::error::VmmError;
use crate::host_mm::{KsmKnob, KsmState, PageState};
use crate::vmm::Guest;

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

/// KSM is one for the whole host: checks that set its knobs (and their fault-injection proofs,
/// which may run at the same time) take turns.
static KSM_TURN: Mutex<()> = Mutex::new(());

/// Held by a check while it sets KSM's knobs and until it has put them back.
pub fn ksm_turn() -> MutexGuard<'static, ()> {
    KSM_TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Put KSM's knobs back as `saved` had them.
pub fn restore_ksm(guest: &mut dyn Guest, saved: &KsmState) -> Result<(), VmmError> {
    guest.ksm_set(KsmKnob::Run, saved.run)?;
    guest.ksm_set(KsmKnob::PagesToScan, saved.pages_to_scan)?;
    guest.ksm_set(KsmKnob::SleepMillisecs, saved.sleep_millisecs)?;
    if let Some(value) = saved.use_zero_pages {
        guest.ksm_set(KsmKnob::UseZeroPages, value)?;
    }
    Ok(())
}

/// Pages `[first, first + count)` of test RAM, as an IPA range.
pub fn pages(first_page: u64, count: u64) -> (u64, u64) {
    (TEST_RAM_IPA + first_page * PAGE_SIZE, count * PAGE_SIZE)
}

/// Page states as one letter a page (see [`PageState::letter`]).
pub fn letters(states: &[PageState]) -> String {
    states.iter().map(PageState::letter).collect()
}
