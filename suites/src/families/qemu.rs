//! QEMU as the VMM of an MTE guest: what its gdbstub offers for tags, and what the host kernel
//! does to the guest RAM QEMU maps (paged out and merged from outside QEMU) under KVM, where
//! the host kernel, not QEMU, keeps the tags. The other families run under QEMU too; these are
//! the steps only a QEMU lane takes, and they skip elsewhere.

use std::time::Duration;

use mte_protocol::{granules, GRANULE, PAGE_SIZE, TEST_RAM_IPA};

use crate::check::{Checks, Finding};
use crate::host_mm::{Advice, Backing};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::{boot, boot_tagged, boot_untagged};
use crate::steps::data::{expect_pattern, expect_zero_data, guest_fill};
use crate::steps::host_memory::{ksm_turn, letters, pages, restore_ksm};
use crate::steps::random::nonzero_tags;
use crate::steps::swap::{page_out, require_swap, GiveUp};
use crate::steps::tags::{guest_ldg, guest_store_tags};
use crate::vmm::{BootOptions, Guest, StubExchange, Vmm, VmmError};

use super::mm;

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "qemu::gdbstub_tag_packets_work_or_are_not_advertised",
        summary: "Where QEMU's gdbstub advertises memory-tagging+, its packets work on a tagged \
                  granule: qMemTags reads the tag the guest stored, QMemTags sets one the guest's \
                  LDG then reads, qIsAddressTagged answers 01; a stub that cannot answer them \
                  must not advertise them, nor may it for a guest without MTE (mte=off)",
        why: "GDB's remote protocol: a stub that announces memory-tagging+ in qSupported takes \
              qMemTags, QMemTags and qIsAddressTagged (QEMU 9.2 answers them in system mode); \
              a debugger, or a tool reading a guest's tags through the stub, trusts that \
              announcement. QEMU announces them when its own copy of ID_AA64PFR1_EL1 shows MTE \
              (target/arm/gdbstub64.c), which mte=off under KVM is meant to clear \
              (target/arm/cpu.c, arm_cpu_realizefn())",
        proven_by: &[Injection::CorruptTag],
        run: gdbstub_tag_packets,
    },
    Scenario {
        name: "qemu::guest_ram_paged_out_by_the_host_keeps_tags",
        summary: "QEMU's private guest RAM, paged out to swap from another process \
                  (process_madvise(MADV_PAGEOUT) on QEMU's mapping; QEMU's /proc/PID/pagemap \
                  then shows swap entries) while the guest waits, comes back with every tag and \
                  data word the guest stored, pages of zero data with non-zero tags among them, \
                  as the guest's LDG reads them",
        why: "Under KVM the guest's tags are in the host kernel's pages behind QEMU's mapping, \
              which QEMU maps without PROT_MTE: the kernel must save them when the page goes \
              to swap (arch_prepare_to_swap(), for any page KVM tagged) and restore them when \
              it comes back (arch_swap_restore()), whoever paged it out; \"mm: call \
              arch_swap_restore() from do_swap_page()\" (6.5) fixed pages that came back \
              without them",
        proven_by: &[Injection::MisreadReport],
        run: guest_ram_paged_out_by_the_host,
    },
    Scenario {
        name: "qemu::ksm_never_merges_tagged_guest_ram",
        summary: "With KSM running over QEMU's guest RAM (QEMU makes it MADV_MERGEABLE \
                  itself), identical-data pages of a guest with MTE (zero-data pages with \
                  non-zero tags among them) are never merged and keep their tags and data, \
                  while the same pages of a QEMU guest without MTE are merged (the control)",
        why: "arm64's memcmp_pages() (arch/arm64/kernel/mte.c) never finds a page with \
              PG_mte_tagged identical to another, so KSM neither merges a tagged page nor \
              maps the zero page in its place; under KVM the tags are set by the guest through \
              KVM, never through the mapping QEMU gives KSM",
        proven_by: &[Injection::MisreadReport],
        run: ksm_never_merges_tagged_guest_ram,
    },
];

/// The tag the guest stores on the probed granule, and the one the stub is asked to write.
const STORED_TAG: u8 = 0x5;
const WRITTEN_TAG: u8 = 0xa;

/// Skip where the runner, not QEMU, is the VMM: there the runner's own guest RAM is paged out
/// and merged by the swap:: and mm:: checks. Asked after the boot, so that a lane without a
/// VMM says so first.
fn require_qemu(vmm: &dyn Vmm) -> Result<(), VmmError> {
    match vmm.lane().runner_is_vmm() {
        false => Ok(()),
        true => Err(VmmError::Unsupported(
            "a check of the guest RAM QEMU maps, in the qemu-kvm lane; where the runner is the \
             VMM, the swap:: and mm:: checks take its own guest RAM through these paths"
                .into(),
        )),
    }
}

/// Whether a packet was answered; its reply, or what became of QEMU.
fn answered(exchange: &StubExchange) -> Result<&str, &str> {
    exchange.reply.as_deref().map_err(String::as_str)
}

fn gdbstub_tag_packets(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut checks = Checks::new();
    // A guest without MTE first: asking it sends no tag packet, which could end its QEMU.
    let mut untagged = boot_untagged(vmm)?;
    let without = untagged.stub_tag_packets(None)?;
    checks.holds(
        "for a guest without MTE, the stub advertises no memory-tag packets",
        !without.advertised,
        format!(
            "no memory-tagging+ (the guest's ID_AA64PFR1_EL1.MTE is {})",
            untagged.ids().mte_level()
        ),
        &without.features,
    );
    drop(untagged);

    let mut guest = boot(vmm)?;
    let granule = TEST_RAM_IPA;
    guest_store_tags(guest.as_mut(), granule, &[STORED_TAG])?;
    let probe = guest.stub_tag_packets(Some((granule, WRITTEN_TAG)))?;
    checks.value(
        "what the stub announces for a guest with MTE",
        "",
        &probe.features,
    );
    if !probe.advertised {
        checks.holds(
            "the stub does not advertise memory-tag packets",
            true,
            "memory-tag packets that work, or none advertised",
            "none advertised",
        );
        return Ok(checks.finish());
    }
    let [read, write, tagged] = &probe.exchanges[..] else {
        return Err(VmmError::Host(format!(
            "the stub probe made {} exchanges, not 3",
            probe.exchanges.len()
        )));
    };
    match answered(read) {
        Ok(reply) => {
            let tag = reply
                .strip_prefix('m')
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .unwrap_or(0xff);
            let stored = ("tag the guest stored (STG)", &[STORED_TAG][..]);
            let observed = format!("the stub's answer to {} ({reply})", read.packet);
            checks.tags_equal(granule, stored, (&observed, &[tag]));
        }
        Err(end) => {
            let expected = format!("m{STORED_TAG:02x}");
            checks.holds(
                &format!("QEMU answers `{}`", read.packet),
                false,
                expected,
                end,
            );
        }
    }
    match answered(write) {
        Ok(reply) => {
            checks.equal(
                &format!("the stub's answer to `{}`", write.packet),
                "OK",
                reply,
            );
            let ldg = guest_ldg(guest.as_mut(), granule, GRANULE)?;
            let written = ("tag the stub wrote (QMemTags)", &[WRITTEN_TAG][..]);
            checks.tags_equal(granule, written, ("guest LDG", &ldg));
        }
        Err(end) => {
            checks.holds(
                &format!("QEMU answers `{}`", write.packet),
                false,
                "OK",
                end,
            );
        }
    }
    match answered(tagged) {
        Ok(reply) => {
            checks.equal(
                &format!("the stub's answer to `{}`", tagged.packet),
                "01",
                reply,
            );
        }
        Err(end) => {
            checks.holds(
                &format!("QEMU answers `{}`", tagged.packet),
                false,
                "01",
                end,
            );
        }
    }
    Ok(checks.finish())
}

/// Pages the paging check tags, with data on the first three quarters and zero data with
/// non-zero tags on the last quarter.
const PAGED_FIRST: u64 = 160;
const PAGED: u64 = 16;
const PAGED_WITH_DATA: u64 = 12;
const PAGED_TAG_SEED: u64 = 0x9e3a_0001;
const PAGED_DATA_SEED: u64 = 0x9e3a_0002;
/// How long the pages may take to leave memory.
const PAGEOUT_DEADLINE: Duration = Duration::from_secs(10);

/// A guest with MTE on the VMM's private RAM (QEMU's own RAM, in the qemu-kvm lane).
fn boot_on_private_ram(vmm: &dyn Vmm) -> Result<Box<dyn Guest>, VmmError> {
    let options = BootOptions {
        backing: Some(Backing::PrivateAnonymous),
        ..BootOptions::default()
    };
    boot_tagged(vmm, &options)
}

fn guest_ram_paged_out_by_the_host(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot_on_private_ram(vmm)?;
    require_qemu(vmm)?;
    let guest = guest.as_mut();
    let (base, len) = pages(PAGED_FIRST, PAGED);
    let (data, data_len) = pages(PAGED_FIRST, PAGED_WITH_DATA);
    let (zero, zero_len) = pages(PAGED_FIRST + PAGED_WITH_DATA, PAGED - PAGED_WITH_DATA);
    require_swap(guest, len)?;
    let mut checks = Checks::new();
    let tags = nonzero_tags(PAGED_TAG_SEED, granules(len));
    guest_store_tags(guest, base, &tags)?;
    guest_fill(guest, data, data_len, PAGED_DATA_SEED)?;

    let out = page_out(guest, base, len, GiveUp::After(PAGEOUT_DEADLINE))?;
    let all_out = out.swapped() == out.states.len();
    checks.holds(
        "every page of QEMU's mapping left memory for swap (its pagemap: S swapped, R resident)",
        all_out,
        "S".repeat(out.states.len()),
        format!(
            "{} after {} process_madvise(MADV_PAGEOUT)",
            letters(&out.states),
            out.calls
        ),
    );
    if !all_out {
        return Ok(checks.finish());
    }
    let stored = ("tags the guest stored", &tags[..]);
    checks.expect_guest_tags(guest, (base, len), stored, "guest LDG after swap-in")?;
    expect_pattern(
        &mut checks,
        "data pages after swap-in",
        guest,
        data,
        data_len,
        PAGED_DATA_SEED,
    )?;
    expect_zero_data(
        &mut checks,
        "zero-data pages after swap-in",
        guest,
        zero,
        zero_len,
    )?;
    let back = guest.page_states(base, len)?;
    checks.note(format!(
        "QEMU's pages after the guest read them: {} (the host has no view of the tags of \
         QEMU's private RAM: the guest's LDG is the view)",
        letters(&back)
    ));
    Ok(checks.finish())
}

/// The pages the KSM check uses in each guest: identical data, then (in the guest with MTE)
/// zero data with non-zero tags.
const KSM_FIRST_PAGE: u64 = 192;
const KSM_IDENTICAL: u64 = 16;
const KSM_ZERO: u64 = 8;
const KSM_SEED: u64 = 0x45e1;

fn ksm_never_merges_tagged_guest_ram(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let _turn = ksm_turn();
    let mut tagged = boot_on_private_ram(vmm)?;
    require_qemu(vmm)?;
    let saved = tagged.ksm_state()?;
    let mut plain = vmm.boot(&BootOptions {
        mte: false,
        backing: Some(Backing::PrivateAnonymous),
        ..BootOptions::default()
    })?;
    let (tagged, plain) = (tagged.as_mut(), plain.as_mut());
    let (base, len) = pages(KSM_FIRST_PAGE, KSM_IDENTICAL + KSM_ZERO);
    let (same, same_len) = pages(KSM_FIRST_PAGE, KSM_IDENTICAL);
    let (zero, zero_len) = pages(KSM_FIRST_PAGE + KSM_IDENTICAL, KSM_ZERO);
    let tags = nonzero_tags(KSM_SEED, granules(len));
    guest_store_tags(tagged, base, &tags)?;
    for page in (same..same + same_len).step_by(PAGE_SIZE as usize) {
        guest_fill(tagged, page, PAGE_SIZE, KSM_SEED)?;
        guest_fill(plain, page, PAGE_SIZE, KSM_SEED)?;
    }
    // QEMU gives its RAM to KSM itself; this only sees that it did.
    tagged.madvise(base, len, Advice::Mergeable)?;
    plain.madvise(same, same_len, Advice::Mergeable)?;
    mm::frames(tagged.page_states(base, len)?)?;

    let mut checks = Checks::new();
    let run = mm::scan(tagged, plain, &saved, same, same_len);
    let restored = restore_ksm(tagged, &saved);
    let (after, waited) = run?;
    restored?;
    // Every QEMU's RAM is mergeable (guests of other checks too): KSM's counters are not this
    // check's alone, its frames are.
    mm::check_merges(&mut checks, tagged, plain, (base, len), (same, same_len))?;
    checks.note(format!(
        "KSM ran {} full scans in {waited:?} over every QEMU's RAM (pages_sharing {} -> {})",
        after.full_scans - saved.full_scans,
        saved.pages_sharing,
        after.pages_sharing
    ));
    let stored = ("tags the guest stored", &tags[..]);
    checks.expect_guest_tags(tagged, (base, len), stored, "guest LDG after KSM scans")?;
    let what = "identical-data pages of the guest with MTE after KSM scans";
    expect_pattern(&mut checks, what, tagged, same, PAGE_SIZE, KSM_SEED)?;
    for page in (same + PAGE_SIZE..same + same_len).step_by(PAGE_SIZE as usize) {
        expect_pattern(&mut checks, what, tagged, page, PAGE_SIZE, KSM_SEED)?;
    }
    let what = "zero-data pages of the guest with MTE after KSM scans";
    expect_zero_data(&mut checks, what, tagged, zero, zero_len)?;
    Ok(checks.finish())
}
