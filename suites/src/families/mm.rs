//! Other memory management of the VMM's mapping of private guest RAM: KSM, MADV_DONTNEED and
//! mprotect.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mte_protocol::{granules, PAGE_SIZE};

use crate::check::{Checks, Finding};
use crate::host_mm::{Advice, KsmKnob, KsmState, PageState, Protection};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::{boot_private, boot_untagged};
use crate::steps::data::{expect_pattern, expect_zero_data, guest_fill};
use crate::steps::host_memory::{ksm_turn, letters, no_forks_meanwhile, pages, restore_ksm};
use crate::steps::random::nonzero_tags;
use crate::steps::tags::{guest_store_tags, guest_tag_random};
use crate::vmm::{Guest, Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "mm::ksm_never_merges_tagged_pages",
        summary: "With KSM running over MADV_MERGEABLE guest RAM, identical-data pages of an \
                  MTE VM (zero-data pages with non-zero tags among them, use_zero_pages on) are \
                  never merged and keep their tags and data, while identical pages of a VM \
                  without MTE, scanned at the same time, are merged (the control that shows \
                  KSM works here; without that merge the check skips)",
        why: "arm64 overrides memcmp_pages() (arch/arm64/kernel/mte.c): pages whose data is \
              identical never compare equal when either has PG_mte_tagged, so KSM neither \
              merges them nor maps the zero page in their place, which would lose the tags",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: ksm_never_merges_tagged_pages,
    },
    Scenario {
        name: "mm::dontneed_gives_fresh_zero_tagged_pages",
        summary: "MADV_DONTNEED on tagged private anonymous guest RAM discards the pages with \
                  their tags: the next touch, by the guest (LDG) or by the host \
                  (KVM_ARM_MTE_COPY_TAGS), finds zero data and zero tags, and the page takes \
                  new tags as any fresh page does",
        why: "madvise(2): after MADV_DONTNEED, private anonymous memory is refilled with \
              zero-fill-on-demand pages; a page's tags live with the page, and KVM zeroes the \
              tags of a page it maps for the first time (sanitise_mte_tags()), so stale tags \
              never reappear",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: dontneed_gives_fresh_zero_tagged_pages,
    },
    Scenario {
        name: "mm::thp_split_keeps_tags_of_zero_data_pages",
        summary: "When a transparent huge page of guest RAM is split (MADV_PAGEOUT of one of its \
                  pages), its tagged subpages, those whose data is zero among them, stay mapped \
                  with their tags and data: none is replaced by the shared zero page. The same \
                  split in a VM without MTE is the control: where it maps none of its \
                  zero-filled subpages to the zero page, this kernel does not take the path \
                  the check guards, and the check skips saying so",
        why: "\"mm: remap unused subpages to shared zeropage when splitting isolated thp\" \
              (6.12) maps zero-filled subpages of a splitting THP to the zero page, whose tags \
              are zero; \"mm/thp: fix MTE tag mismatch when replacing zero-filled subpages\" \
              (2025, backported to 6.12.y) makes it compare with pages_identical(), which \
              arm64's memcmp_pages() answers with \"different\" for tagged pages",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: thp_split_keeps_tags_of_zero_data_pages,
    },
    Scenario {
        name: "mm::mprotect_keeps_tags",
        summary: "mprotect(PROT_READ) of the VMM's mapping of tagged guest RAM, and back to \
                  PROT_READ|PROT_WRITE, keeps the tags: host and guest read them while the \
                  mapping is read-only, and again after the guest writes once it is writable",
        why: "mprotect changes the VMM's page table entries, which KVM follows through MMU \
              notifiers (stage 2 is unmapped or write-protected and faulted in again); the \
              refault must find the page already tagged (PG_mte_tagged) and leave its tags",
        proven_by: &[
            Injection::CorruptTag,
            Injection::MisreadReport,
            Injection::KernelWarn,
        ],
        run: mprotect_keeps_tags,
    },
];

const KSM_FIRST_PAGE: u64 = 96;
/// Identical-data pages (in each VM).
const KSM_IDENTICAL: u64 = 16;
/// Zero-data pages with non-zero tags (in the MTE VM).
const KSM_ZERO: u64 = 8;
const KSM_SEED: u64 = 0x45e;
/// How long KSM may take to merge the control's pages and scan everything twice.
const KSM_DEADLINE: Duration = Duration::from_secs(30);
/// KSM settings for the check: scan everything in each pass, with short sleeps.
const KSM_SETTINGS: [(KsmKnob, u64); 3] = [
    (KsmKnob::PagesToScan, 4096),
    (KsmKnob::SleepMillisecs, 10),
    (KsmKnob::Run, 1),
];

fn ksm_never_merges_tagged_pages(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _turn = ksm_turn();
    let _forks = no_forks_meanwhile();
    let mut tagged = boot_private(vmm)?;
    let saved = tagged.ksm_state()?;
    let mut plain = boot_untagged(vmm)?;
    let (tagged, plain) = (tagged.as_mut(), plain.as_mut());

    let (base, len) = pages(KSM_FIRST_PAGE, KSM_IDENTICAL + KSM_ZERO);
    let (same_ipa, same_len) = pages(KSM_FIRST_PAGE, KSM_IDENTICAL);
    let tags = nonzero_tags(KSM_SEED, granules(len));
    guest_store_tags(tagged, base, &tags)?;
    for page in (same_ipa..same_ipa + same_len).step_by(PAGE_SIZE as usize) {
        // The same pattern from each page's start: identical pages.
        guest_fill(tagged, page, PAGE_SIZE, KSM_SEED)?;
        guest_fill(plain, page, PAGE_SIZE, KSM_SEED)?;
    }
    // Frame numbers tell merged pages apart: without them there is nothing to see.
    frames(tagged.page_states(base, len)?)?;
    tagged.madvise(base, len, Advice::Mergeable)?;
    plain.madvise(same_ipa, same_len, Advice::Mergeable)?;

    let mut checks = Checks::new();
    let run = scan(tagged, plain, &saved, same_ipa, same_len);
    let restored = restore_ksm(tagged, &saved);
    let (after, waited) = run?;
    restored?;

    let all = pages(KSM_FIRST_PAGE, KSM_IDENTICAL + KSM_ZERO);
    let same = pages(KSM_FIRST_PAGE, KSM_IDENTICAL);
    check_merges(&mut checks, tagged, plain, all, same)?;
    // Only this check's pages are mergeable in the runner: KSM's counters are its own.
    checks.path_reached(
        "control: pages_sharing rose",
        after.pages_sharing > saved.pages_sharing,
        format!("more than {}", saved.pages_sharing),
        after.pages_sharing.to_string(),
    );
    checks.note(format!(
        "KSM ran {} full scans in {waited:?} (pages_shared {} -> {}, pages_sharing {} -> {})",
        after.full_scans - saved.full_scans,
        saved.pages_shared,
        after.pages_shared,
        saved.pages_sharing,
        after.pages_sharing
    ));
    check_ksm_kept(&mut checks, tagged, &tags)?;
    plain.madvise(same_ipa, same_len, Advice::Unmergeable)?;
    tagged.madvise(base, len, Advice::Unmergeable)?;
    Ok(checks.finish())
}

/// Pages KSM merged share one frame: the control's identical pages (`same`, in both VMs) must
/// have, and no page of the MTE VM (`all` of its pages the check wrote).
pub(crate) fn check_merges(
    checks: &mut Checks,
    tagged: &mut dyn Guest,
    plain: &mut dyn Guest,
    (base, len): (u64, u64),
    (same_ipa, same_len): (u64, u64),
) -> Result<(), VmmError> {
    let identical = same_len / PAGE_SIZE;
    let plain_frames = frames(plain.page_states(same_ipa, same_len)?)?;
    let distinct_plain: BTreeSet<u64> = plain_frames.iter().copied().collect();
    checks.path_reached(
        "control: KSM merged the identical pages of the VM without MTE into one frame",
        distinct_plain.len() == 1,
        format!("{identical} pages on 1 frame"),
        format!(
            "{identical} pages on {} frames {:x?}",
            distinct_plain.len(),
            distinct_plain
        ),
    );
    let tagged_states = tagged.page_states(base, len)?;
    let zero_pages = tagged_states.iter().filter(|s| s.zero_page).count();
    let tagged_frames = frames(tagged_states)?;
    let distinct_tagged: BTreeSet<u64> = tagged_frames.iter().copied().collect();
    let shared_with_plain = distinct_tagged.intersection(&distinct_plain).count();
    checks.holds(
        "no page of the MTE VM was merged (each on its own frame, none shared with the other \
         VM, none the zero page)",
        distinct_tagged.len() == tagged_frames.len() && shared_with_plain == 0 && zero_pages == 0,
        format!("{} frames, 0 shared, 0 zero pages", tagged_frames.len()),
        format!(
            "{} frames, {shared_with_plain} shared, {zero_pages} zero pages",
            distinct_tagged.len()
        ),
    );
    Ok(())
}

/// The MTE VM's pages kept their tags and data through the scans.
fn check_ksm_kept(
    checks: &mut Checks,
    tagged: &mut dyn Guest,
    tags: &[u8],
) -> Result<(), VmmError> {
    let all = pages(KSM_FIRST_PAGE, KSM_IDENTICAL + KSM_ZERO);
    let stored = ("tags the guest stored", tags);
    checks.expect_host_tags(tagged, all, stored, "host after KSM scans")?;
    checks.expect_guest_tags(tagged, all, stored, "guest LDG after KSM scans")?;
    let (same_ipa, same_len) = pages(KSM_FIRST_PAGE, KSM_IDENTICAL);
    for page in (same_ipa..same_ipa + same_len).step_by(PAGE_SIZE as usize) {
        let what = format!("MTE guest, page {page:#x} after KSM scans");
        expect_pattern(checks, &what, tagged, page, PAGE_SIZE, KSM_SEED)?;
    }
    let (zero_ipa, zero_len) = pages(KSM_FIRST_PAGE + KSM_IDENTICAL, KSM_ZERO);
    let what = "MTE guest, zero-data pages after KSM scans";
    expect_zero_data(checks, what, tagged, zero_ipa, zero_len)?;
    Ok(())
}
/// Run KSM until the control's pages are merged and two full scans went by after that,
/// within the deadline.
pub(crate) fn scan(
    tagged: &mut dyn Guest,
    plain: &mut dyn Guest,
    saved: &KsmState,
    ipa: u64,
    len: u64,
) -> Result<(KsmState, Duration), VmmError> {
    if saved.use_zero_pages.is_some() {
        tagged.ksm_set(KsmKnob::UseZeroPages, 1)?;
    }
    for (knob, value) in KSM_SETTINGS {
        tagged.ksm_set(knob, value)?;
    }
    let started = Instant::now();
    let mut merged_at_scan = None;
    loop {
        let state = tagged.ksm_state()?;
        if merged_at_scan.is_none() {
            // A page KSM is replacing is briefly unmapped (frame 0): not merged yet.
            let frames: BTreeSet<u64> =
                plain.page_states(ipa, len)?.iter().map(|s| s.pfn).collect();
            if frames.len() == 1 && !frames.contains(&0) {
                merged_at_scan = Some(state.full_scans);
            }
        }
        let scans_since = state.full_scans.saturating_sub(saved.full_scans);
        let settled = merged_at_scan.is_some_and(|at| state.full_scans >= at + 2);
        if (settled && scans_since >= 2) || started.elapsed() > KSM_DEADLINE {
            return Ok((state, started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The frame of each page; pages KSM merged share one. Skips where frame numbers are hidden
/// (no CAP_SYS_ADMIN): nothing would tell merged pages apart then.
pub(crate) fn frames(states: Vec<PageState>) -> Result<Vec<u64>, VmmError> {
    if states.iter().any(|s| s.pfn == 0) {
        return Err(VmmError::Unsupported(
            "/proc/self/pagemap hides page frame numbers here (no CAP_SYS_ADMIN), and merged \
             pages cannot be told apart without them"
                .into(),
        ));
    }
    Ok(states.iter().map(|s| s.pfn).collect())
}

const DONTNEED_FIRST_PAGE: u64 = 160;

fn dontneed_gives_fresh_zero_tagged_pages(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _forks = no_forks_meanwhile();
    let mut guest = boot_private(vmm)?;
    let guest = guest.as_mut();
    let (base, len) = pages(DONTNEED_FIRST_PAGE, 8);
    let guest_first = pages(DONTNEED_FIRST_PAGE, 4);
    let host_first = pages(DONTNEED_FIRST_PAGE + 4, 4);
    let tags = nonzero_tags(0xd0d0, granules(len));
    let zeros = vec![0u8; granules(guest_first.1)];
    let zeros = ("zero tags", &zeros[..]);
    let mut checks = Checks::new();

    guest_store_tags(guest, base, &tags)?;
    guest_fill(guest, base, len, 0xd0d0)?;
    let stored = ("tags the guest stored", &tags[..]);
    checks.expect_host_tags(guest, (base, len), stored, "host before MADV_DONTNEED")?;
    guest.madvise(base, len, Advice::DontNeed)?;
    let states = guest.page_states(base, len)?;
    checks.holds(
        "MADV_DONTNEED freed every page (neither mapped nor resident)",
        states.iter().all(|s| !s.present && !s.resident),
        "-".repeat(states.len()),
        letters(&states),
    );

    // The guest touches the first half first, the host the second half.
    let first_touch = "first touch after MADV_DONTNEED";
    let ldg = format!("guest LDG, {first_touch}");
    checks.expect_guest_tags(guest, guest_first, zeros, &ldg)?;
    checks.expect_host_tags(guest, guest_first, zeros, "host, after the guest's touch")?;
    let host = format!("host, {first_touch}");
    checks.expect_host_tags(guest, host_first, zeros, &host)?;
    let ldg = "guest LDG, after the host's touch";
    checks.expect_guest_tags(guest, host_first, zeros, ldg)?;
    expect_zero_data(&mut checks, "guest after MADV_DONTNEED", guest, base, len)?;

    // The fresh pages take tags as any page does.
    let chosen = guest_tag_random(guest, base, len)?;
    let chosen = ("tags the guest stored afterwards (IRG)", &chosen[..]);
    checks.expect_host_tags(guest, (base, len), chosen, "host")?;
    Ok(checks.finish())
}

/// The first page of the transparent huge page (2 MiB of 4 KiB pages) the check splits.
const THP_FIRST_PAGE: u64 = 8 * 512;
const THP_SEED: u64 = 0x74b;

fn thp_split_keeps_tags_of_zero_data_pages(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _forks = no_forks_meanwhile();
    let mut guest = boot_private(vmm)?;
    let guest = guest.as_mut();
    let (base, len) = pages(THP_FIRST_PAGE, 16);
    let (zero_ipa, zero_len) = pages(THP_FIRST_PAGE, 8);
    let (data_ipa, data_len) = pages(THP_FIRST_PAGE + 8, 8);
    let tags = nonzero_tags(THP_SEED, granules(len));
    let mut checks = Checks::new();

    // The first touch maps the whole huge page; half of the pages get data, all get tags.
    guest_store_tags(guest, base, &tags)?;
    guest_fill(guest, data_ipa, data_len, THP_SEED)?;
    let before = guest.page_states(base, len)?;
    if !before.iter().all(|s| s.huge) {
        return Err(VmmError::Unsupported(format!(
            "guest RAM is not backed by a transparent huge page here (pages: {}): a kernel \
             without CONFIG_TRANSPARENT_HUGEPAGE, or THP off in \
             /sys/kernel/mm/transparent_hugepage/enabled",
            letters(&before)
        )));
    }
    let after = split_huge_page(guest)?;
    checks.path_reached(
        "the huge page was split (h huge, R small page, z zero page)",
        after.iter().all(|s| !s.huge),
        "no page huge",
        format!("{} (before: {})", letters(&after), letters(&before)),
    );
    checks.holds(
        "every checked page is still mapped, none is the zero page",
        after.iter().all(|s| s.present && !s.zero_page),
        "R".repeat(after.len()),
        letters(&after),
    );
    let stored = ("tags the guest stored", &tags[..]);
    checks.expect_host_tags(guest, (base, len), stored, "host after the split")?;
    checks.expect_guest_tags(guest, (base, len), stored, "guest LDG after the split")?;
    let what = "guest, zero-data pages after the split";
    expect_zero_data(&mut checks, what, guest, zero_ipa, zero_len)?;
    let what = "guest, data pages after the split";
    expect_pattern(&mut checks, what, guest, data_ipa, data_len, THP_SEED)?;

    let control = split_without_mte(vmm)?;
    checks.note(control.describe());
    if after.iter().any(|s| s.pfn == 0) {
        checks.path_not_reached(
            "/proc/self/pagemap hides page frame numbers here (no CAP_SYS_ADMIN), so the zero \
             page cannot be seen",
        );
    } else {
        checks.path_reached(
            "control: the same split in a VM without MTE remapped its zero-filled subpages \
             to the zero page (the path that would lose tags)",
            control.zero_pages > 0,
            "at least 1 of 8 on the zero page",
            format!("{} of 8 on the zero page", control.zero_pages),
        );
    }
    Ok(checks.finish())
}

/// Page out one page of the huge page, next to the checked ones, which splits it; returns the
/// states of the checked pages after.
fn split_huge_page(guest: &mut dyn Guest) -> Result<Vec<PageState>, VmmError> {
    let (last, page) = pages(THP_FIRST_PAGE + 16, 1);
    guest.madvise(last, page, Advice::PageOut)?;
    let (base, len) = pages(THP_FIRST_PAGE, 16);
    guest.page_states(base, len)
}

/// The same split in a VM without MTE, as it went.
struct SplitControl {
    before: Vec<PageState>,
    after: Vec<PageState>,
    /// How many of its zero-filled pages the split left on the zero page.
    zero_pages: usize,
}

impl SplitControl {
    fn describe(&self) -> String {
        format!(
            "the same split in a VM without MTE: {} before, {} after ({} of the 8 zero-filled \
             pages on the zero page: {})",
            letters(&self.before),
            letters(&self.after),
            self.zero_pages,
            if self.zero_pages > 0 {
                "this kernel remaps zero-filled subpages of a split THP"
            } else {
                "this kernel keeps zero-filled subpages of a split THP"
            }
        )
    }
}

/// For comparison, the same split in a VM without MTE, whose zero-filled pages have no tags to
/// lose: whether this kernel maps them to the zero page, i.e. whether the path the check
/// guards runs here at all.
fn split_without_mte(vmm: &dyn Vmm) -> Result<SplitControl, VmmError> {
    let mut plain = boot_untagged(vmm)?;
    let plain = plain.as_mut();
    let (base, len) = pages(THP_FIRST_PAGE, 16);
    let (data_ipa, data_len) = pages(THP_FIRST_PAGE + 8, 8);
    guest_fill(plain, data_ipa, data_len, THP_SEED)?;
    let before = plain.page_states(base, len)?;
    let after = split_huge_page(plain)?;
    let zero_pages = after[..8].iter().filter(|s| s.zero_page).count();
    Ok(SplitControl {
        before,
        after,
        zero_pages,
    })
}

const MPROTECT_FIRST_PAGE: u64 = 192;

fn mprotect_keeps_tags(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot_private(vmm)?;
    let guest = guest.as_mut();
    let (ipa, len) = pages(MPROTECT_FIRST_PAGE, 8);
    let tags = nonzero_tags(0x3e07, granules(len));
    let stored = ("tags the guest stored", &tags[..]);
    let mut checks = Checks::new();

    guest_store_tags(guest, ipa, &tags)?;
    guest_fill(guest, ipa, len, 0x3e07)?;
    guest.protect(ipa, len, Protection::ReadOnly)?;
    let range = (ipa, len);
    checks.expect_host_tags(guest, range, stored, "host, mapping read-only")?;
    checks.expect_guest_tags(guest, range, stored, "guest LDG, mapping read-only")?;
    expect_pattern(
        &mut checks,
        "guest, mapping read-only",
        guest,
        ipa,
        len,
        0x3e07,
    )?;

    guest.protect(ipa, len, Protection::ReadWrite)?;
    guest_fill(guest, ipa, len, 0x3e08)?;
    let written = "writable again and written";
    checks.expect_host_tags(guest, range, stored, &format!("host, {written}"))?;
    checks.expect_guest_tags(guest, range, stored, &format!("guest LDG, {written}"))?;
    expect_pattern(
        &mut checks,
        "guest, writable again",
        guest,
        ipa,
        len,
        0x3e08,
    )?;
    Ok(checks.finish())
}
