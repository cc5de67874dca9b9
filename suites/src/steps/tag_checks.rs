//! Tag-checked loads and stores: a page prepared with a data pattern and a tagged granule, the
//! accesses through a matching or a mismatched pointer, and what a tag check fault (or its
//! absence, or TFSR_EL1.TF0) must look like.

use mte_protocol::{esr, Command, PAGE_SIZE, PAYLOAD_IPA, TEST_RAM_IPA};

use super::command::run;
use super::data::{guest_fill, pattern_bytes_at};
use super::tags::guest_store_tags;
use crate::check::Checks;
use crate::error::VmmError;
use crate::esr::{describe_esr, fault_evidence};
use crate::reply::Reply;
use crate::vmm::Guest;

/// The tag the prepared granules get, and one that differs.
pub const GRANULE_TAG: u8 = 0x5;
pub const WRONG_TAG: u8 = 0xa;
/// The data pattern of the prepared pages.
pub const SEED: u64 = 0x6d74_6531;
/// TFSR_EL1.TF0: a tag check fault in EL1 (TTBR0 addresses) was recorded asynchronously.
const TFSR_TF0: u64 = 1;

/// Write the data pattern over `pages` pages at `ipa` and store `tags` from `tags_ipa` on.
pub fn prepare(
    guest: &mut dyn Guest,
    ipa: u64,
    pages: u64,
    tags_ipa: u64,
    tags: &[u8],
) -> Result<(), VmmError> {
    guest_fill(guest, ipa, pages * PAGE_SIZE, SEED)?;
    guest_store_tags(guest, tags_ipa, tags)
}

/// The data pattern's 8 bytes at `offset` from the start of the prepared pages.
pub fn pattern_at(offset: u64) -> u64 {
    pattern_bytes_at(SEED, offset)
}

/// Select SCTLR_EL1.TCF (a `tcf` mode).
pub fn set_tcf(guest: &mut dyn Guest, mode: u64) -> Result<(), VmmError> {
    run(guest, Command::SetTcf, &[mode]).map(|_| ())
}

pub fn load(guest: &mut dyn Guest, ptr: u64) -> Result<Reply, VmmError> {
    run(guest, Command::Load, &[ptr])
}

pub fn store(guest: &mut dyn Guest, ptr: u64, value: u64) -> Result<Reply, VmmError> {
    run(guest, Command::Store, &[ptr, value])
}

/// TFSR_EL1 (read and cleared by the guest).
pub fn read_tfsr(guest: &mut dyn Guest) -> Result<u64, VmmError> {
    Ok(run(guest, Command::ReadTfsr, &[])?.result[0])
}

/// Whether a Load-like (`result = [value, faulted]`) or Store-like (`result = [faulted]`)
/// reply says the access faulted.
fn faulted(reply: &Reply, write: bool) -> u64 {
    reply.result[if write { 0 } else { 1 }]
}

/// What the checks of every synchronous data abort begin with: the access says it faulted
/// (`faulted`, as its reply reports it), one exception was taken, and ESR_EL1 has the class and
/// fault status `(ec, dfsc)`, which `expected` names in words. False when no exception was
/// recorded: there is then no syndrome to compare further.
pub fn check_one_abort(
    checks: &mut Checks,
    access: &str,
    faulted: u64,
    reply: &Reply,
    (ec, dfsc): (u8, u8),
    expected: impl Into<String>,
) -> bool {
    checks.equal(&format!("{access}: faulted"), 1, faulted);
    checks.equal(&format!("{access}: exceptions taken"), 1, reply.fault.count);
    if reply.fault.count == 0 {
        return false;
    }
    checks.holds(
        &format!("{access}: ESR_EL1 class and fault status"),
        esr::ec(reply.fault.esr) == ec && esr::dfsc(reply.fault.esr) == dfsc,
        expected,
        describe_esr(reply.fault.esr),
    );
    true
}

/// What the checks of an access that must complete begin and end with: the access says it did
/// not fault (`faulted`, as its reply reports it), no exception was taken, and the evidence
/// shows one that was.
pub fn check_no_abort(checks: &mut Checks, access: &str, faulted: u64, reply: &Reply) {
    checks.equal(&format!("{access}: faulted"), 0, faulted);
    checks.equal(&format!("{access}: exceptions taken"), 0, reply.fault.count);
    if reply.fault.count != 0 {
        checks.evidence(fault_evidence(reply));
    }
}

/// The checks every synchronous tag check fault must pass, FAR exactly `ptr`.
pub fn check_tag_fault(checks: &mut Checks, access: &str, reply: &Reply, ptr: u64, write: bool) {
    check_tag_fault_within(checks, access, reply, (ptr, ptr), write);
}

/// The checks every synchronous tag check fault must pass, FAR within `far` (inclusive, bits
/// 55:0 compared).
pub fn check_tag_fault_within(
    checks: &mut Checks,
    access: &str,
    reply: &Reply,
    far: (u64, u64),
    write: bool,
) {
    let recorded = check_one_abort(
        checks,
        access,
        faulted(reply, write),
        reply,
        (esr::EC_DABT_CUR, esr::DFSC_TAG_CHECK),
        "EC 0x25 (data abort, same EL), DFSC 0x11 (tag check)",
    );
    if !recorded {
        return;
    }
    checks.equal(
        &format!("{access}: ESR_EL1.WnR (write)"),
        write,
        esr::is_write(reply.fault.esr),
    );
    // FAR_EL1[63:60] are UNKNOWN for a tag check fault; the address bits must be exact.
    let address_bits = (1u64 << 56) - 1;
    let (first, last) = (far.0 & address_bits, far.1 & address_bits);
    let observed = reply.fault.far & address_bits;
    checks.holds(
        &format!("{access}: FAR_EL1 holds the faulting address"),
        (first..=last).contains(&observed),
        if first == last {
            format!("{first:#x} (bits 55:0)")
        } else {
            format!("{first:#x}..={last:#x} (bits 55:0)")
        },
        format!("{:#x}", reply.fault.far),
    );
    checks.holds(
        &format!("{access}: ELR_EL1 points into the payload"),
        (PAYLOAD_IPA..TEST_RAM_IPA).contains(&reply.fault.elr),
        format!("{PAYLOAD_IPA:#x}..{TEST_RAM_IPA:#x}"),
        format!("{:#x}", reply.fault.elr),
    );
    checks.evidence(fault_evidence(reply));
}

/// An access that must complete without any exception.
pub fn check_no_fault(checks: &mut Checks, access: &str, reply: &Reply, write: bool) {
    check_no_abort(checks, access, faulted(reply, write), reply);
}

/// A 64-bit value the guest read, in hex on both sides.
pub fn check_value(checks: &mut Checks, what: &str, expected: u64, observed: u64) {
    checks.holds(
        what,
        expected == observed,
        format!("{expected:#018x}"),
        format!("{observed:#018x}"),
    );
}

/// A load through `ptr` must take a synchronous tag check fault.
pub fn expect_load_fault(
    checks: &mut Checks,
    guest: &mut dyn Guest,
    access: &str,
    ptr: u64,
) -> Result<Reply, VmmError> {
    let reply = load(guest, ptr)?;
    check_tag_fault(checks, access, &reply, ptr, false);
    Ok(reply)
}

/// A store of `value` through `ptr` must take a synchronous tag check fault.
pub fn expect_store_fault(
    checks: &mut Checks,
    guest: &mut dyn Guest,
    access: &str,
    ptr: u64,
    value: u64,
) -> Result<Reply, VmmError> {
    let reply = store(guest, ptr, value)?;
    check_tag_fault(checks, access, &reply, ptr, true);
    Ok(reply)
}

/// A load through `ptr` must complete and read `expected`; `access` and `value` name the two
/// comparisons.
pub fn expect_load(
    checks: &mut Checks,
    guest: &mut dyn Guest,
    (access, value): (&str, &str),
    ptr: u64,
    expected: u64,
) -> Result<(), VmmError> {
    let reply = load(guest, ptr)?;
    check_no_fault(checks, access, &reply, false);
    check_value(checks, value, expected, reply.result[0]);
    Ok(())
}

/// A store of `value` through `ptr` must complete.
pub fn expect_store(
    checks: &mut Checks,
    guest: &mut dyn Guest,
    access: &str,
    ptr: u64,
    value: u64,
) -> Result<(), VmmError> {
    let reply = store(guest, ptr, value)?;
    check_no_fault(checks, access, &reply, true);
    Ok(())
}

/// TFSR_EL1 as read now must be exactly TF0 (`set`) or exactly 0: the whole register, as
/// kvm-unit-tests' arm/mte.c compares it; a stray TF1 or any other bit is as wrong as a
/// missing TF0.
pub fn check_tf0(
    checks: &mut Checks,
    guest: &mut dyn Guest,
    after: &str,
    set: bool,
) -> Result<(), VmmError> {
    let tfsr = read_tfsr(guest)?;
    let expected = if set { TFSR_TF0 } else { 0 };
    checks.holds(
        &format!("TFSR_EL1 after {after}"),
        tfsr == expected,
        if set {
            format!("{TFSR_TF0:#x} (TF0 alone)")
        } else {
            "0".into()
        },
        format!("{tfsr:#x}"),
    );
    Ok(())
}
