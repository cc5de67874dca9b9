//! JUnit XML, the format CI systems read, written by quick-junit.
//!
//! How verdicts map onto JUnit:
//! - one `<testsuite>` per column, a boot of a lane (a run is normally one of each lane),
//!   named `lane.kernel`, or `lane.bootN.kernel` where the lane booted several times, and
//!   carrying that boot's environment as `<properties>`;
//! - one `<testcase classname="SUITE" name="test" time="secs">` per verdict;
//! - fail: `<failure message="reason">` with the evidence as text;
//! - skip: `<skipped message="reason"/>`;
//! - xfail: a pass with `<system-out>xfail: reason</system-out>`. An xfail is the documented
//!   behaviour of an older kernel or VMM, so it must not turn CI red, and JUnit has no outcome
//!   for it; the reason stays visible next to the test;
//! - a planned check that never reported: `<error type="not run" message="why">`;
//! - a run that ended early ([`RunSummary::error`]) adds a testcase named `run` with an `<error>`,
//!   so a run whose guest died before its checks reported never looks green.

use std::fmt::Write as _;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::model::{Environment, Lane, NotRun, Outcome, Verdict};
use crate::summary::RunSummary;

/// The JUnit document of a run.
pub fn render(summary: &RunSummary) -> String {
    let mut report = Report::new("mte");
    report.set_time(duration(summary.wall_ms));
    for suite in suites(summary) {
        report.add_test_suite(test_suite(summary, &suite));
    }
    report
        .to_string()
        .expect("a report held in memory always serialises")
}

/// The verdicts of one column; `run_error` is set on the suite that reports the run's early
/// end.
struct Suite<'a> {
    name: String,
    /// The lane and boot of its verdicts; none for a suite that holds the run's error only.
    boot: Option<(Lane, u32)>,
    verdicts: Vec<&'a Verdict>,
    not_run: Vec<&'a NotRun>,
    run_error: Option<&'a str>,
}

/// A suite a column, in the order their first verdict arrived; the run's error goes to the
/// suite of the boot it names.
fn suites(summary: &RunSummary) -> Vec<Suite<'_>> {
    let columns = summary.columns();
    let several = |lane: Lane| columns.iter().filter(|c| c.lane == lane).count() > 1;
    let name_of = |lane: Lane, boot: u32, kernel: &str| {
        suite_name(lane.name(), several(lane).then_some(boot), kernel)
    };
    let mut suites: Vec<Suite> = (columns.iter())
        .map(|column| Suite {
            name: name_of(column.lane, column.boot, column.kernel),
            boot: Some((column.lane, column.boot)),
            verdicts: column.verdicts.clone(),
            not_run: column.not_run.clone(),
            run_error: None,
        })
        .collect();
    if let Some(error) = &summary.error {
        let env = summary
            .environments
            .iter()
            .find(|env| names_boot(error, env))
            .or(summary.environments.first());
        let name = env.map_or_else(
            || suite_name("", None, ""),
            |env| name_of(env.lane, env.boot, &env.kernel_release),
        );
        match suites.iter_mut().find(|s| s.name == name) {
            Some(suite) => suite.run_error = Some(error),
            None => suites.push(Suite {
                name,
                boot: None,
                verdicts: vec![],
                not_run: vec![],
                run_error: Some(error),
            }),
        }
    }
    suites
}

/// Whether a run's error names the boot of `env`: a run of several boots names each error by
/// its boot's label, `qemu lane: ...` or `emulated lane, boot 3 (6.1): ...`.
fn names_boot(error: &str, env: &Environment) -> bool {
    error.starts_with(&format!("{} lane: ", env.lane))
        || error.starts_with(&format!("{} lane, boot {} ", env.lane, env.boot))
}

/// `lane.kernel`, or `lane.bootN.kernel` where the lane booted several times.
fn suite_name(lane: &str, boot: Option<u32>, kernel: &str) -> String {
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s.to_string()
        }
    };
    match boot {
        Some(boot) => format!("{}.boot{boot}.{}", or_unknown(lane), or_unknown(kernel)),
        None => format!("{}.{}", or_unknown(lane), or_unknown(kernel)),
    }
}

fn test_suite(summary: &RunSummary, suite: &Suite) -> TestSuite {
    let mut out = TestSuite::new(xml_text(&suite.name));
    out.set_time(duration(suite.verdicts.iter().map(|v| v.duration_ms).sum()));
    // The boot's own environment: another boot of the lane ran another kernel.
    let of_boot = |env: &&Environment| suite.boot == Some((env.lane, env.boot));
    if let Some(env) = summary
        .environments
        .iter()
        .find(of_boot)
        .or(summary.environments.first())
    {
        out.add_properties(properties(env));
    }
    for verdict in &suite.verdicts {
        out.add_test_case(test_case(&suite.name, verdict));
    }
    for missing in &suite.not_run {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_message(missing.reason()).set_type("not run");
        let mut case = TestCase::new(xml_text(&missing.test), status);
        case.set_classname(xml_text(&suite.name));
        out.add_test_case(case);
    }
    if let Some(error) = suite.run_error {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status
            .set_message(xml_text(error))
            .set_description(xml_text(error));
        let mut case = TestCase::new("run", status);
        case.set_classname(xml_text(&suite.name))
            .set_time(duration(summary.wall_ms));
        out.add_test_case(case);
    }
    out
}

fn test_case(classname: &str, v: &Verdict) -> TestCase {
    let status = match v.counted_outcome() {
        Outcome::Pass | Outcome::Xfail => TestCaseStatus::success(),
        Outcome::Fail => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status
                .set_message(xml_text(&v.reason))
                .set_description(xml_text(&failure_text(v)));
            status
        }
        Outcome::Skip => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(xml_text(&v.reason));
            status
        }
    };
    let mut case = TestCase::new(xml_text(&v.test), status);
    case.set_classname(xml_text(classname))
        .set_time(duration(v.duration_ms));
    if v.counted_outcome() == Outcome::Xfail {
        case.set_system_out(xml_text(&format!("xfail: {}", v.reason)));
    }
    case
}

/// The lane's environment, so a CI page shows which kernel and VMM a result belongs to.
fn properties(env: &Environment) -> Vec<Property> {
    let boot = env.boot.to_string();
    let fixed = [
        ("lane", env.lane.name()),
        ("boot", &boot),
        ("kernel_release", &env.kernel_release),
        ("kernel_version", &env.kernel_version),
        ("machine", &env.machine),
        ("runner_version", &env.runner_version),
    ]
    .map(|(name, value)| (name.to_string(), value));
    let host = env
        .host
        .iter()
        .map(|f| (format!("host.{}", f.name), &*f.value));
    let features = (env.features.iter()).map(|f| (format!("feature.{}", f.name), &*f.value));
    fixed
        .into_iter()
        .chain(host)
        .chain(features)
        .map(|(name, value)| Property::new(xml_text(&name), xml_text(value)))
        .collect()
}

/// The reason, then each piece of evidence as text.
fn failure_text(verdict: &Verdict) -> String {
    let mut body = verdict.reason.clone();
    for evidence in &verdict.detail {
        let _ = write!(body, "\n\n{evidence}");
    }
    body
}

/// Milliseconds as a duration; one that is not a sane number reads as zero.
fn duration(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default()
}

/// Text as quick-junit keeps it whole. Guest consoles and kernels print bytes XML 1.0 cannot
/// hold (control characters, U+FFFE, U+FFFF): quick-junit drops the controls, tab and carriage
/// return included, silently, and lets U+FFFE and U+FFFF through, which would make the whole
/// file unreadable. Here each becomes U+FFFD, so the text shows where something was, and a tab
/// becomes a space.
fn xml_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' => c,
            '\t' => ' ',
            '\u{0}'..='\u{1f}' | '\u{7f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Evidence, Feature};

    fn verdict(test: &str, outcome: Outcome, reason: &str) -> Verdict {
        Verdict {
            duration_ms: 1500.0,
            ..crate::fixtures::verdict(test, outcome, reason)
        }
    }

    fn summary(verdicts: Vec<Verdict>) -> RunSummary {
        RunSummary {
            wall_ms: 4000.0,
            ..crate::fixtures::summary(verdicts)
        }
    }

    /// Parse the document with a conforming XML 1.0 parser: one root, balanced tags, legal
    /// characters and entities only.
    fn parse(xml: &str) -> roxmltree::Document<'_> {
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
        roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("not well formed: {e}\n{xml}"))
    }

    /// The elements named `tag`, in document order.
    fn elements<'a>(doc: &'a roxmltree::Document, tag: &str) -> Vec<roxmltree::Node<'a, 'a>> {
        doc.descendants().filter(|n| n.has_tag_name(tag)).collect()
    }

    /// An element's attributes as a reader sees them: `name=value`, sorted by name.
    fn attributes(node: roxmltree::Node) -> String {
        let mut all: Vec<String> = node
            .attributes()
            .map(|a| format!("{}={}", a.name(), a.value()))
            .collect();
        all.sort();
        all.join(" ")
    }

    #[test]
    fn counts_add_up_per_suite_and_overall() {
        let mut other_kernel = verdict("tags::b", Outcome::Fail, "differs");
        other_kernel.kernel = "6.1.0".into();
        other_kernel.boot = 2;
        let xml = render(&summary(vec![
            verdict("tags::a", Outcome::Pass, "agree"),
            verdict("cow::a", Outcome::Fail, "child lost tags"),
            verdict("swap::a", Outcome::Skip, "no swap"),
            verdict("shared::a", Outcome::Xfail, "refused before 6.2"),
            other_kernel,
        ]));
        let doc = parse(&xml);
        assert_eq!(
            attributes(doc.root_element()),
            "errors=0 failures=2 name=mte skipped=1 tests=5 time=4.000"
        );
        let suites: Vec<String> = elements(&doc, "testsuite")
            .into_iter()
            .map(attributes)
            .collect();
        assert_eq!(
            suites,
            [
                "errors=0 failures=1 name=emulated.boot1.6.12.95 skipped=1 tests=4 time=6.000",
                "errors=0 failures=1 name=emulated.boot2.6.1.0 skipped=0 tests=1 time=1.500"
            ]
        );
        let cases = elements(&doc, "testcase");
        assert_eq!(cases.len(), 5);
        assert_eq!(
            attributes(cases[0]),
            "classname=emulated.boot1.6.12.95 name=tags::a time=1.500"
        );
        assert!(!cases[0].has_children());
        let failure = elements(&doc, "failure")[0];
        assert_eq!(attributes(failure), "message=child lost tags");
        assert_eq!(failure.text(), Some("child lost tags"));
        assert_eq!(attributes(elements(&doc, "skipped")[0]), "message=no swap");
        assert_eq!(
            elements(&doc, "system-out")[0].text(),
            Some("xfail: refused before 6.2")
        );
        let host = elements(&doc, "property")
            .into_iter()
            .find(|p| p.attribute("name") == Some("host.qemu"));
        assert_eq!(host.and_then(|p| p.attribute("value")), Some("9.2.0"));
    }

    #[test]
    fn a_kernel_booted_twice_is_two_suites_with_their_own_properties() {
        let at = |boot: u32, kernel: &str| Verdict {
            boot,
            kernel: kernel.into(),
            ..verdict("migration::a", Outcome::Pass, "ok")
        };
        let mut run = summary(vec![at(1, "6.1"), at(2, "6.12"), at(3, "6.1")]);
        run.environments = [
            (1, "6.1", "#1 first"),
            (2, "6.12", "#2"),
            (3, "6.1", "#1 second"),
        ]
        .map(|(boot, kernel, version)| Environment {
            boot,
            kernel_release: kernel.into(),
            kernel_version: version.into(),
            ..crate::fixtures::environment()
        })
        .to_vec();
        run.error = Some("emulated lane, boot 3 (6.1): the machine stopped".into());
        let xml = render(&run);
        let doc = parse(&xml);
        let suites = elements(&doc, "testsuite");
        let names: Vec<&str> = suites
            .iter()
            .map(|s| s.attribute("name").unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "emulated.boot1.6.1",
                "emulated.boot2.6.12",
                "emulated.boot3.6.1"
            ]
        );
        let version = |suite: roxmltree::Node| {
            suite
                .descendants()
                .find(|p| p.attribute("name") == Some("kernel_version"))
                .and_then(|p| p.attribute("value"))
                .map(String::from)
        };
        assert_eq!(version(suites[0]).as_deref(), Some("#1 first"));
        assert_eq!(version(suites[2]).as_deref(), Some("#1 second"));
        // The run's error is reported with the boot that ended early.
        assert_eq!(attributes(suites[2]).split(' ').next(), Some("errors=1"));
        let mut cases: Vec<String> = elements(&doc, "testcase")
            .into_iter()
            .map(|c| {
                format!(
                    "{}/{}",
                    c.attribute("classname").unwrap(),
                    c.attribute("name").unwrap()
                )
            })
            .collect();
        let all = cases.len();
        cases.sort();
        cases.dedup();
        assert_eq!(cases.len(), all, "testcases repeat: {cases:?}");
    }

    #[test]
    fn a_run_that_ended_early_is_an_error_even_without_verdicts() {
        let mut run = summary(vec![]);
        run.error = Some("QEMU exited early: status 1".into());
        let xml = render(&run);
        let doc = parse(&xml);
        assert_eq!(
            attributes(elements(&doc, "testsuite")[0]),
            "errors=1 failures=0 name=emulated.6.12.95 skipped=0 tests=1 time=0.000"
        );
        assert_eq!(
            attributes(elements(&doc, "testcase")[0]),
            "classname=emulated.6.12.95 name=run time=4.000"
        );
        let error = elements(&doc, "error")[0];
        assert_eq!(attributes(error), "message=QEMU exited early: status 1");
        assert_eq!(error.text(), Some("QEMU exited early: status 1"));
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
        assert_eq!(
            elements(&parse(&xml), "failure")[0].text(),
            Some(
                "no fault\n\nfault: ESR 0x92000011 FAR 0x0f00000040000000 ELR 0x0000000040080000: \
                 tag check"
            )
        );
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
        let doc = parse(&xml);
        assert!(!xml.contains("<script>") && !xml.contains("]]>"), "{xml}");
        // Every string arrives whole, with what XML cannot hold shown as U+FFFD.
        let shown = "<script>alert(\"x\")</script> ]]> it's & \u{fffd}[31m red \u{fffd} nul";
        let failure = elements(&doc, "failure")[0];
        assert!(failure.text().unwrap().starts_with(shown), "{xml}");
        assert!(
            failure.text().unwrap().contains("nul\n tab \u{fffd}"),
            "{xml}"
        );
        for (tag, attribute) in [
            ("failure", "message"),
            ("skipped", "message"),
            ("error", "message"),
            ("testcase", "name"),
            ("testsuite", "name"),
        ] {
            let value = elements(&doc, tag)[0].attribute(attribute).unwrap();
            assert!(value.contains(shown), "{tag} {attribute}: {value:?}");
        }
        assert!(elements(&doc, "system-out")[0]
            .text()
            .unwrap()
            .starts_with(&format!("xfail: {shown}")));
    }

    #[test]
    fn nonsense_durations_read_as_zero() {
        assert_eq!(duration(f64::NAN), Duration::ZERO);
        assert_eq!(duration(-5.0), Duration::ZERO);
        assert_eq!(duration(12.0), Duration::from_millis(12));
    }
}
