//! One guest command whose reply must be `Done`: a refusal for want of MTE is a skip that names
//! the ID register, anything else an error that says what the guest did.

use mte_protocol::{tcf, Command, GuestIds, Status};

use crate::error::VmmError;
use crate::esr::describe_esr;
use crate::reply::Reply;
use crate::vmm::Guest;

/// Run a guest command that must complete; other statuses become errors.
pub fn run(guest: &mut dyn Guest, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
    let reply = guest.exec(command, args)?;
    match reply.status {
        Status::Done => Ok(reply),
        Status::BadCommand if reply.result[0] == mte_protocol::refusal::NO_MTE => Err(
            VmmError::Unsupported(no_mte_reason(&guest.ids(), command, args)),
        ),
        Status::BadCommand if reply.result[0] == mte_protocol::refusal::PROHIBITED => {
            let ids = guest.ids();
            Err(VmmError::Unsupported(format!(
                "the guest CPU does not allow {command:?} here (DCZID_EL0 = {:#x}, GMID_EL1 = {:#x})",
                ids.dczid_el0, ids.gmid_el1
            )))
        }
        Status::BadCommand => Err(VmmError::Guest(format!(
            "{command:?} {args:x?} rejected by the guest (argument {})",
            reply.result[0]
        ))),
        Status::Panic => Err(VmmError::Guest(format!(
            "unexpected exception during {command:?}: {} (FAR {:#x}, ELR {:#x})",
            describe_esr(reply.fault.esr),
            reply.fault.far,
            reply.fault.elr
        ))),
        other => Err(VmmError::Guest(format!(
            "{command:?} answered with status {other:?}"
        ))),
    }
}

/// Skip unless the guest CPU has tag storage (MTE2 or later).
pub fn require_mte(ids: &GuestIds) -> Result<(), VmmError> {
    match ids.mte_level() {
        0 | 1 => Err(VmmError::Unsupported(format!(
            "the guest CPU has no MTE tag storage (ID_AA64PFR1_EL1 = {:#x}, MTE field {})",
            ids.id_aa64pfr1_el1,
            ids.mte_level()
        ))),
        _ => Ok(()),
    }
}

/// Skip unless the guest CPU has MTE3 (ID_AA64PFR1_EL1.MTE >= 3), which asymmetric tag
/// checking needs.
pub fn require_mte3(ids: &GuestIds) -> Result<(), VmmError> {
    require_mte(ids)?;
    if ids.mte_level() < 3 {
        return Err(VmmError::Unsupported(no_mte_reason(
            ids,
            Command::SetTcf,
            &[tcf::ASYMMETRIC],
        )));
    }
    Ok(())
}

/// Why the guest refused `command` for want of MTE: asymmetric checking needs MTE3, the rest
/// tag storage (MTE2).
fn no_mte_reason(ids: &GuestIds, command: Command, args: &[u64]) -> String {
    let has = format!(
        "ID_AA64PFR1_EL1 = {:#x}, MTE field {}",
        ids.id_aa64pfr1_el1,
        ids.mte_level()
    );
    if command == Command::SetTcf && args.first() == Some(&tcf::ASYMMETRIC) {
        format!(
            "asymmetric tag checking (SCTLR_EL1.TCF = 3) needs MTE3 (MTE field >= 3); the guest \
             CPU has {has}"
        )
    } else {
        format!("the guest CPU has no MTE tag storage (MTE field >= 2 needed): {has}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_without_mte3_skips_asymmetric_checks_naming_the_field() {
        let ids = |pfr1| GuestIds {
            id_aa64pfr1_el1: pfr1,
            ..GuestIds::default()
        };
        assert_eq!(require_mte3(&ids(0x321)), Ok(()));
        match require_mte3(&ids(0x221)) {
            Err(VmmError::Unsupported(why)) => {
                assert!(why.contains("MTE3"), "{why}");
                assert!(
                    why.contains("ID_AA64PFR1_EL1 = 0x221, MTE field 2"),
                    "{why}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        match require_mte3(&ids(0x021)) {
            Err(VmmError::Unsupported(why)) => assert!(why.contains("tag storage"), "{why}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
