//! JUnit XML, the format CI systems read.
//!
//! How verdicts map onto JUnit:
//! - one `<testsuite>` per lane and kernel (a run is normally one of each), carrying the run's
//!   environment as `<properties>`;
//! - one `<testcase classname="lane.kernel" name="test" time="secs">` per verdict;
//! - fail: `<failure message="reason">` with the evidence as text;
//! - skip: `<skipped message="reason"/>`;
//! - xfail: a pass with `<system-out>xfail: reason</system-out>`. An xfail is the documented
//!   behaviour of an older kernel or VMM, so it must not turn CI red, and JUnit has no outcome
//!   for it; the reason stays visible next to the test;
//! - a run that ended early ([`RunSummary::error`]) adds a testcase named `run` with an `<error>`,
//!   so a run whose guest died before its checks reported never looks green.

use std::fmt::Write as _;

use crate::model::{Environment, Outcome, Verdict};
use crate::summary::RunSummary;

/// The JUnit document of a run.
pub fn render(summary: &RunSummary) -> String {
    let suites = group_by_lane_and_kernel(summary);
    let tally = summary.tally();
    let errors = usize::from(summary.error.is_some());

    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        r#"<testsuites name="mte" tests="{}" failures="{}" errors="{errors}" skipped="{}" time="{}">"#,
        tally.total() + errors,
        tally.fail,
        tally.skip,
        seconds(summary.wall_ms),
    );
    for suite in &suites {
        write_suite(&mut xml, summary, suite);
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The verdicts of one lane and kernel; `run_error` is set on the suite that reports the run's
/// early end.
struct Suite<'a> {
    name: String,
    verdicts: Vec<&'a Verdict>,
    run_error: Option<&'a str>,
}

/// Suites in the order their first verdict arrived.
fn group_by_lane_and_kernel(summary: &RunSummary) -> Vec<Suite<'_>> {
    let mut suites: Vec<Suite> = Vec::new();
    for verdict in &summary.verdicts {
        let name = suite_name(verdict.lane.name(), &verdict.kernel);
        match suites.iter_mut().find(|s| s.name == name) {
            Some(suite) => suite.verdicts.push(verdict),
            None => suites.push(Suite {
                name,
                verdicts: vec![verdict],
                run_error: None,
            }),
        }
    }
    if let Some(error) = &summary.error {
        // A run of several lanes names the lane that ended early ("qemu lane: ...").
        let env = summary
            .environments
            .iter()
            .find(|env| error.starts_with(&format!("{} lane: ", env.lane)))
            .or(summary.environments.first());
        let name = env.map_or_else(
            || suite_name("", ""),
            |env| suite_name(env.lane.name(), &env.kernel_release),
        );
        match suites.iter_mut().find(|s| s.name == name) {
            Some(suite) => suite.run_error = Some(error),
            None => suites.push(Suite {
                name,
                verdicts: vec![],
                run_error: Some(error),
            }),
        }
    }
    suites
}

fn suite_name(lane: &str, kernel: &str) -> String {
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s.to_string()
        }
    };
    format!("{}.{}", or_unknown(lane), or_unknown(kernel))
}

fn write_suite(xml: &mut String, summary: &RunSummary, suite: &Suite) {
    let count = |outcome| {
        suite
            .verdicts
            .iter()
            .filter(|v| v.outcome == outcome)
            .count()
    };
    let total_ms: f64 = suite.verdicts.iter().map(|v| v.duration_ms).sum();
    let _ = writeln!(
        xml,
        r#"  <testsuite name="{}" tests="{}" failures="{}" errors="{}" skipped="{}" time="{}">"#,
        attr(&suite.name),
        suite.verdicts.len() + usize::from(suite.run_error.is_some()),
        count(Outcome::Fail),
        usize::from(suite.run_error.is_some()),
        count(Outcome::Skip),
        seconds(total_ms),
    );
    let lane = suite.verdicts.first().map(|v| v.lane);
    if let Some(env) = summary
        .environments
        .iter()
        .find(|env| Some(env.lane) == lane)
        .or(summary.environments.first())
    {
        write_properties(xml, env);
    }
    let classname = attr(&suite.name);
    for v in &suite.verdicts {
        let open = format!(
            r#"    <testcase classname="{classname}" name="{}" time="{}""#,
            attr(&v.test),
            seconds(v.duration_ms)
        );
        match v.outcome {
            Outcome::Pass => {
                let _ = writeln!(xml, "{open}/>");
            }
            Outcome::Fail => {
                let _ = writeln!(xml, "{open}>");
                let _ = writeln!(
                    xml,
                    r#"      <failure message="{}">{}</failure>"#,
                    attr(&v.reason),
                    text(&failure_text(v))
                );
                xml.push_str("    </testcase>\n");
            }
            Outcome::Skip => {
                let _ = writeln!(xml, "{open}>");
                let _ = writeln!(xml, r#"      <skipped message="{}"/>"#, attr(&v.reason));
                xml.push_str("    </testcase>\n");
            }
            Outcome::Xfail => {
                let _ = writeln!(xml, "{open}>");
                let _ = writeln!(
                    xml,
                    "      <system-out>{}</system-out>",
                    text(&format!("xfail: {}", v.reason))
                );
                xml.push_str("    </testcase>\n");
            }
        }
    }
    if let Some(error) = suite.run_error {
        let _ = writeln!(
            xml,
            r#"    <testcase classname="{classname}" name="run" time="{}">"#,
            seconds(summary.wall_ms)
        );
        let _ = writeln!(
            xml,
            r#"      <error message="{}">{}</error>"#,
            attr(error),
            text(error)
        );
        xml.push_str("    </testcase>\n");
    }
    xml.push_str("  </testsuite>\n");
}

/// The lane's environment, so a CI page shows which kernel and VMM a result belongs to.
fn write_properties(xml: &mut String, env: &Environment) {
    let mut properties = vec![
        ("lane".to_string(), env.lane.name()),
        ("kernel_release".to_string(), env.kernel_release.as_str()),
        ("kernel_version".to_string(), env.kernel_version.as_str()),
        ("machine".to_string(), env.machine.as_str()),
        ("runner_version".to_string(), env.runner_version.as_str()),
    ];
    properties.extend(
        env.host
            .iter()
            .map(|f| (format!("host.{}", f.name), f.value.as_str())),
    );
    properties.extend(
        env.features
            .iter()
            .map(|f| (format!("feature.{}", f.name), f.value.as_str())),
    );
    xml.push_str("    <properties>\n");
    for (name, value) in properties {
        let _ = writeln!(
            xml,
            r#"      <property name="{}" value="{}"/>"#,
            attr(&name),
            attr(value)
        );
    }
    xml.push_str("    </properties>\n");
}

/// The reason, then each piece of evidence as text.
fn failure_text(verdict: &Verdict) -> String {
    let mut body = verdict.reason.clone();
    for evidence in &verdict.detail {
        let _ = write!(body, "\n\n{evidence}");
    }
    body
}

/// Milliseconds as JUnit's seconds; a duration that is not a sane number reads as zero.
fn seconds(ms: f64) -> String {
    let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
    format!("{:.3}", ms / 1000.0)
}

/// Escape character data.
fn text(s: &str) -> String {
    escape(s, false)
}

/// Escape an attribute value (always written between double quotes).
fn attr(s: &str) -> String {
    escape(s, true)
}

/// Escape markup, and replace what XML 1.0 cannot hold at all (control characters other than tab,
/// newline and carriage return; U+FFFE and U+FFFF) with U+FFFD: guest consoles and kernels print
/// such bytes, and one of them would make the whole file unreadable. Inside attributes, tab and
/// line breaks become character references, which parsers would otherwise fold into spaces.
fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            // Always escaped, so `]]>` never appears in character data.
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            '\t' | '\n' if attribute => {
                let _ = write!(out, "&#{};", c as u32);
            }
            '\t' | '\n' => out.push(c),
            // A raw carriage return is turned into a newline by parsers, in text as in attributes.
            '\r' => out.push_str("&#13;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lane;
    use crate::model::{Evidence, Feature};

    fn verdict(test: &str, outcome: Outcome, reason: &str) -> Verdict {
        Verdict {
            duration_ms: 1500.0,
            ..crate::fixtures::verdict(test, outcome, reason)
        }
    }

    fn summary(verdicts: Vec<Verdict>) -> RunSummary {
        RunSummary {
            benchmarks: Vec::new(),
            environments: vec![Environment {
                lane: Lane::Emulated,
                kernel_release: "6.12.95".into(),
                host: vec![Feature::new("qemu", "9.2.0")],
                ..Environment::default()
            }],
            verdicts,
            wall_ms: 4000.0,
            error: None,
        }
    }

    /// A small well-formedness check: balanced tags, quoted attributes without `<`, `&` only as
    /// an entity, no raw `>` or illegal character in text, a single root.
    fn assert_well_formed(xml: &str) {
        let body = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .expect("prolog");
        let check_chars = |s: &str, what: &str| {
            for c in s.chars() {
                let legal = matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
                    || c >= '\u{10000}';
                assert!(legal, "illegal character {c:?} in {what}: {s:?}");
            }
            let mut rest = s;
            while let Some(at) = rest.find('&') {
                rest = &rest[at + 1..];
                let end = rest
                    .find(';')
                    .unwrap_or_else(|| panic!("bare & in {what}: {s:?}"));
                let entity = &rest[..end];
                let known = ["amp", "lt", "gt", "quot", "apos"].contains(&entity)
                    || entity
                        .strip_prefix('#')
                        .is_some_and(|n| n.parse::<u32>().is_ok());
                assert!(known, "unknown entity &{entity}; in {what}");
            }
        };
        let mut open: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = body;
        while !rest.is_empty() {
            let lt = rest.find('<').unwrap_or(rest.len());
            let text = &rest[..lt];
            assert!(!text.contains('>'), "raw > in text: {text:?}");
            check_chars(text, "text");
            if !open.is_empty() || !text.trim().is_empty() {
                assert!(!open.is_empty(), "text outside the root: {text:?}");
            }
            rest = &rest[lt..];
            if rest.is_empty() {
                break;
            }
            let gt = rest.find('>').expect("unclosed tag");
            let tag = &rest[1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name), "mismatched closing tag");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, mut attrs) = tag.split_once(' ').unwrap_or((tag, ""));
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "tag name {name:?}"
            );
            while !attrs.trim().is_empty() {
                let (key, after) = attrs
                    .trim_start()
                    .split_once("=\"")
                    .expect("attribute without a quoted value");
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "attribute name {key:?}"
                );
                let end = after.find('"').expect("unterminated attribute");
                let value = &after[..end];
                assert!(!value.contains('<'), "raw < in attribute: {value:?}");
                check_chars(value, "attribute");
                attrs = &after[end + 1..];
            }
            if open.is_empty() {
                roots += 1;
            }
            if !self_closing {
                open.push(name);
            }
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
        assert_eq!(roots, 1, "one root element");
    }

    #[test]
    fn counts_add_up_per_suite_and_overall() {
        let mut other_kernel = verdict("tags::b", Outcome::Fail, "differs");
        other_kernel.kernel = "6.1.0".into();
        let xml = render(&summary(vec![
            verdict("tags::a", Outcome::Pass, "agree"),
            verdict("cow::a", Outcome::Fail, "child lost tags"),
            verdict("swap::a", Outcome::Skip, "no swap"),
            verdict("shared::a", Outcome::Xfail, "refused before 6.2"),
            other_kernel,
        ]));
        assert_well_formed(&xml);
        assert!(xml.contains(r#"<testsuites name="mte" tests="5" failures="2" errors="0" skipped="1" time="4.000">"#), "{xml}");
        assert!(xml.contains(r#"<testsuite name="emulated.6.12.95" tests="4" failures="1" errors="0" skipped="1" time="6.000">"#), "{xml}");
        assert!(
            xml.contains(
                r#"<testsuite name="emulated.6.1.0" tests="1" failures="1" errors="0" skipped="0""#
            ),
            "{xml}"
        );
        assert_eq!(xml.matches("<testcase ").count(), 5);
        assert!(
            xml.contains(r#"<testcase classname="emulated.6.12.95" name="tags::a" time="1.500"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure message="child lost tags">child lost tags</failure>"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<skipped message="no swap"/>"#), "{xml}");
        assert!(
            xml.contains("<system-out>xfail: refused before 6.2</system-out>"),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="host.qemu" value="9.2.0"/>"#),
            "{xml}"
        );
    }

    #[test]
    fn a_run_that_ended_early_is_an_error_even_without_verdicts() {
        let mut run = summary(vec![]);
        run.error = Some("QEMU exited early: status 1".into());
        let xml = render(&run);
        assert_well_formed(&xml);
        assert!(
            xml.contains(r#"tests="1" failures="0" errors="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase classname="emulated.6.12.95" name="run" time="4.000">"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<error message="QEMU exited early: status 1">"#),
            "{xml}"
        );
    }

    #[test]
    fn evidence_is_the_failure_text() {
        let mut v = verdict("fault::sync", Outcome::Fail, "no fault");
        v.detail = vec![Evidence::Fault {
            esr: 0x9200_0011,
            far: 0x0f00_0000_4000_0000,
            elr: 0x4008_0000,
            decoded: "tag check".into(),
        }];
        let xml = render(&summary(vec![v]));
        assert!(xml.contains("no fault\n\nfault: ESR 0x92000011 FAR 0x0f00000040000000 ELR 0x0000000040080000: tag check</failure>"), "{xml}");
    }

    #[test]
    fn hostile_strings_stay_well_formed() {
        let hostile =
            "<script>alert(\"x\")</script> ]]> it's & \u{1b}[31m red \0 nul\r\n\ttab \u{ffff}";
        let mut fail = verdict(hostile, Outcome::Fail, hostile);
        fail.kernel = hostile.into();
        fail.detail = vec![
            Evidence::Note {
                text: hostile.into(),
            },
            Evidence::TagMaps {
                expected_from: hostile.into(),
                observed_from: hostile.into(),
                ipa: 0,
                expected: "0<".into(),
                observed: "0&".into(),
                mismatches: vec![1],
            },
        ];
        let mut run = summary(vec![
            fail,
            verdict("s", Outcome::Skip, hostile),
            verdict("x", Outcome::Xfail, hostile),
        ]);
        run.environments[0]
            .host
            .push(Feature::new(hostile, hostile));
        run.error = Some(hostile.into());
        let xml = render(&run);
        assert_well_formed(&xml);
        assert!(!xml.contains("<script>") && !xml.contains("]]>"), "{xml}");
        assert!(xml.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; ]]&gt; it&apos;s &amp; \u{fffd}[31m red \u{fffd} nul&#13;&#10;&#9;tab \u{fffd}"), "{xml}");
        assert!(xml.contains("&lt;script&gt;alert(\"x\")&lt;/script&gt; ]]&gt; it's &amp; \u{fffd}[31m red \u{fffd} nul&#13;\n\ttab \u{fffd}"), "{xml}");
    }

    #[test]
    fn nonsense_durations_read_as_zero() {
        assert_eq!(seconds(f64::NAN), "0.000");
        assert_eq!(seconds(-5.0), "0.000");
        assert_eq!(seconds(12.0), "0.012");
    }
}
