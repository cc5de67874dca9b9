//! Swap: the host pages tagged guest RAM out to swap while the guest waits at its doorbell;
//! the tags must come back with the pages.

use std::time::{Duration, Instant};

use mte_protocol::granules;

use crate::check::{Checks, Finding};
use crate::host_mm::{Advice, Backing, PageState, SwapDevice};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::vmm::{Guest, Vmm, VmmError};

use super::mm_common::{
    boot_tagged, expect_pattern, expect_zero_data, guest_fill, guest_ldg, guest_store_tags,
    letters, no_forks_meanwhile, nonzero_tags, note, pages, require_backing,
};

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
const DATA_SEED: u64 = 0x5a9;
const TAG_SEED: u64 = 0x7a95_0002;
const REWRITE_SEED: u64 = 0x7a95_0003;

/// How long the pages may take to leave memory.
const PAGEOUT_DEADLINE: Duration = Duration::from_secs(10);

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

/// MADV_PAGEOUT the range until /proc/self/pagemap shows every page as swapped, with a
/// deadline: pages still sitting in a per-CPU LRU batch are not isolated the first time.
/// Returns the page states at the end and how many calls it took.
pub fn page_out(
    guest: &mut dyn Guest,
    ipa: u64,
    len: u64,
) -> Result<(Vec<PageState>, u32), VmmError> {
    let started = Instant::now();
    let mut calls = 0;
    loop {
        guest.madvise(ipa, len, Advice::PageOut)?;
        calls += 1;
        let states = guest.page_states(ipa, len)?;
        if states.iter().all(|s| s.swapped) || started.elapsed() > PAGEOUT_DEADLINE {
            return Ok((states, calls));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn range((first, count): (u64, u64)) -> (u64, u64) {
    pages(FIRST_PAGE + first, count)
}

fn tags_survive_swap(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _forks = no_forks_meanwhile();
    let mut guest = boot_tagged(vmm, Backing::PrivateAnonymous)?;
    require_backing(guest.as_ref(), Backing::PrivateAnonymous)?;
    let (base, len) = pages(FIRST_PAGE, ALL);
    let devices = require_swap(guest.as_ref(), len)?;
    let mut checks = Checks::new();
    note(
        &mut checks,
        format!(
            "swap: {}",
            devices
                .iter()
                .map(|d| format!("{} {} KiB, {} KiB used", d.name, d.size_kib, d.used_kib))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );

    let tags = nonzero_tags(TAG_SEED, granules(len));
    let slice = |(first, count): (u64, u64)| -> &[u8] {
        let per_page = granules(mte_protocol::PAGE_SIZE);
        &tags[first as usize * per_page..(first + count) as usize * per_page]
    };
    guest_store_tags(guest.as_mut(), base, &tags)?;
    for role in [GUEST_FIRST, HOST_REWRITES, HOST_READS] {
        let (ipa, len) = range(role);
        guest_fill(guest.as_mut(), ipa, len, DATA_SEED)?;
    }
    let host = guest.host_read_tags(base, len)?;
    checks.tags_equal(
        base,
        ("tags the guest stored", &tags),
        ("host, before swap-out", &host),
    );

    let (states, calls) = page_out(guest.as_mut(), base, len)?;
    let swapped = states.iter().filter(|s| s.swapped).count();
    checks.holds(
        "every page left memory for swap (pagemap: swap entry; S swapped, R resident)",
        swapped == states.len(),
        "S".repeat(states.len()),
        format!("{} after {calls} MADV_PAGEOUT", letters(&states)),
    );
    if swapped != states.len() {
        // Nothing below would say anything about swap.
        return Ok(checks.finish());
    }

    // The host rewrites some tags while their pages are out, and reads others first.
    let (rewrite_ipa, rewrite_len) = range(HOST_REWRITES);
    let rewritten = nonzero_tags(REWRITE_SEED, granules(rewrite_len));
    guest.host_write_tags(rewrite_ipa, &rewritten)?;
    let (read_ipa, read_len) = range(HOST_READS);
    let host = guest.host_read_tags(read_ipa, read_len)?;
    checks.tags_equal(
        read_ipa,
        ("tags before swap-out", slice(HOST_READS)),
        ("host read of swapped-out pages", &host),
    );

    // The guest touches everything.
    for (role, name) in [
        (GUEST_FIRST, "pages the guest touched first"),
        (ZERO_DATA, "zero-data pages the guest touched first"),
        (HOST_READS, "pages the host read first"),
    ] {
        let (ipa, len) = range(role);
        let ldg = guest_ldg(guest.as_mut(), ipa, len)?;
        checks.tags_equal(
            ipa,
            ("tags before swap-out", slice(role)),
            (&format!("guest LDG after swap-in, {name}"), &ldg),
        );
    }
    let ldg = guest_ldg(guest.as_mut(), rewrite_ipa, rewrite_len)?;
    checks.tags_equal(
        rewrite_ipa,
        ("tags the host wrote while the pages were out", &rewritten),
        ("guest LDG after swap-in", &ldg),
    );

    // Data, and the host's view of the whole range at the end.
    for role in [GUEST_FIRST, HOST_REWRITES, HOST_READS] {
        let (ipa, len) = range(role);
        expect_pattern(
            &mut checks,
            "guest, after swap-in",
            guest.as_mut(),
            ipa,
            len,
            DATA_SEED,
        )?;
    }
    let (ipa, zero_len) = range(ZERO_DATA);
    expect_zero_data(
        &mut checks,
        "guest, zero-data pages after swap-in",
        guest.as_mut(),
        ipa,
        zero_len,
    )?;
    let mut expected = tags.clone();
    let at = granules(rewrite_ipa - base);
    expected[at..at + rewritten.len()].copy_from_slice(&rewritten);
    let host = guest.host_read_tags(base, len)?;
    checks.tags_equal(
        base,
        ("tags expected after swap-in", &expected),
        ("host, after swap-in", &host),
    );
    let states = guest.page_states(base, len)?;
    note(
        &mut checks,
        format!("pages at the end: {}", letters(&states)),
    );
    Ok(checks.finish())
}

/// The huge page of the whole-huge-page check: test RAM pages of the third 2 MiB.
const HUGE_FIRST_PAGE: u64 = 2 * 512;
const HUGE_PAGES: u64 = 512;
/// Its pages with data; the rest hold zeros.
const HUGE_DATA_PAGES: u64 = 448;

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
    let mut guest = boot_tagged(vmm, Backing::PrivateAnonymous)?;
    require_backing(guest.as_ref(), Backing::PrivateAnonymous)?;
    let (base, len) = pages(HUGE_FIRST_PAGE, HUGE_PAGES);
    require_swap(guest.as_ref(), len)?;
    let (data_ipa, data_len) = pages(HUGE_FIRST_PAGE, HUGE_DATA_PAGES);
    let (zero_ipa, zero_len) = pages(
        HUGE_FIRST_PAGE + HUGE_DATA_PAGES,
        HUGE_PAGES - HUGE_DATA_PAGES,
    );
    let tags = nonzero_tags(0x7a95_0004, granules(len));
    let mut checks = Checks::new();

    guest_store_tags(guest.as_mut(), base, &tags)?;
    guest_fill(guest.as_mut(), data_ipa, data_len, DATA_SEED)?;
    let before = guest.page_states(base, len)?;
    if !before.iter().all(|s| s.huge) {
        return Err(VmmError::Unsupported(format!(
            "guest RAM is not backed by a transparent huge page here ({} of {} pages huge; see \
             /sys/kernel/mm/transparent_hugepage/enabled)",
            before.iter().filter(|s| s.huge).count(),
            before.len()
        )));
    }
    const COUNTERS: [&str; 3] = ["thp_swpout", "thp_swpout_fallback", "pswpout"];
    let counted = counters(guest.as_ref(), &COUNTERS);
    let (states, calls) = page_out(guest.as_mut(), base, len)?;
    let swapped = states.iter().filter(|s| s.swapped).count();
    checks.holds(
        "every page of the huge page left memory for swap",
        swapped == states.len(),
        format!("{} pages swapped", states.len()),
        format!("{swapped} swapped after {calls} MADV_PAGEOUT"),
    );
    if let (Some(before), Some(after)) = (counted, counters(guest.as_ref(), &COUNTERS)) {
        let deltas: Vec<String> = COUNTERS
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(name, (b, a))| format!("{name} +{}", a.saturating_sub(*b)))
            .collect();
        note(
            &mut checks,
            format!(
                "/proc/vmstat (host-wide: checks running beside this one count too): {}",
                deltas.join(", ")
            ),
        );
    }

    let ldg = guest_ldg(guest.as_mut(), base, len)?;
    checks.tags_equal(
        base,
        ("tags before swap-out", &tags),
        ("guest LDG after swap-in", &ldg),
    );
    let host = guest.host_read_tags(base, len)?;
    checks.tags_equal(
        base,
        ("tags before swap-out", &tags),
        ("host after swap-in", &host),
    );
    expect_pattern(
        &mut checks,
        "guest, data pages after swap-in",
        guest.as_mut(),
        data_ipa,
        data_len,
        DATA_SEED,
    )?;
    expect_zero_data(
        &mut checks,
        "guest, zero-data pages after swap-in",
        guest.as_mut(),
        zero_ipa,
        zero_len,
    )?;
    Ok(checks.finish())
}
