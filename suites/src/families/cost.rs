//! What tags cost on the memory-management paths: first touch, copy-on-write after fork, and
//! swap out and in, per page, for a VM with MTE (every page it touches is tagged) against one
//! without. Each check still compares tags and data, so that a number is never reported from
//! a run that went wrong; the numbers land in the evidence as values.
//!
//! Method: the measured pages are kept out of transparent huge pages (MADV_NOHUGEPAGE), so
//! that each page faults, copies and swaps alone; the first touch of a whole transparent huge
//! page is measured apart. Each cost is the best time of a guest command (or host call) over
//! fresh pages, minus the best time of the same command over the same pages once they are in
//! place, divided by the pages; repetitions use fresh pages, tagged and untagged VMs take
//! turns. The cost checks run one at a time, but other checks may run beside them, so the
//! numbers are indicative, not benchmarks.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use mte_protocol::{granules, PAGE_SIZE};

use crate::check::{Checks, Finding};
use crate::host_mm::{Advice, Backing, ForkPlan};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::vmm::{Guest, Vmm, VmmError};

use super::mm_common::{
    boot_tagged, boot_untagged, expect_pattern, forking, guest_fill, guest_ldg,
    guest_pattern_mismatches, guest_store_tags, measured, micros, no_forks_meanwhile, nonzero_tags,
    pages, require_backing, timed,
};
use super::swap::require_swap;

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "cost::first_touch_tagged_vs_untagged",
        summary: "The guest's first write to fresh pages, per page, in a VM with MTE (KVM zeroes \
                  each page's tags as it maps it) against one without; the fresh pages of the \
                  MTE VM read zero tags from host and guest",
        why: "What MTE costs a VMM on the fault path (sanitise_mte_tags() clears the tags of \
              every page KVM maps first); measured so that a change to it shows",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: first_touch,
    },
    Scenario {
        name: "cost::cow_tagged_vs_untagged",
        summary: "The guest's writes that break copy-on-write after the VMM forked, per page, in \
                  a VM with MTE (the copy carries the tags) against one without; tags and data \
                  stay right",
        why: "What MTE costs a forking VMM: copy_highpage() copies the tags of a tagged page \
              along with its data",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: cow,
    },
    Scenario {
        name: "cost::swap_tagged_vs_untagged",
        summary: "MADV_PAGEOUT of guest pages and the guest's touch that brings them back, per \
                  page, in a VM with MTE (tags saved and restored) against one without; tags \
                  and data come back",
        why: "What MTE costs on swap: arm64 saves each tagged page's tags on swap-out \
              (mte_save_tags()) and restores them on swap-in",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: swap,
    },
];

/// Pages per measurement, and repetitions on fresh pages.
const N: u64 = 64;
const REPS: u64 = 5;
const FIRST_PAGE: u64 = 512;

/// The cost checks take turns, so that at least they do not disturb each other's numbers.
static TURN: Mutex<()> = Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The best (least disturbed) times of a step over fresh pages and of the same step again.
#[derive(Clone, Copy, Debug)]
struct Best {
    first: Duration,
    again: Duration,
}

impl Best {
    fn new() -> Self {
        Best {
            first: Duration::MAX,
            again: Duration::MAX,
        }
    }
    fn add(&mut self, first: Duration, again: Duration) {
        self.first = self.first.min(first);
        self.again = self.again.min(again);
    }
    /// (best first - best again) / units, never negative.
    fn per(&self, units: u64) -> Duration {
        self.first.saturating_sub(self.again) / units as u32
    }
}

fn ratio(tagged: Duration, untagged: Duration) -> String {
    if untagged.is_zero() {
        "n/a (untagged cost measured as 0)".into()
    } else {
        format!("{:.2}", tagged.as_secs_f64() / untagged.as_secs_f64())
    }
}

fn record(checks: &mut Checks, what: &str, how: &str, tagged: Duration, untagged: Duration) {
    measured(checks, &format!("{what}, MTE VM"), how, micros(tagged));
    measured(
        checks,
        &format!("{what}, VM without MTE"),
        how,
        micros(untagged),
    );
    measured(
        checks,
        &format!("{what}, tagged / untagged"),
        how,
        ratio(tagged, untagged),
    );
}

/// Keep the measured pages out of transparent huge pages, so that they fault one by one.
fn small_pages(guest: &mut dyn Guest) -> Result<(), VmmError> {
    let (ipa, len) = pages(FIRST_PAGE, N * REPS);
    guest.madvise(ipa, len, Advice::NoHugePage)
}

/// Time the first write to fresh pages and the write again.
fn first_touch_once(
    guest: &mut dyn Guest,
    checks: &mut Checks,
    rep: u64,
    best: &mut Best,
) -> Result<(), VmmError> {
    let (ipa, len) = pages(FIRST_PAGE + rep * N, N);
    let (first, t1) = timed(|| guest_fill(guest, ipa, len, 1));
    first?;
    let (again, t2) = timed(|| guest_fill(guest, ipa, len, 2));
    again?;
    best.add(t1, t2);
    expect_pattern(checks, "guest after the first touch", guest, ipa, len, 2)?;
    Ok(())
}

/// Pages in a transparent huge page (2 MiB with 4 KiB pages).
const THP_PAGES: u64 = 512;
/// The first of the [`REPS`] huge pages whose first touch is timed (clear of [`FIRST_PAGE`]).
const THP_FIRST: u64 = 4 * THP_PAGES;

/// Time the first write to one page of a fresh 2 MiB region (one write fault maps the whole
/// transparent huge page) and the write again; false where no huge page backs it.
fn thp_first_touch_once(
    guest: &mut dyn Guest,
    rep: u64,
    best: &mut Best,
) -> Result<bool, VmmError> {
    let (ipa, len) = pages(THP_FIRST + rep * THP_PAGES, 1);
    let (first, t1) = timed(|| guest_fill(guest, ipa, len, 1));
    first?;
    let (again, t2) = timed(|| guest_fill(guest, ipa, len, 2));
    again?;
    best.add(t1, t2);
    Ok(guest.page_states(ipa, len)?.iter().all(|s| s.huge))
}

fn first_touch(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _turn = take_turn();
    let _forks = no_forks_meanwhile();
    let mut tagged = boot_tagged(vmm, Backing::PrivateAnonymous)?;
    require_backing(tagged.as_ref(), Backing::PrivateAnonymous)?;
    let mut plain = boot_untagged(vmm)?;
    small_pages(tagged.as_mut())?;
    small_pages(plain.as_mut())?;
    let mut checks = Checks::new();
    let (mut best, mut best_plain) = (Best::new(), Best::new());
    let (mut thp, mut thp_plain) = (Best::new(), Best::new());
    let mut huge = true;
    // Tagged and untagged take turns, so that both see the same disturbances.
    for rep in 0..REPS {
        first_touch_once(tagged.as_mut(), &mut checks, rep, &mut best)?;
        first_touch_once(plain.as_mut(), &mut checks, rep, &mut best_plain)?;
        huge &= thp_first_touch_once(tagged.as_mut(), rep, &mut thp)?;
        huge &= thp_first_touch_once(plain.as_mut(), rep, &mut thp_plain)?;
    }

    let (ipa, len) = pages(FIRST_PAGE, N * REPS);
    let zeros = vec![0u8; granules(len)];
    let host = tagged.host_read_tags(ipa, len)?;
    checks.tags_equal(
        ipa,
        ("zero tags", &zeros),
        ("host, pages the guest touched first with data", &host),
    );
    let ldg = guest_ldg(tagged.as_mut(), ipa, len)?;
    checks.tags_equal(ipa, ("zero tags", &zeros), ("guest LDG", &ldg));
    let (ipa, len) = pages(THP_FIRST, THP_PAGES);
    let zeros = vec![0u8; granules(len)];
    let host = tagged.host_read_tags(ipa, len)?;
    checks.tags_equal(
        ipa,
        ("zero tags", &zeros),
        ("host, a 2 MiB region the guest touched once", &host),
    );
    record(
        &mut checks,
        "first touch (guest write fault) per 4 KiB page",
        &format!(
            "guest FillPattern over {N} fresh pages (MADV_NOHUGEPAGE), best of {REPS}, minus \
             the same over the same pages again, best of {REPS}; divided by {N}"
        ),
        best.per(N),
        best_plain.per(N),
    );
    let how = format!(
        "guest FillPattern of one page of a fresh 2 MiB region, best of {REPS}, minus the \
         same again; one write fault maps the whole transparent huge page"
    );
    if huge {
        record(
            &mut checks,
            "first touch of a transparent huge page (2 MiB)",
            &how,
            thp.per(1),
            thp_plain.per(1),
        );
    } else {
        measured(
            &mut checks,
            "first touch of a transparent huge page (2 MiB)",
            &how,
            "not measured: guest RAM is not backed by transparent huge pages here".into(),
        );
    }
    Ok(checks.finish())
}

/// Fork, then time the guest's writes over pages it shares with the child and its writes over
/// the same pages once it owns them. Returns the fork call's time.
fn cow_once(
    guest: &mut dyn Guest,
    ipa: u64,
    len: u64,
    best: &mut Best,
) -> Result<Duration, VmmError> {
    let (child, fork_time) = timed(|| guest.fork(&ForkPlan::default()));
    let child = child?;
    let (first, t1) = timed(|| guest_fill(guest, ipa, len, 0xc1));
    let (again, t2) = timed(|| guest_fill(guest, ipa, len, 0xc2));
    let finished = child.finish();
    first?;
    again?;
    finished?;
    best.add(t1, t2);
    Ok(fork_time)
}

fn cow(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _turn = take_turn();
    let _forks = forking();
    let mut tagged = boot_tagged(vmm, Backing::PrivateAnonymous)?;
    require_backing(tagged.as_ref(), Backing::PrivateAnonymous)?;
    let mut plain = boot_untagged(vmm)?;
    small_pages(tagged.as_mut())?;
    small_pages(plain.as_mut())?;
    let mut checks = Checks::new();
    let (mut best, mut best_plain) = (Best::new(), Best::new());
    let mut fork_time = Duration::MAX;
    let mut all_tags = Vec::new();
    for rep in 0..REPS {
        let (ipa, len) = pages(FIRST_PAGE + rep * N, N);
        let tags = nonzero_tags(0xc0 + rep, granules(len));
        guest_store_tags(tagged.as_mut(), ipa, &tags)?;
        guest_fill(tagged.as_mut(), ipa, len, 0xc0)?;
        guest_fill(plain.as_mut(), ipa, len, 0xc0)?;
        fork_time = fork_time.min(cow_once(tagged.as_mut(), ipa, len, &mut best)?);
        fork_time = fork_time.min(cow_once(plain.as_mut(), ipa, len, &mut best_plain)?);
        expect_pattern(
            &mut checks,
            "MTE guest after CoW",
            tagged.as_mut(),
            ipa,
            len,
            0xc2,
        )?;
        expect_pattern(
            &mut checks,
            "guest without MTE after CoW",
            plain.as_mut(),
            ipa,
            len,
            0xc2,
        )?;
        all_tags.extend(tags);
    }
    let (ipa, len) = pages(FIRST_PAGE, N * REPS);
    let host = tagged.host_read_tags(ipa, len)?;
    checks.tags_equal(
        ipa,
        ("tags before the fork", &all_tags),
        ("host after CoW", &host),
    );
    let ldg = guest_ldg(tagged.as_mut(), ipa, len)?;
    checks.tags_equal(
        ipa,
        ("tags before the fork", &all_tags),
        ("guest LDG after CoW", &ldg),
    );
    record(
        &mut checks,
        "copy-on-write break (guest write after fork) per page",
        &format!(
            "guest FillPattern over {N} pages shared with a forked child, best of {REPS}, \
             minus the same over the pages once it owns them, best of {REPS}; divided by {N}"
        ),
        best.per(N),
        best_plain.per(N),
    );
    measured(
        &mut checks,
        "fork of the VMM process, until its child is up",
        &format!(
            "best of {} forks; the whole runner is forked, not only a guest",
            2 * REPS
        ),
        micros(fork_time),
    );
    Ok(checks.finish())
}

/// Swap the range (which holds the pattern 0x5a) out and in. Returns the time of the
/// MADV_PAGEOUT calls per page they swapped: fresh pages may still sit in a per-CPU LRU batch,
/// which a call cannot take, so it is called until every page is out (the waits between calls
/// are not counted).
fn swap_once(
    guest: &mut dyn Guest,
    checks: &mut Checks,
    ipa: u64,
    len: u64,
    swap_in: &mut Best,
) -> Result<Duration, VmmError> {
    let mut spent = Duration::ZERO;
    let mut calls = 0;
    let states = loop {
        let (out, t) = timed(|| guest.madvise(ipa, len, Advice::PageOut));
        out?;
        spent += t;
        calls += 1;
        let states = guest.page_states(ipa, len)?;
        if states.iter().all(|s| s.swapped) || calls == 50 {
            break states;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let swapped = states.iter().filter(|s| s.swapped).count();
    checks.holds(
        "every page left memory for swap",
        swapped == states.len(),
        format!("{N} pages swapped"),
        format!("{swapped} swapped after {calls} MADV_PAGEOUT"),
    );
    let (first, t1) = timed(|| guest_pattern_mismatches(guest, ipa, len, 0x5a));
    let (again, t2) = timed(|| guest_pattern_mismatches(guest, ipa, len, 0x5a));
    checks.equal("data words differing after swap-in", 0, first?);
    again?;
    swap_in.add(t1, t2);
    Ok(spent / swapped.max(1) as u32)
}

fn swap(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _turn = take_turn();
    let _forks = no_forks_meanwhile();
    let mut tagged = boot_tagged(vmm, Backing::PrivateAnonymous)?;
    require_backing(tagged.as_ref(), Backing::PrivateAnonymous)?;
    require_swap(tagged.as_ref(), 2 * REPS * N * PAGE_SIZE)?;
    let mut plain = boot_untagged(vmm)?;
    small_pages(tagged.as_mut())?;
    small_pages(plain.as_mut())?;
    let mut checks = Checks::new();
    let (mut out, mut out_plain) = (Duration::MAX, Duration::MAX);
    let (mut swap_in, mut swap_in_plain) = (Best::new(), Best::new());
    let mut all_tags = Vec::new();
    for rep in 0..REPS {
        let (ipa, len) = pages(FIRST_PAGE + rep * N, N);
        let tags = nonzero_tags(0x5a + rep, granules(len));
        guest_store_tags(tagged.as_mut(), ipa, &tags)?;
        guest_fill(tagged.as_mut(), ipa, len, 0x5a)?;
        guest_fill(plain.as_mut(), ipa, len, 0x5a)?;
        let o = swap_once(tagged.as_mut(), &mut checks, ipa, len, &mut swap_in)?;
        out = out.min(o);
        let o = swap_once(plain.as_mut(), &mut checks, ipa, len, &mut swap_in_plain)?;
        out_plain = out_plain.min(o);
        all_tags.extend(tags);
    }
    let (ipa, len) = pages(FIRST_PAGE, N * REPS);
    let host = tagged.host_read_tags(ipa, len)?;
    checks.tags_equal(
        ipa,
        ("tags before swap-out", &all_tags),
        ("host after swap-in", &host),
    );
    let ldg = guest_ldg(tagged.as_mut(), ipa, len)?;
    checks.tags_equal(
        ipa,
        ("tags before swap-out", &all_tags),
        ("guest LDG after swap-in", &ldg),
    );
    record(
        &mut checks,
        "swap-out per page",
        &format!(
            "the MADV_PAGEOUT calls over {N} pages until all are out, divided by the pages, \
             best of {REPS}"
        ),
        out,
        out_plain,
    );
    record(
        &mut checks,
        "swap-in (guest read fault) per page",
        &format!(
            "guest CheckPattern over {N} swapped-out pages, best of {REPS}, minus the same \
             over the pages in memory, best of {REPS}; divided by {N}"
        ),
        swap_in.per(N),
        swap_in_plain.per(N),
    );
    Ok(checks.finish())
}
