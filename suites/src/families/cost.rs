//! What tags cost on the memory-management paths: first touch, copy-on-write after fork, and
//! swap out and in, per page, for a VM with MTE (every page it touches is tagged) against one
//! without; and what a VM's IPA size costs when it is created and torn down. Each check still
//! compares tags and data (or what KVM answered), so that a number is never reported from a
//! run that went wrong; the numbers land in the evidence as values.
//!
//! Method: the measured pages are kept out of transparent huge pages (MADV_NOHUGEPAGE), so
//! that each page faults, copies and swaps alone; the first touch of a whole transparent huge
//! page is measured apart. Each cost is the best time of a guest command (or host call) over
//! fresh pages, minus the best time of the same command over the same pages once they are in
//! place, divided by the pages; repetitions use fresh pages, tagged and untagged VMs take
//! turns. The cost checks run one at a time, but other checks may run beside them, so the
//! numbers are indicative, not benchmarks.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mte_protocol::{granules, PAGE_SIZE};

use crate::check::{Checks, Finding};
use crate::host_mm::{Advice, ForkPlan};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::{boot_private, boot_untagged};
use crate::steps::data::{expect_pattern, guest_fill, guest_pattern_mismatches};
use crate::steps::host_memory::{forking, no_forks_meanwhile, pages};
use crate::steps::random::nonzero_tags;
use crate::steps::swap::{no_swapoff_meanwhile, page_out, require_swap, GiveUp};
use crate::steps::tags::guest_store_tags;
use crate::vmm::{Guest, IpaProbe, Vmm, VmmError};

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
    Scenario {
        name: "cost::vm_teardown_by_ipa_size",
        summary: "A VM created with an IPA space of 40, 48 and 52 bits (those the host gives) \
                  takes a memslot on the last page below 2^bits and refuses one at 2^bits \
                  (EFAULT); how long creating and closing it take, against 40 bits",
        why: "The VMM chooses a VM's IPA size at KVM_CREATE_VM (KVM_VM_TYPE_ARM_IPA_SIZE, \
              api.rst), and kvm-ioctls' create_vm() asks for the host's limit (52 bits with \
              LPA2). A kernel whose stage-2 teardown walks the whole IPA space (7.3 frees it \
              1 GiB at a time in kvm_pgtable_stage2_destroy_range) makes every VM of a large \
              IPA space pay for its size at its end; measured so that a comparison of two runs \
              shows such a change",
        proven_by: &[Injection::TamperAbi],
        run: teardown_by_ipa_size,
    },
];

/// Pages per measurement, and repetitions on fresh pages: the best of three is steady enough
/// for a check's indicative figure (`cargo xtask bench` measures with statistics).
const N: u64 = 32;
const REPS: u64 = 3;
const FIRST_PAGE: u64 = 512;

/// Repetitions of each measurement: `reps`, or one under fault injection, where the
/// comparisons are what counts and no figure is kept.
fn repetitions(vmm: &dyn Vmm, reps: u64) -> u64 {
    if vmm.under_injection() {
        1
    } else {
        reps
    }
}

/// The cost checks take turns, so that at least they do not disturb each other's numbers.
static TURN: Mutex<()> = Mutex::new(());

fn take_turn() -> MutexGuard<'static, ()> {
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

/// Run `f` and time it.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

/// Microseconds with one decimal.
fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// A measurement for the record: it lands in the verdict's evidence as a value.
fn measured(checks: &mut Checks, what: &str, how: &str, value: String) {
    checks.value(what, format!("measured: {how}"), value);
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

/// A VM with MTE and one without.
type TaggedAndPlain = (Box<dyn Guest>, Box<dyn Guest>);

/// The two VMs every cost is measured on, their measured pages kept out of transparent huge
/// pages so that they fault one by one.
fn boot_pair(vmm: &dyn Vmm) -> Result<TaggedAndPlain, VmmError> {
    let mut tagged = boot_private(vmm)?;
    let mut plain = boot_untagged(vmm)?;
    small_pages(tagged.as_mut())?;
    small_pages(plain.as_mut())?;
    Ok((tagged, plain))
}

/// Keep the measured pages out of transparent huge pages, so that they fault one by one.
fn small_pages(guest: &mut dyn Guest) -> Result<(), VmmError> {
    let (ipa, len) = pages(FIRST_PAGE, N * REPS);
    guest.madvise(ipa, len, Advice::NoHugePage)
}

/// Time the guest's writing the range, then its writing it again.
fn time_fill_twice(
    guest: &mut dyn Guest,
    ipa: u64,
    len: u64,
    best: &mut Best,
) -> Result<(), VmmError> {
    let (first, t1) = timed(|| guest_fill(guest, ipa, len, 1));
    first?;
    let (again, t2) = timed(|| guest_fill(guest, ipa, len, 2));
    again?;
    best.add(t1, t2);
    Ok(())
}

/// Time the first write to fresh pages and the write again.
fn first_touch_once(
    guest: &mut dyn Guest,
    checks: &mut Checks,
    rep: u64,
    best: &mut Best,
) -> Result<(), VmmError> {
    let (ipa, len) = pages(FIRST_PAGE + rep * N, N);
    time_fill_twice(guest, ipa, len, best)?;
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
    time_fill_twice(guest, ipa, len, best)?;
    Ok(guest.page_states(ipa, len)?.iter().all(|s| s.huge))
}

fn first_touch(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let reps = repetitions(vmm, REPS);
    let _turn = take_turn();
    let _forks = no_forks_meanwhile();
    let (mut tagged, mut plain) = boot_pair(vmm)?;
    let (tagged, plain) = (tagged.as_mut(), plain.as_mut());
    let mut checks = Checks::new();
    let (mut best, mut best_plain) = (Best::new(), Best::new());
    let (mut thp, mut thp_plain) = (Best::new(), Best::new());
    let mut huge = true;
    // Tagged and untagged take turns, so that both see the same disturbances.
    for rep in 0..reps {
        first_touch_once(tagged, &mut checks, rep, &mut best)?;
        first_touch_once(plain, &mut checks, rep, &mut best_plain)?;
        huge &= thp_first_touch_once(tagged, rep, &mut thp)?;
        huge &= thp_first_touch_once(plain, rep, &mut thp_plain)?;
    }

    let measured_pages = pages(FIRST_PAGE, N * reps);
    let zeros = vec![0u8; granules(measured_pages.1)];
    let zeros = ("zero tags", &zeros[..]);
    let host = "host, pages the guest touched first with data";
    checks.expect_host_tags(tagged, measured_pages, zeros, host)?;
    checks.expect_guest_tags(tagged, measured_pages, zeros, "guest LDG")?;
    let huge_page = pages(THP_FIRST, THP_PAGES);
    let zeros = vec![0u8; granules(huge_page.1)];
    let zeros = ("zero tags", &zeros[..]);
    let host = "host, a 2 MiB region the guest touched once";
    checks.expect_host_tags(tagged, huge_page, zeros, host)?;
    record(
        &mut checks,
        "first touch (guest write fault) per 4 KiB page",
        &format!(
            "guest FillPattern over {N} fresh pages (MADV_NOHUGEPAGE), best of {reps}, minus \
             the same over the same pages again, best of {reps}; divided by {N}"
        ),
        best.per(N),
        best_plain.per(N),
    );
    let how = format!(
        "guest FillPattern of one page of a fresh 2 MiB region, best of {reps}, minus the \
         same again; one write fault maps the whole transparent huge page"
    );
    let what = "first touch of a transparent huge page (2 MiB)";
    if huge {
        record(&mut checks, what, &how, thp.per(1), thp_plain.per(1));
    } else {
        let not = "not measured: guest RAM is not backed by transparent huge pages here";
        measured(&mut checks, what, &how, not.into());
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
) -> Result<(Duration, CowBroke), VmmError> {
    let before = guest.page_states(ipa, len)?;
    let (child, fork_time) = timed(|| guest.fork(&ForkPlan::default()));
    let child = child?;
    let (first, t1) = timed(|| guest_fill(guest, ipa, len, 0xc1));
    let (again, t2) = timed(|| guest_fill(guest, ipa, len, 0xc2));
    let after = guest.page_states(ipa, len);
    let finished = child.finish();
    first?;
    again?;
    finished?;
    let after = after?;
    best.add(t1, t2);
    let broke = match before.iter().chain(&after).any(|s| s.pfn == 0) {
        true => CowBroke::Unseen,
        false => CowBroke::Pages(
            before
                .iter()
                .zip(&after)
                .filter(|(b, a)| b.pfn != a.pfn)
                .count(),
        ),
    };
    Ok((fork_time, broke))
}

/// What /proc/self/pagemap shows of a copy-on-write break: how many of the parent's pages
/// moved to a new frame, or nothing where frame numbers are hidden (no CAP_SYS_ADMIN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CowBroke {
    Pages(usize),
    Unseen,
}

/// Tag `[ipa, ipa + len)` of the MTE VM with the tags of `seed`, and fill it with `fill` in
/// both VMs; returns the tags.
fn prepare_both(
    tagged: &mut dyn Guest,
    plain: &mut dyn Guest,
    (ipa, len): (u64, u64),
    seed: u64,
    fill: u64,
) -> Result<Vec<u8>, VmmError> {
    let tags = nonzero_tags(seed, granules(len));
    guest_store_tags(tagged, ipa, &tags)?;
    guest_fill(tagged, ipa, len, fill)?;
    guest_fill(plain, ipa, len, fill)?;
    Ok(tags)
}

/// The MTE VM's measured pages must still carry the tags `expected` (host, then guest).
fn tags_kept(
    checks: &mut Checks,
    tagged: &mut dyn Guest,
    expected: (&str, &[u8]),
    after: &str,
) -> Result<(), VmmError> {
    let measured_pages = pages(FIRST_PAGE, granules_to_pages(expected.1.len()));
    let host = format!("host after {after}");
    checks.expect_host_tags(tagged, measured_pages, expected, &host)?;
    let ldg = format!("guest LDG after {after}");
    checks.expect_guest_tags(tagged, measured_pages, expected, &ldg)?;
    Ok(())
}

fn cow(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let reps = repetitions(vmm, REPS);
    let _turn = take_turn();
    let _forks = forking();
    let (mut tagged, mut plain) = boot_pair(vmm)?;
    let (tagged, plain) = (tagged.as_mut(), plain.as_mut());
    let mut checks = Checks::new();
    let (mut best, mut best_plain) = (Best::new(), Best::new());
    let mut fork_time = Duration::MAX;
    let mut all_tags = Vec::new();
    let mut broke = Vec::new();
    for rep in 0..reps {
        let (ipa, len) = pages(FIRST_PAGE + rep * N, N);
        all_tags.extend(prepare_both(tagged, plain, (ipa, len), 0xc0 + rep, 0xc0)?);
        let (time, tagged_broke) = cow_once(tagged, ipa, len, &mut best)?;
        broke.push(tagged_broke);
        fork_time = fork_time.min(time);
        fork_time = fork_time.min(cow_once(plain, ipa, len, &mut best_plain)?.0);
        expect_pattern(&mut checks, "MTE guest after CoW", tagged, ipa, len, 0xc2)?;
        let what = "guest without MTE after CoW";
        expect_pattern(&mut checks, what, plain, ipa, len, 0xc2)?;
    }
    if broke.contains(&CowBroke::Unseen) {
        checks.path_not_reached(
            "page frame numbers are hidden here (no CAP_SYS_ADMIN): nothing shows that the \
             MTE guest's writes broke copy-on-write",
        );
    } else {
        checks.path_reached(
            "the MTE guest's writes broke copy-on-write: each of its pages moved to a new frame",
            broke.iter().all(|&b| b == CowBroke::Pages(N as usize)),
            format!("{N} pages moved in each of {reps} rounds"),
            format!("{broke:?}"),
        );
    }
    tags_kept(
        &mut checks,
        tagged,
        ("tags before the fork", &all_tags),
        "CoW",
    )?;
    record(
        &mut checks,
        "copy-on-write break (guest write after fork) per page",
        &format!(
            "guest FillPattern over {N} pages shared with a forked child, best of {reps}, \
             minus the same over the pages once it owns them, best of {reps}; divided by {N}"
        ),
        best.per(N),
        best_plain.per(N),
    );
    measured(
        &mut checks,
        "fork of the VMM process, until its child is up",
        &format!(
            "best of {} forks; the whole runner is forked, not only a guest",
            2 * reps
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
    let out = page_out(guest, ipa, len, GiveUp::Calls(50))?;
    let swapped = out.swapped();
    checks.path_reached(
        "every page left memory for swap",
        swapped == out.states.len(),
        format!("{N} pages swapped"),
        format!("{swapped} swapped after {} MADV_PAGEOUT", out.calls),
    );
    let (first, t1) = timed(|| guest_pattern_mismatches(guest, ipa, len, 0x5a));
    let (again, t2) = timed(|| guest_pattern_mismatches(guest, ipa, len, 0x5a));
    checks.equal("data words differing after swap-in", 0, first?.0);
    again?;
    swap_in.add(t1, t2);
    Ok(out.madvise_time / swapped.max(1) as u32)
}

fn swap(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let reps = repetitions(vmm, REPS);
    let _turn = take_turn();
    let _forks = no_forks_meanwhile();
    let _swap = no_swapoff_meanwhile();
    let mut tagged = boot_private(vmm)?;
    require_swap(tagged.as_ref(), 2 * reps * N * PAGE_SIZE)?;
    let mut plain = boot_untagged(vmm)?;
    small_pages(tagged.as_mut())?;
    small_pages(plain.as_mut())?;
    let (tagged, plain) = (tagged.as_mut(), plain.as_mut());
    let mut checks = Checks::new();
    let (mut out, mut out_plain) = (Duration::MAX, Duration::MAX);
    let (mut swap_in, mut swap_in_plain) = (Best::new(), Best::new());
    let mut all_tags = Vec::new();
    for rep in 0..reps {
        let (ipa, len) = pages(FIRST_PAGE + rep * N, N);
        all_tags.extend(prepare_both(tagged, plain, (ipa, len), 0x5a + rep, 0x5a)?);
        out = out.min(swap_once(tagged, &mut checks, ipa, len, &mut swap_in)?);
        let o = swap_once(plain, &mut checks, ipa, len, &mut swap_in_plain)?;
        out_plain = out_plain.min(o);
    }
    tags_kept(
        &mut checks,
        tagged,
        ("tags before swap-out", &all_tags),
        "swap-in",
    )?;
    record(
        &mut checks,
        "swap-out per page",
        &format!(
            "the MADV_PAGEOUT calls over {N} pages until all are out, divided by the pages, \
             best of {reps}"
        ),
        out,
        out_plain,
    );
    record(
        &mut checks,
        "swap-in (guest read fault) per page",
        &format!(
            "guest CheckPattern over {N} swapped-out pages, best of {reps}, minus the same \
             over the pages in memory, best of {reps}; divided by {N}"
        ),
        swap_in.per(N),
        swap_in_plain.per(N),
    );
    Ok(checks.finish())
}

/// The IPA sizes measured, where the host gives them: KVM's default, the usual 48-bit limit,
/// the 52 bits of LPA2.
const IPA_SIZES: [u32; 3] = [40, 48, 52];
/// Each size's best of this many VMs, unless one took longer than [`SLOW_TEARDOWN`] to close.
const IPA_REPS: u64 = 2;
const SLOW_TEARDOWN: Duration = Duration::from_millis(100);
/// EFAULT: KVM's answer to a memslot outside the VM's IPA space.
const EFAULT: i32 = 14;

/// The best (shortest) creation and teardown of VMs with an IPA space of `bits`, and the
/// first VM's answers to its memslots.
fn probe_ipa_size(vmm: &dyn Vmm, bits: u32) -> Result<IpaProbe, VmmError> {
    let top = 1 << bits;
    let mut best = vmm.ipa_probe(bits, top)?;
    for _ in 1..repetitions(vmm, IPA_REPS) {
        if best.teardown > SLOW_TEARDOWN {
            break;
        }
        let again = vmm.ipa_probe(bits, top)?;
        best.create = best.create.min(again.create);
        best.teardown = best.teardown.min(again.teardown);
    }
    Ok(best)
}

fn teardown_by_ipa_size(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _turn = take_turn();
    let sizes = vmm.ipa_sizes()?;
    let limit = sizes.host_limit.unwrap_or(sizes.suite_bits);
    let mut checks = Checks::new();
    checks.value(
        "IPA size of the suite's VMs, and the host's limit (KVM_CAP_ARM_VM_IPA_SIZE)",
        "-",
        format!(
            "{} bits; limit {}",
            sizes.suite_bits,
            sizes
                .host_limit
                .map_or("not reported".into(), |b| format!("{b} bits"))
        ),
    );
    let how = format!(
        "best of {} VMs (one where closing took over {} ms)",
        repetitions(vmm, IPA_REPS),
        SLOW_TEARDOWN.as_millis()
    );
    let mut teardowns = Vec::new();
    for bits in IPA_SIZES.into_iter().filter(|&bits| bits <= limit) {
        let probe = probe_ipa_size(vmm, bits)?;
        checks.syscall(
            &format!("{bits}-bit IPA: a memslot on the last page below 2^{bits}"),
            Ok(0),
            probe.below.map(|()| 0),
        );
        checks.syscall(
            &format!("{bits}-bit IPA: a memslot on the page at 2^{bits}"),
            Err(EFAULT),
            probe.at.map(|()| 0),
        );
        let create = format!("KVM_CREATE_VM, {bits}-bit IPA");
        measured(&mut checks, &create, &how, micros(probe.create));
        let teardown = format!("VM teardown (close of the VM fd), {bits}-bit IPA");
        measured(&mut checks, &teardown, &how, micros(probe.teardown));
        teardowns.push((bits, probe.teardown));
    }
    if let [(small, small_time), .., (large, large_time)] = teardowns[..] {
        measured(
            &mut checks,
            &format!("VM teardown, {large}-bit IPA / {small}-bit IPA"),
            &how,
            ratio(large_time, small_time),
        );
    }
    Ok(checks.finish())
}

/// The pages a tag map of `granules` covers.
fn granules_to_pages(granules: usize) -> u64 {
    granules as u64 * mte_protocol::GRANULE / PAGE_SIZE
}
