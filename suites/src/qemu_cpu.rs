//! Known defects of QEMU's emulated CPU (TCG `-cpu max`, the CPU of the emulated, qemu and
//! qemu-kvm lanes). A check whose comparisons fall in two parts keeps those a known defect gets
//! wrong apart: where only they fail, on that CPU, the verdict is an xfail naming the defect;
//! on any other CPU, and wherever the rest fail, a fail.

use mte_protocol::GuestIds;
use mte_results::Outcome;

use crate::check::{Checks, Finding};

/// Whether the guest runs on QEMU's `-cpu max`: MIDR_EL1 implementer 0 (reserved for
/// software), part number 'Q'.
pub fn is_qemu_max(ids: &GuestIds) -> bool {
    let midr = ids.midr_el1;
    (midr >> 24) & 0xff == 0 && (midr >> 4) & 0xfff == u64::from(b'Q')
}

/// The finding of `rest` and `affected` (the comparisons `defect`, in words, gets wrong on
/// QEMU's CPU), as the module says.
pub fn judge_with_known_defect(
    rest: Checks,
    affected: Checks,
    ids: &GuestIds,
    defect: &str,
) -> Finding {
    let (rest_held, affected_held) = (rest.all_held(), affected.all_held());
    let (rest, affected) = (rest.finish(), affected.finish());
    let detail = [rest.detail.clone(), affected.detail.clone()].concat();
    let (outcome, reason, refuted) = if rest_held && !affected_held && is_qemu_max(ids) {
        (
            Outcome::Xfail,
            format!("{defect}: {}", affected.reason),
            false,
        )
    } else if rest.outcome == Outcome::Fail || affected.outcome == Outcome::Fail {
        let reasons = [rest, affected]
            .into_iter()
            .filter(|f| f.outcome == Outcome::Fail)
            .map(|f| f.reason);
        (Outcome::Fail, reasons.collect::<Vec<_>>().join("; "), true)
    } else {
        (
            Outcome::Pass,
            format!("{}; {}", rest.reason, affected.reason),
            false,
        )
    };
    Finding {
        outcome,
        reason,
        detail,
        refuted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(midr_el1: u64) -> GuestIds {
        GuestIds {
            midr_el1,
            ..GuestIds::default()
        }
    }

    fn judged(rest_holds: bool, affected_holds: bool, ids: &GuestIds) -> Finding {
        let (mut rest, mut affected) = (Checks::new(), Checks::new());
        rest.equal("control", 1, u64::from(rest_holds));
        affected.equal("affected", 1, u64::from(affected_holds));
        judge_with_known_defect(rest, affected, ids, "the defect")
    }

    #[test]
    fn only_a_known_defect_on_qemus_cpu_is_an_xfail() {
        // Seen in the emulated lane: MIDR_EL1 of QEMU's `max`.
        let qemu = ids(0x000f_0510);
        let other = ids(0x410f_d400);
        assert!(is_qemu_max(&qemu) && !is_qemu_max(&other));
        let known = judged(true, false, &qemu);
        assert_eq!(known.outcome, Outcome::Xfail);
        assert!(known.reason.starts_with("the defect: "));
        assert_eq!(judged(true, false, &other).outcome, Outcome::Fail);
        // The rest failing fails everywhere, and is what a proof sees.
        let failed = judged(false, false, &qemu);
        assert!(failed.outcome == Outcome::Fail && failed.refuted);
        assert_eq!(judged(true, true, &qemu).outcome, Outcome::Pass);
    }
}
