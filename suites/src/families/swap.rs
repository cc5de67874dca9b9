//! Swap: the host pages tagged guest RAM out to swap while the guest waits at its doorbell;
//! the tags must come back with the pages.

use std::time::Duration;

use mte_protocol::{granules, PAGE_SIZE};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::boot_private;
use crate::steps::data::{expect_pattern, expect_zero_data, guest_fill};
use crate::steps::host_memory::{letters, no_forks_meanwhile, pages};
use crate::steps::random::nonzero_tags;
use crate::steps::swap::{
    no_swapoff_meanwhile, page_out, require_swap, swapping_off, GiveUp, PagedOut,
};
use crate::steps::tags::guest_store_tags;
use crate::vmm::{Guest, Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "swap::tags_survive_swap_out_and_in",
        summary:
            "Tagged guest pages paged out to swap (MADV_PAGEOUT on the VMM's mapping while the \
              guest waits at its doorbell; /proc/self/pagemap then shows swap entries) come \
              back with their tags and data: pages the guest touches first (LDG), pages whose \
              data is zero and whose tags are not, pages whose tags the host rewrote \
              (KVM_ARM_TAGS_TO_GUEST) while they were out, and pages the host read \
              (KVM_ARM_TAGS_FROM_GUEST) first",
        why: "arm64 saves a page's tags when it goes to swap and restores them when it comes back \
          (arch_prepare_to_swap(), arch_swap_restore()); \"mm: call arch_swap_restore() from \
          do_swap_page()\" (2023, 6.5, backported to stable kernels) fixed pages that came back \
          without their tags when do_swap_page() freed the swap entry before restoring them, \
          the path synchronous swap devices such as zram take",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: tags_survive_swap,
    },
    Scenario {
        name: "swap::tags_survive_swap_of_a_whole_huge_page",
        summary: "A whole transparent huge page (2 MiB) of tagged guest RAM, an eighth of it with \
              zero data, paged out (MADV_PAGEOUT over all of it: swapped as one, or split first, \
              as /proc/vmstat's thp_swpout counters tell) comes back with every tag and byte",
        why: "Swapping a huge page whole must save and restore the tags of each of its 512 pages \
          (\"arm64: mm: swap: support THP_SWAP on hardware with MTE\", 2024, lifted the rule \
          that MTE hosts split huge pages before swap); a split must keep each small page's \
          tags",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: tags_survive_swap_of_a_whole_huge_page,
    },
    Scenario {
        name: "swap::tags_survive_swapoff",
        summary: "Tagged guest pages paged out to swap (pagemap: swap entries), among them \
              zero-data pages and pages whose tags the host rewrote (KVM_ARM_TAGS_TO_GUEST) \
              while they were out and that went out again, are brought back by swapoff(2) \
              (pagemap: present again before anyone touched them) with their tags and data: \
              the host's KVM_ARM_MTE_COPY_TAGS and the guest's LDG read the tags each page \
              had when it last left",
        why: "swapoff brings pages back through the kernel's unuse path (try_to_unuse(), \
          unuse_pte()), apart from do_swap_page(); it must restore each page's tags from swap \
          as swap-in does, or KVM finds the page untagged and zeroes its tags. \"mm: call \
          arch_swap_restore() from unuse_pte()\" (2023, 6.5) added the restore there",
        proven_by: &[
            Injection::CorruptTag,
            Injection::MisreadReport,
            Injection::KernelWarn,
        ],
        run: tags_survive_swapoff,
    },
];

const FIRST_PAGE: u64 = 128;
/// Pages the guest touches first after swap-in (data and tags).
const GUEST_FIRST: (u64, u64) = (0, 4);
/// Zero data, non-zero tags; the guest touches them first.
const ZERO_DATA: (u64, u64) = (4, 4);
/// The host rewrites their tags while they are out.
const HOST_REWRITES: (u64, u64) = (8, 4);
/// The host reads their tags first.
const HOST_READS: (u64, u64) = (12, 4);
const ALL: u64 = 16;
/// The roles whose pages hold data.
const WITH_DATA: [(u64, u64); 3] = [GUEST_FIRST, HOST_REWRITES, HOST_READS];
const DATA_SEED: u64 = 0x5a9;
const TAG_SEED: u64 = 0x7a95_0002;
const REWRITE_SEED: u64 = 0x7a95_0003;

/// How long the pages may take to leave memory.
const PAGEOUT_DEADLINE: Duration = Duration::from_secs(10);

fn range((first, count): (u64, u64)) -> (u64, u64) {
    pages(FIRST_PAGE + first, count)
}

/// The tags of a role's pages, out of the tags of all of them.
fn role_tags(tags: &[u8], (first, count): (u64, u64)) -> &[u8] {
    let per_page = granules(PAGE_SIZE);
    &tags[first as usize * per_page..(first + count) as usize * per_page]
}

fn tags_survive_swap(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _forks = no_forks_meanwhile();
    let _swap = no_swapoff_meanwhile();
    let mut guest = boot_private(vmm)?;
    let guest = guest.as_mut();
    let (base, len) = pages(FIRST_PAGE, ALL);
    let devices = require_swap(guest, len)?;
    let mut checks = Checks::new();
    checks.note(format!(
        "swap: {}",
        devices
            .iter()
            .map(|d| format!("{} {} KiB, {} KiB used", d.name, d.size_kib, d.used_kib))
            .collect::<Vec<_>>()
            .join("; ")
    ));

    let tags = nonzero_tags(TAG_SEED, granules(len));
    guest_store_tags(guest, base, &tags)?;
    for role in WITH_DATA {
        let (ipa, len) = range(role);
        guest_fill(guest, ipa, len, DATA_SEED)?;
    }
    let stored = ("tags the guest stored", &tags[..]);
    checks.expect_host_tags(guest, (base, len), stored, "host, before swap-out")?;

    let out = page_out(guest, base, len, GiveUp::After(PAGEOUT_DEADLINE))?;
    let all_out = out.swapped() == out.states.len();
    checks.path_reached(
        "every page left memory for swap (pagemap: swap entry; S swapped, R resident)",
        all_out,
        "S".repeat(out.states.len()),
        format!("{} after {} MADV_PAGEOUT", letters(&out.states), out.calls),
    );
    if !all_out {
        // Nothing below would say anything about swap.
        return Ok(checks.finish());
    }
    let rewritten = touch_while_out(guest, &mut checks, &tags)?;
    check_swapped_in(guest, &mut checks, &tags, &rewritten)?;
    Ok(checks.finish())
}

/// While the pages are out the host rewrites the tags of some and reads others first; then
/// the guest touches everything. Returns the tags the host wrote.
fn touch_while_out(
    guest: &mut dyn Guest,
    checks: &mut Checks,
    tags: &[u8],
) -> Result<Vec<u8>, VmmError> {
    let (rewrite_ipa, rewrite_len) = range(HOST_REWRITES);
    let rewritten = nonzero_tags(REWRITE_SEED, granules(rewrite_len));
    guest.host_write_tags(rewrite_ipa, &rewritten)?;
    let before = ("tags before swap-out", role_tags(tags, HOST_READS));
    let host = "host read of swapped-out pages";
    checks.expect_host_tags(guest, range(HOST_READS), before, host)?;

    for (role, name) in [
        (GUEST_FIRST, "pages the guest touched first"),
        (ZERO_DATA, "zero-data pages the guest touched first"),
        (HOST_READS, "pages the host read first"),
    ] {
        let before = ("tags before swap-out", role_tags(tags, role));
        let ldg = format!("guest LDG after swap-in, {name}");
        checks.expect_guest_tags(guest, range(role), before, &ldg)?;
    }
    let written = (
        "tags the host wrote while the pages were out",
        &rewritten[..],
    );
    let ldg = "guest LDG after swap-in";
    checks.expect_guest_tags(guest, range(HOST_REWRITES), written, ldg)?;
    Ok(rewritten)
}

/// Once back: the data of every role, and the host's view of the whole range.
fn check_swapped_in(
    guest: &mut dyn Guest,
    checks: &mut Checks,
    tags: &[u8],
    rewritten: &[u8],
) -> Result<(), VmmError> {
    for role in WITH_DATA {
        let (ipa, len) = range(role);
        expect_pattern(checks, "guest, after swap-in", guest, ipa, len, DATA_SEED)?;
    }
    let (ipa, zero_len) = range(ZERO_DATA);
    let what = "guest, zero-data pages after swap-in";
    expect_zero_data(checks, what, guest, ipa, zero_len)?;
    let (base, len) = pages(FIRST_PAGE, ALL);
    let mut expected = tags.to_vec();
    let at = granules(range(HOST_REWRITES).0 - base);
    expected[at..at + rewritten.len()].copy_from_slice(rewritten);
    let expected = ("tags expected after swap-in", &expected[..]);
    checks.expect_host_tags(guest, (base, len), expected, "host, after swap-in")?;
    let states = guest.page_states(base, len)?;
    checks.note(format!("pages at the end: {}", letters(&states)));
    Ok(())
}

/// The huge page of the whole-huge-page check: test RAM pages of the third 2 MiB.
const HUGE_FIRST_PAGE: u64 = 2 * 512;
const HUGE_PAGES: u64 = 512;
/// Its pages with data; the rest hold zeros.
const HUGE_DATA_PAGES: u64 = 448;
/// The host-wide counters that tell how a huge page went to swap.
const THP_SWAP_COUNTERS: [&str; 3] = ["thp_swpout", "thp_swpout_fallback", "pswpout"];

fn counters(guest: &dyn Guest, names: &[&str]) -> Option<Vec<u64>> {
    let stats = guest.vmstat().ok()?;
    Some(
        names
            .iter()
            .map(|name| stats.iter().find(|(n, _)| n == name).map_or(0, |&(_, v)| v))
            .collect(),
    )
}

fn tags_survive_swap_of_a_whole_huge_page(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _forks = no_forks_meanwhile();
    let _swap = no_swapoff_meanwhile();
    let mut guest = boot_private(vmm)?;
    let guest = guest.as_mut();
    let (base, len) = pages(HUGE_FIRST_PAGE, HUGE_PAGES);
    require_swap(guest, len)?;
    let (data_ipa, data_len) = pages(HUGE_FIRST_PAGE, HUGE_DATA_PAGES);
    let (zero_ipa, zero_len) = pages(
        HUGE_FIRST_PAGE + HUGE_DATA_PAGES,
        HUGE_PAGES - HUGE_DATA_PAGES,
    );
    let tags = nonzero_tags(0x7a95_0004, granules(len));
    let mut checks = Checks::new();

    guest_store_tags(guest, base, &tags)?;
    guest_fill(guest, data_ipa, data_len, DATA_SEED)?;
    let before = guest.page_states(base, len)?;
    if !before.iter().all(|s| s.huge) {
        return Err(VmmError::Unsupported(format!(
            "guest RAM is not backed by a transparent huge page here ({} of {} pages huge; see \
             /sys/kernel/mm/transparent_hugepage/enabled)",
            before.iter().filter(|s| s.huge).count(),
            before.len()
        )));
    }
    page_out_counted(guest, &mut checks, base, len)?;

    let before = ("tags before swap-out", &tags[..]);
    checks.expect_guest_tags(guest, (base, len), before, "guest LDG after swap-in")?;
    checks.expect_host_tags(guest, (base, len), before, "host after swap-in")?;
    let what = "guest, data pages after swap-in";
    expect_pattern(&mut checks, what, guest, data_ipa, data_len, DATA_SEED)?;
    let what = "guest, zero-data pages after swap-in";
    expect_zero_data(&mut checks, what, guest, zero_ipa, zero_len)?;
    Ok(checks.finish())
}

/// Page the huge page out whole, and note how /proc/vmstat says it went.
fn page_out_counted(
    guest: &mut dyn Guest,
    checks: &mut Checks,
    base: u64,
    len: u64,
) -> Result<(), VmmError> {
    let counted = counters(guest, &THP_SWAP_COUNTERS);
    let out = page_out(guest, base, len, GiveUp::After(PAGEOUT_DEADLINE))?;
    let swapped = out.swapped();
    checks.path_reached(
        "every page of the huge page left memory for swap (pagemap: swap entry)",
        swapped == out.states.len(),
        format!("{} pages swapped", out.states.len()),
        format!("{swapped} swapped after {} MADV_PAGEOUT", out.calls),
    );
    if let (Some(before), Some(after)) = (counted, counters(guest, &THP_SWAP_COUNTERS)) {
        let deltas: Vec<String> = THP_SWAP_COUNTERS
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(name, (b, a))| format!("{name} +{}", a.saturating_sub(*b)))
            .collect();
        checks.note(format!(
            "/proc/vmstat (host-wide: checks running beside this one count too): {}",
            deltas.join(", ")
        ));
    }
    Ok(())
}

/// The pages of the swapoff check: the guest's data pages, zero-data pages, and pages whose
/// tags the host rewrites while they are out.
const SWAPOFF_FIRST_PAGE: u64 = 320;
const SWAPOFF_DATA: (u64, u64) = (0, 4);
const SWAPOFF_ZERO: (u64, u64) = (4, 4);
const SWAPOFF_REWRITTEN: (u64, u64) = (8, 4);
const SWAPOFF_ALL: u64 = 12;

fn swapoff_range((first, count): (u64, u64)) -> (u64, u64) {
    pages(SWAPOFF_FIRST_PAGE + first, count)
}

fn tags_survive_swapoff(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _forks = no_forks_meanwhile();
    let _swap = swapping_off();
    let mut guest = boot_private(vmm)?;
    let guest = guest.as_mut();
    let (base, len) = pages(SWAPOFF_FIRST_PAGE, SWAPOFF_ALL);
    require_swap(guest, len)?;
    let mut checks = Checks::new();

    let mut tags = nonzero_tags(0x7a95_0005, granules(len));
    guest_store_tags(guest, base, &tags)?;
    let (data_ipa, data_len) = swapoff_range(SWAPOFF_DATA);
    let (rewrite_ipa, rewrite_len) = swapoff_range(SWAPOFF_REWRITTEN);
    guest_fill(guest, data_ipa, data_len, DATA_SEED)?;
    guest_fill(guest, rewrite_ipa, rewrite_len, DATA_SEED)?;
    let stored = ("tags the guest stored", &tags[..]);
    checks.expect_host_tags(guest, (base, len), stored, "host, before swap-out")?;

    let out = page_out(guest, base, len, GiveUp::After(PAGEOUT_DEADLINE))?;
    let went_out = |out: &PagedOut| out.swapped() == out.states.len();
    let what = "every page left memory for swap (pagemap: swap entry; S swapped, R resident)";
    let shown =
        |out: &PagedOut| format!("{} after {} MADV_PAGEOUT", letters(&out.states), out.calls);
    if !checks.path_reached(
        what,
        went_out(&out),
        "S".repeat(SWAPOFF_ALL as usize),
        shown(&out),
    ) {
        return Ok(checks.finish());
    }
    // The host's write brings those pages back (KVM faults them in); they go out again with
    // the host's tags.
    let rewritten = nonzero_tags(0x7a95_0006, granules(rewrite_len));
    guest.host_write_tags(rewrite_ipa, &rewritten)?;
    let at = granules(rewrite_ipa - base);
    tags[at..at + rewritten.len()].copy_from_slice(&rewritten);
    let out = page_out(guest, base, len, GiveUp::After(PAGEOUT_DEADLINE))?;
    let what = "every page out again after the host rewrote some tags (pagemap: swap entry)";
    if !checks.path_reached(
        what,
        went_out(&out),
        "S".repeat(SWAPOFF_ALL as usize),
        shown(&out),
    ) {
        return Ok(checks.finish());
    }

    swap_everything_back(guest, &mut checks, base, len)?;
    let expected = ("tags each page had when it last left", &tags[..]);
    checks.expect_host_tags(guest, (base, len), expected, "host, after swapoff")?;
    checks.expect_guest_tags(guest, (base, len), expected, "guest LDG, after swapoff")?;
    for (ipa, len) in [(data_ipa, data_len), (rewrite_ipa, rewrite_len)] {
        expect_pattern(
            &mut checks,
            "guest, after swapoff",
            guest,
            ipa,
            len,
            DATA_SEED,
        )?;
    }
    let (zero_ipa, zero_len) = swapoff_range(SWAPOFF_ZERO);
    let what = "guest, zero-data pages after swapoff";
    expect_zero_data(&mut checks, what, guest, zero_ipa, zero_len)?;
    Ok(checks.finish())
}

/// swapoff (and swapon again) of every active swap device; the pages must then be present
/// without anyone having touched them: swapoff, not a fault, brought them back.
fn swap_everything_back(
    guest: &mut dyn Guest,
    checks: &mut Checks,
    base: u64,
    len: u64,
) -> Result<(), VmmError> {
    let counted = counters(guest, &["pswpin", "pswpout"]);
    let mut took = Vec::new();
    for device in guest.swap_devices()? {
        let time = guest.swap_off_and_on(&device)?;
        took.push(format!("{} {time:?}", device.name));
    }
    let states = guest.page_states(base, len)?;
    checks.path_reached(
        "swapoff brought every page back: present, no swap entry, before any touch (R resident)",
        states.iter().all(|s| s.present && !s.swapped),
        "R".repeat(states.len()),
        letters(&states),
    );
    let mut note = format!("swapoff took {}", took.join(", "));
    if let (Some(before), Some(after)) = (counted, counters(guest, &["pswpin", "pswpout"])) {
        note.push_str(&format!(
            "; /proc/vmstat over swapoff: pswpin +{}, pswpout +{}",
            after[0].saturating_sub(before[0]),
            after[1].saturating_sub(before[1])
        ));
    }
    checks.note(note);
    Ok(())
}
