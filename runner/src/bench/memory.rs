//! Memory-management paths, per page, for a VM with MTE (its pages carry tags) against one
//! without: the guest's first touch of fresh pages (and, to set it against, its write to pages
//! in place), the guest's write that breaks copy-on-write after the VMM forked, and swap-out
//! (MADV_PAGEOUT) and swap-in (the guest's read) of the same pages. What the cost checks
//! measure once, measured here by criterion; each iteration's preparation is not counted.

use std::time::{Duration, Instant};

use mte_protocol::{Command, PAGE_SIZE, TEST_RAM_IPA};
use mte_suites::host_mm::{Advice, ForkPlan};
use mte_suites::steps::command::{require_mte, run as exec};
use mte_suites::steps::swap::require_swap;
use mte_suites::vmm::{BootOptions, Guest, Vmm, VmmError};
use mte_vmm_kvm::KvmVmm;

use super::measure::Bench;
use super::Declared;

/// Pages per iteration, and where they lie: 2 MiB into test RAM, clear of the other families.
const PAGES: u64 = 64;
const BYTES: u64 = PAGES * PAGE_SIZE;
const REGION: u64 = TEST_RAM_IPA + (2 << 20);
/// The data the pages hold.
const SEED: u64 = 0x5a;
/// How long the pages may take to leave memory for swap.
const PAGE_OUT_DEADLINE: Duration = Duration::from_secs(10);

const TAGGED: &str = "tagged";
const UNTAGGED: &str = "untagged";
const RATIO: &str = "tagged / untagged";

/// A path's pair of benchmarks: the MTE VM's set against the other's.
fn pair(group: &'static str, function: &str, what: &str) -> [Declared; 2] {
    let summary = |vm: &str| format!("{what}, {PAGES} pages ({} KiB) of a VM {vm}", BYTES >> 10);
    let untagged = Declared::new(group, function, UNTAGGED, summary("without MTE")).covering(BYTES);
    let tagged = Declared::new(group, function, TAGGED, summary("with MTE (pages tagged)"))
        .covering(BYTES)
        .against(&untagged, RATIO);
    [tagged, untagged]
}

fn first_touch() -> [Declared; 2] {
    pair(
        "first_touch",
        "fresh",
        "the guest's first write to fresh pages (MADV_DONTNEED before, not counted): a stage-2 \
         fault, a host page and, with MTE, its tags cleared",
    )
}

fn resident_write() -> [Declared; 2] {
    pair(
        "first_touch",
        "resident",
        "the guest's write to the same pages in place: what the first touch is set against",
    )
}

fn cow_break() -> [Declared; 2] {
    pair(
        "cow_break",
        "guest_write",
        "the guest's write to pages it shares with a forked child of the VMM (fork and child's \
         exit not counted): copies that carry the tags with MTE",
    )
}

fn swap_out() -> [Declared; 2] {
    pair(
        "swap",
        "out",
        "MADV_PAGEOUT until every page is in swap (the waits between calls not counted): with \
         MTE, each page's tags saved",
    )
}

fn swap_in() -> [Declared; 2] {
    pair(
        "swap",
        "in",
        "the guest's read of swapped-out pages (the page-out before not counted): with MTE, \
         each page's tags restored",
    )
}

pub fn declared() -> Vec<Declared> {
    [
        first_touch(),
        resident_write(),
        cow_break(),
        swap_out(),
        swap_in(),
    ]
    .concat()
}

pub fn run(bench: &mut Bench, vmm: &KvmVmm) {
    let all = declared();
    if !bench.wants_any(&all) {
        return;
    }
    let [mut tagged, mut untagged] = match boot_pair(vmm) {
        Ok(pair) => pair,
        Err(error) => return bench.unable(&all, &error),
    };
    let (t, u) = (&mut tagged, &mut untagged);
    for (declared, guest) in first_touch().iter().zip([&mut *t, &mut *u]) {
        bench.measure(declared, |iterations, _| {
            each(iterations, || {
                guest.madvise(REGION, BYTES, Advice::DontNeed)?;
                timed(|| fill(guest.as_mut()))
            })
        });
    }
    for (declared, guest) in resident_write().iter().zip([&mut *t, &mut *u]) {
        bench.measure(declared, |iterations, _| {
            each(iterations, || timed(|| fill(guest.as_mut())))
        });
    }
    for (declared, guest) in cow_break().iter().zip([&mut *t, &mut *u]) {
        bench.measure(declared, |iterations, _| {
            each(iterations, || {
                let child = guest.fork(&ForkPlan::default())?;
                let counted = timed(|| fill(guest.as_mut()));
                child.finish()?;
                counted
            })
        });
    }
    let swap = [swap_out(), swap_in()].concat();
    if let Err(error) = require_swap(t.as_ref(), 2 * BYTES) {
        return bench.unable(&swap, &error);
    }
    for (declared, guest) in swap_out().iter().zip([&mut *t, &mut *u]) {
        bench.measure(declared, |iterations, _| {
            each(iterations, || {
                fill(guest.as_mut())?;
                page_out(guest.as_mut())
            })
        });
    }
    for (declared, guest) in swap_in().iter().zip([&mut *t, &mut *u]) {
        bench.measure(declared, |iterations, _| {
            each(iterations, || {
                page_out(guest.as_mut())?;
                timed(|| expect_data(guest.as_mut()))
            })
        });
    }
}

/// A guest with MTE whose pages carry random tags, and one without; both with the pages in
/// memory, holding the data, outside transparent huge pages (so that they fault, copy and swap
/// one by one).
fn boot_pair(vmm: &KvmVmm) -> Result<[Box<dyn Guest>; 2], VmmError> {
    let mut tagged = vmm.boot(&BootOptions::default())?;
    require_mte(&tagged.ids())?;
    let mut untagged = vmm.boot(&BootOptions {
        mte: false,
        ..BootOptions::default()
    })?;
    for guest in [&mut tagged, &mut untagged] {
        guest.madvise(REGION, BYTES, Advice::NoHugePage)?;
        fill(guest.as_mut())?;
    }
    exec(tagged.as_mut(), Command::TagRandom, &[REGION, BYTES])?;
    Ok([tagged, untagged])
}

/// The guest writes the data to the pages (through its untagged alias: tags stay).
fn fill(guest: &mut dyn Guest) -> Result<(), VmmError> {
    exec(guest, Command::FillPattern, &[REGION, BYTES, SEED]).map(|_| ())
}

/// The guest reads the pages and finds the data.
fn expect_data(guest: &mut dyn Guest) -> Result<(), VmmError> {
    let reply = exec(guest, Command::CheckPattern, &[REGION, BYTES, SEED])?;
    match reply.result[0] {
        0 => Ok(()),
        words => Err(VmmError::Host(format!(
            "{words} words of the pages changed on their way through swap"
        ))),
    }
}

/// MADV_PAGEOUT until every page is in swap; returns the time of the calls. A page may still
/// sit in a per-CPU batch that one call cannot take: the waits between calls do not count.
fn page_out(guest: &mut dyn Guest) -> Result<Duration, VmmError> {
    let started = Instant::now();
    let mut counted = Duration::ZERO;
    loop {
        counted += timed(|| guest.madvise(REGION, BYTES, Advice::PageOut))?;
        let states = guest.page_states(REGION, BYTES)?;
        if states.iter().all(|s| s.swapped) {
            return Ok(counted);
        }
        if started.elapsed() > PAGE_OUT_DEADLINE {
            let swapped = states.iter().filter(|s| s.swapped).count();
            return Err(VmmError::Timeout {
                what: format!("MADV_PAGEOUT of {PAGES} pages ({swapped} left for swap)"),
                seconds: PAGE_OUT_DEADLINE.as_secs_f64(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The time of `step`, if it went well.
fn timed(step: impl FnOnce() -> Result<(), VmmError>) -> Result<Duration, VmmError> {
    let started = Instant::now();
    step()?;
    Ok(started.elapsed())
}

/// `iteration` run `iterations` times; the sum of what each counted.
fn each(
    iterations: u64,
    mut iteration: impl FnMut() -> Result<Duration, VmmError>,
) -> Result<Duration, VmmError> {
    let mut counted = Duration::ZERO;
    for _ in 0..iterations {
        counted += iteration()?;
    }
    Ok(counted)
}
