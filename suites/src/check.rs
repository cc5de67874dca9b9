//! Findings and the comparisons behind them. Every pass is built from a comparison of expected
//! against observed that could have gone the other way, and keeps both sides as evidence. The
//! comparisons that first read a tag map from the guest or the host are with that step, in
//! [`crate::steps::tags`].

use mte_results::{tag_mismatches, tags_to_hex, Evidence, Outcome};

use crate::error::{errno_name, VmmError};

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

    /// The outcome of a step that could not be taken: a skip where the lane lacks it, an xfail
    /// where its refusal is documented for this version, else a fail that says what broke.
    pub fn from_error(error: &VmmError) -> Self {
        match error {
            VmmError::Unsupported(why) => Finding::skip(why.clone()),
            VmmError::Documented(why) => Finding::xfail(why.clone()),
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
    /// Why the path the check guards was not taken here, when its control or /proc says so:
    /// agreeing comparisons then prove nothing, and the finding is a skip.
    not_reached: Vec<String>,
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
        let summary = if ok {
            format!(
                "{observed_from} equals {expected_from} over {} granules",
                expected.len()
            )
        } else {
            format!(
                "{observed_from} differs from {expected_from} in {} of {} granules (first at granule {}, IPA {:#x})",
                mismatches.len(),
                expected.len().max(observed.len()),
                mismatches[0],
                ipa + mismatches[0] as u64 * mte_protocol::GRANULE,
            )
        };
        let maps = Evidence::TagMaps {
            expected_from: expected_from.into(),
            observed_from: observed_from.into(),
            ipa,
            expected: tags_to_hex(expected),
            observed: tags_to_hex(observed),
            mismatches,
        };
        // Long maps that agree say no more than their summaries; maps that differ stay whole.
        let maps = if ok {
            maps.with_long_tag_maps_in_brief()
        } else {
            maps
        };
        self.tally(ok, summary, maps)
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
        let summary = if ok {
            format!("{call} {observed}")
        } else {
            format!("{call}: expected it {expected}, it {observed}")
        };
        let errno = Evidence::Errno {
            call: call.into(),
            expected,
            observed,
        };
        self.tally(ok, summary, errno)
    }

    /// The kernel path the check guards (a THP split, a KSM merge, a swap-out) did not run
    /// here, as its control or /proc shows: unless a comparison failed, the finding is a skip
    /// that says so, never a pass. `why` names the path and what showed it was not taken.
    pub fn path_not_reached(&mut self, why: impl Into<String>) {
        let why = why.into();
        self.evidence.push(Evidence::Note {
            text: format!("path not reached: {why}"),
        });
        self.not_reached.push(why);
    }

    /// A condition that tells whether the guarded path ran, with both sides as evidence; when
    /// it does not hold, the path was not reached ([`Self::path_not_reached`]). Returns it.
    pub fn path_reached(
        &mut self,
        what: &str,
        reached: bool,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) -> bool {
        let (expected, observed) = (expected.into(), observed.into());
        if reached {
            self.held.push(what.to_string());
        } else {
            self.not_reached
                .push(format!("{what}: expected {expected}, observed {observed}"));
        }
        self.evidence.push(Evidence::Values {
            what: format!("path reached: {what}"),
            expected,
            observed,
        });
        reached
    }

    /// Whether every comparison so far held.
    pub fn all_held(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn evidence(&mut self, evidence: Evidence) {
        self.evidence.push(evidence);
    }

    /// A value for the record, compared with nothing (a figure, how something went).
    pub fn value(
        &mut self,
        what: impl Into<String>,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) {
        self.evidence(Evidence::Values {
            what: what.into(),
            expected: expected.into(),
            observed: observed.into(),
        });
    }

    /// A note for the record.
    pub fn note(&mut self, text: impl Into<String>) {
        self.evidence(Evidence::Note { text: text.into() });
    }

    /// A note for the record, unless it is there already.
    pub fn note_once(&mut self, text: String) {
        let known = self
            .evidence
            .iter()
            .any(|e| matches!(e, Evidence::Note { text: t } if *t == text));
        if !known {
            self.note(text);
        }
    }

    fn record(&mut self, what: &str, ok: bool, expected: String, observed: String) {
        let summary = if ok {
            what.to_string()
        } else {
            format!("{what}: expected {expected}, observed {observed}")
        };
        let values = Evidence::Values {
            what: what.into(),
            expected,
            observed,
        };
        self.tally(ok, summary, values);
    }

    /// Count one comparison: `summary` says what held, or how it failed; `evidence` shows both
    /// sides.
    fn tally(&mut self, ok: bool, summary: String, evidence: Evidence) -> bool {
        if ok {
            self.held.push(summary);
        } else {
            self.failures.push(summary);
        }
        self.evidence.push(evidence);
        ok
    }

    /// Pass if everything held (and something was compared), fail otherwise.
    pub fn finish(self) -> Finding {
        let (outcome, reason) = if !self.failures.is_empty() {
            (Outcome::Fail, self.failures.join("; "))
        } else if !self.not_reached.is_empty() {
            (
                Outcome::Skip,
                format!(
                    "the path this check guards was not reached here, so its comparisons \
                     prove nothing: {}",
                    self.not_reached.join("; ")
                ),
            )
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
    fn a_path_not_reached_is_a_skip_unless_a_comparison_failed() {
        let mut checks = Checks::new();
        checks.equal("tags", 3, 3);
        checks.path_not_reached("no subpage was remapped to the zero page");
        let finding = checks.finish();
        assert_eq!(finding.outcome, Outcome::Skip);
        assert!(finding.reason.contains("zero page"), "{}", finding.reason);

        let mut checks = Checks::new();
        assert!(!checks.path_reached("pages swapped", false, "16", "3"));
        checks.equal("tags", 3, 4);
        let finding = checks.finish();
        assert_eq!(finding.outcome, Outcome::Fail);
        assert!(finding.refuted);

        let mut checks = Checks::new();
        assert!(checks.path_reached("pages swapped", true, "16", "16"));
        checks.equal("tags", 3, 3);
        assert_eq!(checks.finish().outcome, Outcome::Pass);
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
}
