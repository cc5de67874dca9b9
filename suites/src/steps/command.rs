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

/// Why the guest refused `command` for want of MTE. A guest with tag storage (MTE2) refuses
/// only what needs MTE3: asymmetric tag checking, whichever argument of whichever command
/// asked for it. (Judging by the command alone named tag storage as missing on a CPU with MTE
/// field 2: a reason that contradicted itself.)
fn no_mte_reason(ids: &GuestIds, command: Command, args: &[u64]) -> String {
    let has = format!(
        "ID_AA64PFR1_EL1 = {:#x}, MTE field {}",
        ids.id_aa64pfr1_el1,
        ids.mte_level()
    );
    if ids.mte_level() >= 2 {
        let asked = match args.contains(&tcf::ASYMMETRIC) {
            true => "asymmetric tag checking (TCF = 3)",
            false => "what it asked",
        };
        format!(
            "{command:?} needs MTE3 (MTE field >= 3) for {asked}; the guest CPU has only MTE2: \
             {has}"
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

    #[test]
    fn a_refusal_on_an_mte2_cpu_never_says_tag_storage_is_missing() {
        let mte2 = GuestIds {
            id_aa64pfr1_el1: 0x221,
            ..GuestIds::default()
        };
        // TimeInstructions takes the tag-check mode as its fourth argument.
        let why = no_mte_reason(
            &mte2,
            Command::TimeInstructions,
            &[0, 0x1000, 1, tcf::ASYMMETRIC],
        );
        assert!(!why.contains("no MTE tag storage"), "{why}");
        assert!(!why.contains(">= 2"), "{why}");
        assert!(
            why.starts_with(
                "TimeInstructions needs MTE3 (MTE field >= 3) for asymmetric tag checking"
            ),
            "{why}"
        );
        assert!(why.ends_with("MTE field 2"), "{why}");
        let none = GuestIds::default();
        let why = no_mte_reason(&none, Command::SetTcf, &[tcf::SYNC]);
        assert!(
            why.starts_with("the guest CPU has no MTE tag storage"),
            "{why}"
        );
    }
}
