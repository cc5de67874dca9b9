//! Findings and the comparisons behind them. Every pass is built from a comparison of expected
//! against observed that could have gone the other way, and keeps both sides as evidence.

use mte_protocol::{esr, tcf, Command, GuestIds, Status};
use mte_results::{tag_mismatches, tags_to_hex, Evidence, Outcome};

use crate::vmm::{errno_name, BootOptions, Guest, Reply, Vmm, VmmError};

/// A scenario's result before the runner stamps it with name, lane, kernel and time.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub outcome: Outcome,
    pub reason: String,
    pub detail: Vec<Evidence>,
    /// Whether a comparison of expected against observed went wrong (as opposed to a step
    /// that could not be taken): what a fault-injection proof must see.
    pub refuted: bool,
}

impl Finding {
    fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Finding {
            outcome,
            reason: reason.into(),
            detail: Vec::new(),
            refuted: false,
        }
    }
    pub fn skip(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Skip, reason)
    }
    pub fn fail(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Fail, reason)
    }
    pub fn xfail(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Xfail, reason)
    }
    pub fn with(mut self, evidence: Evidence) -> Self {
        self.detail.push(evidence);
        self
    }

    /// The outcome of a step that could not be taken: a skip where the lane lacks it, else a
    /// fail that says what broke.
    pub fn from_error(error: &VmmError) -> Self {
        match error {
            VmmError::Unsupported(why) => Finding::skip(why.clone()),
            other => Finding::fail(other.to_string()),
        }
    }
}

/// Accumulates comparisons; the finding passes only if every one of them held.
#[derive(Debug, Default)]
pub struct Checks {
    failures: Vec<String>,
    held: Vec<String>,
    evidence: Vec<Evidence>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Two tag maps of the same range must be equal granule by granule.
    pub fn tags_equal(
        &mut self,
        ipa: u64,
        (expected_from, expected): (&str, &[u8]),
        (observed_from, observed): (&str, &[u8]),
    ) -> bool {
        let mismatches = tag_mismatches(expected, observed);
        let ok = mismatches.is_empty();
        let summary = format!(
            "{observed_from} equals {expected_from} over {} granules",
            expected.len()
        );
        if ok {
            self.held.push(summary);
        } else {
            self.failures.push(format!(
                "{observed_from} differs from {expected_from} in {} of {} granules (first at granule {}, IPA {:#x})",
                mismatches.len(),
                expected.len().max(observed.len()),
                mismatches[0],
                ipa + mismatches[0] as u64 * mte_protocol::GRANULE,
            ));
        }
        let maps = Evidence::TagMaps {
            expected_from: expected_from.into(),
            observed_from: observed_from.into(),
            ipa,
            expected: tags_to_hex(expected),
            observed: tags_to_hex(observed),
            mismatches,
        };
        // Long maps that agree say no more than their summaries; maps that differ stay whole.
        self.evidence.push(if ok {
            maps.with_long_tag_maps_in_brief()
        } else {
            maps
        });
        ok
    }

    /// Any other expected-against-observed comparison.
    pub fn equal<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        expected: T,
        observed: T,
    ) -> bool {
        let ok = expected == observed;
        self.record(what, ok, format!("{expected:?}"), format!("{observed:?}"));
        ok
    }

    /// A condition with its own rendering of both sides.
    pub fn holds(
        &mut self,
        what: &str,
        ok: bool,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) -> bool {
        self.record(what, ok, expected.into(), observed.into());
        ok
    }

    /// A system call's outcome: `Err(expected_errno)` or `Ok(expected_value)`.
    pub fn syscall(
        &mut self,
        call: &str,
        expected: Result<i64, i32>,
        observed: Result<i64, i32>,
    ) -> bool {
        let render = |r: Result<i64, i32>| match r {
            Ok(v) => format!("returns {v}"),
            Err(e) => format!("fails with {}", errno_name(e)),
        };
        let ok = expected == observed;
        let (expected, observed) = (render(expected), render(observed));
        if ok {
            self.held.push(format!("{call} {observed}"));
        } else {
            self.failures
                .push(format!("{call}: expected it {expected}, it {observed}"));
        }
        self.evidence.push(Evidence::Errno {
            call: call.into(),
            expected,
            observed,
        });
        ok
    }

    /// Whether every comparison so far held.
    pub fn all_held(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn evidence(&mut self, evidence: Evidence) {
        self.evidence.push(evidence);
    }

    fn record(&mut self, what: &str, ok: bool, expected: String, observed: String) {
        if ok {
            self.held.push(what.to_string());
        } else {
            self.failures
                .push(format!("{what}: expected {expected}, observed {observed}"));
        }
        self.evidence.push(Evidence::Values {
            what: what.into(),
            expected,
            observed,
        });
    }

    /// Pass if everything held (and something was compared), fail otherwise.
    pub fn finish(self) -> Finding {
        let (outcome, reason) = if !self.failures.is_empty() {
            (Outcome::Fail, self.failures.join("; "))
        } else if self.held.is_empty() {
            (
                Outcome::Fail,
                "nothing was compared: a check without a comparison cannot pass".into(),
            )
        } else {
            (Outcome::Pass, self.held.join("; "))
        };
        Finding {
            outcome,
            reason,
            detail: self.evidence,
            refuted: !self.failures.is_empty(),
        }
    }
}

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

/// Boot a guest as `options` say; skip where its CPU has no tag storage.
pub fn boot_tagged(vmm: &dyn Vmm, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
    let guest = vmm.boot(options)?;
    require_mte(&guest.ids())?;
    Ok(guest)
}

/// What the bulk buffer holds where the guest did not write: no tag, and no plausible result.
pub const NOT_WRITTEN: u8 = 0xff;

/// Poison the first `len` bytes of the bulk buffer, run `command`, read them back: a guest
/// that reports nothing is caught.
pub fn bulk_report(
    guest: &mut dyn Guest,
    len: usize,
    command: Command,
    args: &[u64],
) -> Result<Vec<u8>, VmmError> {
    guest.write_bulk(&vec![NOT_WRITTEN; len])?;
    run(guest, command, args)?;
    guest.read_bulk(len)
}

/// The tag map a command reports for `[ipa, ipa + len)`, one tag per granule (ReadTags for
/// LDG, TagRandom for the tags IRG chose).
pub fn tag_map_report(
    guest: &mut dyn Guest,
    command: Command,
    ipa: u64,
    len: u64,
) -> Result<Vec<u8>, VmmError> {
    bulk_report(guest, mte_protocol::granules(len), command, &[ipa, len])
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

/// ESR_EL1 in words, for evidence a person reads.
pub fn describe_esr(value: u64) -> String {
    let ec = esr::ec(value);
    let class = match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE",
        0x07 => "SVE/SIMD/FP access",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "system register access",
        0x20 => "instruction abort, lower EL",
        0x21 => "instruction abort, same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort, lower EL",
        0x25 => "data abort, same EL",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other exception class",
    };
    let mut text = format!("EC {ec:#04x} ({class})");
    if ec == 0x24 || ec == 0x25 {
        let dfsc = esr::dfsc(value);
        let fault = match dfsc {
            0x04..=0x07 => "translation fault",
            0x08..=0x0b => "access flag fault",
            0x0c..=0x0f => "permission fault",
            0x10 => "synchronous external abort",
            0x11 => "synchronous tag check fault",
            0x21 => "alignment fault",
            _ => "other fault",
        };
        let access = if esr::is_write(value) {
            "write"
        } else {
            "read"
        };
        text.push_str(&format!(": DFSC {dfsc:#04x} {fault}, {access}"));
    }
    text
}

/// Evidence of a guest exception.
pub fn fault_evidence(reply: &Reply) -> Evidence {
    Evidence::Fault {
        esr: reply.fault.esr,
        far: reply.fault.far,
        elr: reply.fault.elr,
        decoded: describe_esr(reply.fault.esr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_without_comparisons_cannot_pass() {
        assert_eq!(Checks::new().finish().outcome, Outcome::Fail);
    }

    #[test]
    fn one_differing_granule_fails_with_both_maps() {
        let mut checks = Checks::new();
        assert!(!checks.tags_equal(0x4100_0000, ("guest LDG", &[1, 2, 3]), ("host", &[1, 9, 3])));
        let finding = checks.finish();
        assert_eq!(finding.outcome, Outcome::Fail);
        assert!(finding.reason.contains("granule 1"), "{}", finding.reason);
        match &finding.detail[0] {
            Evidence::TagMaps {
                expected,
                observed,
                mismatches,
                ..
            } => {
                assert_eq!((expected.as_str(), observed.as_str()), ("123", "193"));
                assert_eq!(mismatches, &vec![1]);
            }
            other => panic!("unexpected evidence {other:?}"),
        }
    }

    #[test]
    fn long_maps_that_agree_are_kept_in_brief_and_those_that_differ_whole() {
        let long = vec![3u8; mte_results::TAG_MAP_KEPT_WHOLE + 1];
        let mut checks = Checks::new();
        assert!(checks.tags_equal(0, ("guest", &long), ("host", &long)));
        let mut changed = long.clone();
        changed[7] = 4;
        assert!(!checks.tags_equal(0, ("guest", &long), ("host", &changed)));
        let finding = checks.finish();
        assert!(
            matches!(&finding.detail[0], Evidence::Values { what, .. } if what.contains("in brief"))
        );
        assert!(
            matches!(&finding.detail[1], Evidence::TagMaps { mismatches, .. } if mismatches == &vec![7])
        );
    }

    #[test]
    fn syscalls_compare_errno_and_value() {
        let mut checks = Checks::new();
        assert!(checks.syscall("copy", Err(22), Err(22)));
        assert!(!checks.syscall("copy", Ok(4096), Err(14)));
        let finding = checks.finish();
        assert_eq!(finding.outcome, Outcome::Fail);
        assert!(finding.reason.contains("EFAULT (14)"), "{}", finding.reason);
    }

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
    fn esr_of_a_tag_check_fault_reads_as_such() {
        assert_eq!(
            describe_esr(0x9600_0011),
            "EC 0x25 (data abort, same EL): DFSC 0x11 synchronous tag check fault, read"
        );
        assert!(describe_esr(0x9600_0051).ends_with("write"));
    }
}
