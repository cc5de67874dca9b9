//! LAVA result lines: `lava-test-case NAME --result pass|fail|skip`, one per verdict, for a
//! lab's LAVA test shell to run after the suite (see lab/lava/mte-suite.yaml).
//!
//! - pass and xfail are `pass` (an xfail is documented behaviour, as in JUnit); fail is `fail`;
//!   skip is `skip`; a fault-injection proof whose check was xfail proved nothing: `skip`;
//! - each column is a `lava-test-set`, `lane-kernel`, or `lane-bootN-kernel` where a lane
//!   booted several times, so that a name is the check's alone (under 100 characters: a longer
//!   one keeps its start and its end);
//! - each figure ([`crate::figures`]) of a check is a case of its own, `CHECK.WHAT`, with
//!   `--measurement VALUE --units ms` (timings) or `--units ratio`, so a lab's charts get them;
//! - a planned check that never reported is `unknown`;
//! - a run that ended early adds `lava-test-case run --result fail`.
//!
//! The lines are run by a shell, so a name holds only `A-Z a-z 0-9 . _ -` (what LAVA accepts in
//! a test case name): `::` becomes `.`, anything else `_`. Nothing a guest or kernel printed can
//! reach the shell as anything but those characters. (No crate writes LAVA's lines.)

use std::fmt::Write as _;

use crate::figures::{figures, FigureKind};
use crate::model::{Lane, Outcome};
use crate::summary::RunSummary;

/// The longest test case name LAVA takes is 99 characters.
pub const MAX_CASE_NAME: usize = 99;

/// The `lava-test-case` lines of a run, a `lava-test-set` a column.
pub fn render(summary: &RunSummary) -> String {
    let columns = summary.columns();
    let several_in = |lane: Lane| columns.iter().filter(|c| c.lane == lane).count() > 1;
    let mut out = String::new();
    for column in &columns {
        let key = column.key();
        let set = match several_in(key.lane) {
            false => format!("{}-{}", key.lane, key.kernel),
            true => format!("{}-boot{}-{}", key.lane, key.boot, key.kernel),
        };
        let _ = writeln!(out, "lava-test-set start {}", case_name(&set));
        for v in &column.verdicts {
            cases_of(&mut out, v);
        }
        // A check that never ran has no result: LAVA's `unknown`.
        for missing in &column.not_run {
            let _ = writeln!(
                out,
                "lava-test-case {} --result unknown",
                case_name(&missing.test)
            );
        }
        out.push_str("lava-test-set stop\n");
    }
    if summary.error.is_some() {
        out.push_str("lava-test-case run --result fail\n");
    }
    out
}

/// A verdict's case, and a case for each of its figures.
fn cases_of(out: &mut String, v: &crate::model::Verdict) {
    let name = case_name(&v.test);
    let result = match v.counted_outcome() {
        Outcome::Pass | Outcome::Xfail => "pass",
        Outcome::Fail => "fail",
        Outcome::Skip => "skip",
    };
    let _ = writeln!(out, "lava-test-case {name} --result {result}");
    for figure in figures(v) {
        let units = match figure.kind {
            FigureKind::Timing => "ms",
            FigureKind::Ratio => "ratio",
        };
        let _ = writeln!(
            out,
            "lava-test-case {} --result pass --measurement {} --units {units}",
            case_name(&format!("{}.{}", v.test, figure.what)),
            decimal(figure.value)
        );
    }
}

/// A number in plain decimals (nanosecond precision for milliseconds), without trailing zeros.
fn decimal(value: f64) -> String {
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match text {
        "" | "-" | "-0" => "0".to_string(),
        text => text.to_string(),
    }
}

/// A name LAVA and a shell both take as it is.
pub fn case_name(text: &str) -> String {
    let mut name = String::with_capacity(text.len());
    for c in text.replace("::", ".").chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
            c
        } else {
            '_'
        };
        // Runs of replaced characters read as one.
        if !(c == '_' && name.ends_with('_')) {
            name.push(c);
        }
    }
    let name = name.trim_matches(['_', '.']);
    if name.is_empty() {
        "unnamed".to_string()
    } else if name.len() > MAX_CASE_NAME {
        // Its start, and its end, which tells apart names that share a long start (the
        // bundle's run.sh cuts the same way).
        format!("{}.{}", &name[..90], &name[name.len() - 8..])
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{two_lanes, verdict};
    use crate::model::{Evidence, Verdict};

    #[test]
    fn each_verdict_is_a_lava_test_case() {
        let mut cost = verdict("cost::cow", Outcome::Pass, "ok");
        cost.detail = vec![
            Evidence::Values {
                what: "copy-on-write per page, MTE VM".into(),
                expected: "measured".into(),
                observed: "30.5 µs".into(),
            },
            Evidence::Values {
                what: "copy-on-write, tagged / untagged".into(),
                expected: "measured".into(),
                observed: "1.25".into(),
            },
        ];
        let lines = render(&RunSummary {
            benchmarks: Vec::new(),
            verdicts: vec![
                verdict("tags::a", Outcome::Pass, "ok"),
                verdict("tags::b", Outcome::Fail, "differs"),
                verdict("swap::c", Outcome::Skip, "no swap"),
                verdict("shared::d", Outcome::Xfail, "before 6.2"),
                cost,
            ],
            error: Some("ended early".into()),
            ..RunSummary::default()
        });
        assert_eq!(
            lines,
            "lava-test-set start emulated-6.12.95\n\
             lava-test-case tags.a --result pass\n\
             lava-test-case tags.b --result fail\n\
             lava-test-case swap.c --result skip\n\
             lava-test-case shared.d --result pass\n\
             lava-test-case cost.cow --result pass\n\
             lava-test-case cost.cow.copy-on-write_per_page_MTE_VM --result pass --measurement 0.0305 --units ms\n\
             lava-test-case cost.cow.copy-on-write_tagged_untagged --result pass --measurement 1.25 --units ratio\n\
             lava-test-set stop\n\
             lava-test-case run --result fail\n"
        );
    }

    #[test]
    fn each_lane_is_a_set() {
        let lines = render(&two_lanes());
        assert_eq!(
            lines,
            "lava-test-set start emulated-6.12.95\n\
             lava-test-case tags.a --result pass\n\
             lava-test-set stop\n\
             lava-test-set start qemu-qemu-10.0.2\n\
             lava-test-case tags.a --result pass\n\
             lava-test-set stop\n"
        );
    }

    #[test]
    fn long_names_keep_their_start_and_end_under_100_characters() {
        let long = format!("migration::{}end_one", "very_long_name_".repeat(8));
        let name = case_name(&long);
        assert_eq!(name.len(), 99);
        assert!(
            name.starts_with("migration.very_long") && name.ends_with("._end_one"),
            "{name}"
        );
    }

    #[test]
    fn each_boot_is_a_set_and_proofs_of_xfail_checks_proved_nothing() {
        let at = |boot: u32, kernel: &str, test: &str, outcome| Verdict {
            boot,
            kernel: kernel.into(),
            ..verdict(test, outcome, "why")
        };
        let proof = "fault_injection::corrupt_tag::shared::a";
        let lines = render(&RunSummary {
            verdicts: vec![
                at(1, "6.1", "shared::a", Outcome::Xfail),
                at(1, "6.1", proof, Outcome::Xfail),
                at(2, "6.12", "shared::a", Outcome::Pass),
                at(3, "6.1", "shared::a", Outcome::Xfail),
            ],
            ..RunSummary::default()
        });
        assert_eq!(
            lines,
            "lava-test-set start emulated-boot1-6.1\n\
             lava-test-case shared.a --result pass\n\
             lava-test-case fault_injection.corrupt_tag.shared.a --result skip\n\
             lava-test-set stop\n\
             lava-test-set start emulated-boot2-6.12\n\
             lava-test-case shared.a --result pass\n\
             lava-test-set stop\n\
             lava-test-set start emulated-boot3-6.1\n\
             lava-test-case shared.a --result pass\n\
             lava-test-set stop\n"
        );
    }

    #[test]
    fn measurements_are_plain_decimals() {
        assert_eq!(decimal(0.0305), "0.0305");
        assert_eq!(decimal(2500.0), "2500");
        assert_eq!(decimal(0.0), "0");
        assert_eq!(decimal(-0.0000001), "0");
    }

    #[test]
    fn names_cannot_reach_the_shell() {
        assert_eq!(case_name("a; rm -rf / #`$(x)`"), "a_rm_-rf_x");
        assert_eq!(case_name("\u{1b}[31m"), "31m");
        assert_eq!(case_name("::"), "unnamed");
        for c in case_name("<>|&'\"\n\\ é").chars() {
            assert!(c.is_ascii_alphanumeric() || "._-".contains(c), "{c:?}");
        }
    }
}
