//! Tag-check faults the guest takes (and does not take) under KVM, in each mode SCTLR_EL1.TCF
//! selects: synchronous (a data abort), asynchronous (TFSR_EL1.TF0, no exception), asymmetric
//! (reads synchronous, writes asynchronous) and none.
//!
//! Every check that expects an access not to fault also makes a control access in the same
//! guest that must fault (or set TFSR_EL1.TF0) in the mode the check selected, so a guest
//! that checks tags in another mode than asked for cannot pass it.

use mte_protocol::{pattern_word, tcf, with_tag, PAGE_SIZE, TEST_RAM_IPA};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::command::require_mte3;
use crate::steps::data::guest_pattern_mismatches;
use crate::steps::tag_checks::{
    check_no_fault, check_tag_fault, check_tf0, check_value, load, prepare, set_tcf, store,
    GRANULE_TAG, SEED, WRONG_TAG,
};
use crate::vmm::{Guest, Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "faults::sync_mismatched_load_faults",
        summary: "With SCTLR_EL1.TCF = sync, a load through a pointer whose tag differs from the \
                  granule's raises a data abort with DFSC 0b010001 and FAR holding the address",
        why:
            "Arm ARM: synchronous tag check fault; KVM must give the guest MTE (HCR_EL2.ATA) once \
              KVM_CAP_ARM_MTE is enabled",
        proven_by: &[Injection::WrongTcf],
        run: sync_mismatched_load_faults,
    },
    Scenario {
        name: "faults::sync_matching_load_does_not_fault",
        summary: "The same load through a pointer with the granule's own tag completes without a \
                  fault and reads the data that was written, where a mismatched one faults",
        why: "Tag checks must not fire on matching tags; the control for the mismatch check",
        proven_by: &[Injection::WrongTcf],
        run: sync_matching_load_does_not_fault,
    },
    Scenario {
        name: "faults::sync_mismatched_store_faults_and_writes_nothing",
        summary: "A store through a mismatched pointer tag raises a tag check fault (WnR set) and \
                  leaves the granule's data as it was",
        why: "Arm ARM: a synchronous tag check fault is precise; the faulting store is not \
              performed",
        proven_by: &[Injection::WrongTcf],
        run: sync_mismatched_store_faults,
    },
    Scenario {
        name: "faults::async_mismatch_sets_tfsr_without_exception",
        summary: "With SCTLR_EL1.TCF = async, a mismatched store and a mismatched load take no \
                  exception, complete, and each sets TFSR_EL1.TF0, which is still set after the \
                  guest has exited to the VMM",
        why: "Arm ARM: asynchronous tag check faults are recorded in TFSR_EL1.TF0 and the access \
              completes; KVM must keep the guest's TFSR_EL1 across exits (it saves it with the \
              rest of the MTE state)",
        proven_by: &[Injection::WrongTcf],
        run: async_mismatch_sets_tfsr,
    },
    Scenario {
        name: "faults::async_matching_access_leaves_tfsr_clear",
        summary: "With SCTLR_EL1.TCF = async, a load and a store through the granule's own tag \
                  leave TFSR_EL1.TF0 clear, where a mismatched load in the same guest sets it",
        why: "TF0 must record tag check faults only; a guest kernel reports every TF0 it finds \
              as a memory-safety bug (Documentation/arch/arm64/memory-tagging-extension.rst)",
        proven_by: &[Injection::WrongTcf],
        run: async_matching_access_leaves_tfsr_clear,
    },
    Scenario {
        name: "faults::asymmetric_mismatched_load_faults",
        summary: "With SCTLR_EL1.TCF = asymmetric (3), a mismatched load raises a synchronous tag \
                  check fault (DFSC 0b010001)",
        why: "Arm ARM (FEAT_MTE3): in asymmetric mode reads are checked synchronously; needs \
              ID_AA64PFR1_EL1.MTE >= 3",
        proven_by: &[Injection::WrongTcf],
        run: asymmetric_mismatched_load_faults,
    },
    Scenario {
        name: "faults::asymmetric_mismatched_store_sets_tfsr",
        summary: "With SCTLR_EL1.TCF = asymmetric (3), a mismatched store takes no exception, is \
                  performed, and sets TFSR_EL1.TF0",
        why: "Arm ARM (FEAT_MTE3): in asymmetric mode writes are checked asynchronously; needs \
              ID_AA64PFR1_EL1.MTE >= 3",
        proven_by: &[Injection::WrongTcf],
        run: asymmetric_mismatched_store_sets_tfsr,
    },
    Scenario {
        name: "faults::tcf_none_ignores_mismatches",
        summary: "With SCTLR_EL1.TCF = none, a mismatched load and store do not fault and leave \
                  TFSR_EL1 clear, where the same load faulted under sync",
        why: "Arm ARM: TCF = 0b00, tag check faults have no effect; a guest kernel turns checks \
              off this way (kasan=off, PR_MTE_TCF_NONE)",
        proven_by: &[Injection::WrongTcf],
        run: tcf_none_ignores_mismatches,
    },
];

/// Each check's page of test RAM, apart from the other families' (pages 0..32 are `tags`).
fn page(n: u64) -> u64 {
    TEST_RAM_IPA + (32 + n) * PAGE_SIZE
}

/// Boot, write a data pattern over one page, tag its first granule and select `mode`.
fn prepare_mode(vmm: &dyn Vmm, n: u64, mode: u64) -> Result<(Box<dyn Guest>, u64), VmmError> {
    let mut guest = boot(vmm)?;
    if mode == tcf::ASYMMETRIC {
        require_mte3(&guest.ids())?;
    }
    let ipa = page(n);
    prepare(guest.as_mut(), ipa, 1, ipa, &[GRANULE_TAG])?;
    set_tcf(guest.as_mut(), mode)?;
    Ok((guest, ipa))
}

fn sync_mismatched_load_faults(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_mode(vmm, 0, tcf::SYNC)?;
    let ptr = with_tag(ipa, WRONG_TAG);
    let reply = load(guest.as_mut(), ptr)?;
    let mut checks = Checks::new();
    check_tag_fault(&mut checks, "mismatched load", &reply, ptr, false);
    // The guest's load starts with 0 in its destination; a precise fault leaves it there.
    check_value(
        &mut checks,
        "destination register after the faulting load",
        0,
        reply.result[0],
    );
    // A synchronous fault is reported once, as the exception, never also in TFSR_EL1.
    check_tf0(&mut checks, guest.as_mut(), "the synchronous fault", false)?;
    Ok(checks.finish())
}

fn sync_matching_load_does_not_fault(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_mode(vmm, 1, tcf::SYNC)?;
    let mut checks = Checks::new();
    let reply = load(guest.as_mut(), with_tag(ipa, GRANULE_TAG))?;
    check_no_fault(&mut checks, "matching load", &reply, false);
    check_value(
        &mut checks,
        "value loaded",
        pattern_word(SEED, 0),
        reply.result[0],
    );
    // Control: the same granule through another tag faults, so checks were on.
    let ptr = with_tag(ipa, WRONG_TAG);
    let reply = load(guest.as_mut(), ptr)?;
    check_tag_fault(&mut checks, "control: mismatched load", &reply, ptr, false);
    Ok(checks.finish())
}

fn sync_mismatched_store_faults(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_mode(vmm, 2, tcf::SYNC)?;
    let ptr = with_tag(ipa, WRONG_TAG);
    let reply = store(guest.as_mut(), ptr, !pattern_word(SEED, 0))?;
    let mut checks = Checks::new();
    check_tag_fault(&mut checks, "mismatched store", &reply, ptr, true);
    check_tf0(&mut checks, guest.as_mut(), "the synchronous fault", false)?;
    let (changed, _) = guest_pattern_mismatches(guest.as_mut(), ipa, PAGE_SIZE, SEED)?;
    checks.equal("words changed by the faulting store", 0, changed);
    Ok(checks.finish())
}

/// Words of the prepared page that differ from the pattern, and the first one's offset.
fn changed_words(guest: &mut dyn Guest, ipa: u64) -> Result<(u64, u64), VmmError> {
    guest_pattern_mismatches(guest, ipa, PAGE_SIZE, SEED)
}

fn async_mismatch_sets_tfsr(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_mode(vmm, 3, tcf::ASYNC)?;
    let ptr = with_tag(ipa, WRONG_TAG);
    let mut checks = Checks::new();

    let reply = store(guest.as_mut(), ptr, !pattern_word(SEED, 0))?;
    check_no_fault(&mut checks, "mismatched store", &reply, true);
    check_tf0(&mut checks, guest.as_mut(), "the mismatched store", true)?;
    checks.equal(
        "words changed by the store (changed words, first offset)",
        (1, 0),
        changed_words(guest.as_mut(), ipa)?,
    );

    let reply = load(guest.as_mut(), ptr)?;
    check_no_fault(&mut checks, "mismatched load", &reply, false);
    check_value(
        &mut checks,
        "value loaded",
        !pattern_word(SEED, 0),
        reply.result[0],
    );
    check_tf0(&mut checks, guest.as_mut(), "the mismatched load", true)?;
    Ok(checks.finish())
}

fn async_matching_access_leaves_tfsr_clear(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_mode(vmm, 4, tcf::ASYNC)?;
    let good = with_tag(ipa, GRANULE_TAG);
    let mut checks = Checks::new();

    let reply = load(guest.as_mut(), good)?;
    check_no_fault(&mut checks, "matching load", &reply, false);
    check_value(
        &mut checks,
        "value loaded",
        pattern_word(SEED, 0),
        reply.result[0],
    );
    let reply = store(guest.as_mut(), good, 0x1234_5678)?;
    check_no_fault(&mut checks, "matching store", &reply, true);
    check_tf0(
        &mut checks,
        guest.as_mut(),
        "the matching load and store",
        false,
    )?;

    // Control: a mismatched load in the same mode completes and sets TF0.
    let reply = load(guest.as_mut(), with_tag(ipa, WRONG_TAG))?;
    check_no_fault(&mut checks, "control: mismatched load", &reply, false);
    check_value(
        &mut checks,
        "control: value loaded",
        0x1234_5678,
        reply.result[0],
    );
    check_tf0(&mut checks, guest.as_mut(), "the control", true)?;
    Ok(checks.finish())
}

fn asymmetric_mismatched_load_faults(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_mode(vmm, 5, tcf::ASYMMETRIC)?;
    let ptr = with_tag(ipa, WRONG_TAG);
    let reply = load(guest.as_mut(), ptr)?;
    let mut checks = Checks::new();
    check_tag_fault(&mut checks, "mismatched load", &reply, ptr, false);
    check_tf0(&mut checks, guest.as_mut(), "the synchronous fault", false)?;
    Ok(checks.finish())
}

fn asymmetric_mismatched_store_sets_tfsr(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_mode(vmm, 6, tcf::ASYMMETRIC)?;
    let ptr = with_tag(ipa, WRONG_TAG);
    let reply = store(guest.as_mut(), ptr, !pattern_word(SEED, 0))?;
    let mut checks = Checks::new();
    check_no_fault(&mut checks, "mismatched store", &reply, true);
    check_tf0(&mut checks, guest.as_mut(), "the mismatched store", true)?;
    checks.equal(
        "words changed by the store (changed words, first offset)",
        (1, 0),
        changed_words(guest.as_mut(), ipa)?,
    );
    Ok(checks.finish())
}

fn tcf_none_ignores_mismatches(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare_mode(vmm, 7, tcf::SYNC)?;
    let ptr = with_tag(ipa, WRONG_TAG);
    let mut checks = Checks::new();
    // Control: under sync the pointer's tag is a mismatch.
    let reply = load(guest.as_mut(), ptr)?;
    check_tag_fault(
        &mut checks,
        "control: mismatched load under sync",
        &reply,
        ptr,
        false,
    );

    set_tcf(guest.as_mut(), tcf::NONE)?;
    let reply = load(guest.as_mut(), ptr)?;
    check_no_fault(&mut checks, "mismatched load", &reply, false);
    check_value(
        &mut checks,
        "value loaded",
        pattern_word(SEED, 0),
        reply.result[0],
    );
    let reply = store(guest.as_mut(), ptr, !pattern_word(SEED, 0))?;
    check_no_fault(&mut checks, "mismatched store", &reply, true);
    checks.equal(
        "words changed by the store (changed words, first offset)",
        (1, 0),
        changed_words(guest.as_mut(), ipa)?,
    );
    check_tf0(
        &mut checks,
        guest.as_mut(),
        "the mismatched accesses",
        false,
    )?;
    Ok(checks.finish())
}
