//! Tag checks of accesses made as EL0: by the guest's own EL0 code, under SCTLR_EL1.TCF0
//! (synchronous, asynchronous into TFSRE0_EL1, asymmetric), and by EL1's unprivileged loads and
//! stores (LDTR, STTR), which the architecture checks as EL0's.
//!
//! Each check boots a guest, tags a granule of one page and accesses it through RAM's EL0 alias
//! (tagged like RAM, so the same allocation tags). Every check that expects an access not to
//! fault also makes one in the same guest that must fault or must set TFSRE0_EL1, so a guest
//! that checks in another mode than asked for cannot pass.

use mte_protocol::{pattern_word, tcf, with_tag, PAGE_SIZE, TEST_RAM_IPA};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::command::{require_mte, require_mte3};
use crate::steps::el0::{
    check_fault_status, check_no_fault, check_tag_fault, load, set_tcf0, store, Maker,
};
use crate::steps::tag_checks::{self, check_value, prepare, set_tcf, GRANULE_TAG, SEED, WRONG_TAG};
use crate::vmm::{Guest, Vmm, VmmError};

use Maker::{El0, Unprivileged};

const WHY_TCF0: &str = "Arm ARM: SCTLR_EL1.TCF0 selects how tag check faults at EL0 are \
    reported (with ATA0 set); a synchronous one is a data abort taken to EL1 from the lower EL \
    (EC 0b100100) with DFSC 0b010001, FAR_EL1 holding the address with its tag (bits 63:60 \
    UNKNOWN), and the access not performed. Guest Linux sets TCF0 per task \
    (PR_SET_TAGGED_ADDR_CTRL, mte_thread_switch); KVM must run the guest's EL0 with the \
    SCTLR_EL1 and allocation tags the guest set";

const WHY_ASYNC: &str = "Arm ARM: with TCF0 = 0b10 a tag check fault at EL0 takes no exception, \
    the access is performed and TFSRE0_EL1.TF0 (TTBR0 addresses) is set, never TFSR_EL1, which \
    is EL1's own. Guest Linux reads and clears TFSRE0_EL1 on entry from user space \
    (check_mte_async_tcf0) and raises SIGSEGV (SEGV_MTEAERR) for the task; KVM keeps TFSRE0_EL1 \
    in the vCPU's EL1 context ('KVM: arm64: Save/restore MTE registers', 5.14)";

const WHY_ASYMMETRIC: &str = "Arm ARM (FEAT_MTE3): with TCF0 = 0b11 reads at EL0 are checked \
    synchronously and writes asynchronously into TFSRE0_EL1; guest Linux picks it for tasks \
    that ask for sync and async on CPUs that prefer it ('arm64: mte: Add asymmetric mode \
    support', 5.15); needs ID_AA64PFR1_EL1.MTE >= 3";

const WHY_UNPRIVILEGED: &str = "Arm ARM D6.7: 'For the purpose of determining Tag Check Fault \
    handling, unprivileged load and store instructions are treated as if executed at EL0 when \
    executed at EL1, when the Effective value of PSTATE.UAO is 0' - they are checked under \
    SCTLR_EL1.TCF0 and report asynchronously in TFSRE0_EL1, while a synchronous fault is still \
    taken from the current EL (EC 0b100101). Arm confirmed the older AArch64.TagCheckFault \
    pseudocode (PSTATE.EL) a defect; QEMU's TCG followed with 'target/arm: Use TCF0 and TFSRE0 \
    for unprivileged tag checks' (2d928adf, 2021). Guest Linux's uaccess routines are LDTR/STTR: \
    a task's pointers are checked in copy_{to,from}_user under the task's TCF0";

/// Every check here is proven by a wrong tag-check mode: SetTcf and SetTcf0 both shifted.
const WRONG_TCF: &[Injection] = &[Injection::WrongTcf];

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "el0::tcf0_sync_faults_mismatched_el0_accesses_only",
        summary: "With SCTLR_EL1.TCF0 = sync, the guest's EL0 load and store through the \
                  granule's own tag complete; through another tag each takes a data abort from \
                  EL0 (EC 0x24, DFSC 0x11, WnR as the access, FAR = the address with its tag), \
                  the load's destination and the granule's data stay as they were, and neither \
                  TFSRE0_EL1 nor TFSR_EL1 records anything",
        why: WHY_TCF0,
        proven_by: WRONG_TCF,
        run: tcf0_sync,
    },
    Scenario {
        name: "el0::tcf0_async_sets_tfsre0_not_tfsr",
        summary: "With SCTLR_EL1.TCF0 = async, the guest's EL0 store and load through a \
                  mismatched tag take no exception and are performed; TFSRE0_EL1 is TF0 alone \
                  after each, TFSR_EL1 stays 0",
        why: WHY_ASYNC,
        proven_by: WRONG_TCF,
        run: tcf0_async,
    },
    Scenario {
        name: "el0::tcf0_asymmetric_reads_sync_writes_async",
        summary: "With SCTLR_EL1.TCF0 = asymmetric (3), a mismatched EL0 load takes a \
                  synchronous data abort from EL0 and leaves TFSRE0_EL1 at 0; a mismatched EL0 \
                  store takes none, is performed, and sets TFSRE0_EL1 to TF0 alone (TFSR_EL1 \
                  stays 0)",
        why: WHY_ASYMMETRIC,
        proven_by: WRONG_TCF,
        run: tcf0_asymmetric,
    },
    Scenario {
        name: "el0::unprivileged_accesses_follow_tcf0_not_tcf",
        summary: "At EL1, LDTR and STTR through a mismatched tag on RAM's EL0 alias fault \
                  (EC 0x25, DFSC 0x11, FAR the alias with its tag) under TCF = none, TCF0 = sync, \
                  where a plain LDR does not; under TCF = sync, TCF0 = none they complete (LDTR \
                  reads the data), where a plain LDR faults",
        why: WHY_UNPRIVILEGED,
        proven_by: WRONG_TCF,
        run: unprivileged_follow_tcf0,
    },
    Scenario {
        name: "el0::unprivileged_async_fault_is_recorded_in_tfsre0",
        summary: "With TCF = async and TCF0 = async, STTR and LDTR at EL1 through a mismatched \
                  tag take no exception and are performed; TFSRE0_EL1 is TF0 alone after each \
                  and TFSR_EL1 stays 0",
        why: WHY_UNPRIVILEGED,
        proven_by: WRONG_TCF,
        run: unprivileged_async,
    },
];

/// The page each check tags a granule of.
const PAGE: u64 = TEST_RAM_IPA + 300 * PAGE_SIZE;
/// The pointers to that granule: with its tag, and with another.
const MATCHING: u64 = with_tag(PAGE, GRANULE_TAG);
pub(crate) const MISMATCHED: u64 = with_tag(PAGE, WRONG_TAG);
/// The prepared pattern's first word, its complement and a word of no pattern.
const PATTERN: u64 = pattern_word(SEED, 0);
const INVERTED: u64 = !PATTERN;
const OTHER: u64 = 0x1234_5678;

/// A guest with MTE whose granule at [`PAGE`] has tag [`GRANULE_TAG`] and the data pattern.
pub(crate) fn prepared_guest(vmm: &dyn Vmm) -> Result<Box<dyn Guest>, VmmError> {
    let mut guest = boot(vmm)?;
    require_mte(&guest.ids())?;
    prepare(guest.as_mut(), PAGE, 1, PAGE, &[GRANULE_TAG])?;
    Ok(guest)
}

fn tcf0_sync(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = prepared_guest(vmm)?;
    let g = guest.as_mut();
    set_tcf0(g, tcf::SYNC)?;
    let mut checks = Checks::new();
    let reply = load(g, El0, MATCHING)?;
    check_no_fault(&mut checks, "EL0 load through the granule's tag", &reply);
    check_value(
        &mut checks,
        "value that load read",
        PATTERN,
        reply.result[0],
    );
    let reply = store(g, El0, MATCHING, OTHER)?;
    check_no_fault(&mut checks, "EL0 store through the granule's tag", &reply);
    let reply = load(g, El0, MISMATCHED)?;
    check_tag_fault(
        &mut checks,
        El0,
        "EL0 mismatched load",
        &reply,
        MISMATCHED,
        false,
    );
    check_value(
        &mut checks,
        "destination register after the faulting load",
        0,
        reply.result[0],
    );
    let reply = store(g, El0, MISMATCHED, INVERTED)?;
    check_tag_fault(
        &mut checks,
        El0,
        "EL0 mismatched store",
        &reply,
        MISMATCHED,
        true,
    );
    let reply = load(g, El0, MATCHING)?;
    check_value(
        &mut checks,
        "the granule's word after the faulting store (the matching store's)",
        OTHER,
        reply.result[0],
    );
    check_fault_status(&mut checks, g, "the synchronous faults", false)?;
    Ok(checks.finish())
}

fn tcf0_async(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    async_mismatches(vmm, El0, ["EL0 mismatched store", "EL0 mismatched load"])
}

/// Under TCF0 async, a mismatched store then load made by `maker`: neither faults, the store
/// was performed, and TFSRE0_EL1 (never TFSR_EL1) records each. For EL1's unprivileged
/// accesses TCF is async too, so that a CPU checking them as EL1's would record them in
/// TFSR_EL1 instead. `names`: the store's and the load's, for the evidence.
fn async_mismatches(
    vmm: &dyn Vmm,
    maker: Maker,
    [store_name, load_name]: [&str; 2],
) -> Result<Finding, VmmError> {
    let mut guest = prepared_guest(vmm)?;
    let g = guest.as_mut();
    if maker == Unprivileged {
        set_tcf(g, tcf::ASYNC)?;
    }
    set_tcf0(g, tcf::ASYNC)?;
    let mut checks = Checks::new();
    let reply = store(g, maker, MISMATCHED, INVERTED)?;
    check_no_fault(&mut checks, store_name, &reply);
    check_fault_status(&mut checks, g, &format!("the {store_name}"), true)?;
    let reply = load(g, maker, MISMATCHED)?;
    check_no_fault(&mut checks, load_name, &reply);
    check_value(
        &mut checks,
        &format!("value the {load_name} read (the mismatched store was performed)"),
        INVERTED,
        reply.result[0],
    );
    check_fault_status(&mut checks, g, &format!("the {load_name}"), true)?;
    Ok(checks.finish())
}

fn tcf0_asymmetric(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = prepared_guest(vmm)?;
    require_mte3(&guest.ids())?;
    let g = guest.as_mut();
    set_tcf0(g, tcf::ASYMMETRIC)?;
    let mut checks = Checks::new();
    let reply = load(g, El0, MISMATCHED)?;
    check_tag_fault(
        &mut checks,
        El0,
        "EL0 mismatched load",
        &reply,
        MISMATCHED,
        false,
    );
    check_fault_status(&mut checks, g, "the synchronous load fault", false)?;
    let reply = store(g, El0, MISMATCHED, INVERTED)?;
    check_no_fault(&mut checks, "EL0 mismatched store", &reply);
    check_fault_status(&mut checks, g, "the mismatched EL0 store", true)?;
    let reply = load(g, El0, MATCHING)?;
    check_no_fault(&mut checks, "EL0 load through the granule's tag", &reply);
    check_value(
        &mut checks,
        "value that load read (the mismatched store was performed)",
        INVERTED,
        reply.result[0],
    );
    Ok(checks.finish())
}

fn unprivileged_follow_tcf0(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = prepared_guest(vmm)?;
    let g = guest.as_mut();
    let mut checks = Checks::new();

    set_tcf(g, tcf::NONE)?;
    set_tcf0(g, tcf::SYNC)?;
    let reply = load(g, Unprivileged, MISMATCHED)?;
    check_tag_fault(
        &mut checks,
        Unprivileged,
        "TCF none, TCF0 sync: LDTR through a mismatched tag",
        &reply,
        MISMATCHED,
        false,
    );
    let reply = store(g, Unprivileged, MISMATCHED, INVERTED)?;
    check_tag_fault(
        &mut checks,
        Unprivileged,
        "TCF none, TCF0 sync: STTR through a mismatched tag",
        &reply,
        MISMATCHED,
        true,
    );
    let reply = tag_checks::load(g, MISMATCHED)?;
    tag_checks::check_no_fault(
        &mut checks,
        "control, TCF none: EL1 LDR through the same mismatched tag",
        &reply,
        false,
    );
    check_value(
        &mut checks,
        "value that LDR read (the faulting STTR wrote nothing)",
        PATTERN,
        reply.result[0],
    );

    set_tcf(g, tcf::SYNC)?;
    set_tcf0(g, tcf::NONE)?;
    let reply = load(g, Unprivileged, MISMATCHED)?;
    check_no_fault(
        &mut checks,
        "TCF sync, TCF0 none: LDTR through a mismatched tag",
        &reply,
    );
    check_value(
        &mut checks,
        "value that LDTR read",
        PATTERN,
        reply.result[0],
    );
    let reply = store(g, Unprivileged, MISMATCHED, INVERTED)?;
    check_no_fault(
        &mut checks,
        "TCF sync, TCF0 none: STTR through a mismatched tag",
        &reply,
    );
    tag_checks::expect_load_fault(
        &mut checks,
        g,
        "control, TCF sync: EL1 LDR through the same mismatched tag",
        MISMATCHED,
    )?;
    check_fault_status(&mut checks, g, "synchronous faults only", false)?;
    Ok(checks.finish())
}

fn unprivileged_async(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    async_mismatches(
        vmm,
        Unprivileged,
        [
            "STTR through a mismatched tag",
            "LDTR through a mismatched tag",
        ],
    )
}
