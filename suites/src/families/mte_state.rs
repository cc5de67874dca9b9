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

use mte_protocol::{sctlr, tcf, with_tag, Command, GuestIds, PAGE_SIZE, TEST_RAM_IPA};

use crate::check::{Checks, Finding};
use crate::families::el0;
use crate::inject::Injection;
use crate::migration_plan::{Method, MigrationPlan};
use crate::pseudocode::irg_sequence;
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::command::run;
use crate::steps::el0::{self as el0_steps, check_fault_status, read_registers, Maker};
use crate::steps::tag_checks::{
    self as tag_checks, check_tf0, prepare, set_tcf, store, GRANULE_TAG, WRONG_TAG,
};
use crate::steps::vcpu_thread;
use crate::vmm::{Guest, Vmm, VmmError};

const WHY_EXITS: &str = "KVM swaps the guest's GCR_EL1 and RGSR_EL1 with the host's on every \
    guest entry and exit (mte_switch_to_guest / mte_switch_to_hyp, \
    arch/arm64/include/asm/kvm_mte.h) and keeps TFSR_EL1 and TFSRE0_EL1 in the vCPU's EL1 context \
    across vcpu_put/vcpu_load ('KVM: arm64: Save/restore MTE registers', 5.14): an exit to the \
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

// TFSRE0_EL1 and SCTLR_EL1.TCF/TCF0: the EL0 side of the same state, set through the guest's
// EL0 code (`el0::`). GCR_EL1 and RGSR_EL1 are the checks above.

const WHY_EL0_EXITS: &str = "KVM keeps TFSRE0_EL1 and SCTLR_EL1 in the vCPU's EL1 context, \
    saved and restored on vcpu_put/vcpu_load ('KVM: arm64: Save/restore MTE registers', 5.14; \
    SCTLR_EL1 with the rest of the EL1 system registers): a pending asynchronous fault of the \
    guest's EL0, which guest Linux only reads on its next entry from user space, and the \
    per-task TCF0 it set must survive every exit to the VMM (each KVM_RUN that returns to it \
    ends in vcpu_put, kvm_arch_vcpu_ioctl_run) and a vCPU thread that slept, its CPU free for \
    other threads, before the next vcpu_load";

const WHY_EL0_ONE_REG: &str = "KVM_GET_REG_LIST names TFSRE0_EL1 (sys_reg(3, 0, 5, 6, 1)) and \
    SCTLR_EL1 for a VM with MTE; KVM_GET_ONE_REG must read what the guest runs with, and a \
    migrated guest must find its pending EL0 fault and its TCF0 as it left them";

/// The checks of the EL0 state, listed after [`SCENARIOS`].
pub const EL0_SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "mte_state::tfsre0_survives_exits_and_sleeps",
        summary: "TFSRE0_EL1.TF0, set by an asynchronous tag check fault of the guest's EL0 \
                  load, is still TF0 alone after 32 MMIO exits to the VMM, 3 more with the \
                  vCPU thread asleep 50 ms before each, 4 HVC calls the hypervisor answers \
                  itself and, where the runner is the VMM, 4 exits with that thread moved \
                  between two CPUs; TFSR_EL1 stays 0 and TCF0 async",
        why: WHY_EL0_EXITS,
        proven_by: &[Injection::ResetEl0State, Injection::WrongTcf],
        run: tfsre0_survives_exits_and_sleeps,
    },
    Scenario {
        name: "mte_state::tcf_and_tcf0_survive_exits_and_sleeps",
        summary: "SCTLR_EL1.TCF = async and TCF0 = sync, as set, after the same exits, sleeps, \
                  HVC calls and moves between CPUs (GCR_EL1 and RGSR_EL1 as before them); and the guest still checks that way: a mismatched EL0 load faults, a \
                  mismatched EL1 load sets TFSR_EL1.TF0",
        why: WHY_EL0_EXITS,
        proven_by: &[Injection::ResetEl0State, Injection::WrongTcf],
        run: tcf_and_tcf0_survive_exits_and_sleeps,
    },
    Scenario {
        name: "mte_state::one_reg_and_migration_carry_tfsre0_and_tcf0",
        summary: "After an asynchronous EL0 tag check fault, KVM_GET_ONE_REG reads TFSRE0_EL1 = \
                  TF0 and SCTLR_EL1 with TCF0 = async, TCF = sync at the doorbell; after the \
                  suite's stop-and-copy migration the destination's guest reads the same \
                  TFSRE0_EL1 and TCF/TCF0, and an EL1 mismatched load still faults",
        why: WHY_EL0_ONE_REG,
        proven_by: &[Injection::ResetEl0State, Injection::WrongTcf],
        run: one_reg_and_migration_carry_tfsre0_and_tcf0,
    },
];

/// Plain round trips to the VMM, then round trips each after the vCPU thread slept.
const ROUND_TRIPS: usize = 32;
const SLEEPS: usize = 3;
const LONG_ASLEEP: Duration = Duration::from_millis(50);
/// HVC calls that stay in the hypervisor (KVM answers PSCI itself), each before a doorbell.
const HYPERVISOR_CALLS: usize = 4;
/// PSCI's INVALID_PARAMETERS, what CPU_ON of an MPIDR the VM lacks returns.
const PSCI_INVALID_PARAMETERS: i64 = -2;

/// The round trips and sleeps, and, where the runner is the VMM (its thread runs vCPU 0),
/// round trips with that thread moved between the machine's CPUs; what they were, for the
/// evidence.
fn exits_and_sleeps(vmm: &dyn Vmm, guest: &mut dyn Guest) -> Result<String, VmmError> {
    for _ in 0..ROUND_TRIPS {
        run(guest, Command::Nop, &[])?;
    }
    for _ in 0..SLEEPS {
        sleep(LONG_ASLEEP);
        run(guest, Command::Nop, &[])?;
    }
    let mut answers = Vec::new();
    for _ in 0..HYPERVISOR_CALLS {
        // vCPU 1 does not exist: the hypervisor answers the PSCI call itself.
        let reply = run(guest, Command::CpuOn, &[2])?;
        answers.push(reply.result[0] as i64);
    }
    answers.dedup();
    let answered = match answers.as_slice() {
        [PSCI_INVALID_PARAMETERS] => "INVALID_PARAMETERS".to_string(),
        other => format!("{other:?}"),
    };
    let mut events = format!(
        "{ROUND_TRIPS} MMIO exits, then {SLEEPS} with the vCPU thread asleep {} ms before each, \
         then {HYPERVISOR_CALLS} HVC calls the hypervisor answers itself (PSCI CPU_ON of a vCPU \
         the VM lacks: {answered})",
        LONG_ASLEEP.as_millis()
    );
    if vmm.lane().runner_is_vmm() {
        let moved = vcpu_thread::on_each_cpu(|| run(guest, Command::Nop, &[]).map(drop))?;
        events.push_str(&match moved {
            Some(cpus) => format!(
                ", then {} with the vCPU thread moved to CPU {} before each (a vcpu_load on \
                 another CPU)",
                cpus.len(),
                cpus.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => ", and no move between CPUs (the vCPU thread may run on one only)".into(),
        });
    }
    Ok(events)
}

/// An asynchronous tag check fault of the guest's EL0: TCF0 = async and an EL0 load through
/// a mismatched tag. TFSRE0_EL1.TF0 is set, not yet read.
fn take_el0_async_fault(checks: &mut Checks, guest: &mut dyn Guest) -> Result<(), VmmError> {
    el0_steps::set_tcf0(guest, tcf::ASYNC)?;
    let reply = el0_steps::load(guest, Maker::El0, el0::MISMATCHED)?;
    el0_steps::check_no_fault(checks, "EL0 mismatched load under TCF0 async", &reply);
    Ok(())
}

fn tfsre0_survives_exits_and_sleeps(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = el0::prepared_guest(vmm)?;
    let g = guest.as_mut();
    let mut checks = Checks::new();
    take_el0_async_fault(&mut checks, g)?;
    check_fault_status(&mut checks, g, "the EL0 fault, before the exits", true)?;
    let events = exits_and_sleeps(vmm, g)?;
    let after = check_fault_status(&mut checks, g, &events, true)?;
    checks.equal("SCTLR_EL1.TCF0 after them", tcf::ASYNC, after.tcf0());
    Ok(checks.finish())
}

fn tcf_and_tcf0_survive_exits_and_sleeps(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = el0::prepared_guest(vmm)?;
    let g = guest.as_mut();
    let mut checks = Checks::new();
    set_tcf(g, tcf::ASYNC)?;
    el0_steps::set_tcf0(g, tcf::SYNC)?;
    let before = read_registers(g)?;
    let events = exits_and_sleeps(vmm, g)?;
    let after = read_registers(g)?;
    checks.value("what happened between", "", events);
    checks.equal("SCTLR_EL1.TCF after them, as set", tcf::ASYNC, after.tcf());
    checks.equal("SCTLR_EL1.TCF0 after them, as set", tcf::SYNC, after.tcf0());
    checks.equal(
        "GCR_EL1 after them, against before",
        format!("{:#x}", before.gcr_el1),
        format!("{:#x}", after.gcr_el1),
    );
    checks.equal(
        "RGSR_EL1 after them (no IRG between), against before",
        format!("{:#x}", before.rgsr_el1),
        format!("{:#x}", after.rgsr_el1),
    );
    let reply = el0_steps::load(g, Maker::El0, el0::MISMATCHED)?;
    el0_steps::check_tag_fault(
        &mut checks,
        Maker::El0,
        "EL0 mismatched load under TCF0 sync",
        &reply,
        el0::MISMATCHED,
        false,
    );
    let reply = tag_checks::load(g, el0::MISMATCHED)?;
    tag_checks::check_no_fault(
        &mut checks,
        "EL1 mismatched load under TCF async",
        &reply,
        false,
    );
    let registers = read_registers(g)?;
    checks.equal(
        "TFSR_EL1 after the EL1 mismatched load (TF0 alone)",
        "0x1".to_string(),
        format!("{:#x}", registers.tfsr_el1),
    );
    checks.equal(
        "TFSRE0_EL1 (the EL0 fault was synchronous)",
        "0x0".to_string(),
        format!("{:#x}", registers.tfsre0_el1),
    );
    Ok(checks.finish())
}

fn one_reg_and_migration_carry_tfsre0_and_tcf0(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = el0::prepared_guest(vmm)?;
    let mut checks = Checks::new();
    take_el0_async_fault(&mut checks, guest.as_mut())?;
    let mut guest = guest.migrate(&MigrationPlan::new(Method::StopAndCopy))?;
    let report = guest.migration_report()?;
    checks.equal(
        "KVM_GET_ONE_REG(TFSRE0_EL1) at the doorbell, after the EL0 fault",
        Some("0x1".to_string()),
        register(&report.mte_registers, "TFSRE0_EL1"),
    );
    checks.equal(
        "KVM_GET_ONE_REG(TFSR_EL1) at the doorbell",
        Some("0x0".to_string()),
        register(&report.mte_registers, "TFSR_EL1"),
    );
    checks.equal(
        "KVM_GET_ONE_REG(SCTLR_EL1) at the doorbell: (TCF, TCF0)",
        Some((tcf::SYNC, tcf::ASYNC)),
        report.sctlr_el1.map(|s| (sctlr::tcf(s), sctlr::tcf0(s))),
    );
    let g = guest.as_mut();
    let after = check_fault_status(&mut checks, g, "migration, on the destination", true)?;
    checks.equal(
        "SCTLR_EL1 (TCF, TCF0) on the destination",
        (tcf::SYNC, tcf::ASYNC),
        (after.tcf(), after.tcf0()),
    );
    tag_checks::expect_load_fault(
        &mut checks,
        g,
        "EL1 mismatched load on the destination (TCF sync)",
        el0::MISMATCHED,
    )?;
    checks.value("how the guest moved", "", report.how.clone());
    Ok(checks.finish())
}
