//! Which accesses are tag checked at all: pointers TCR_EL1.TCMA0 exempts, translation without
//! TBI, the untagged (Normal, not Normal-Tagged) alias, SP-based forms, and unaligned accesses
//! that cross a granule or a page whose two sides carry different tags.
//!
//! Every check selects synchronous checking itself and makes, in the same guest, a control
//! access that must fault, so a guest checking in another mode turns it red.

use mte_protocol::{
    tcf, with_tag, Command, GRANULE, PAGE_SIZE, RAM_IPA, TEST_RAM_IPA, UNTAGGED_ALIAS_VA,
};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::reply::Reply;
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::command::run;
use crate::steps::tag_checks::{
    check_no_fault, check_tag_fault, check_tag_fault_within, check_value, expect_load,
    expect_load_fault, expect_store_fault, load, pattern_at, prepare, set_tcf, store, GRANULE_TAG,
    WRONG_TAG,
};
use crate::steps::tags::guest_store_tags;
use crate::vmm::{Guest, Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "access::tcma0_leaves_tag_0_pointers_unchecked",
        summary: "With TCR_EL1.TCMA0 = 1, a load and a store through a tag-0 pointer (bit 55 \
                  clear) to a granule tagged 5 do not fault, where the same load faulted with \
                  TCMA0 = 0",
        why: "Arm ARM: with TCMA0 set, accesses through TTBR0 addresses whose bits 59:55 are \
              0b00000 are Tag Unchecked (AArch64.AccessIsTagChecked); guest kernels use it for \
              untagged kernel pointers",
        proven_by: &[Injection::WrongTcf],
        run: tcma0_leaves_tag_0_pointers_unchecked,
    },
    Scenario {
        name: "access::tcma0_still_checks_tag_0xf_in_the_ttbr0_half",
        summary: "With TCR_EL1.TCMA0 = 1, a load and a store through pointer tag 0xF with bit 55 \
                  clear still fault on a granule tagged 5, while tag 0 in the same guest does not",
        why: "Arm ARM: TCMA exempts bits 59:55 = 0b00000 or 0b11111; in the TTBR0 half bit 55 is \
              clear, so tag 0xF gives 0b11110 and stays checked (the all-ones match is for TTBR1 \
              addresses)",
        proven_by: &[Injection::WrongTcf],
        run: tcma0_still_checks_tag_0xf_in_the_ttbr0_half,
    },
    Scenario {
        name: "access::tbi0_off_leaves_accesses_unchecked",
        summary: "With TCR_EL1.TBI0 = 0 (and the TLB invalidated), a tag-0 load and store to a \
                  granule tagged 5 do not fault; with TBI0 = 1 again the same load faults, as it \
                  did before",
        why: "Arm ARM: an access is tag checked only where the top byte is ignored \
              (EffectiveTBI = 1, AArch64.AccessIsTagChecked); TBI may be cached in the TLB, \
              hence the invalidation",
        proven_by: &[Injection::WrongTcf],
        run: tbi0_off_leaves_accesses_unchecked,
    },
    Scenario {
        name: "access::untagged_alias_is_unchecked",
        summary: "Through the Normal (MAIR 0xFF, not Tagged) alias of the same RAM, a load and a \
                  store with a mismatched pointer tag do not fault and reach the same memory, \
                  where the Normal-Tagged mapping faults",
        why: "Arm ARM: only accesses to Normal Inner and Outer Write-Back Tagged memory (MAIR \
              0xF0) are tag checked",
        proven_by: &[Injection::WrongTcf],
        run: untagged_alias_is_unchecked,
    },
    Scenario {
        name: "access::sp_based_immediate_offset_is_unchecked",
        summary: "A load and a store with SP as the base register and an immediate offset (no \
                  writeback), SP holding a mismatched tag, do not fault, where the same address \
                  through an ordinary register faults",
        why: "Arm ARM: loads and stores using SP as the base with an immediate offset are Tag \
              Unchecked (tagchecked = wback || n != 31), so compilers need not retag the stack",
        proven_by: &[Injection::WrongTcf],
        run: sp_based_immediate_offset_is_unchecked,
    },
    Scenario {
        name: "access::sp_based_writeback_is_checked",
        summary: "A pre-indexed load and store with SP as the base register and writeback, SP \
                  holding a mismatched tag, raise a tag check fault (taken from SP_EL0), and \
                  with the granule's tag they complete",
        why: "Arm ARM: only the SP-based forms without writeback are exempt (tagchecked = \
              wback || n != 31)",
        proven_by: &[Injection::WrongTcf],
        run: sp_based_writeback_is_checked,
    },
    Scenario {
        name: "access::load_across_granules_checks_both_tags",
        summary: "An unaligned 8-byte load across a granule boundary faults (DFSC 0b010001, FAR \
                  within the 8 bytes) when the pointer's tag matches only one side, and reads \
                  the right bytes once both sides carry its tag",
        why: "Arm ARM: every granule an access touches is checked against the pointer's tag",
        proven_by: &[Injection::WrongTcf],
        run: load_across_granules_checks_both_tags,
    },
    Scenario {
        name: "access::load_across_pages_checks_both_tags",
        summary: "An unaligned 8-byte load across a page boundary faults when the pointer's tag \
                  matches only one page's granule, and reads the right bytes once both carry it",
        why: "Arm ARM: every granule an access touches is checked; a page-crossing access is \
              split in two translations, and each half must still be checked (KVM maps the \
              pages independently)",
        proven_by: &[Injection::WrongTcf],
        run: load_across_pages_checks_both_tags,
    },
];

/// Each check's pages of test RAM, apart from the other families'.
fn page(n: u64) -> u64 {
    TEST_RAM_IPA + (64 + 2 * n) * PAGE_SIZE
}

/// Boot, pattern one page, tag its first granule `GRANULE_TAG`, select sync checks.
fn prepare_page(vmm: &dyn Vmm, n: u64) -> Result<(Box<dyn Guest>, u64), VmmError> {
    let mut guest = boot(vmm)?;
    let ipa = page(n);
    prepare(guest.as_mut(), ipa, 1, ipa, &[GRANULE_TAG])?;
    set_tcf(guest.as_mut(), tcf::SYNC)?;
    Ok((guest, ipa))
}

fn set_tag_tcr(guest: &mut dyn Guest, tbi0: bool, tcma0: bool) -> Result<u64, VmmError> {
    Ok(run(guest, Command::SetTagTcr, &[tbi0 as u64, tcma0 as u64])?.result[0])
}

/// A load through a matching pointer must return `expected`.
fn check_reads_back(
    checks: &mut Checks,
    guest: &mut dyn Guest,
    what: &str,
    ptr: u64,
    expected: u64,
) -> Result<(), VmmError> {
    expect_load(
        checks,
        guest,
        (&format!("{what}: matching load"), &format!("{what}: value")),
        ptr,
        expected,
    )
}

/// The value the stores that must not be checked write, and their read-backs expect.
const STORED: u64 = 0x7c3a;

/// How an access that must not be checked reaches memory.
#[derive(Clone, Copy)]
enum Via {
    /// An ordinary base register holding the pointer.
    Pointer(u64),
    /// SP holding the pointer, the word at [`SP_OFFSET`] from it, no writeback.
    SpImmediate(u64),
}

impl Via {
    fn load(self, guest: &mut dyn Guest) -> Result<Reply, VmmError> {
        match self {
            Via::Pointer(ptr) => load(guest, ptr),
            Via::SpImmediate(ptr) => load_via_sp(guest, ptr, false),
        }
    }

    fn store(self, guest: &mut dyn Guest, value: u64) -> Result<Reply, VmmError> {
        match self {
            Via::Pointer(ptr) => store(guest, ptr, value),
            Via::SpImmediate(ptr) => store_via_sp(guest, ptr, value, false),
        }
    }
}

/// The names in the evidence of [`check_unchecked_load_and_store`]'s checks.
struct Names<'a> {
    load: &'a str,
    value: &'a str,
    store: &'a str,
}

/// A load `via` that must not fault and must read `expected`, then a store of [`STORED`] `via`
/// that must not fault. The caller reads the store back.
fn check_unchecked_load_and_store(
    checks: &mut Checks,
    guest: &mut dyn Guest,
    via: Via,
    expected: u64,
    names: Names<'_>,
) -> Result<(), VmmError> {
    let reply = via.load(guest)?;
    check_no_fault(checks, names.load, &reply, false);
    check_value(checks, names.value, expected, reply.result[0]);
    let reply = via.store(guest, STORED)?;
    check_no_fault(checks, names.store, &reply, true);
    Ok(())
}

fn tcma0_leaves_tag_0_pointers_unchecked(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_page(vmm, 0)?;
    let guest = guest.as_mut();
    let tag0 = with_tag(ipa, 0);
    let mut checks = Checks::new();
    expect_load_fault(&mut checks, guest, "control: tag-0 load, TCMA0 = 0", tag0)?;

    set_tag_tcr(guest, true, true)?;
    check_unchecked_load_and_store(
        &mut checks,
        guest,
        Via::Pointer(tag0),
        pattern_at(0),
        Names {
            load: "tag-0 load, TCMA0 = 1",
            value: "tag-0 load: value",
            store: "tag-0 store, TCMA0 = 1",
        },
    )?;
    let granule = with_tag(ipa, GRANULE_TAG);
    check_reads_back(&mut checks, guest, "the tag-0 store", granule, STORED)?;
    Ok(checks.finish())
}

fn tcma0_still_checks_tag_0xf_in_the_ttbr0_half(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_page(vmm, 1)?;
    let guest = guest.as_mut();
    set_tag_tcr(guest, true, true)?;
    let mut checks = Checks::new();
    // TCMA0 took effect: tag 0 is exempt.
    let reply = load(guest, with_tag(ipa, 0))?;
    check_no_fault(&mut checks, "tag-0 load, TCMA0 = 1", &reply, false);

    let all_ones = with_tag(ipa, 0xf);
    expect_load_fault(&mut checks, guest, "tag-0xF load, TCMA0 = 1", all_ones)?;
    expect_store_fault(
        &mut checks,
        guest,
        "tag-0xF store, TCMA0 = 1",
        all_ones,
        0x7c3a,
    )?;
    let granule = with_tag(ipa, GRANULE_TAG);
    check_reads_back(
        &mut checks,
        guest,
        "after the faulting store",
        granule,
        pattern_at(0),
    )?;
    Ok(checks.finish())
}

fn tbi0_off_leaves_accesses_unchecked(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_page(vmm, 2)?;
    let guest = guest.as_mut();
    let tag0 = with_tag(ipa, 0);
    let mut checks = Checks::new();
    expect_load_fault(&mut checks, guest, "control: tag-0 load, TBI0 = 1", tag0)?;

    let before = set_tag_tcr(guest, false, false)?;
    checks.holds(
        "TCR_EL1.TBI0 was set before",
        before & 1 << 37 != 0,
        "TBI0 = 1",
        format!("TCR_EL1 = {before:#x}"),
    );
    check_unchecked_load_and_store(
        &mut checks,
        guest,
        Via::Pointer(tag0),
        pattern_at(0),
        Names {
            load: "tag-0 load, TBI0 = 0",
            value: "tag-0 load: value",
            store: "tag-0 store, TBI0 = 0",
        },
    )?;

    set_tag_tcr(guest, true, false)?;
    expect_load_fault(&mut checks, guest, "tag-0 load, TBI0 = 1 again", tag0)?;
    let granule = with_tag(ipa, GRANULE_TAG);
    check_reads_back(&mut checks, guest, "the TBI0 = 0 store", granule, STORED)?;
    Ok(checks.finish())
}

fn untagged_alias_is_unchecked(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_page(vmm, 3)?;
    let guest = guest.as_mut();
    let tagged = with_tag(ipa, WRONG_TAG);
    let alias = with_tag(ipa - RAM_IPA + UNTAGGED_ALIAS_VA, WRONG_TAG);
    let mut checks = Checks::new();
    expect_load_fault(&mut checks, guest, "control: Normal-Tagged load", tagged)?;

    check_unchecked_load_and_store(
        &mut checks,
        guest,
        Via::Pointer(alias),
        pattern_at(0),
        Names {
            load: "untagged alias load",
            value: "untagged alias load: value",
            store: "untagged alias store",
        },
    )?;
    let granule = with_tag(ipa, GRANULE_TAG);
    check_reads_back(&mut checks, guest, "the alias store", granule, STORED)?;
    Ok(checks.finish())
}

/// Load `ptr + 8` with SP = `ptr` as the base.
fn load_via_sp(guest: &mut dyn Guest, ptr: u64, writeback: bool) -> Result<Reply, VmmError> {
    run(guest, Command::LoadViaSp, &[ptr, writeback as u64])
}

/// Store to `ptr + 8` with SP = `ptr` as the base.
fn store_via_sp(
    guest: &mut dyn Guest,
    ptr: u64,
    value: u64,
    writeback: bool,
) -> Result<Reply, VmmError> {
    run(guest, Command::StoreViaSp, &[ptr, value, writeback as u64])
}

/// The word the SP forms access: `[sp, #8]`.
const SP_OFFSET: u64 = 8;

fn sp_based_immediate_offset_is_unchecked(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_page(vmm, 4)?;
    let guest = guest.as_mut();
    let bad = with_tag(ipa, WRONG_TAG);
    let mut checks = Checks::new();
    let control = bad + SP_OFFSET;
    expect_load_fault(
        &mut checks,
        guest,
        "control: load through an ordinary register",
        control,
    )?;

    check_unchecked_load_and_store(
        &mut checks,
        guest,
        Via::SpImmediate(bad),
        pattern_at(SP_OFFSET),
        Names {
            load: "ldr [sp, #8]",
            value: "ldr [sp, #8]: value",
            store: "str [sp, #8]",
        },
    )?;
    let granule = with_tag(ipa, GRANULE_TAG) + SP_OFFSET;
    check_reads_back(&mut checks, guest, "the SP-based store", granule, STORED)?;
    Ok(checks.finish())
}

/// FaultRecord::vector of a synchronous exception taken while SP_EL0 was selected.
const VECTOR_SYNC_SP_EL0: u64 = 4;

fn sp_based_writeback_is_checked(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_page(vmm, 5)?;
    let guest = guest.as_mut();
    let bad = with_tag(ipa, WRONG_TAG);
    let mut checks = Checks::new();
    let reply = load_via_sp(guest, bad, true)?;
    check_tag_fault(&mut checks, "ldr [sp, #8]!", &reply, bad + SP_OFFSET, false);
    checks.equal(
        "ldr [sp, #8]!: vector (sync, current EL, SP_EL0)",
        VECTOR_SYNC_SP_EL0,
        reply.fault.vector,
    );
    let reply = store_via_sp(guest, bad, 0x7c3a, true)?;
    check_tag_fault(&mut checks, "str [sp, #8]!", &reply, bad + SP_OFFSET, true);

    let good = with_tag(ipa, GRANULE_TAG);
    let reply = load_via_sp(guest, good, true)?;
    check_no_fault(&mut checks, "matching ldr [sp, #8]!", &reply, false);
    check_value(
        &mut checks,
        "matching ldr [sp, #8]!: value (the faulting store wrote nothing)",
        pattern_at(SP_OFFSET),
        reply.result[0],
    );
    Ok(checks.finish())
}

/// Tag the granules either side of `boundary_offset` (from the check's page) differently and
/// load 8 bytes across the boundary through each side's tag; then tag both alike and load again.
fn load_across(vmm: &dyn Vmm, n: u64, boundary_offset: u64) -> Result<Finding, VmmError> {
    const FIRST: u8 = GRANULE_TAG;
    const SECOND: u8 = WRONG_TAG;
    let mut guest = boot(vmm)?;
    let guest = guest.as_mut();
    let ipa = page(n);
    let boundary = ipa + boundary_offset;
    let granules_ipa = boundary - GRANULE;
    prepare(guest, ipa, 2, granules_ipa, &[FIRST, SECOND])?;
    set_tcf(guest, tcf::SYNC)?;

    // Four bytes on each side.
    let offset = boundary_offset - 4;
    let mut checks = Checks::new();
    for (side, tag) in [("first", FIRST), ("second", SECOND)] {
        let ptr = with_tag(ipa + offset, tag);
        let reply = load(guest, ptr)?;
        check_tag_fault_within(
            &mut checks,
            &format!("load matching the {side} side only"),
            &reply,
            (ptr, ptr + 7),
            false,
        );
    }

    guest_store_tags(guest, granules_ipa, &[FIRST, FIRST])?;
    expect_load(
        &mut checks,
        guest,
        (
            "load with both sides tagged alike",
            "load with both sides tagged alike: value",
        ),
        with_tag(ipa + offset, FIRST),
        pattern_at(offset),
    )?;
    Ok(checks.finish())
}

fn load_across_granules_checks_both_tags(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    load_across(vmm, 6, 3 * GRANULE)
}

fn load_across_pages_checks_both_tags(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    load_across(vmm, 7, PAGE_SIZE)
}
