//! What exception entry and return do to the guest's MTE state (PSTATE.TCO), for an exception
//! the CPU raises and for one KVM enters into the guest itself.
//!
//! The guest sets PSTATE.TCO to 0, then 1, raises one synchronous exception at EL1, and its
//! handler reads PSTATE.TCO before anything can write it, and the SPSR_EL1 entry saved; back
//! from the handler's ERET, the command reads PSTATE.TCO again. The CPU's own exceptions (an
//! UNDEFINED instruction, a translation fault) are the control; KVM's is an external data
//! abort it injects when the VMM answers an MMIO read with KVM_SET_VCPU_EVENTS
//! (`ext_dabt_pending`): `enter_exception64` (arch/arm64/kvm/hyp/exception.c) builds that entry's
//! PSTATE and SPSR_EL1 in software. So does the UNDEFINED exception KVM injects for a read of
//! PMCR_EL0 in a vCPU without a PMU.

use mte_protocol::{esr, exception_tco, exception_trigger as trigger, Command, SPSR_TCO};
use mte_results::Lane;

use crate::check::{Checks, Finding};
use crate::esr::describe_esr;
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::command::run;
use crate::vmm::{Guest, Vmm, VmmError};

const WHY_CPU: &str = "Arm ARM (DDI 0487), AArch64.TakeException: 'if \
    IsFeatureImplemented(FEAT_MTE) then PSTATE.TCO = '1';' on every exception taken to AArch64; \
    SPSR_EL1.TCO (bit 25): 'Set to the value of PSTATE.TCO on taking an exception to EL1, and \
    copied to PSTATE.TCO on executing an exception return operation in EL1'. A handler thus \
    starts with tag checks overridden whatever the interrupted code had, and ERET gives that \
    code its own TCO back. The CPU's own exception is the control for KVM's";

const WHY_KVM: &str = "KVM enters an exception it injects in software (enter_exception64, \
    arch/arm64/kvm/hyp/exception.c) and must follow the Arm ARM's AArch64.TakeException as the \
    CPU does: 'if IsFeatureImplemented(FEAT_MTE) then PSTATE.TCO = '1';', the interrupted \
    PSTATE.TCO saved in SPSR_EL1.TCO (bit 25) and restored by ERET. KVM sets TCO on entry for a \
    VM with MTE since 'KVM: arm64: Introduce MTE VM feature' (ea7fc1bb1cd1, 5.14; before it a \
    'TODO: TCO' there), and keeps the old PSTATE as SPSR_EL1. The abort is the VMM's answer to an \
    MMIO read no device decodes (api.rst, KVM_SET_VCPU_EVENTS, ext_dabt_pending); since 'KVM: \
    arm64: Don't retire aborted MMIO instruction' (CVE-2024-53196, 6.13; 6.1 and 6.12 stable) \
    the abort is taken on the load itself; before it KVM also retired the load, and warned (kvm_incr_pc \
    with an exception pending)";

const WHY_KVM_UNDEFINED: &str = "KVM traps the guest's PMU registers (MDCR_EL2.TPM) and, \
    for a vCPU without KVM_ARM_VCPU_PMU_V3, shows no PMU (ID_AA64DFR0_EL1.PMUVer = 0) and answers \
    an access with kvm_inject_undefined() (arch/arm64/kvm/sys_regs.c), whose entry \
    enter_exception64 (arch/arm64/kvm/hyp/exception.c) builds in software: it must follow the \
    Arm ARM's AArch64.TakeException as the CPU does, 'if IsFeatureImplemented(FEAT_MTE) then \
    PSTATE.TCO = '1';', the interrupted PSTATE.TCO saved in SPSR_EL1.TCO (bit 25) and restored \
    by ERET. KVM sets TCO on entry for a VM with MTE since 'KVM: arm64: Introduce MTE VM \
    feature' (ea7fc1bb1cd1, 5.14)";

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "exception_entry::undefined_instruction_sets_tco_and_eret_restores_it",
        summary: "An UNDEFINED instruction at EL1 (udf, raised by the CPU) enters the handler \
                  with PSTATE.TCO = 1 and SPSR_EL1.TCO = the interrupted PSTATE.TCO, and the \
                  handler's ERET gives PSTATE.TCO back, with TCO 0 and with TCO 1 before",
        why: WHY_CPU,
        proven_by: &[Injection::MisreadReport],
        run: undefined_instruction_sets_tco_and_eret_restores_it,
    },
    Scenario {
        name: "exception_entry::kvm_injected_abort_sets_tco_as_the_cpu_does",
        summary: "An external data abort KVM injects at the VMM's request \
                  (KVM_SET_VCPU_EVENTS, ext_dabt_pending, after an MMIO read) enters the \
                  guest's handler as a translation fault the CPU raises does: PSTATE.TCO = 1 on \
                  entry, SPSR_EL1.TCO = the interrupted PSTATE.TCO, PSTATE.TCO back after ERET, \
                  with TCO 0 and with TCO 1 before",
        why: WHY_KVM,
        proven_by: &[Injection::MisreadReport],
        run: kvm_injected_abort_sets_tco_as_the_cpu_does,
    },
    Scenario {
        name: "exception_entry::kvm_injected_undefined_sets_tco_as_the_cpu_does",
        summary: "The UNDEFINED exception KVM injects for a read of PMCR_EL0 in a vCPU without \
                  a PMU (ID_AA64DFR0_EL1.PMUVer = 0) enters the guest's handler as the CPU's \
                  own UNDEFINED (udf) does: PSTATE.TCO = 1 on entry, SPSR_EL1.TCO = the \
                  interrupted PSTATE.TCO, PSTATE.TCO back after ERET, with TCO 0 and with TCO 1 \
                  before",
        why: WHY_KVM_UNDEFINED,
        proven_by: &[Injection::MisreadReport],
        run: kvm_injected_undefined_sets_tco_as_the_cpu_does,
    },
];

/// What one exception did to PSTATE.TCO, as the guest saw it.
#[derive(Debug)]
struct Observation {
    esr: u64,
    spsr: u64,
    caught: bool,
    id_aa64dfr0_el1: u64,
    on_entry: u8,
    saved: u8,
    after_return: u8,
}

/// Raise the exception `kind` with PSTATE.TCO = `tco` before it.
fn observe(guest: &mut dyn Guest, kind: u64, tco: u64) -> Result<Observation, VmmError> {
    let reply = run(guest, Command::ExceptionTco, &[kind, tco])?;
    let bytes = guest.read_bulk(exception_tco::LEN)?;
    Ok(Observation {
        esr: reply.result[0],
        spsr: reply.result[1],
        caught: reply.result[2] != 0,
        id_aa64dfr0_el1: reply.result[3],
        on_entry: bytes[exception_tco::ON_ENTRY],
        saved: bytes[exception_tco::SAVED],
        after_return: bytes[exception_tco::AFTER_RETURN],
    })
}

/// Which exception each trigger must raise, in words and as a test of ESR_EL1.
struct Expected {
    what: &'static str,
    syndrome: &'static str,
    matches: fn(u64) -> bool,
}

fn expected(kind: u64) -> Expected {
    match kind {
        trigger::UNDEFINED_INSTRUCTION => Expected {
            what: "udf #0 (the CPU's UNDEFINED exception)",
            syndrome: "EC 0x00 (unknown reason)",
            matches: |value| esr::ec(value) == esr::EC_UNKNOWN,
        },
        trigger::HIDDEN_PMU_REGISTER => Expected {
            what: "mrs of PMCR_EL0 without a PMU (KVM's UNDEFINED exception)",
            syndrome: "EC 0x00 (unknown reason)",
            matches: |value| esr::ec(value) == esr::EC_UNKNOWN,
        },
        trigger::TRANSLATION_FAULT => Expected {
            what: "a load from an untranslated VA (the CPU's translation fault)",
            syndrome: "EC 0x25 (data abort, same EL), DFSC 0x04-0x07 (translation fault)",
            matches: |value| {
                esr::ec(value) == esr::EC_DABT_CUR && (0x04..=0x07).contains(&esr::dfsc(value))
            },
        },
        _ => Expected {
            what: "a load the VMM answers with an external abort KVM injects",
            syndrome: "EC 0x25 (data abort, same EL), DFSC 0x10 (synchronous external abort)",
            matches: |value| esr::ec(value) == esr::EC_DABT_CUR && esr::dfsc(value) == 0x10,
        },
    }
}

/// The Arm ARM's rule against one observation: the exception taken, TCO 1 on entry, the
/// interrupted TCO saved in SPSR_EL1 and given back by ERET.
fn judge(checks: &mut Checks, kind: u64, tco: u64, seen: &Observation) {
    let expected = expected(kind);
    let label = format!("{}, PSTATE.TCO = {tco} before", expected.what);
    let taken = seen.caught && (expected.matches)(seen.esr);
    checks.holds(
        &format!("{label}: the exception taken"),
        taken,
        expected.syndrome,
        match seen.caught {
            true => format!("{} (ESR_EL1 {:#x})", describe_esr(seen.esr), seen.esr),
            false => "no exception reached the handler".into(),
        },
    );
    if !taken {
        return;
    }
    checks.equal(
        &format!("{label}: PSTATE.TCO on entry to the handler"),
        1,
        seen.on_entry,
    );
    checks.holds(
        &format!("{label}: SPSR_EL1.TCO (bit 25) in the handler"),
        seen.saved as u64 == tco && (seen.spsr & SPSR_TCO != 0) as u64 == tco,
        format!("{tco} (the interrupted PSTATE.TCO)"),
        format!("{} (SPSR_EL1 {:#x})", seen.saved, seen.spsr),
    );
    checks.equal(
        &format!("{label}: PSTATE.TCO after the handler's ERET"),
        tco as u8,
        seen.after_return,
    );
}

/// Each trigger of `kinds` with TCO 0, then 1, before it, judged.
fn check_triggers(vmm: &dyn Vmm, kinds: &[u64]) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    judge_triggers(guest.as_mut(), Checks::new(), kinds)
}

fn judge_triggers(
    guest: &mut dyn Guest,
    mut checks: Checks,
    kinds: &[u64],
) -> Result<Finding, VmmError> {
    for tco in [0, 1] {
        for &kind in kinds {
            let seen = observe(guest, kind, tco)?;
            judge(&mut checks, kind, tco, &seen);
        }
    }
    Ok(checks.finish())
}

fn undefined_instruction_sets_tco_and_eret_restores_it(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    check_triggers(vmm, &[trigger::UNDEFINED_INSTRUCTION])
}

fn kvm_injected_abort_sets_tco_as_the_cpu_does(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    if matches!(vmm.lane(), Lane::Qemu | Lane::QemuKvm) {
        return Err(VmmError::Unsupported(
            "the external abort is the suite's KVM VMM's answer to a read of its aborting \
             device (KVM_SET_VCPU_EVENTS); QEMU as the VMM decodes that address itself"
                .into(),
        ));
    }
    check_triggers(
        vmm,
        &[trigger::TRANSLATION_FAULT, trigger::INJECTED_EXTERNAL_ABORT],
    )
}

/// ID_AA64DFR0_EL1.PMUVer: 0 where the (v)CPU has no PMU.
fn pmu_version(id_aa64dfr0_el1: u64) -> u64 {
    (id_aa64dfr0_el1 >> 8) & 0xf
}

fn kvm_injected_undefined_sets_tco_as_the_cpu_does(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let probe = observe(guest.as_mut(), trigger::HIDDEN_PMU_REGISTER, 0)?;
    let pmu = pmu_version(probe.id_aa64dfr0_el1);
    if pmu != 0 {
        return Err(VmmError::Unsupported(format!(
            "the guest's vCPU has a PMU (ID_AA64DFR0_EL1 = {:#x}, PMUVer {pmu}): PMCR_EL0 \
             exists, so nobody injects UNDEFINED for it (QEMU gives its guests a PMU; the \
             suite's KVM VMM does not)",
            probe.id_aa64dfr0_el1
        )));
    }
    let mut checks = Checks::new();
    checks.value(
        "ID_AA64DFR0_EL1.PMUVer of the guest: PMCR_EL0 is not there, KVM traps and refuses it",
        "0",
        format!("{pmu} (ID_AA64DFR0_EL1 = {:#x})", probe.id_aa64dfr0_el1),
    );
    judge_triggers(
        guest.as_mut(),
        checks,
        &[trigger::UNDEFINED_INSTRUCTION, trigger::HIDDEN_PMU_REGISTER],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(esr: u64, on_entry: u8, saved: u8, after_return: u8) -> Observation {
        Observation {
            esr,
            spsr: (saved as u64) << 25,
            caught: true,
            id_aa64dfr0_el1: 0,
            on_entry,
            saved,
            after_return,
        }
    }

    #[test]
    fn the_rule_holds_only_when_entry_sets_tco_and_eret_restores_it() {
        let external_abort = 0x9600_0010;
        let mut right = Checks::new();
        judge(
            &mut right,
            trigger::INJECTED_EXTERNAL_ABORT,
            0,
            &seen(external_abort, 1, 0, 0),
        );
        judge(
            &mut right,
            trigger::INJECTED_EXTERNAL_ABORT,
            1,
            &seen(external_abort, 1, 1, 1),
        );
        assert!(right.all_held());
        for wrong in [
            seen(external_abort, 0, 0, 0),
            seen(external_abort, 1, 1, 0),
            seen(external_abort, 1, 0, 1),
            seen(0x0200_0000, 1, 0, 0),
        ] {
            let mut checks = Checks::new();
            judge(&mut checks, trigger::INJECTED_EXTERNAL_ABORT, 0, &wrong);
            assert!(!checks.all_held(), "{wrong:?}");
        }
    }
}
