//! The guest's MTE state (GCR_EL1, RGSR_EL1, TFSR_EL1) across what happens to its vCPU behind
//! its back: exits to the VMM, the vCPU thread sleeping (KVM's vcpu_put/vcpu_load), KVM_GET_ONE_REG
//! and migration.
//!
//! With GCR_EL1.RRND = 0 (the payload's setting), IRG is the Arm ARM's generator: every tag it
//! chooses follows from RGSR_EL1 alone ([`crate::pseudocode::irg_sequence`]). The guest's
//! RGSR_EL1 at boot therefore predicts every tag it chooses after; a register KVM lost, reset or
//! mixed up between exits shows as a sequence that leaves the prediction.

use std::thread::sleep;
use std::time::Duration;

use mte_protocol::{tcf, with_tag, Command, GuestIds, PAGE_SIZE, TEST_RAM_IPA};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::migration_plan::{Method, MigrationPlan};
use crate::pseudocode::irg_sequence;
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::command::run;
use crate::steps::tag_checks::{check_tf0, prepare, set_tcf, store, GRANULE_TAG, WRONG_TAG};
use crate::vmm::{Guest, Vmm, VmmError};

const WHY_EXITS: &str = "KVM swaps the guest's GCR_EL1 and RGSR_EL1 with the host's on every \
    guest entry and exit (mte_switch_to_guest / mte_switch_to_hyp, \
    arch/arm64/include/asm/kvm_mte.h) and keeps TFSR_EL1 and TFSRE0_EL1 in the vCPU's EL1 context \
    across vcpu_put/vcpu_load ('KVM: arm64: Save/restore MTE registers', 5.13): an exit to the \
    VMM or a descheduled vCPU thread must leave them as the guest set them";

const WHY_ONE_REG: &str = "api.rst (KVM_CAP_ARM_MTE) leaves saving the guest's MTE state on \
    migration to the VMM; KVM_GET_REG_LIST names GCR_EL1, RGSR_EL1, TFSR_EL1 and TFSRE0_EL1 when \
    MTE is on, and KVM_GET_ONE_REG/KVM_SET_ONE_REG must read and write the values the guest \
    runs with, or a migrated guest's IRG and pending asynchronous faults change under it";

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "mte_state::irg_sequence_and_tfsr_survive_exits",
        summary: "With GCR_EL1.RRND = 0, the tags IRG chooses after a series of MMIO exits to the \
                  VMM, with the vCPU thread asleep between them, are the ones the guest's \
                  RGSR_EL1 at boot predicts (Arm ARM generator), GCR_EL1 reads as set at boot, \
                  and a TFSR_EL1.TF0 set by an asynchronous fault before the exits is still set \
                  after them",
        why: WHY_EXITS,
        proven_by: &[Injection::MisreadReport],
        run: irg_sequence_and_tfsr_survive_exits,
    },
    Scenario {
        name: "mte_state::one_reg_and_migration_carry_gcr_rgsr_tfsr",
        summary: "At a doorbell, KVM_GET_ONE_REG reads the GCR_EL1 the guest set, the RGSR_EL1 \
                  that its IRGs so far leave (Arm ARM generator) and the TFSR_EL1.TF0 of its \
                  asynchronous fault; after the suite's stop-and-copy migration the destination \
                  goes on with the same IRG sequence and still has TFSR_EL1.TF0",
        why: WHY_ONE_REG,
        proven_by: &[Injection::MisreadReport],
        run: one_reg_and_migration_carry_gcr_rgsr_tfsr,
    },
];

/// GCR_EL1.RRND: IRG's tags come from an implementation-defined source, not RGSR_EL1.
const GCR_RRND: u64 = 1 << 16;
/// The exclude mask [`Command::IrgSample`] is given: the payload's own (tag 0).
const EXCLUDE: u16 = 0x0001;
/// IRG choices before the exits, and after.
const BEFORE: usize = 64;
const AFTER: usize = 64;
/// Exits between, and how long the vCPU thread sleeps after each: long enough for the
/// scheduler to run another thread on its CPU (vcpu_put, then vcpu_load on return).
const EXITS: usize = 4;
const ASLEEP: Duration = Duration::from_millis(20);
/// The page whose granule the asynchronous fault is taken on.
const PAGE: u64 = TEST_RAM_IPA + 200 * PAGE_SIZE;

/// Skip unless IRG follows RGSR_EL1 (GCR_EL1.RRND = 0), as the payload sets it.
fn require_architected_irg(ids: &GuestIds) -> Result<(), VmmError> {
    match ids.gcr_el1 & GCR_RRND {
        0 => Ok(()),
        _ => Err(VmmError::Unsupported(format!(
            "GCR_EL1 = {:#x} has RRND = 1: IRG's tags are implementation defined, not RGSR_EL1's",
            ids.gcr_el1
        ))),
    }
}

/// `count` IRG choices in the guest, with the payload's exclude mask.
fn irg(guest: &mut dyn Guest, count: usize) -> Result<(Vec<u8>, u64), VmmError> {
    let reply = run(
        guest,
        Command::IrgSample,
        &[EXCLUDE as u64, count as u64, 0],
    )?;
    Ok((guest.read_bulk(count)?, reply.result[0]))
}

/// An asynchronous tag check fault: SCTLR_EL1.TCF = async and a store through a mismatched
/// pointer. TFSR_EL1.TF0 is set, not yet read.
fn take_async_fault(guest: &mut dyn Guest) -> Result<(), VmmError> {
    prepare(guest, PAGE, 1, PAGE, &[GRANULE_TAG])?;
    set_tcf(guest, tcf::ASYNC)?;
    store(guest, with_tag(PAGE, WRONG_TAG), 0x5a5a)?;
    Ok(())
}

/// The prediction against what the guest chose.
fn compare_sequence(checks: &mut Checks, what: &str, expected: &[u8], observed: &[u8]) {
    let first = expected.iter().zip(observed).position(|(e, o)| e != o);
    checks.holds(
        what,
        expected == observed,
        format!("{:x?}", expected),
        match first {
            None => format!("{:x?}", observed),
            Some(i) => format!("{:x?} (first difference at choice {i})", observed),
        },
    );
}

fn irg_sequence_and_tfsr_survive_exits(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let ids = guest.ids();
    require_architected_irg(&ids)?;
    let (expected, _) = irg_sequence(ids.rgsr_el1, EXCLUDE, BEFORE + AFTER);
    let mut checks = Checks::new();
    checks.value(
        "the guest's registers at boot",
        "",
        format!(
            "GCR_EL1 = {:#x}, RGSR_EL1 = {:#x}",
            ids.gcr_el1, ids.rgsr_el1
        ),
    );
    let (before, _) = irg(guest.as_mut(), BEFORE)?;
    take_async_fault(guest.as_mut())?;
    for _ in 0..EXITS {
        sleep(ASLEEP);
        run(guest.as_mut(), Command::Nop, &[])?;
    }
    sleep(ASLEEP);
    let (after, gcr) = irg(guest.as_mut(), AFTER)?;
    compare_sequence(
        &mut checks,
        &format!("IRG choices before the exits ({BEFORE}), from RGSR_EL1 at boot"),
        &expected[..BEFORE],
        &before,
    );
    compare_sequence(
        &mut checks,
        &format!(
            "IRG choices after {EXITS} MMIO exits with the vCPU thread asleep {} ms after each",
            ASLEEP.as_millis()
        ),
        &expected[BEFORE..],
        &after,
    );
    checks.equal(
        "GCR_EL1 after the exits, against boot",
        format!("{:#x}", ids.gcr_el1),
        format!("{gcr:#x}"),
    );
    check_tf0(
        &mut checks,
        guest.as_mut(),
        "an asynchronous fault, then the exits",
        true,
    )?;
    Ok(checks.finish())
}

/// A register among those the migration read with KVM_GET_ONE_REG.
fn register(registers: &[(String, u64)], name: &str) -> Option<String> {
    registers
        .iter()
        .find(|(n, _)| n == name)
        .map(|&(_, value)| format!("{value:#x}"))
}

fn one_reg_and_migration_carry_gcr_rgsr_tfsr(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let ids = guest.ids();
    require_architected_irg(&ids)?;
    let (expected, _) = irg_sequence(ids.rgsr_el1, EXCLUDE, BEFORE + AFTER);
    let (_, rgsr_at_migration) = irg_sequence(ids.rgsr_el1, EXCLUDE, BEFORE);
    let (before, _) = irg(guest.as_mut(), BEFORE)?;
    take_async_fault(guest.as_mut())?;
    let mut guest = guest.migrate(&MigrationPlan::new(Method::StopAndCopy))?;
    let report = guest.migration_report()?;
    let mut checks = Checks::new();
    compare_sequence(
        &mut checks,
        &format!("IRG choices on the source ({BEFORE}), from RGSR_EL1 at boot"),
        &expected[..BEFORE],
        &before,
    );
    let registers = &report.mte_registers;
    checks.equal(
        "KVM_GET_ONE_REG(GCR_EL1) at the doorbell, against what the guest set at boot",
        Some(format!("{:#x}", ids.gcr_el1)),
        register(registers, "GCR_EL1"),
    );
    checks.equal(
        &format!(
            "KVM_GET_ONE_REG(RGSR_EL1) at the doorbell, against RGSR_EL1 at boot advanced by \
             {BEFORE} IRGs"
        ),
        Some(format!("{rgsr_at_migration:#x}")),
        register(registers, "RGSR_EL1"),
    );
    checks.equal(
        "KVM_GET_ONE_REG(TFSR_EL1) at the doorbell, after an asynchronous fault",
        Some("0x1".to_string()),
        register(registers, "TFSR_EL1"),
    );
    let (after, gcr) = irg(guest.as_mut(), AFTER)?;
    compare_sequence(
        &mut checks,
        "IRG choices on the destination, going on from the source's",
        &expected[BEFORE..],
        &after,
    );
    checks.equal(
        "GCR_EL1 on the destination, against boot",
        format!("{:#x}", ids.gcr_el1),
        format!("{gcr:#x}"),
    );
    check_tf0(
        &mut checks,
        guest.as_mut(),
        "an asynchronous fault on the source, then migration",
        true,
    )?;
    checks.value("how the guest moved", "", report.how.clone());
    Ok(checks.finish())
}
