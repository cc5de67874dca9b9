//! Tag-check faults the guest takes (and does not take) under KVM.

use mte_protocol::{
    esr, pattern_word, tcf, with_tag, Command, PAGE_SIZE, PAYLOAD_IPA, TEST_RAM_IPA,
};

use crate::check::{fault_evidence, require_mte, run, Checks, Finding};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::vmm::{BootOptions, Guest, Vmm, VmmError};

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
                  fault and reads the data that was written",
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
];

const GRANULE_TAG: u8 = 0x5;
const WRONG_TAG: u8 = 0xa;
const SEED: u64 = 0x6d74_6531;

/// Boot, write a data pattern over one page, tag its first granule and select sync checks.
fn prepare(vmm: &dyn Vmm) -> Result<(Box<dyn Guest>, u64), VmmError> {
    let mut guest = vmm.boot(&BootOptions::default())?;
    require_mte(&guest.ids())?;
    let ipa = TEST_RAM_IPA + 32 * PAGE_SIZE;
    run(
        guest.as_mut(),
        Command::FillPattern,
        &[ipa, PAGE_SIZE, SEED],
    )?;
    guest.write_bulk(&[GRANULE_TAG])?;
    run(guest.as_mut(), Command::TagFromBulk, &[ipa, 16])?;
    run(guest.as_mut(), Command::SetTcf, &[tcf::SYNC])?;
    Ok((guest, ipa))
}

/// The checks every tag check fault must pass.
fn check_tag_fault(checks: &mut Checks, reply: &crate::vmm::Reply, ptr: u64, write: bool) {
    checks.equal(
        "the access faulted",
        1,
        reply.result[if write { 0 } else { 1 }],
    );
    checks.equal("exceptions taken", 1, reply.fault.count);
    checks.holds(
        "ESR_EL1 class and fault status",
        esr::ec(reply.fault.esr) == esr::EC_DABT_CUR
            && esr::dfsc(reply.fault.esr) == esr::DFSC_TAG_CHECK,
        "EC 0x25 (data abort, same EL), DFSC 0x11 (tag check)",
        crate::check::describe_esr(reply.fault.esr),
    );
    checks.equal("ESR_EL1.WnR (write)", write, esr::is_write(reply.fault.esr));
    // FAR_EL1[63:60] are UNKNOWN for a tag check fault; the address bits must be exact.
    let address_bits = (1u64 << 56) - 1;
    checks.holds(
        "FAR_EL1 holds the faulting address",
        reply.fault.far & address_bits == ptr & address_bits,
        format!("{:#x} (bits 55:0)", ptr & address_bits),
        format!("{:#x}", reply.fault.far),
    );
    checks.holds(
        "ELR_EL1 points into the payload",
        (PAYLOAD_IPA..TEST_RAM_IPA).contains(&reply.fault.elr),
        format!("{PAYLOAD_IPA:#x}..{TEST_RAM_IPA:#x}"),
        format!("{:#x}", reply.fault.elr),
    );
    checks.evidence(fault_evidence(reply));
}

fn sync_mismatched_load_faults(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare(vmm)?;
    let ptr = with_tag(ipa, WRONG_TAG);
    let reply = run(guest.as_mut(), Command::Load, &[ptr])?;
    let mut checks = Checks::new();
    check_tag_fault(&mut checks, &reply, ptr, false);
    Ok(checks.finish())
}

fn sync_matching_load_does_not_fault(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare(vmm)?;
    let reply = run(guest.as_mut(), Command::Load, &[with_tag(ipa, GRANULE_TAG)])?;
    let mut checks = Checks::new();
    checks.equal("the access faulted", 0, reply.result[1]);
    checks.equal("exceptions taken", 0, reply.fault.count);
    checks.equal("value loaded", pattern_word(SEED, 0), reply.result[0]);
    Ok(checks.finish())
}

fn sync_mismatched_store_faults(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepare(vmm)?;
    let ptr = with_tag(ipa, WRONG_TAG);
    let reply = run(
        guest.as_mut(),
        Command::Store,
        &[ptr, !pattern_word(SEED, 0)],
    )?;
    let mut checks = Checks::new();
    check_tag_fault(&mut checks, &reply, ptr, true);
    let check = run(
        guest.as_mut(),
        Command::CheckPattern,
        &[ipa, PAGE_SIZE, SEED],
    )?;
    checks.equal("words changed by the faulting store", 0, check.result[0]);
    Ok(checks.finish())
}
