//! Accesses made as EL0: by the guest's EL0 code, and by EL1's unprivileged loads and stores
//! (LDTR, STTR), both through RAM's EL0 alias; SCTLR_EL1.TCF0 that checks them; and the MTE
//! registers as the guest reads them, TFSRE0_EL1 among them.

use mte_protocol::{
    access_kind, el0_alias, esr, mte_registers, sctlr, Command, PAYLOAD_IPA, TEST_RAM_IPA,
};

use super::command::run;
use super::tag_checks::{check_no_abort, check_one_abort};
use crate::check::Checks;
use crate::error::VmmError;
use crate::esr::fault_evidence;
use crate::reply::Reply;
use crate::vmm::Guest;

/// TFSRE0_EL1.TF0 (and TFSR_EL1.TF0): an asynchronous tag check fault on a TTBR0 address.
pub const TF0: u64 = 1;

/// Who makes an access as EL0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Maker {
    /// The guest's EL0 code (`El0Access`): a fault is taken from the lower EL.
    El0,
    /// EL1's LDTR or STTR (`UnprivilegedAccess`): a fault is taken from the same EL.
    Unprivileged,
}

impl Maker {
    fn command(self) -> Command {
        match self {
            Maker::El0 => Command::El0Access,
            Maker::Unprivileged => Command::UnprivilegedAccess,
        }
    }

    /// The exception class, vector and ELR range of its synchronous data abort.
    fn abort(self) -> (u8, u64, (u64, u64)) {
        match self {
            Maker::El0 => (
                esr::EC_DABT_LOWER,
                8,
                (el0_alias(PAYLOAD_IPA), el0_alias(TEST_RAM_IPA)),
            ),
            Maker::Unprivileged => (esr::EC_DABT_CUR, 0, (PAYLOAD_IPA, TEST_RAM_IPA)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Maker::El0 => "EL0",
            Maker::Unprivileged => "EL1 unprivileged",
        }
    }
}

/// Select SCTLR_EL1.TCF0 (a `tcf` mode); the guest also sets ATA0 and clears TFSRE0_EL1.
pub fn set_tcf0(guest: &mut dyn Guest, mode: u64) -> Result<(), VmmError> {
    run(guest, Command::SetTcf0, &[mode]).map(|_| ())
}

/// A load (LDR at EL0, or LDTR) through `ptr`'s EL0 alias: `result = [value, faulted]`.
pub fn load(guest: &mut dyn Guest, maker: Maker, ptr: u64) -> Result<Reply, VmmError> {
    run(guest, maker.command(), &[access_kind::LOAD, ptr, 0])
}

/// A store (STR at EL0, or STTR) of `value` through `ptr`'s EL0 alias.
pub fn store(guest: &mut dyn Guest, maker: Maker, ptr: u64, value: u64) -> Result<Reply, VmmError> {
    run(guest, maker.command(), &[access_kind::STORE, ptr, value])
}

/// The guest's MTE registers, read by itself (nothing cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MteRegisters {
    pub sctlr_el1: u64,
    pub gcr_el1: u64,
    pub rgsr_el1: u64,
    pub tfsr_el1: u64,
    pub tfsre0_el1: u64,
}

impl MteRegisters {
    pub fn tcf(&self) -> u64 {
        sctlr::tcf(self.sctlr_el1)
    }
    pub fn tcf0(&self) -> u64 {
        sctlr::tcf0(self.sctlr_el1)
    }
}

pub fn read_registers(guest: &mut dyn Guest) -> Result<MteRegisters, VmmError> {
    let r = run(guest, Command::ReadMteRegisters, &[])?.result;
    Ok(MteRegisters {
        sctlr_el1: r[mte_registers::SCTLR_EL1],
        gcr_el1: r[mte_registers::GCR_EL1],
        rgsr_el1: r[mte_registers::RGSR_EL1],
        tfsr_el1: r[mte_registers::TFSR_EL1],
        tfsre0_el1: r[mte_registers::TFSRE0_EL1],
    })
}

/// Both fault status registers as they must be now: TFSRE0_EL1 exactly TF0 or 0, TFSR_EL1
/// exactly 0 (an access made as EL0 never reports there).
pub fn check_fault_status(
    checks: &mut Checks,
    guest: &mut dyn Guest,
    after: &str,
    tfsre0_tf0: bool,
) -> Result<MteRegisters, VmmError> {
    let registers = read_registers(guest)?;
    let expected = if tfsre0_tf0 { TF0 } else { 0 };
    checks.holds(
        &format!("TFSRE0_EL1 after {after}"),
        registers.tfsre0_el1 == expected,
        if tfsre0_tf0 {
            format!("{TF0:#x} (TF0 alone)")
        } else {
            "0".into()
        },
        format!("{:#x}", registers.tfsre0_el1),
    );
    checks.holds(
        &format!("TFSR_EL1 after {after}"),
        registers.tfsr_el1 == 0,
        "0 (EL1's own register: no access of EL1's was checked)",
        format!("{:#x}", registers.tfsr_el1),
    );
    Ok(registers)
}

/// `result = [value, faulted]` for both kinds.
fn faulted(reply: &Reply) -> u64 {
    reply.result[1]
}

/// A synchronous tag check fault of an access made as EL0 through `ptr`: the class of its
/// maker (0x24 from EL0, 0x25 for LDTR/STTR at EL1), DFSC 0x11, WnR, FAR = the EL0 alias with
/// its tag (bits 59:0: the Arm ARM makes FAR_EL1 hold the tag of a tagged address, and only
/// bits 63:60 UNKNOWN for a tag check fault), ELR in the code of that EL, and the vector.
pub fn check_tag_fault(
    checks: &mut Checks,
    maker: Maker,
    access: &str,
    reply: &Reply,
    ptr: u64,
    write: bool,
) {
    let (ec, vector, (code, code_end)) = maker.abort();
    let recorded = check_one_abort(
        checks,
        access,
        faulted(reply),
        reply,
        (ec, esr::DFSC_TAG_CHECK),
        match maker {
            Maker::El0 => "EC 0x24 (data abort, lower EL), DFSC 0x11 (tag check)",
            Maker::Unprivileged => "EC 0x25 (data abort, same EL), DFSC 0x11 (tag check)",
        },
    );
    if !recorded {
        return;
    }
    checks.equal(
        &format!("{access}: ESR_EL1.WnR (write)"),
        write,
        esr::is_write(reply.fault.esr),
    );
    let bits = (1u64 << 60) - 1;
    let expected_far = el0_alias(ptr) & bits;
    checks.holds(
        &format!("{access}: FAR_EL1 holds the EL0 alias address with its tag"),
        reply.fault.far & bits == expected_far,
        format!("{expected_far:#x} (bits 59:0)"),
        format!("{:#x}", reply.fault.far),
    );
    checks.holds(
        &format!("{access}: ELR_EL1 points into the {} code", maker.name()),
        (code..code_end).contains(&reply.fault.elr),
        format!("{code:#x}..{code_end:#x}"),
        format!("{:#x}", reply.fault.elr),
    );
    checks.equal(
        &format!("{access}: vector (0 current EL, 8 lower EL)"),
        vector,
        reply.fault.vector,
    );
    checks.evidence(fault_evidence(reply));
}

/// An access made as EL0 that must complete without any exception.
pub fn check_no_fault(checks: &mut Checks, access: &str, reply: &Reply) {
    check_no_abort(checks, access, faulted(reply), reply);
}

#[cfg(test)]
mod tests {
    use super::*;
    use mte_protocol::{tcf, with_tag, FaultRecord, Status, RAM_IPA};

    fn reply(esr: u64, far: u64, elr: u64, vector: u64) -> Reply {
        Reply {
            status: Status::Done,
            result: [0, 1, 0, 0, 0, 0, 0, 0],
            fault: FaultRecord {
                count: 1,
                esr,
                far,
                elr,
                vector,
            },
        }
    }

    #[test]
    fn an_el0_tag_check_fault_is_judged_by_its_alias_address_and_class() {
        let ptr = with_tag(TEST_RAM_IPA + 0x40, 0xa);
        let far = el0_alias(ptr) | 0xf << 60;
        let good = reply(0x9200_0011, far, el0_alias(PAYLOAD_IPA) + 0x100, 8);
        let mut checks = Checks::new();
        check_tag_fault(&mut checks, Maker::El0, "load", &good, ptr, false);
        assert!(checks.all_held());
        // Taken as if from EL1, or with the tag lost from FAR: each a failure.
        for bad in [
            reply(0x9600_0011, far, good.fault.elr, 8),
            reply(
                0x9200_0011,
                el0_alias(TEST_RAM_IPA + 0x40),
                good.fault.elr,
                8,
            ),
            reply(0x9200_0011, far, good.fault.elr, 0),
        ] {
            let mut checks = Checks::new();
            check_tag_fault(&mut checks, Maker::El0, "load", &bad, ptr, false);
            assert!(!checks.all_held(), "{bad:?}");
        }
        assert_eq!(el0_alias(RAM_IPA), mte_protocol::EL0_ALIAS_VA);
        assert_eq!(
            sctlr::tcf0((tcf::ASYNC << 38) | (tcf::SYNC << 40)),
            tcf::ASYNC
        );
    }
}
