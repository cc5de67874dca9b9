//! Migration round trips with tags: the guest tags memory and fills it with a pattern, moves to
//! a destination VM (stop-and-copy, into a new VMM process, iterative pre-copy while it keeps
//! re-tagging, post-copy with pages on demand), and there the guest reads every tag back (LDG)
//! and checks every data word, and the host reads the tags too. Each check also records what
//! the move cost: tag bytes per page, rounds, downtime, the tag part's time per GiB.
//!
//! The fault-injection proofs of the stop-and-copy checks restore one source saved per run,
//! broken by their fault, instead of each migrating a guest of their own; those of pre-copy
//! and post-copy migrate, since their faults belong to those methods.

use std::sync::{Arc, Mutex, PoisonError};

use mte_protocol::{
    esr, granules, with_tag, Command, GuestIds, PAGE_SIZE, RAM_IPA, RAM_SIZE, TEST_RAM_IPA,
};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::migration_plan::{Method, MigrationPlan, MigrationReport, Workload};
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::data::{guest_fill, guest_pattern_mismatches};
use crate::steps::tag_checks::load;
use crate::steps::tags::{guest_store_tags, guest_tag_random};
use crate::vmm::{Guest, Vmm, VmmError};

const WHY_COPY_TAGS: &str = "api.rst (KVM_CAP_ARM_MTE): 'the VMM needs to manually save/restore \
    the tags as appropriate if the VM is migrated', with KVM_ARM_MTE_COPY_TAGS; tags are data and \
    are copied while the guest is paused. KVM_GET_REG_LIST lists GCR_EL1, RGSR_EL1, TFSR_EL1 and \
    TFSRE0_EL1 when MTE is on, and KVM_RUN with immediate_exit completes the pending MMIO exit, \
    so that the destination resumes after the doorbell";

const WHY_ACROSS_KERNELS: &str = "A migration's destination host may run another kernel (an \
    upgrade, a rollback): the tags a VMM saved with KVM_ARM_MTE_COPY_TAGS (FROM_GUEST) on one \
    kernel must go back with TO_GUEST on the other, and the vCPU's registers (GCR_EL1, \
    SCTLR_EL1.TCF) with KVM_SET_ONE_REG, with the same meaning in both directions";

/// The stream a kernel of the run saves for the next one.
const CARRIED_STREAM: &str = "migration-sparse-tags.stream";
/// The largest stream worth carrying over the console: the region's 64 pages with data and
/// tags are 270 KB, the payload's own pages some more.
const CARRIED_STREAM_LIMIT: usize = 1 << 20;

/// Injections that break the tags of the stream itself, and the host's and guest's reports.
const STREAM_PROOFS: &[Injection] = &[
    Injection::CorruptTag,
    Injection::MisreadReport,
    Injection::MigrateDropTags,
    Injection::MigrateZeroTags,
    Injection::MigrateShiftTags,
];

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "migration::stop_and_copy_keeps_random_tags",
        summary: "Random tags (IRG) and the data under them arrive intact when the paused guest \
                  is copied to a new VM of the same VMM, and cost 128 bytes a 4 KiB page; the \
                  vCPU's MTE registers and tag checking come along",
        why: WHY_COPY_TAGS,
        proven_by: STREAM_PROOFS,
        run: stop_and_copy_random,
    },
    Scenario {
        name: "migration::stop_and_copy_keeps_sparse_tags",
        summary: "Sparse tags (one granule in 16 tagged, the rest 0) arrive granule for granule, \
                  no tag moved to a neighbour",
        why: WHY_COPY_TAGS,
        proven_by: STREAM_PROOFS,
        run: stop_and_copy_sparse,
    },
    Scenario {
        name: "migration::stop_and_copy_of_untagged_memory_sends_no_tags",
        summary: "Memory whose tags are all 0 arrives with tags 0 and its data, and the stream \
                  carries no tag bytes for it (nor any byte for pages never written)",
        why: "Pages whose tags are all 0 need no tag bytes in the stream: a fresh page of an MTE \
              guest has tags 0, which KVM ensures when it first maps it (sanitise_mte_tags); \
              untagged memory should cost a migration nothing extra",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: stop_and_copy_untagged,
    },
    Scenario {
        name: "migration::stop_and_copy_into_a_new_process",
        summary: "The paused guest streamed through a socket into a new VMM process (the runner \
                  started again in its destination mode) arrives there with every tag and data \
                  word, and runs on in that process",
        why: "A migration's destination is another VMM process (usually on another host): \
              nothing may rest on state the source process shares with it; api.rst \
              (KVM_CAP_ARM_MTE) leaves saving and restoring tags to the VMM",
        proven_by: STREAM_PROOFS,
        run: stop_and_copy_new_process,
    },
    Scenario {
        name: "migration::precopy_carries_tags_rewritten_during_rounds",
        summary: "While the guest re-tags a range over and over (STG only, its data never \
                  changes), KVM dirty logging reports those pages in every round, each round \
                  resends their data and tags, and after the final paused round the destination \
                  has the tags the guest last stored",
        why: "A tag store is a write: the Arm ARM checks STG against write permission, so KVM's \
              write-protection for dirty logging (KVM_MEM_LOG_DIRTY_PAGES) must see tag-only \
              writes, or pre-copy would leave stale tags on the destination; a VMM that resends \
              a dirty page must resend its tags with it",
        proven_by: &[
            Injection::CorruptTag,
            Injection::MisreadReport,
            Injection::MigrateDropTags,
            Injection::MigrateZeroTags,
            Injection::MigrateShiftTags,
            Injection::MigrateStaleTags,
        ],
        run: precopy_retagging,
    },
    Scenario {
        name: "migration::postcopy_brings_data_and_tags_before_the_guest_touches_a_page",
        summary: "With post-copy (userfaultfd), every page the guest touches arrives with its \
                  data and its tags before the guest can touch it: its LDG reads the source's \
                  tags and its data checks out; the evidence names the order the engine used \
                  on this kernel and what that order relies on",
        why: "In post-copy the data and the tags of a page must both be in place before the \
              guest can touch it; a page mapped before its tags is mapped by KVM with tags 0 \
              (sanitise_mte_tags()), which the guest must catch. Where the kernel takes a \
              MAP_SHARED memslot with MTE (6.2 on) the engine writes data and tags through a \
              second PROT_MTE mapping of the destination's memfd and only then maps the page \
              with UFFDIO_CONTINUE; before 6.2 it fills the page with UFFDIO_COPY in \
              UFFDIO_COPY_MODE_DONTWAKE, writes its tags (KVM_ARM_MTE_COPY_TAGS, TO_GUEST) and \
              then UFFDIO_WAKE, which holds only while the faulting vCPU, the one vCPU, sleeps \
              until the wake (handle_userfault() re-checks the PTE and may not: see models/)",
        proven_by: &[
            Injection::CorruptTag,
            Injection::MisreadReport,
            Injection::MigrateDropTags,
            Injection::MigrateZeroTags,
            Injection::MigrateShiftTags,
            Injection::MigrateLateTags,
        ],
        run: postcopy_on_demand,
    },
    Scenario {
        name: "migration::stream_saved_for_the_next_kernel",
        summary: "A guest with sparse tags and a data pattern, saved whole into a stream (pages \
                  of zeros left out), carries every page it wrote with its data and its tags; \
                  the stream goes to the host side for the run's next kernel to restore",
        why: WHY_ACROSS_KERNELS,
        proven_by: &[
            Injection::CorruptTag,
            Injection::MigrateDropTags,
            Injection::MigrateZeroTags,
            Injection::MigrateShiftTags,
        ],
        run: stream_saved_for_the_next_kernel,
    },
    Scenario {
        name: "migration::stream_from_another_kernel_restores_tags",
        summary: "The stream the run's previous kernel saved, restored into a new VM on this \
                  kernel, resumes its guest, which finds every tag (LDG) and data word it had; \
                  the host reads the same tags, and tag checking and GCR_EL1 came along",
        why: WHY_ACROSS_KERNELS,
        proven_by: &[
            Injection::CorruptTag,
            Injection::MisreadReport,
            Injection::MigrateDropTags,
            Injection::MigrateZeroTags,
            Injection::MigrateShiftTags,
        ],
        run: stream_from_another_kernel_restores_tags,
    },
    Scenario {
        name: "migration::vmm_migration_keeps_tags",
        summary: "The VMM's own migration (QEMU: migrate to a file, -incoming in a new QEMU) \
                  carries random tags and the data under them, and tag checking goes on at the \
                  destination",
        why: "QEMU keeps a TCG guest's tags in the RAM block mach-virt.tag, which it migrates \
              like RAM; a destination that lost them would run the guest with tags 0",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: vmm_migration_keeps_tags,
    },
];

/// The range each check tags and fills: 64 pages, whose tag map fits the bulk buffer.
const PAGES: u64 = 64;
const REGION: u64 = TEST_RAM_IPA;
const LEN: u64 = PAGES * PAGE_SIZE;
/// Where the destination's IRG is sampled, away from the region.
const SCRATCH: u64 = TEST_RAM_IPA + (4 << 20);
const SCRATCH_LEN: u64 = 4 * PAGE_SIZE;
/// The upper half of RAM: no check and no part of the payload writes there.
const NEVER_WRITTEN: u64 = RAM_IPA + RAM_SIZE / 2;
const SEED: u64 = 0x6d69_6772_6174_6521;
/// Pre-copy rounds after the first full one.
const PRECOPY_ROUNDS: u32 = 4;

// The regions stay apart, inside RAM, and the region's tag map fits the bulk buffer.
const _: () = {
    assert!(REGION + LEN <= SCRATCH && SCRATCH + SCRATCH_LEN <= NEVER_WRITTEN);
    assert!(LEN / mte_protocol::GRANULE <= mte_protocol::BULK_SIZE);
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TagKind {
    Random,
    Sparse,
    Untagged,
}

impl TagKind {
    fn name(self) -> &'static str {
        match self {
            TagKind::Random => "random",
            TagKind::Sparse => "sparse",
            TagKind::Untagged => "all-zero",
        }
    }
}

/// The IPA of each page of the region.
fn region_pages() -> impl Iterator<Item = u64> {
    (0..PAGES).map(|p| REGION + p * PAGE_SIZE)
}

/// One granule in 16 tagged (with a tag that varies), the others 0.
fn sparse_pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            if i % 16 == 5 {
                (i / 16 % 15 + 1) as u8
            } else {
                0
            }
        })
        .collect()
}

/// Tag the region as `kind` says and fill it with the pattern; the tags the guest stored.
fn prepare(guest: &mut dyn Guest, kind: TagKind) -> Result<Vec<u8>, VmmError> {
    let tags = match kind {
        TagKind::Random => guest_tag_random(guest, REGION, LEN)?,
        TagKind::Sparse => {
            let pattern = sparse_pattern(granules(LEN));
            guest_store_tags(guest, REGION, &pattern)?;
            pattern
        }
        TagKind::Untagged => vec![0; granules(LEN)],
    };
    guest_fill(guest, REGION, LEN, SEED)?;
    Ok(tags)
}

/// The destination's guest and host against what the source guest stored, and the data.
fn verify_arrival(
    guest: &mut dyn Guest,
    expected: &[u8],
    checks: &mut Checks,
) -> Result<(), VmmError> {
    let expected = ("tags the source guest stored", expected);
    // The guest looks first: in post-copy its LDG is what brings the pages.
    checks.expect_guest_tags(guest, (REGION, LEN), expected, "destination guest LDG")?;
    let (differing, _) = guest_pattern_mismatches(guest, REGION, LEN, SEED)?;
    checks.equal(
        "data words on the destination that differ from what the source guest wrote",
        0,
        differing,
    );
    let host = "destination host's tag read";
    checks.expect_host_tags(guest, (REGION, LEN), expected, host)?;
    Ok(())
}

/// Everything the guest finds at the destination: its tags and data, tag checking and
/// GCR_EL1.
fn verify_destination(
    guest: &mut dyn Guest,
    expected: &[u8],
    checks: &mut Checks,
) -> Result<(), VmmError> {
    verify_arrival(guest, expected, checks)?;
    verify_tag_checking(guest, expected, checks)?;
    verify_gcr(guest, checks)
}

/// Tag checking goes on at the destination: a load through the granule's own tag passes, one
/// through another tag takes a synchronous tag check fault (SCTLR_EL1.TCF came along).
fn verify_tag_checking(
    guest: &mut dyn Guest,
    expected: &[u8],
    checks: &mut Checks,
) -> Result<(), VmmError> {
    let tag = expected[0] & 0xf;
    let right = load(guest, with_tag(REGION, tag))?;
    checks.equal(
        "faults of a destination load through the granule's own tag",
        0,
        right.result[1],
    );
    let wrong = load(guest, with_tag(REGION, (tag + 1) % 16))?;
    checks.equal(
        "a destination load through another tag takes a tag check fault (DFSC)",
        (1, esr::DFSC_TAG_CHECK),
        (wrong.result[1], esr::dfsc(wrong.fault.esr)),
    );
    Ok(())
}

/// GCR_EL1 came along: IRG on the destination still never chooses the tag the runtime
/// excludes (GCR_EL1.Exclude = 0x0001, tag 0).
fn verify_gcr(guest: &mut dyn Guest, checks: &mut Checks) -> Result<(), VmmError> {
    let chosen = guest_tag_random(guest, SCRATCH, SCRATCH_LEN)?;
    let zeros = chosen.iter().filter(|&&t| t == 0).count();
    checks.holds(
        "IRG on the destination honours the source's GCR_EL1.Exclude (tag 0 excluded)",
        zeros == 0 && chosen.len() == granules(SCRATCH_LEN),
        format!("no tag 0 in {} IRG choices", granules(SCRATCH_LEN)),
        format!("{zeros} of {} choices were tag 0", chosen.len()),
    );
    Ok(())
}

/// What the report says of the vCPU: exit completed, MTE registers listed (GCR_EL1 as the
/// guest set it at boot), read back alike.
fn verify_vcpu(report: &MigrationReport, ids: &GuestIds, checks: &mut Checks) {
    checks.equal(
        "PC after completing the doorbell's exit (KVM_RUN with immediate_exit): past its store",
        format!("{:#x}", report.pc_at_exit + 4),
        format!("{:#x}", report.pc_after_completion),
    );
    let names: Vec<&str> = report
        .mte_registers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    checks.equal(
        "MTE system registers in the source's KVM_GET_REG_LIST",
        vec!["GCR_EL1", "RGSR_EL1", "TFSR_EL1", "TFSRE0_EL1"],
        names,
    );
    let gcr = report
        .mte_registers
        .iter()
        .find(|(name, _)| name == "GCR_EL1")
        .map(|&(_, value)| format!("{value:#x}"));
    checks.equal(
        "GCR_EL1 moved, against what the guest set at boot",
        Some(format!("{:#x}", ids.gcr_el1)),
        gcr,
    );
    checks.equal(
        "registers the destination reads back otherwise than the source had them",
        Vec::<String>::new(),
        report.registers_differing.clone(),
    );
    checks.value(
        "vCPU registers moved (KVM_GET_REG_LIST), and the MTE ones",
        "every listed register",
        format!(
            "{} registers; {}",
            report.registers,
            report
                .mte_registers
                .iter()
                .map(|(n, v)| format!("{n} = {v:#x}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
}

/// The figures every check records: tag bytes a page for its kind of tags, the stream, the
/// tag part's time per GiB.
fn record_costs(report: &MigrationReport, kind: TagKind, checks: &mut Checks) {
    let per_page = report.tag_bytes_per_page(REGION, LEN);
    let observed = per_page.map_or("no page record".into(), |b| format!("{b:.1} B"));
    let what = format!("tag bytes per migrated 4 KiB page, {} tags", kind.name());
    match kind {
        TagKind::Random => checks.holds(&what, per_page == Some(128.0), "128 B", observed),
        TagKind::Sparse => checks.holds(
            &what,
            per_page.is_some_and(|b| b > 0.0 && b <= 128.0),
            "more than 0, at most 128 B",
            observed,
        ),
        TagKind::Untagged => checks.holds(&what, per_page == Some(0.0), "0 B", observed),
    };
    checks.value(
        "how it moved",
        "-",
        format!(
            "{}; {} page records, {} stream bytes, downtime {:.1} ms",
            report.how,
            report.pages.len(),
            report.stream_bytes,
            report.downtime.as_secs_f64() * 1e3
        ),
    );
    let rate = |per_gib: Option<std::time::Duration>, time: std::time::Duration, bytes: u64| {
        per_gib.map_or("nothing measured".into(), |d| {
            format!(
                "{:.0} ms per GiB ({:.2} ms over {} KiB)",
                d.as_secs_f64() * 1e3,
                time.as_secs_f64() * 1e3,
                bytes >> 10
            )
        })
    };
    checks.value(
        "host time per GiB for the tag part, extrapolated linearly from what was measured",
        "a measurement (KVM_ARM_MTE_COPY_TAGS; on this lane's CPU)",
        format!(
            "reading at the source (FROM_GUEST): {}; writing at the destination (TO_GUEST, \
             pages with tags): {}",
            rate(
                report.tag_read_per_gib(),
                report.tag_read_time,
                report.tag_read_bytes
            ),
            rate(
                report.tag_write_per_gib(),
                report.tag_write_time,
                report.tag_write_bytes
            ),
        ),
    );
}

fn stop_and_copy(vmm: &dyn Vmm, kind: TagKind, method: Method) -> Result<Finding, VmmError> {
    if vmm.under_injection() {
        return restored_from_saved_source(vmm, kind);
    }
    let mut guest = boot(vmm)?;
    let expected = prepare(guest.as_mut(), kind)?;
    let mut guest = guest.migrate(&MigrationPlan::new(method))?;
    let report = guest.migration_report()?;
    let mut checks = Checks::new();
    verify_destination(guest.as_mut(), &expected, &mut checks)?;
    verify_vcpu(&report, &guest.ids(), &mut checks);
    record_costs(&report, kind, &mut checks);
    if kind == TagKind::Untagged {
        let never: Vec<_> = report
            .pages_in(NEVER_WRITTEN, RAM_IPA + RAM_SIZE - NEVER_WRITTEN)
            .collect();
        let bytes: u64 = never
            .iter()
            .map(|p| (p.data_bytes + p.tag_bytes) as u64)
            .sum();
        checks.holds(
            "data and tag bytes for pages never written (the upper half of RAM)",
            !never.is_empty() && bytes == 0,
            "0 B over every such page",
            format!("{bytes} B over {} page records", never.len()),
        );
    }
    Ok(checks.finish())
}

/// What the proofs of the stop-and-copy checks start from: a source guest of each kind of
/// tags, prepared and saved once per run without a fault (pages of zeros left out), with the
/// tags it stored. Migrating a whole guest for every proof was most of their time.
struct SavedSource {
    kind: TagKind,
    stream: Vec<u8>,
    expected: Vec<u8>,
}

static SAVED_SOURCES: Mutex<Vec<Arc<SavedSource>>> = Mutex::new(Vec::new());

/// The saved source of `kind`, made on first use with the VMM the proofs' faults leave alone.
fn saved_source(vmm: &dyn Vmm, kind: TagKind) -> Result<Arc<SavedSource>, VmmError> {
    // Held while the source is made, so that proofs running beside each other make it once.
    let mut saved = SAVED_SOURCES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(source) = saved.iter().find(|s| s.kind == kind) {
        return Ok(Arc::clone(source));
    }
    let vmm = vmm.without_injection();
    let mut guest = boot(vmm)?;
    let expected = prepare(guest.as_mut(), kind)?;
    let stream = guest.save(None)?.bytes;
    let source = Arc::new(SavedSource {
        kind,
        stream,
        expected,
    });
    saved.push(Arc::clone(&source));
    Ok(source)
}

/// A stop-and-copy check under fault injection: the saved source of its kind restored into a
/// new VM by the injected VMM, which breaks the tags as it reads the stream (or its host tag
/// path, or the guest's reports); the destination's guest and host must then fail the
/// comparisons the check makes at its destination.
fn restored_from_saved_source(vmm: &dyn Vmm, kind: TagKind) -> Result<Finding, VmmError> {
    let source = saved_source(vmm, kind)?;
    let mut guest = vmm.restore(&source.stream, None)?;
    let mut checks = Checks::new();
    verify_destination(guest.as_mut(), &source.expected, &mut checks)?;
    Ok(checks.finish())
}

fn stop_and_copy_random(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    stop_and_copy(vmm, TagKind::Random, Method::StopAndCopy)
}

fn stop_and_copy_sparse(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    stop_and_copy(vmm, TagKind::Sparse, Method::StopAndCopy)
}

fn stop_and_copy_untagged(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    stop_and_copy(vmm, TagKind::Untagged, Method::StopAndCopy)
}

fn stop_and_copy_new_process(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    stop_and_copy(vmm, TagKind::Random, Method::StopAndCopyNewProcess)
}

fn precopy_retagging(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    prepare(guest.as_mut(), TagKind::Random)?;
    let plan = MigrationPlan::new(Method::PreCopy {
        workload: Workload {
            command: Command::RetagUntilStopped,
            args: vec![REGION, LEN],
        },
        max_rounds: PRECOPY_ROUNDS,
    });
    let mut guest = guest.migrate(&plan)?;
    let report = guest.migration_report()?;
    let mut checks = Checks::new();
    let passes = report.workload.map_or(0, |r| r.result[0]);
    checks.holds(
        "passes of the guest's re-tagging while rounds copied",
        passes >= 2,
        "at least 2",
        passes.to_string(),
    );
    // The tags the guest left behind, as its LDG read them at the source before it stopped
    // (the bulk buffer came along as data).
    let expected = guest.read_bulk(granules(LEN))?;
    let rounds = &report.rounds;
    // The rounds after the first full copy that ran with the guest: each waited for a whole
    // pass of re-tagging since the previous look at the dirty log.
    let missing: Vec<usize> = rounds
        .iter()
        .skip(1)
        .filter(|r| !r.paused)
        .map(|r| region_pages().filter(|p| !r.dirty.contains(p)).count())
        .collect();
    checks.holds(
        "re-tagged pages (tag-only writes) the dirty log missed, round by round",
        !missing.is_empty() && missing.iter().all(|&m| m == 0),
        format!("0 of {PAGES} in every round after the first"),
        format!("{missing:?} of {PAGES}"),
    );
    verify_arrival(guest.as_mut(), &expected, &mut checks)?;
    verify_vcpu(&report, &guest.ids(), &mut checks);
    checks.value(
        "pre-copy rounds and downtime",
        format!(
            "at most {} rounds after the first, then a paused one",
            PRECOPY_ROUNDS
        ),
        format!(
            "{} rounds ({}); downtime {:.1} ms (final round {:.1} ms)",
            rounds.len(),
            rounds
                .iter()
                .map(|r| format!(
                    "{} pages{}",
                    r.pages_sent,
                    if r.paused { " paused" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(", "),
            report.downtime.as_secs_f64() * 1e3,
            rounds
                .last()
                .map_or(0.0, |r| r.duration.as_secs_f64() * 1e3)
        ),
    );
    record_costs(&report, TagKind::Random, &mut checks);
    Ok(checks.finish())
}

fn postcopy_on_demand(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let expected = prepare(guest.as_mut(), TagKind::Random)?;
    let mut guest = guest.migrate(&MigrationPlan::new(Method::PostCopy))?;
    let mut checks = Checks::new();
    verify_destination(guest.as_mut(), &expected, &mut checks)?;
    let report = guest.migration_report()?;
    let brought = region_pages()
        .filter(|p| report.on_demand.contains(p))
        .count();
    checks.equal(
        "pages of the region brought on demand (the guest's LDG touched them first)",
        PAGES as usize,
        brought,
    );
    let tagged = report.pages.iter().filter(|p| p.tag_bytes > 0).count() as u64;
    checks.equal(
        "pages with tags whose tags were in place before the guest could touch them",
        tagged,
        report.tags_before_wake,
    );
    verify_vcpu(&report, &guest.ids(), &mut checks);
    checks.note(format!("the engine's order on this kernel: {}", report.how));
    checks.value(
        "post-copy: pages brought on demand, and the downtime",
        "-",
        format!(
            "{} pages on demand (first {:#x}); downtime {:.1} ms (vCPU state only)",
            report.on_demand.len(),
            report.on_demand.first().copied().unwrap_or(0),
            report.downtime.as_secs_f64() * 1e3
        ),
    );
    record_costs(&report, TagKind::Random, &mut checks);
    Ok(checks.finish())
}

/// Save the guest with the sparse pattern into a stream and, when the stream holds what the
/// guest wrote, hand it over for the run's next kernel.
fn stream_saved_for_the_next_kernel(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let expected = prepare(guest.as_mut(), TagKind::Sparse)?;
    let mut checks = Checks::new();
    let host = guest.host_read_tags(REGION, LEN)?;
    checks.tags_equal(
        REGION,
        ("the sparse pattern the guest stored", &expected),
        ("source host's tag read", &host),
    );
    let saved = guest.save(None)?;
    checks.tags_equal(
        REGION,
        ("the sparse pattern the guest stored", &expected),
        ("tags in the saved stream", &saved.tags_in(REGION, LEN)),
    );
    let carried = region_pages()
        .filter(|&ipa| {
            saved
                .pages
                .iter()
                .any(|p| p.ipa == ipa && p.data_bytes > 0 && p.tag_bytes > 0)
        })
        .count();
    checks.equal(
        "pages the guest wrote and tagged that the stream carries with data and tags",
        PAGES as usize,
        carried,
    );
    let zero_records = saved
        .pages
        .iter()
        .filter(|p| p.data_bytes == 0 && p.tag_bytes == 0)
        .count();
    checks.equal(
        "page records of zeros in a saved stream (left out)",
        0,
        zero_records,
    );
    checks.holds(
        "stream size, to carry over the console",
        saved.bytes.len() <= CARRIED_STREAM_LIMIT,
        format!("at most {} KiB", CARRIED_STREAM_LIMIT >> 10),
        format!(
            "{} bytes, {} page records",
            saved.bytes.len(),
            saved.pages.len()
        ),
    );
    // Only a stream that holds what the guest wrote goes on to the next kernel.
    let handed_over = checks.all_held() && vmm.keep_artifact(CARRIED_STREAM, &saved.bytes)?;
    checks.value(
        "the stream for the run's next kernel",
        format!("{CARRIED_STREAM}, kept by the host side with the run"),
        if handed_over {
            format!("{CARRIED_STREAM} sent, saved on {}", vmm.kernel_release())
        } else {
            "not sent: no next kernel in this run takes it (and a stream that fails here, or is \
             made under fault injection, stays here)"
                .into()
        },
    );
    Ok(checks.finish())
}

/// Restore the stream the run's previous kernel saved and check what the guest finds.
fn stream_from_another_kernel_restores_tags(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    // A lane without a VMM with MTE says so first, whether or not a stream came.
    vmm.mte_capable()?;
    let Some(incoming) = vmm.incoming_stream(CARRIED_STREAM)? else {
        return Ok(Finding::skip(format!(
            "no migration stream from another kernel in this boot ({CARRIED_STREAM}): the \
             emulated lane's later kernels get the one the kernel before them saved; run \
             `cargo xtask run --kernel 6.1,6.12,6.1 -- migration::` for both directions"
        )));
    };
    let mut guest = vmm.restore(&incoming.bytes, None)?;
    let report = guest.migration_report()?;
    let expected = sparse_pattern(granules(LEN));
    let mut checks = Checks::new();
    checks.value(
        "where the stream was saved and restored",
        "saved on another kernel of the run",
        format!(
            "saved on {}, restored on {} ({}, {} bytes)",
            incoming.saved_on,
            vmm.kernel_release(),
            incoming.path,
            incoming.bytes.len()
        ),
    );
    verify_destination(guest.as_mut(), &expected, &mut checks)?;
    checks.equal(
        "registers this kernel took and reads back otherwise than the saving kernel had them",
        Vec::<String>::new(),
        report.registers_differing.clone(),
    );
    // Not this check's claim, which the guest's own look above settles, but what a VMM
    // restoring across these kernels must decide about.
    checks.value(
        "saved registers this kernel refused, left at its own values",
        "none, or ID and firmware registers the guest does not read again",
        if report.registers_refused.is_empty() {
            format!("none of {}", report.registers)
        } else {
            format!(
                "{} of {}: {}",
                report.registers_refused.len(),
                report.registers,
                report.registers_refused.join("; ")
            )
        },
    );
    Ok(checks.finish())
}

fn vmm_migration_keeps_tags(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut source = boot(vmm)?;
    let expected = prepare(source.as_mut(), TagKind::Random)?;
    let (mut guest, migration) = source.migrate_by_vmm()?;
    let mut checks = Checks::new();
    verify_destination(guest.as_mut(), &expected, &mut checks)?;
    checks.value(
        "the VMM's migration: stream bytes, total and downtime",
        "a completed migration",
        format!(
            "{}: {} bytes, {:.1} ms, downtime {:.1} ms",
            migration.how,
            migration.stream_bytes,
            migration.total.as_secs_f64() * 1e3,
            migration.downtime.as_secs_f64() * 1e3
        ),
    );
    Ok(checks.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_tags_are_mostly_zero_and_never_all_alike() {
        let p = sparse_pattern(granules(LEN));
        let tagged = p.iter().filter(|&&t| t != 0).count();
        assert_eq!(tagged, p.len() / 16);
        assert!(p.iter().all(|&t| t < 16));
        assert!((1..16).all(|t| p.contains(&t)));
        // Every page carries some tag, so it costs the full 128 bytes.
        assert!(p.chunks(256).all(|page| page.iter().any(|&t| t != 0)));
    }
}
