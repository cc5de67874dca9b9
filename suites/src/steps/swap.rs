//! Paging guest RAM out to the host's swap, and the swap it needs.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::error::VmmError;
use crate::host_mm::{Advice, PageState, SwapDevice};
use crate::vmm::Guest;

/// Swap is one for the whole host: a swapoff brings back every page of every check. Checks that
/// rely on their pages staying out hold this shared; a check that swaps off holds it alone.
static SWAP: RwLock<()> = RwLock::new(());

/// Held by a check whose pages must stay in swap until it brings them back itself.
pub fn no_swapoff_meanwhile() -> RwLockReadGuard<'static, ()> {
    SWAP.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held by a check that swaps off.
pub fn swapping_off() -> RwLockWriteGuard<'static, ()> {
    SWAP.write().unwrap_or_else(PoisonError::into_inner)
}

/// Skip unless the host has an active swap device with room for `bytes`.
pub fn require_swap(guest: &dyn Guest, bytes: u64) -> Result<Vec<SwapDevice>, VmmError> {
    let devices = guest.swap_devices()?;
    let needed_kib = bytes.div_ceil(1024);
    if devices.iter().any(|d| d.free_kib() >= needed_kib) {
        return Ok(devices);
    }
    let seen = if devices.is_empty() {
        "/proc/swaps lists no active swap device".to_string()
    } else {
        let list: Vec<String> = devices
            .iter()
            .map(|d| format!("{} ({} KiB free)", d.name, d.free_kib()))
            .collect();
        format!(
            "no swap device has {needed_kib} KiB free: {}",
            list.join(", ")
        )
    };
    Err(VmmError::Unsupported(format!(
        "the host has no swap to page guest RAM out to: {seen}"
    )))
}

/// When [`page_out`] stops calling MADV_PAGEOUT on pages that are not all out yet.
#[derive(Clone, Copy, Debug)]
pub enum GiveUp {
    After(Duration),
    Calls(u32),
}

/// What [`page_out`] left.
#[derive(Clone, Debug)]
pub struct PagedOut {
    /// The page states after the last call.
    pub states: Vec<PageState>,
    /// MADV_PAGEOUT calls made, and the time spent in them (not the waits between).
    pub calls: u32,
    pub madvise_time: Duration,
}

impl PagedOut {
    /// How many pages /proc/self/pagemap shows as swapped.
    pub fn swapped(&self) -> usize {
        self.states.iter().filter(|s| s.swapped).count()
    }
}

/// MADV_PAGEOUT `[ipa, ipa + len)` until /proc/self/pagemap shows every page as swapped, or
/// until `give_up`: pages still sitting in a per-CPU LRU batch are not isolated the first time.
pub fn page_out(
    guest: &mut dyn Guest,
    ipa: u64,
    len: u64,
    give_up: GiveUp,
) -> Result<PagedOut, VmmError> {
    let started = Instant::now();
    let mut out = PagedOut {
        states: Vec::new(),
        calls: 0,
        madvise_time: Duration::ZERO,
    };
    loop {
        let called = Instant::now();
        guest.madvise(ipa, len, Advice::PageOut)?;
        out.madvise_time += called.elapsed();
        out.calls += 1;
        out.states = guest.page_states(ipa, len)?;
        let given_up = match give_up {
            GiveUp::After(deadline) => started.elapsed() > deadline,
            GiveUp::Calls(calls) => out.calls == calls,
        };
        if out.states.iter().all(|s| s.swapped) || given_up {
            return Ok(out);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
