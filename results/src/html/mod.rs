//! The HTML report: one self-contained static page (inline CSS and SVG, no script, no external
//! resource).
//!
//! Everything a page shows beyond the template's own text comes from a guest, a kernel or a VMM,
//! so it is rendered with autoescaping on: the template is registered under a `.html` name, which
//! is what switches escaping on. The layout work (tag-map grids and pictures, plots, hex
//! formatting, ordering) is done here in Rust; the template only walks the view built below, and
//! its pictures take numbers and escaped text only.
//!
//! The page's parts, a module each: `comparison` (with a baseline, on top), `matrix` (every
//! check by column, a boot of a lane), `verdicts` (failures first, then every verdict, with their
//! evidence and figures) and `perf` (the suite's speed, or a bench run's benchmarks).

mod comparison;
mod matrix;
mod perf;
mod verdicts;

use serde::Serialize;
use tera::{Context, Tera};

use crate::boot::BootKey;
use crate::compare::Comparison;
use crate::model::{Environment, Outcome, Tally, Verdict};
use crate::picture::TAG_CLASSES;
use crate::summary::{column_names, format_duration, RunSummary};
use comparison::ComparisonView;
use matrix::Matrix;
use perf::{bench_view, speed_view, BenchColumnView, SpeedView};
use verdicts::{FigureCard, TagMapDetail, VerdictView};

const TEMPLATE: &str = include_str!("../../templates/report.html.tera");
/// The `.html` suffix is what makes the template autoescaped.
const TEMPLATE_NAME: &str = "report.html";

/// What a report shows beyond its default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportOptions {
    /// Draw every granule of every tag map, not only those of failures.
    pub every_tag_map: bool,
}

/// The environment variable that asks for every tag map whole: `MTE_REPORT_TAG_MAPS=all`.
pub const TAG_MAPS_ENV: &str = "MTE_REPORT_TAG_MAPS";

impl ReportOptions {
    /// The options the environment asks for.
    pub fn from_env() -> Self {
        ReportOptions {
            every_tag_map: std::env::var(TAG_MAPS_ENV).is_ok_and(|v| v == "all"),
        }
    }
}

/// Render the report of a run; `title` names the run, normally its run id.
pub fn render(summary: &RunSummary, title: &str) -> tera::Result<String> {
    render_compared(summary, title, None, ReportOptions::default())
}

/// Render the report of a run compared with a baseline: the comparison comes first.
pub fn render_compared(
    summary: &RunSummary,
    title: &str,
    comparison: Option<&Comparison>,
    options: ReportOptions,
) -> tera::Result<String> {
    let mut tera = Tera::default();
    tera.autoescape_on(vec![".html"]);
    tera.set_escape_fn(escape_html);
    tera.add_raw_template(TEMPLATE_NAME, TEMPLATE)?;
    let context = Context::from_serialize(Page::new(summary, title, comparison, options))?;
    tera.render(TEMPLATE_NAME, &context)
}

#[derive(Serialize)]
struct Page<'a> {
    title: &'a str,
    comparison: Option<ComparisonView<'a>>,
    environments: &'a [Environment],
    matrix: Matrix,
    tally: Tally,
    total: usize,
    wall: String,
    error: Option<&'a str>,
    failures: Vec<VerdictView<'a>>,
    not_run: Vec<NotRunView<'a>>,
    figures: Vec<FigureCard<'a>>,
    verdicts: Vec<VerdictView<'a>>,
    tag_classes: [&'static str; 16],
    /// Whether the run made checks (a run of `bench` makes benchmarks only).
    checks: bool,
    speed: Option<SpeedView>,
    bench: Vec<BenchColumnView>,
}

impl<'a> Page<'a> {
    fn new(
        summary: &'a RunSummary,
        title: &'a str,
        comparison: Option<&'a Comparison>,
        options: ReportOptions,
    ) -> Self {
        let names = column_names(&summary.verdicts);
        let column = |v: &Verdict| names.get(&BootKey::of(v)).cloned().unwrap_or_default();
        // Only failures keep every granule of their tag maps (unless every map was asked for):
        // the maps of a verdict that did not fail are agreement, or a fault a proof injected,
        // and were most of a report's weight.
        let verdicts: Vec<VerdictView> = summary
            .verdicts
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let detail = TagMapDetail::in_list(v, options.every_tag_map);
                VerdictView::new(i, v, column(v), detail)
            })
            .collect();
        // Only the failures draw their tag maps as pictures.
        let failures = summary
            .verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| v.outcome == Outcome::Fail)
            .map(|(i, v)| VerdictView::new(i, v, column(v), TagMapDetail::Pictures))
            .collect();
        let figures = summary
            .verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| FigureCard::new(i, v, column(v)))
            .collect();
        let all_names = summary.column_names();
        let not_run = (summary.not_run.iter())
            .map(|n| NotRunView {
                test: &n.test,
                column: all_names.get(&n.key()).cloned().unwrap_or_default(),
                reason: n.reason(),
            })
            .collect();
        let tally = summary.tally();
        Page {
            title,
            comparison: comparison.map(|c| ComparisonView::new(c, &summary.verdicts)),
            environments: &summary.environments,
            matrix: Matrix::new(&summary.verdicts),
            tally,
            total: tally.total(),
            wall: format_duration(summary.wall_ms),
            error: summary.error.as_deref(),
            failures,
            not_run,
            figures,
            verdicts,
            tag_classes: TAG_CLASSES,
            checks: !summary.verdicts.is_empty() || summary.benchmarks.is_empty(),
            speed: speed_view(summary),
            bench: bench_view(&summary.benchmarks),
        }
    }
}

/// A planned check that never reported, where, and why.
#[derive(Serialize)]
struct NotRunView<'a> {
    test: &'a str,
    column: String,
    reason: &'static str,
}

/// Escape text for HTML element content and quoted attributes, and replace the control
/// characters a console may carry (escape sequences, NUL) with U+FFFD: HTML forbids them.
/// (Not tera's own escape_html, which leaves those characters in.)
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{7f}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Comparison;
    use crate::fixtures::{benchmark, summary};
    use crate::model::{Evidence, Feature, Lane, Verdict};

    fn verdict(test: &str, outcome: Outcome, reason: &str, detail: Vec<Evidence>) -> Verdict {
        Verdict {
            detail,
            ..crate::fixtures::verdict(test, outcome, reason)
        }
    }

    fn tag_maps(expected: &str, observed: &str, mismatches: Vec<usize>) -> Evidence {
        Evidence::TagMaps {
            expected_from: "guest STG".into(),
            observed_from: "host copy".into(),
            ipa: 0x4000_0000,
            expected: expected.into(),
            observed: observed.into(),
            mismatches,
        }
    }

    /// The report of one failure whose tag maps differ in granule 1.
    fn one_failure_with_tag_maps(expected: &str, observed: &str) -> String {
        let maps = tag_maps(expected, observed, vec![1]);
        let failure = verdict("tags::x", Outcome::Fail, "differs", vec![maps]);
        render(&summary(vec![failure]), "run").unwrap()
    }

    #[test]
    fn checks_that_did_not_run_are_listed_with_their_boot() {
        let mut run = summary(vec![verdict("tags::a", Outcome::Pass, "ok", vec![])]);
        run.not_run = vec![crate::model::NotRun {
            test: "swap::b".into(),
            lane: Lane::Emulated,
            boot: 1,
            kernel: "6.12.95".into(),
            was_running: true,
        }];
        let html = render(&run, "run").unwrap();
        let section = &html[html.find("<section id=\"not-run\">").unwrap()..];
        assert!(
            section.contains("1 planned check never reported"),
            "{section}"
        );
        assert!(
            section.contains(
                "<td class=\"mono\">swap::b</td><td>emulated · 6.12.95</td><td>did not finish"
            ),
            "{section}"
        );
    }

    #[test]
    fn guest_text_cannot_inject_markup() {
        let attack = "<script>alert(1)</script>";
        let mut run = summary(vec![verdict(
            attack,
            Outcome::Fail,
            attack,
            vec![
                Evidence::Note {
                    text: attack.into(),
                },
                Evidence::Values {
                    what: attack.into(),
                    expected: attack.into(),
                    observed: attack.into(),
                },
                tag_maps("0", "<", vec![0]),
            ],
        )]);
        run.verdicts[0].detail.extend([
            // A figure whose name is the attack: it lands in a plot's label.
            Evidence::Values {
                what: format!("{attack} / ratio"),
                expected: "measured".into(),
                observed: "1.5".into(),
            },
            Evidence::Values {
                what: attack.into(),
                expected: "measured".into(),
                observed: "2 ms".into(),
            },
            Evidence::Fault {
                esr: 0x9600_0011,
                far: 0,
                elr: 0,
                decoded: attack.into(),
            },
        ]);
        run.verdicts[0].kernel = attack.into();
        run.environments[0].kernel_version = attack.into();
        run.environments[0].host.push(Feature::new(attack, attack));
        run.error = Some(attack.into());
        let mut baseline = run.clone();
        baseline.verdicts[0].outcome = Outcome::Pass;
        baseline.verdicts[0].detail[3] = Evidence::Values {
            what: format!("{attack} / ratio"),
            expected: "measured".into(),
            observed: "1.0".into(),
        };
        baseline.error = None;
        let comparison =
            Comparison::of(&baseline, &run, Default::default()).named(attack, attack, attack);
        assert!(!comparison.figures.is_empty() && !comparison.changes.is_empty());
        let html =
            render_compared(&run, attack, Some(&comparison), ReportOptions::default()).unwrap();
        for part in [
            "id=\"comparison\"",
            "<svg class=\"tagmap\"",
            "<svg class=\"plot\"",
            "id=\"figures\"",
        ] {
            assert!(
                html.contains(part),
                "{part} missing: the attack must reach every part"
            );
        }
        assert!(!html.contains("<script"), "raw tag in the report");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "escaped form missing"
        );
        assert!(!html.contains("<td class=\"tag differs\"><</td>"));
        assert!(html.contains("<title>granule 0: 0 here, &lt; in the other map</title>"));
        assert!(html.contains("Compared with &lt;script&gt;"));
    }

    #[test]
    fn failures_draw_both_tag_maps_with_the_differences_outlined() {
        let html = one_failure_with_tag_maps("0123", "0f23");
        let failures =
            &html[html.find("id=\"failures\"").unwrap()..html.find("id=\"matrix\"").unwrap()];
        assert_eq!(
            failures.matches("<svg class=\"tagmap\"").count(),
            2,
            "{failures}"
        );
        assert!(failures.contains("<strong>expected</strong>: guest STG"));
        assert!(failures.contains("<strong>observed</strong>: host copy"));
        assert!(
            failures.contains("class=\"t1 differs\"") && failures.contains("class=\"tf differs\"")
        );
        assert!(failures.contains("class=\"t2\"/>"));
        // The verdict table keeps the text grid only.
        let table = &html[html.find("id=\"verdicts\"").unwrap()..];
        assert!(!table.contains("<svg class=\"tagmap\""));
    }

    #[test]
    fn faults_read_as_words() {
        let html = render(
            &summary(vec![verdict(
                "faults::sync",
                Outcome::Fail,
                "faulted elsewhere",
                vec![Evidence::Fault {
                    esr: 0x9600_0051,
                    far: 0x0a00_0000_4102_0000,
                    elr: 0x4008_178c,
                    decoded: "runner's words".into(),
                }],
            )]),
            "run",
        )
        .unwrap();
        assert!(html.contains(
            "data abort taken without a change of exception level: synchronous tag check fault \
             (FSC 0x11), on a write"
        ));
        assert!(html.contains("address <code>0x41020000</code>, pointer tag <code>0xa</code>"));
        assert!(html.contains("runner&#39;s words"));
    }

    #[test]
    fn figures_are_plotted_per_check() {
        let html = render(
            &summary(vec![verdict(
                "cost::cow",
                Outcome::Pass,
                "ok",
                vec![
                    Evidence::Values {
                        what: "per page, MTE VM".into(),
                        expected: "measured".into(),
                        observed: "40.0 µs".into(),
                    },
                    Evidence::Values {
                        what: "tagged / untagged".into(),
                        expected: "measured".into(),
                        observed: "1.33".into(),
                    },
                ],
            )]),
            "run",
        )
        .unwrap();
        let figures =
            &html[html.find("id=\"figures\"").unwrap()..html.find("id=\"verdicts\"").unwrap()];
        assert_eq!(
            figures.matches("<svg class=\"plot\"").count(),
            2,
            "{figures}"
        );
        assert!(
            figures.contains(">per page, MTE VM</text>") && figures.contains(">40.0 µs</text>")
        );
        assert!(figures.contains("class=\"reference\""));
    }

    #[test]
    fn report_is_self_contained_and_shows_failures_first() {
        let html = render(
            &summary(vec![
                verdict("tags::agree", Outcome::Pass, "tags agree", vec![]),
                verdict(
                    "fault::sync",
                    Outcome::Fail,
                    "no tag check fault",
                    vec![Evidence::Fault {
                        esr: 0x9200_0011,
                        far: 0x0a00_0000_4000_0010,
                        elr: 0x4008_0000,
                        decoded: "synchronous tag check fault".into(),
                    }],
                ),
                verdict("swap::out", Outcome::Skip, "no swap device", vec![]),
            ]),
            "20261121-235501-emulated-6.12.95",
        )
        .unwrap();
        for forbidden in ["<script", "src=", "href=\"http", "@import", "url("] {
            assert!(
                !html.contains(forbidden),
                "{forbidden} in a self-contained page"
            );
        }
        let failures = html.find("id=\"failures\"").expect("failures section");
        let all = html.find("id=\"matrix\"").expect("matrix");
        assert!(failures < all && all < html.find("id=\"verdicts\"").expect("verdict table"));
        assert!(html[failures..all].contains("fault::sync"));
        assert!(!html[failures..all].contains("tags::agree"));
        assert!(html.contains("0x92000011") && html.contains("0x0a00000040000010"));
        assert!(html.contains("9.2.0") && html.contains("MTE3") && html.contains("6.12.95"));
    }

    #[test]
    fn the_matrix_names_each_lane_and_kernel() {
        let qemu = Verdict {
            lane: Lane::Qemu,
            kernel: "qemu-10.0.2".into(),
            ..verdict("tags::a", Outcome::Fail, "why", vec![])
        };
        let html = render(&summary(vec![qemu]), "run").unwrap();
        assert!(html.contains("id=\"matrix\""));
        assert!(html.contains("qemu · qemu-10.0.2"));
    }

    #[test]
    fn tag_grid_marks_the_differing_granules() {
        let html = one_failure_with_tag_maps("0123", "0f23");
        assert!(html.contains("<td class=\"tag differs\">1</td>"), "{html}");
        assert!(html.contains("<td class=\"tag differs\">f</td>"), "{html}");
        assert!(html.contains("<td class=\"tag\">2</td>"), "{html}");
    }

    #[test]
    fn console_control_characters_are_replaced() {
        assert_eq!(
            escape_html("a\u{1b}[31m\0\"'&\n"),
            "a\u{fffd}[31m\u{fffd}&quot;&#39;&amp;\n"
        );
    }

    #[test]
    fn a_bench_run_shows_its_ratios_first_and_no_check_sections() {
        use crate::bench::{Benchmark, Versus};
        let measured = |id: &str, ns: f64, versus: Option<&str>| Benchmark {
            reason: "<b>what</b>".into(),
            versus: versus.map(|b| Versus {
                baseline: b.into(),
                ratio: "tagged / untagged".into(),
            }),
            ..benchmark(id, ns)
        };
        let mut run = summary(vec![]);
        run.benchmarks = vec![
            measured("swap/in/tagged", 3000.0, Some("swap/in/untagged")),
            measured("swap/in/untagged", 1000.0, None),
        ];
        let html = render(&run, "bench").unwrap();
        let section = &html[html.find("id=\"benchmarks\"").unwrap()..];
        let ratios = section.find("in/tagged: tagged / untagged").unwrap();
        let medians = section.find("Medians by group").unwrap();
        assert!(ratios < medians);
        assert!(section.contains("class=\"whisker\""));
        assert!(html.contains("&lt;b&gt;what&lt;/b&gt;"));
        for absent in ["id=\"verdicts\"", "class=\"tally\"", "id=\"speed\""] {
            assert!(!html.contains(absent), "{absent} in a bench run's report");
        }
    }

    #[test]
    fn a_check_run_states_the_suite_s_speed_and_targets() {
        let html = render(
            &summary(vec![verdict("tags::a", Outcome::Pass, "ok", vec![])]),
            "run",
        )
        .unwrap();
        let section = &html[html.find("id=\"speed\"").unwrap()..];
        assert!(section.contains("suite speed: 1 checks in 30.0 s"));
        assert!(!section.contains("kvm-unit-tests"));
        assert!(section.contains("not judged"), "{section}");
        assert!(!html.contains("id=\"benchmarks\""));
    }

    #[test]
    fn only_failures_keep_every_granule_unless_every_map_is_asked_for() {
        let digits = "5".repeat(256);
        let passed = verdict(
            "tags::a",
            Outcome::Pass,
            "ok",
            vec![tag_maps(&digits, &digits, vec![])],
        );
        let mut observed = digits.clone();
        observed.replace_range(3..4, "7");
        let failed = verdict(
            "tags::b",
            Outcome::Fail,
            "differs",
            vec![tag_maps(&digits, &observed, vec![3])],
        );
        let run = summary(vec![passed, failed]);
        let grid_cells = |html: &str| html.matches("<td class=\"tag").count();
        let html = render(&run, "run").unwrap();
        // The failure's map: its grid in the failures and in the list, two rows a side.
        assert_eq!(grid_cells(&html), 2 * 2 * 256);
        assert!(
            html.contains("tag 5 ×256; CRC-32 0x"),
            "the passing map in brief"
        );
        let every = ReportOptions {
            every_tag_map: true,
        };
        let html = render_compared(&run, "run", None, every).unwrap();
        assert_eq!(grid_cells(&html), 3 * 2 * 256);
    }

    #[test]
    fn an_empty_run_renders() {
        let mut run = summary(vec![]);
        run.error = Some("QEMU exited early: status 1".into());
        let html = render(&run, "run").unwrap();
        assert!(html.contains("QEMU exited early: status 1"));
        assert!(html.contains("No verdicts were recorded"));
    }
}
