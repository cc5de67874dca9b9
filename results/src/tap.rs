//! TAP version 13, as kvm-unit-tests and kselftest print it, for labs whose tooling reads TAP.
//!
//! - pass: `ok N - name`;
//! - fail: `not ok N - name`, with the reason and the evidence in a YAML block below it;
//! - skip: `ok N - name # SKIP reason`;
//! - xfail: `not ok N - name # TODO reason`: TAP's expected failure, which does not fail the run;
//! - a planned check that never reported: `not ok N - name # missing`, with why in a YAML block;
//! - a run that ended early adds `not ok N - run` with the error, as JUnit's `<error>` does.
//!
//! A name is the check's name; where the run has several columns, `lane kernel: check`, and
//! `lane boot N kernel: check` where a lane booted several times (each name once a run).
//! Text from a guest or a kernel can break no line: `#` in a name is escaped, line breaks and
//! control characters in a name or a directive become spaces, and the YAML blocks hold each
//! text as one double-quoted line (see [`quoted`] for why not literal blocks).
//!
//! Hand-written: the Rust TAP producer (testanything) writes diagnostics as `#` comment lines,
//! not TAP 13's YAML blocks, and the escaping here is this module's point.

use std::fmt::Write as _;

use crate::boot::BootKey;
use crate::model::Outcome;
use crate::summary::RunSummary;
use crate::text::{one_line, printable};

/// The TAP document of a run.
pub fn render(summary: &RunSummary) -> String {
    let columns = summary.column_names();
    let name = |key: BootKey, test: &str| match columns.len() {
        0 | 1 => test.to_string(),
        _ => {
            let column = columns.get(&key).cloned().unwrap_or_default();
            format!("{}: {test}", column.replace(" · ", " "))
        }
    };
    let planned =
        summary.verdicts.len() + summary.not_run.len() + usize::from(summary.error.is_some());
    let mut tap = format!("TAP version 13\n1..{planned}\n");
    for (i, v) in summary.verdicts.iter().enumerate() {
        let n = i + 1;
        let name = description(&name(BootKey::of(v), &v.test));
        let reason = one_line(&v.reason);
        match v.counted_outcome() {
            Outcome::Pass => {
                let _ = writeln!(tap, "ok {n} - {name}");
            }
            Outcome::Skip => {
                let _ = writeln!(tap, "ok {n} - {name} # SKIP {reason}");
            }
            Outcome::Xfail => {
                let _ = writeln!(tap, "not ok {n} - {name} # TODO {reason}");
            }
            Outcome::Fail => {
                let _ = writeln!(tap, "not ok {n} - {name}");
                let evidence: Vec<String> = v.detail.iter().map(ToString::to_string).collect();
                yaml_block(&mut tap, &v.reason, &evidence.join("\n\n"));
            }
        }
    }
    for (i, missing) in summary.not_run.iter().enumerate() {
        let n = summary.verdicts.len() + i + 1;
        let name = description(&name(missing.key(), &missing.test));
        let _ = writeln!(tap, "not ok {n} - {name} # missing");
        yaml_block(&mut tap, missing.reason(), "");
    }
    if let Some(error) = &summary.error {
        let _ = writeln!(tap, "not ok {planned} - run");
        yaml_block(&mut tap, error, "");
    }
    tap
}

/// A TAP 13 diagnostic block: the reason and the evidence, each a double-quoted YAML scalar
/// of at most [`SCALAR_CHARS`] characters.
fn yaml_block(tap: &mut String, reason: &str, evidence: &str) {
    tap.push_str("  ---\n");
    let _ = writeln!(tap, "  message: {}", quoted(&at_most(reason, SCALAR_CHARS)));
    if !evidence.is_empty() {
        let _ = writeln!(
            tap,
            "  evidence: {}",
            quoted(&at_most(evidence, SCALAR_CHARS))
        );
    }
    tap.push_str("  ...\n");
}

/// The longest scalar a diagnostic block holds: TAP::Parser's YAML reader gives up on a quoted
/// scalar of about 100 000 characters (its regex recursion limit); results.jsonl keeps all.
const SCALAR_CHARS: usize = 30_000;

/// `text`, or its first `limit` characters and how many were cut.
fn at_most(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(limit) {
        None => text.into(),
        Some((end, _)) => format!(
            "{} [cut: {} more characters; results.jsonl keeps them all]",
            &text[..end],
            text[end..].chars().count()
        )
        .into(),
    }
}

/// `text` as a YAML double-quoted scalar on one line, in the subset of YAML that both
/// TAP::Parser (perl's `prove`) and tap.py read. Not a literal block (`|-`): TAP::Parser knows
/// only `|` and `>`, takes a block's indentation from its first line (so a line that starts
/// with spaces breaks it), and tap.py ends a block at any indented line that starts with `...`.
/// The text is [`printable`] first; the escapes are those both read: `\\`, `\n`, and `\x22`
/// for `"` (TAP::Parser's `\"` is a plain substitution that a preceding `\\` confuses).
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in printable(text).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\x22"),
            // Not control characters, yet not allowed in a YAML stream.
            '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A test description: one line, `#` escaped so it never starts a directive.
fn description(name: &str) -> String {
    one_line(name).replace('\\', "\\\\").replace('#', "\\#")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_scalar_is_cut_and_says_so() {
        assert_eq!(at_most("abc", 3), "abc");
        assert_eq!(
            at_most("abcdé", 3),
            "abc [cut: 2 more characters; results.jsonl keeps them all]"
        );
    }
    use crate::fixtures::{two_lanes, verdict};
    use crate::model::{Evidence, Verdict};

    #[test]
    fn outcomes_read_as_tap_13() {
        let mut fail = verdict("tags::b", Outcome::Fail, "tags differ");
        fail.detail = vec![Evidence::Note {
            text: "first\nsecond".into(),
        }];
        let tap = render(&RunSummary {
            benchmarks: Vec::new(),
            verdicts: vec![
                verdict("tags::a", Outcome::Pass, "agree"),
                fail,
                verdict("swap::c", Outcome::Skip, "no swap"),
                verdict("shared::d", Outcome::Xfail, "refused before 6.2"),
            ],
            ..RunSummary::default()
        });
        assert_eq!(
            tap,
            "TAP version 13\n1..4\nok 1 - tags::a\nnot ok 2 - tags::b\n  ---\n  message: \"tags \
             differ\"\n  evidence: \"first\\nsecond\"\n  ...\nok 3 - swap::c # SKIP no \
             swap\nnot ok 4 - shared::d # TODO refused before 6.2\n"
        );
    }

    #[test]
    fn several_lanes_name_theirs_and_an_early_end_is_a_failure() {
        let tap = render(&RunSummary {
            error: Some("qemu lane: the runner gave up".into()),
            ..two_lanes()
        });
        let lines: Vec<&str> = tap.lines().collect();
        assert_eq!(lines[1], "1..3");
        assert_eq!(lines[2], "ok 1 - emulated 6.12.95: tags::a");
        assert_eq!(lines[3], "ok 2 - qemu qemu-10.0.2: tags::a");
        assert_eq!(lines[4], "not ok 3 - run");
        assert_eq!(lines[6], "  message: \"qemu lane: the runner gave up\"");
    }

    #[test]
    fn a_kernel_booted_twice_gives_each_boot_its_own_names() {
        let at = |boot: u32, kernel: &str, outcome| Verdict {
            boot,
            kernel: kernel.into(),
            ..verdict("migration::a", outcome, "why")
        };
        let tap = render(&RunSummary {
            verdicts: vec![
                at(1, "6.1", Outcome::Pass),
                at(2, "6.12", Outcome::Pass),
                at(3, "6.1", Outcome::Fail),
            ],
            ..RunSummary::default()
        });
        let lines: Vec<&str> = tap.lines().collect();
        assert_eq!(lines[2], "ok 1 - emulated boot 1 6.1: migration::a");
        assert_eq!(lines[3], "ok 2 - emulated boot 2 6.12: migration::a");
        assert_eq!(lines[4], "not ok 3 - emulated boot 3 6.1: migration::a");
    }

    #[test]
    fn a_proof_of_an_xfail_check_is_a_skip() {
        let proof = verdict(
            "fault_injection::corrupt_tag::shared::a",
            Outcome::Xfail,
            "shared::a was xfail: refused before 6.2",
        );
        let tap = render(&RunSummary {
            verdicts: vec![proof],
            ..RunSummary::default()
        });
        assert!(
            tap.ends_with("ok 1 - fault_injection::corrupt_tag::shared::a # SKIP shared::a was xfail: refused before 6.2\n"),
            "{tap}"
        );
    }

    #[test]
    fn checks_that_never_ran_are_missing() {
        let tap = render(&RunSummary {
            verdicts: vec![verdict("tags::a", Outcome::Pass, "ok")],
            not_run: vec![crate::model::NotRun {
                test: "swap::b".into(),
                lane: crate::model::Lane::Emulated,
                boot: 1,
                kernel: "6.12.95".into(),
                was_running: true,
            }],
            error: Some("the machine stopped".into()),
            ..RunSummary::default()
        });
        let lines: Vec<&str> = tap.lines().collect();
        assert_eq!(lines[1], "1..3");
        assert_eq!(lines[3], "not ok 2 - swap::b # missing");
        assert_eq!(
            lines[5],
            "  message: \"did not finish: it was running when its machine stopped\""
        );
        assert_eq!(lines[7], "not ok 3 - run");
    }

    #[test]
    fn hostile_text_cannot_forge_lines() {
        let hostile = "x # SKIP\nok 99 - forged\r\u{1b}[31m";
        let mut fail = verdict(hostile, Outcome::Fail, hostile);
        fail.detail = vec![Evidence::Note {
            text: "  ...\nok 98 - forged".into(),
        }];
        let tap = render(&RunSummary {
            benchmarks: Vec::new(),
            verdicts: vec![fail, verdict(hostile, Outcome::Skip, hostile)],
            ..RunSummary::default()
        });
        for line in tap.lines() {
            assert!(!line.starts_with("ok 9"), "forged: {line:?}\n{tap}");
        }
        assert!(
            tap.contains("not ok 1 - x \\# SKIP ok 99 - forged \u{fffd}[31m\n"),
            "{tap}"
        );
        // The evidence's own "..." stays inside its one quoted line.
        assert!(
            tap.contains("\n  evidence: \"  ...\\nok 98 - forged\"\n  ...\n"),
            "{tap}"
        );
        assert_eq!(tap.matches("\n  ...\n").count(), 1, "{tap}");
    }

    #[test]
    fn diagnostics_are_one_quoted_line_each() {
        assert_eq!(quoted("plain"), "\"plain\"");
        assert_eq!(
            quoted("a \"b\" \\x22\n  E = c: d"),
            "\"a \\x22b\\x22 \\\\x22\\n  E = c: d\""
        );
        assert_eq!(
            quoted("\u{1b}[31m\ttab \u{ffff}"),
            "\"\u{fffd}[31m tab \u{fffd}\""
        );
    }
}
