//! Tag-check faults the guest takes (and does not take) under KVM, in each mode SCTLR_EL1.TCF
//! selects: synchronous (a data abort), asynchronous (TFSR_EL1.TF0, no exception), asymmetric
//! (reads synchronous, writes asynchronous) and none.
//!
//! Every check that expects an access not to fault also makes a control access in the same
//! guest that must fault (or set TFSR_EL1.TF0) in the mode the check selected, so a guest
//! that checks tags in another mode than asked for cannot pass it.
//!
//! The eight checks are one table: each gives the page it uses, the mode it selects and its
//! steps, which `in_mode` takes in order: an access, then the comparisons on its reply.

use mte_protocol::{pattern_word, tcf, with_tag, GRANULE, PAGE_SIZE, TEST_RAM_IPA};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::reply::Reply;
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::bulk::guest_data;
use crate::steps::command::require_mte3;
use crate::steps::data::guest_pattern_mismatches;
use crate::steps::tag_checks::{
    check_no_fault, check_tag_fault, check_tf0, check_value, load, prepare, set_tcf, store,
    GRANULE_TAG, SEED, WRONG_TAG,
};
use crate::vmm::{Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "faults::sync_mismatched_load_faults",
        summary: "With SCTLR_EL1.TCF = sync, a load through a pointer whose tag differs from the \
                  granule's raises a data abort with DFSC 0b010001 and FAR holding the address",
        why:
            "Arm ARM: synchronous tag check fault; KVM must give the guest MTE (HCR_EL2.ATA) once \
              KVM_CAP_ARM_MTE is enabled",
        proven_by: WRONG_TCF,
        run: |vmm| in_mode(vmm, 0, tcf::SYNC, SYNC_MISMATCHED_LOAD),
    },
    Scenario {
        name: "faults::sync_matching_load_does_not_fault",
        summary: "The same load through a pointer with the granule's own tag completes without a \
                  fault and reads the data that was written, where a mismatched one faults",
        why: "Tag checks must not fire on matching tags; the control for the mismatch check",
        proven_by: WRONG_TCF,
        run: |vmm| in_mode(vmm, 1, tcf::SYNC, SYNC_MATCHING_LOAD),
    },
    Scenario {
        name: "faults::sync_mismatched_store_faults_and_writes_nothing",
        summary: "A store through a mismatched pointer tag raises a tag check fault (WnR set) and \
                  leaves the granule's data as it was",
        why: "Arm ARM: a synchronous tag check fault is precise; the faulting store is not \
              performed",
        proven_by: WRONG_TCF,
        run: |vmm| in_mode(vmm, 2, tcf::SYNC, SYNC_MISMATCHED_STORE),
    },
    Scenario {
        name: "faults::async_mismatch_sets_tfsr_without_exception",
        summary: "With SCTLR_EL1.TCF = async, a mismatched store and a mismatched load take no \
                  exception, complete, and each sets TFSR_EL1.TF0, which is still set after the \
                  guest has exited to the VMM",
        why: "Arm ARM: asynchronous tag check faults are recorded in TFSR_EL1.TF0 and the access \
              completes; KVM must keep the guest's TFSR_EL1 across exits (it saves it with the \
              rest of the MTE state)",
        proven_by: WRONG_TCF,
        run: |vmm| in_mode(vmm, 3, tcf::ASYNC, ASYNC_MISMATCH),
    },
    Scenario {
        name: "faults::async_matching_access_leaves_tfsr_clear",
        summary: "With SCTLR_EL1.TCF = async, a load and a store through the granule's own tag \
                  leave TFSR_EL1.TF0 clear, where a mismatched load in the same guest sets it",
        why: "TF0 must record tag check faults only; a guest kernel reports every TF0 it finds \
              as a memory-safety bug (Documentation/arch/arm64/memory-tagging-extension.rst)",
        proven_by: WRONG_TCF,
        run: |vmm| in_mode(vmm, 4, tcf::ASYNC, ASYNC_MATCHING),
    },
    Scenario {
        name: "faults::asymmetric_mismatched_load_faults",
        summary: "With SCTLR_EL1.TCF = asymmetric (3), a mismatched load raises a synchronous tag \
                  check fault (DFSC 0b010001), leaves its destination register as it was and \
                  TFSR_EL1 at 0",
        why: "Arm ARM (FEAT_MTE3): in asymmetric mode reads are checked synchronously; needs \
              ID_AA64PFR1_EL1.MTE >= 3",
        proven_by: WRONG_TCF,
        run: |vmm| in_mode(vmm, 5, tcf::ASYMMETRIC, ASYMMETRIC_LOAD),
    },
    Scenario {
        name: "faults::asymmetric_mismatched_store_sets_tfsr",
        summary: "With SCTLR_EL1.TCF = asymmetric (3), a mismatched store takes no exception, is \
                  performed (memory holds the stored value), and sets TFSR_EL1 to TF0 alone",
        why: "Arm ARM (FEAT_MTE3): in asymmetric mode writes are checked asynchronously; needs \
              ID_AA64PFR1_EL1.MTE >= 3",
        proven_by: WRONG_TCF,
        run: |vmm| in_mode(vmm, 6, tcf::ASYMMETRIC, ASYMMETRIC_STORE),
    },
    Scenario {
        name: "faults::tcf_none_ignores_mismatches",
        summary: "With SCTLR_EL1.TCF = none, a mismatched load and store do not fault and leave \
                  TFSR_EL1 clear, where the same load faulted under sync",
        why: "Arm ARM: TCF = 0b00, tag check faults have no effect; a guest kernel turns checks \
              off this way (kasan=off, PR_MTE_TCF_NONE)",
        proven_by: WRONG_TCF,
        run: |vmm| in_mode(vmm, 7, tcf::SYNC, TCF_NONE),
    },
];

/// Every check here is proven by a wrong tag-check mode.
const WRONG_TCF: &[Injection] = &[Injection::WrongTcf];

/// The prepared pattern's first word; its complement, what a store that lands changes it to;
/// and a word of no pattern.
const PATTERN: u64 = pattern_word(SEED, 0);
const INVERTED: u64 = !PATTERN;
const OTHER: u64 = 0x1234_5678;

/// One step of a fault-mode check.
#[derive(Clone, Copy)]
enum Step {
    /// A load through the prepared granule with this pointer tag.
    Load(u8, Must),
    /// A store of this word there.
    Store(u8, u64, Must),
    /// The last load read this word.
    Reads(&'static str, u64),
    /// TFSR_EL1.TF0 is set (or clear) now.
    Tf0(&'static str, bool),
    /// No word of the page changed (the store was not performed).
    WroteNothing(&'static str),
    /// The store changed exactly the page's first word.
    WroteOneWord,
    /// The page's first word holds this value now.
    Holds(u64),
    /// Select another tag-check mode.
    Tcf(u64),
}

/// What an access must do, named for the evidence.
#[derive(Clone, Copy)]
enum Must {
    /// Take a synchronous tag check fault at its address.
    Fault(&'static str),
    /// Complete without an exception.
    Complete(&'static str),
}

use Must::*;
use Step::*;

const SYNC_MISMATCHED_LOAD: &[Step] = &[
    Load(WRONG_TAG, Fault("mismatched load")),
    // The guest's load starts with 0 in its destination; a precise fault leaves it.
    Reads("destination register after the faulting load", 0),
    // A synchronous fault is reported once, as the exception, never in TFSR_EL1.
    Tf0("the synchronous fault", false),
];

const SYNC_MATCHING_LOAD: &[Step] = &[
    Load(GRANULE_TAG, Complete("matching load")),
    Reads("value loaded", PATTERN),
    // Control: the same granule through another tag faults, so checks were on.
    Load(WRONG_TAG, Fault("control: mismatched load")),
];

const SYNC_MISMATCHED_STORE: &[Step] = &[
    Store(WRONG_TAG, INVERTED, Fault("mismatched store")),
    Tf0("the synchronous fault", false),
    WroteNothing("words changed by the faulting store"),
];

const ASYNC_MISMATCH: &[Step] = &[
    Store(WRONG_TAG, INVERTED, Complete("mismatched store")),
    Tf0("the mismatched store", true),
    WroteOneWord,
    Load(WRONG_TAG, Complete("mismatched load")),
    Reads("value loaded", INVERTED),
    Tf0("the mismatched load", true),
];

const ASYNC_MATCHING: &[Step] = &[
    Load(GRANULE_TAG, Complete("matching load")),
    Reads("value loaded", PATTERN),
    Store(GRANULE_TAG, OTHER, Complete("matching store")),
    Tf0("the matching load and store", false),
    // Control: a mismatched load in the same mode completes and sets TF0.
    Load(WRONG_TAG, Complete("control: mismatched load")),
    Reads("control: value loaded", OTHER),
    Tf0("the control", true),
];

const ASYMMETRIC_LOAD: &[Step] = &[
    Load(WRONG_TAG, Fault("mismatched load")),
    // Reads are checked synchronously: the faulting load leaves its destination as it was.
    Reads("destination register after the faulting load", 0),
    Tf0("the synchronous fault", false),
];

const ASYMMETRIC_STORE: &[Step] = &[
    Store(WRONG_TAG, INVERTED, Complete("mismatched store")),
    Tf0("the mismatched store", true),
    WroteOneWord,
    Holds(INVERTED),
];

const TCF_NONE: &[Step] = &[
    // Control: under sync the pointer's tag is a mismatch.
    Load(WRONG_TAG, Fault("control: mismatched load under sync")),
    Tcf(tcf::NONE),
    Load(WRONG_TAG, Complete("mismatched load")),
    Reads("value loaded", PATTERN),
    Store(WRONG_TAG, INVERTED, Complete("mismatched store")),
    WroteOneWord,
    Tf0("the mismatched accesses", false),
];

/// Each check's page of test RAM, apart from the other families' (pages 0..32 are `tags`).
fn page(n: u64) -> u64 {
    TEST_RAM_IPA + (32 + n) * PAGE_SIZE
}

impl Must {
    fn check(self, checks: &mut Checks, reply: &Reply, ptr: u64, write: bool) {
        match self {
            Fault(access) => check_tag_fault(checks, access, reply, ptr, write),
            Complete(access) => check_no_fault(checks, access, reply, write),
        }
    }
}

/// Boot, write the data pattern over page `n`, tag its first granule, select `mode` and take
/// `steps` in order.
fn in_mode(vmm: &dyn Vmm, n: u64, mode: u64, steps: &[Step]) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    if mode == tcf::ASYMMETRIC {
        require_mte3(&guest.ids())?;
    }
    let (guest, ipa) = (guest.as_mut(), page(n));
    prepare(guest, ipa, 1, ipa, &[GRANULE_TAG])?;
    set_tcf(guest, mode)?;
    let mut checks = Checks::new();
    let mut loaded = 0;
    for &step in steps {
        match step {
            Load(tag, must) => {
                let ptr = with_tag(ipa, tag);
                let reply = load(guest, ptr)?;
                must.check(&mut checks, &reply, ptr, false);
                loaded = reply.result[0];
            }
            Store(tag, value, must) => {
                let ptr = with_tag(ipa, tag);
                must.check(&mut checks, &store(guest, ptr, value)?, ptr, true);
            }
            Reads(what, value) => check_value(&mut checks, what, value, loaded),
            Tf0(after, set) => check_tf0(&mut checks, guest, after, set)?,
            WroteNothing(what) => {
                let (changed, _) = guest_pattern_mismatches(guest, ipa, PAGE_SIZE, SEED)?;
                checks.equal(what, 0, changed);
            }
            WroteOneWord => {
                checks.equal(
                    "words changed by the store (changed words, first offset)",
                    (1, 0),
                    guest_pattern_mismatches(guest, ipa, PAGE_SIZE, SEED)?,
                );
            }
            Holds(value) => {
                // The guest reads whole granules; the word is the first of this one.
                let granule = guest_data(guest, ipa, GRANULE)?;
                let word = granule.first_chunk::<8>().ok_or_else(|| {
                    VmmError::Guest(format!("the guest reported {} bytes", granule.len()))
                })?;
                let word = u64::from_le_bytes(*word);
                check_value(&mut checks, "memory at the store's address", value, word);
            }
            Tcf(mode) => set_tcf(guest, mode)?,
        }
    }
    Ok(checks.finish())
}
