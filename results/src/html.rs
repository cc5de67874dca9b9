//! The HTML report: one self-contained static page (inline CSS and SVG, no script, no external
//! resource).
//!
//! Everything a page shows beyond the template's own text comes from a guest, a kernel or a VMM,
//! so it is rendered with autoescaping on: the template is registered under a `.html` name, which
//! is what switches escaping on. The layout work (tag-map grids and pictures, plots, hex
//! formatting, ordering) is done here in Rust; the template only walks the view built below, and
//! its pictures take numbers and escaped text only.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use tera::{Context, Tera};

use crate::compare::{ChangeKind, Comparison};
use crate::decode::decode;
use crate::figures::figures;
use crate::group::in_order_of_first;
use crate::model::{Environment, Evidence, Outcome, Tally, Verdict};
use crate::perf_view::{bench_view, speed_view, BenchColumnView, SpeedView};
use crate::picture::{self, TagPicture, TAG_CLASSES};
use crate::plot::{self, BarChart};
use crate::summary::{column_name, format_duration, RunSummary};
use crate::tag_map::{differing_granules, TagMapLayout, TagMapLine};

const TEMPLATE: &str = include_str!("../templates/report.html.tera");
/// The `.html` suffix is what makes the template autoescaped.
const TEMPLATE_NAME: &str = "report.html";

/// Granules per line of a tag-map grid: 64 granules are 1 KiB of memory.
const GRANULES_PER_ROW: usize = 64;
/// Granules between the small gaps that make a row easier to count.
const GRANULES_PER_GROUP: usize = 16;
/// A tag-map grid: whole up to 16 lines; beyond, the lines with a difference and their
/// neighbours, at most 64 lines (the full maps stay in `results.jsonl`).
const HTML_TAG_MAP: TagMapLayout = TagMapLayout {
    granules_per_line: GRANULES_PER_ROW,
    whole_up_to_lines: 16,
    max_lines: 64,
    context_lines: 1,
};

/// Render the report of a run; `title` names the run, normally its run id.
pub fn render(summary: &RunSummary, title: &str) -> tera::Result<String> {
    render_compared(summary, title, None)
}

/// Render the report of a run compared with a baseline: the comparison comes first.
pub fn render_compared(
    summary: &RunSummary,
    title: &str,
    comparison: Option<&Comparison>,
) -> tera::Result<String> {
    let mut tera = Tera::default();
    tera.autoescape_on(vec![".html"]);
    tera.set_escape_fn(escape_html);
    tera.add_raw_template(TEMPLATE_NAME, TEMPLATE)?;
    let context = Context::from_serialize(Page::new(summary, title, comparison))?;
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
    figures: Vec<FigureCard<'a>>,
    verdicts: Vec<VerdictView<'a>>,
    tag_classes: [&'static str; 16],
    /// Whether the run made checks (a run of `bench` makes benchmarks only).
    checks: bool,
    speed: Option<SpeedView>,
    bench: Vec<BenchColumnView>,
}

impl<'a> Page<'a> {
    fn new(summary: &'a RunSummary, title: &'a str, comparison: Option<&'a Comparison>) -> Self {
        let verdicts: Vec<VerdictView> = summary
            .verdicts
            .iter()
            .enumerate()
            .map(|(i, v)| VerdictView::new(i, v, false))
            .collect();
        // Only the failures draw their tag maps as pictures: a passing map is all agreement.
        let failures = summary
            .verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| v.outcome == Outcome::Fail)
            .map(|(i, v)| VerdictView::new(i, v, true))
            .collect();
        let figures = summary
            .verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| FigureCard::new(i, v))
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
            figures,
            verdicts,
            tag_classes: TAG_CLASSES,
            checks: !summary.verdicts.is_empty() || summary.benchmarks.is_empty(),
            speed: speed_view(summary),
            bench: bench_view(&summary.benchmarks),
        }
    }
}

/// Every check by lane and kernel: one row a check, one column a lane and kernel, in the
/// order they first reported; a cell links to its verdict.
#[derive(Serialize)]
struct Matrix {
    columns: Vec<String>,
    rows: Vec<MatrixRow>,
}

#[derive(Serialize)]
struct MatrixRow {
    test: String,
    /// One per column; `None` where the check did not run in that lane.
    cells: Vec<Option<MatrixCell>>,
}

#[derive(Clone, Serialize)]
struct MatrixCell {
    outcome: &'static str,
    anchor: String,
}

impl Matrix {
    fn new(verdicts: &[Verdict]) -> Self {
        let column_of = |v: &Verdict| column_name(v.lane, &v.kernel);
        let columns: Vec<String> = in_order_of_first(verdicts, |v| column_of(v))
            .into_iter()
            .map(|(column, _)| column)
            .collect();
        let rows = in_order_of_first(verdicts.iter().enumerate(), |(_, v)| v.test.as_str())
            .into_iter()
            .map(|(test, of_test)| MatrixRow {
                test: test.to_string(),
                // A check reported twice in a column shows its last verdict.
                cells: (columns.iter())
                    .map(|column| {
                        let (index, v) = of_test.iter().rfind(|(_, v)| column_of(v) == *column)?;
                        Some(MatrixCell {
                            outcome: v.outcome.as_str(),
                            anchor: format!("v{index}"),
                        })
                    })
                    .collect(),
            })
            .collect();
        Matrix { columns, rows }
    }
}

/// The comparison with a baseline, as the top of the page shows it.
#[derive(Serialize)]
struct ComparisonView<'a> {
    baseline: &'a str,
    baseline_run_id: &'a str,
    regressions: Vec<String>,
    rule: String,
    /// Columns matched across a change of kernel (or left without a partner).
    renamed_columns: Vec<(String, String)>,
    groups: Vec<ChangeGroup<'a>>,
    figures: Vec<FigureMoveRow<'a>>,
    unchanged: usize,
}

#[derive(Serialize)]
struct ChangeGroup<'a> {
    title: &'static str,
    regression: bool,
    changes: Vec<ChangeRow<'a>>,
}

#[derive(Serialize)]
struct ChangeRow<'a> {
    column: &'a str,
    test: &'a str,
    before: &'static str,
    after: &'static str,
    reason: &'a str,
    /// The verdict in this report, where there is one.
    anchor: Option<String>,
}

#[derive(Serialize)]
struct FigureMoveRow<'a> {
    column: &'a str,
    test: &'a str,
    what: &'a str,
    change: String,
    worse: bool,
}

impl<'a> ComparisonView<'a> {
    fn new(c: &'a Comparison, verdicts: &[Verdict]) -> Self {
        let anchors: HashMap<(String, &str), String> = verdicts
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    (column_name(v.lane, &v.kernel), v.test.as_str()),
                    format!("v{i}"),
                )
            })
            .collect();
        let outcome = |o: Option<Outcome>| o.map_or("absent", Outcome::as_str);
        let groups = ChangeKind::ALL
            .into_iter()
            .map(|kind| ChangeGroup {
                title: kind.title(),
                regression: kind.is_regression(),
                changes: c
                    .of_kind(kind)
                    .map(|change| ChangeRow {
                        column: &change.column,
                        test: &change.test,
                        before: outcome(change.before),
                        after: outcome(change.after),
                        reason: &change.reason,
                        anchor: anchors
                            .get(&(change.column.clone(), change.test.as_str()))
                            .filter(|_| change.after.is_some())
                            .cloned(),
                    })
                    .collect(),
            })
            .filter(|group| !group.changes.is_empty())
            .collect();
        let side = |s: &Option<String>| s.clone().unwrap_or_else(|| "none".into());
        ComparisonView {
            baseline: &c.baseline,
            baseline_run_id: &c.baseline_run_id,
            regressions: c.regressions(),
            rule: c.thresholds.describe(),
            renamed_columns: c
                .columns
                .iter()
                .filter(|m| m.baseline != m.run)
                .map(|m| (side(&m.baseline), side(&m.run)))
                .collect(),
            groups,
            // Worse first: they are what made the run regress.
            figures: c
                .figures
                .iter()
                .filter(|f| f.worse())
                .chain(c.figures.iter().filter(|f| !f.worse()))
                .map(|f| FigureMoveRow {
                    column: &f.column,
                    test: &f.test,
                    what: &f.what,
                    change: f.describe(),
                    worse: f.worse(),
                })
                .collect(),
            unchanged: c.unchanged,
        }
    }
}

/// The plots of one verdict's figures.
#[derive(Serialize)]
struct FigureCard<'a> {
    anchor: String,
    test: &'a str,
    column: String,
    charts: Vec<BarChart>,
}

impl<'a> FigureCard<'a> {
    fn new(index: usize, v: &'a Verdict) -> Option<Self> {
        let charts = plot::charts(&figures(v));
        (!charts.is_empty()).then(|| FigureCard {
            anchor: format!("v{index}"),
            test: &v.test,
            column: column_name(v.lane, &v.kernel),
            charts,
        })
    }
}

#[derive(Clone, Serialize)]
struct VerdictView<'a> {
    /// Fragment id of the verdict's row, so a failure links to it.
    anchor: String,
    lane: &'static str,
    kernel: &'a str,
    test: &'a str,
    outcome: &'static str,
    reason: &'a str,
    duration: String,
    evidence: Vec<EvidenceView<'a>>,
}

impl<'a> VerdictView<'a> {
    /// `pictures`: draw tag maps as pictures besides the grid.
    fn new(index: usize, v: &'a Verdict, pictures: bool) -> Self {
        VerdictView {
            anchor: format!("v{index}"),
            lane: v.lane.name(),
            kernel: &v.kernel,
            test: &v.test,
            outcome: v.outcome.as_str(),
            reason: &v.reason,
            duration: format_duration(v.duration_ms),
            evidence: v
                .detail
                .iter()
                .map(|e| EvidenceView::new(e, pictures))
                .collect(),
        }
    }
}

#[derive(Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EvidenceView<'a> {
    TagMaps {
        expected_from: &'a str,
        observed_from: &'a str,
        ipa: String,
        granules: usize,
        differing: usize,
        rows: Vec<TagRow>,
        /// The expected and the observed map drawn, for a failure where they differ.
        pictures: Option<[TagPicture; 2]>,
        /// Among a failure's evidence, maps that agree keep their grid folded away.
        brief: bool,
    },
    Fault {
        esr: String,
        far: String,
        elr: String,
        /// The runner's reading of the ESR.
        decoded: &'a str,
        /// The report's own reading of ESR and FAR.
        class: String,
        far_address: String,
        pointer_tag: String,
    },
    /// Errno and Values: `label` says what `what` is.
    Compared {
        label: &'static str,
        what: &'a str,
        expected: &'a str,
        observed: &'a str,
    },
    Note {
        text: &'a str,
    },
}

impl<'a> EvidenceView<'a> {
    fn new(evidence: &'a Evidence, pictures: bool) -> Self {
        match evidence {
            Evidence::TagMaps {
                expected_from,
                observed_from,
                ipa,
                expected,
                observed,
                mismatches,
            } => {
                let differing = differing_granules(expected, observed, mismatches);
                let expected: Vec<char> = expected.chars().collect();
                let observed: Vec<char> = observed.chars().collect();
                let granules = expected.len().max(observed.len());
                let lines = HTML_TAG_MAP.lines(granules, &differing);
                let draw = |map: &[char], other: &[char]| {
                    picture::draw(*ipa, map, other, &differing, &lines, GRANULES_PER_ROW)
                };
                EvidenceView::TagMaps {
                    expected_from,
                    observed_from,
                    ipa: format!("{ipa:#x}"),
                    granules,
                    differing: differing.range(..granules).count(),
                    rows: tag_rows(*ipa, &expected, &observed, &differing),
                    // Maps that agree need no picture: the grid says so in a line.
                    pictures: (pictures && !differing.is_empty())
                        .then(|| [draw(&expected, &observed), draw(&observed, &expected)]),
                    brief: pictures && differing.is_empty(),
                }
            }
            Evidence::Fault {
                esr,
                far,
                elr,
                decoded,
            } => {
                let words = decode(*esr, *far);
                EvidenceView::Fault {
                    esr: format!("{esr:#010x}"),
                    far: format!("{far:#018x}"),
                    elr: format!("{elr:#018x}"),
                    decoded,
                    class: words.sentence(),
                    far_address: format!("{:#x}", words.address),
                    pointer_tag: format!("{:#x}", words.pointer_tag),
                }
            }
            Evidence::Errno {
                call,
                expected,
                observed,
            } => EvidenceView::Compared {
                label: "call",
                what: call,
                expected,
                observed,
            },
            Evidence::Values {
                what,
                expected,
                observed,
            } => EvidenceView::Compared {
                label: "value",
                what,
                expected,
                observed,
            },
            Evidence::Note { text } => EvidenceView::Note { text },
        }
    }
}

/// Escape text for HTML element content and quoted attributes, and replace the control
/// characters a console may carry (escape sequences, NUL) with U+FFFD: HTML forbids them.
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

/// One line of a tag-map grid, or the granules left out between lines.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TagRow {
    Granules {
        address: String,
        cells: Vec<TagCell>,
    },
    /// Lines that agree, left out because the map is long.
    Elided { granules: usize },
    /// The rest of a very long map, past the line limit.
    Truncated { granules: usize },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct TagCell {
    expected: char,
    observed: char,
    differs: bool,
    /// First granule of a group of 16, after the first: drawn with a gap before it.
    group_start: bool,
}

/// The grid of a tag map: all of it when short; otherwise the lines with a difference and their
/// neighbours, with the agreeing lines between them elided. A missing digit shows as `.`.
fn tag_rows(
    ipa: u64,
    expected: &[char],
    observed: &[char],
    differing: &BTreeSet<usize>,
) -> Vec<TagRow> {
    let granules = expected.len().max(observed.len());
    HTML_TAG_MAP
        .lines(granules, differing)
        .into_iter()
        .map(|line| match line {
            TagMapLine::Elided(granules) => TagRow::Elided { granules },
            TagMapLine::Truncated(granules) => TagRow::Truncated { granules },
            TagMapLine::Shown(span) => TagRow::Granules {
                address: format!("{:#x}", ipa.wrapping_add(16 * span.start as u64)),
                cells: span
                    .map(|i| TagCell {
                        expected: expected.get(i).copied().unwrap_or('.'),
                        observed: observed.get(i).copied().unwrap_or('.'),
                        differs: differing.contains(&i),
                        group_start: i % GRANULES_PER_ROW != 0 && i % GRANULES_PER_GROUP == 0,
                    })
                    .collect(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Comparison;
    use crate::fixtures::{benchmark, summary};
    use crate::model::Feature;

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
        let html = render_compared(&run, attack, Some(&comparison)).unwrap();
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
        let html = render(
            &summary(vec![verdict(
                "tags::x",
                Outcome::Fail,
                "differs",
                vec![tag_maps("0123", "0f23", vec![1])],
            )]),
            "run",
        )
        .unwrap();
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
    fn lanes_stand_side_by_side_in_the_matrix() {
        let in_lane = |test: &str, lane: &str, kernel: &str, outcome| Verdict {
            lane: lane.parse().unwrap(),
            kernel: kernel.into(),
            ..verdict(test, outcome, "why", vec![])
        };
        let verdicts = vec![
            in_lane("tags::a", "emulated", "6.12", Outcome::Pass),
            in_lane("abi::b", "emulated", "6.12", Outcome::Pass),
            in_lane("tags::a", "qemu", "qemu-10.0.2", Outcome::Fail),
        ];
        let matrix = Matrix::new(&verdicts);
        assert_eq!(matrix.columns, ["emulated · 6.12", "qemu · qemu-10.0.2"]);
        let outcomes = |row: &MatrixRow| -> Vec<Option<&str>> {
            row.cells
                .iter()
                .map(|c| c.as_ref().map(|c| c.outcome))
                .collect()
        };
        assert_eq!(outcomes(&matrix.rows[0]), [Some("pass"), Some("fail")]);
        assert_eq!(outcomes(&matrix.rows[1]), [Some("pass"), None]);
        assert_eq!(matrix.rows[0].cells[1].as_ref().unwrap().anchor, "v2");
        let html = render(&summary(verdicts), "run").unwrap();
        assert!(html.contains("id=\"matrix\""));
        assert!(html.contains("qemu · qemu-10.0.2"));
    }

    #[test]
    fn tag_grid_marks_the_differing_granules() {
        let html = render(
            &summary(vec![verdict(
                "tags::x",
                Outcome::Fail,
                "differs",
                vec![tag_maps("0123", "0f23", vec![1])],
            )]),
            "run",
        )
        .unwrap();
        assert!(html.contains("<td class=\"tag differs\">1</td>"), "{html}");
        assert!(html.contains("<td class=\"tag differs\">f</td>"), "{html}");
        assert!(html.contains("<td class=\"tag\">2</td>"), "{html}");
    }

    #[test]
    fn long_tag_maps_keep_only_the_lines_near_a_difference() {
        let rows = 40;
        let expected = vec!['0'; GRANULES_PER_ROW * rows];
        let mut observed = expected.clone();
        observed[GRANULES_PER_ROW * 20 + 5] = '7';
        let differing = BTreeSet::from([GRANULES_PER_ROW * 20 + 5]);
        let grid = tag_rows(0x1000, &expected, &observed, &differing);
        let kinds: Vec<String> = grid
            .iter()
            .map(|r| match r {
                TagRow::Granules { address, .. } => address.clone(),
                TagRow::Elided { granules } => format!("elided {granules}"),
                TagRow::Truncated { granules } => format!("truncated {granules}"),
            })
            .collect();
        let at = |row: usize| format!("{:#x}", 0x1000 + row * GRANULES_PER_ROW * 16);
        assert_eq!(
            kinds,
            vec![
                "elided 1216".into(),
                at(19),
                at(20),
                at(21),
                "elided 1152".into()
            ]
        );
        let TagRow::Granules { cells, .. } = &grid[2] else {
            panic!()
        };
        assert!(cells[5].differs && cells[5].observed == '7' && !cells[4].differs);
        assert!(cells[16].group_start && !cells[0].group_start);
    }

    #[test]
    fn maps_that_differ_everywhere_are_cut_at_the_line_limit() {
        let granules = GRANULES_PER_ROW * (HTML_TAG_MAP.max_lines + 10);
        let differing: BTreeSet<usize> = (0..granules).collect();
        let grid = tag_rows(0, &vec!['0'; granules], &vec!['1'; granules], &differing);
        assert_eq!(grid.len(), HTML_TAG_MAP.max_lines + 1);
        assert_eq!(
            grid.last(),
            Some(&TagRow::Truncated {
                granules: GRANULES_PER_ROW * 10
            })
        );
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
        assert!(section.contains("kvm-unit-tests&#39; mte group"));
        assert!(section.contains("not judged"), "{section}");
        assert!(!html.contains("id=\"benchmarks\""));
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
