//! Verdicts as the report shows them: each with its evidence (a tag map as a grid, drawn too
//! for a failure; a fault in words), and the plots of a check's figures.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::decode::decode;
use crate::figures::figures;
use crate::model::{Evidence, Verdict};
use crate::picture::{self, TagPicture};
use crate::plot::{self, BarChart};
use crate::summary::format_duration;
use crate::tag_map::{tag_map_summary, Comparison as MapComparison, TagMapLayout, TagMapLine};

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

/// The plots of one verdict's figures.
#[derive(Serialize)]
pub(super) struct FigureCard<'a> {
    anchor: String,
    test: &'a str,
    column: String,
    charts: Vec<BarChart>,
}

impl<'a> FigureCard<'a> {
    /// `column`: the name of the verdict's column.
    pub(super) fn new(index: usize, v: &'a Verdict, column: String) -> Option<Self> {
        let charts = plot::charts(&figures(v));
        (!charts.is_empty()).then(|| FigureCard {
            anchor: format!("v{index}"),
            test: &v.test,
            column,
            charts,
        })
    }
}

/// How much of a verdict's tag maps the report shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TagMapDetail {
    /// Each side summarised (granules, how many carry each tag, a CRC-32) and where they
    /// differ: for a verdict that did not fail, whose maps are all agreement (or a fault a
    /// proof injected on purpose).
    Brief,
    /// Every granule as a grid of hex digits.
    Grid,
    /// The grid, and the two maps drawn as pictures where they differ: for a failure.
    Pictures,
}

impl TagMapDetail {
    /// What the list of every verdict shows of `v`'s maps: every granule of a failure's, or
    /// of every verdict's when `every_tag_map` was asked for; otherwise in brief.
    pub(super) fn in_list(v: &Verdict, every_tag_map: bool) -> Self {
        if every_tag_map || v.outcome == crate::model::Outcome::Fail {
            TagMapDetail::Grid
        } else {
            TagMapDetail::Brief
        }
    }
}

#[derive(Clone, Serialize)]
pub(super) struct VerdictView<'a> {
    /// Fragment id of the verdict's row, so a failure links to it.
    anchor: String,
    lane: &'static str,
    kernel: &'a str,
    /// The name of its column (the lane's boot where the lane booted more than once).
    column: String,
    test: &'a str,
    outcome: &'static str,
    reason: &'a str,
    duration: String,
    evidence: Vec<EvidenceView<'a>>,
    /// The command that reruns it alone: given with failures.
    rerun: Option<String>,
}

impl<'a> VerdictView<'a> {
    /// `column`: the name of the verdict's column; `detail`: how much of its tag maps to show.
    pub(super) fn new(index: usize, v: &'a Verdict, column: String, detail: TagMapDetail) -> Self {
        VerdictView {
            anchor: format!("v{index}"),
            lane: v.lane.name(),
            kernel: &v.kernel,
            column,
            test: &v.test,
            outcome: v.outcome.as_str(),
            reason: &v.reason,
            duration: format_duration(v.duration_ms),
            evidence: v
                .detail
                .iter()
                .map(|e| EvidenceView::new(e, detail))
                .collect(),
            rerun: None,
        }
    }

    /// With the command that reruns it alone.
    pub(super) fn with_rerun(self, rerun: String) -> Self {
        VerdictView {
            rerun: Some(rerun),
            ..self
        }
    }
}

#[derive(Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum EvidenceView<'a> {
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
    /// Tag maps as [`TagMapDetail::Brief`] shows them.
    TagMapsInBrief {
        expected_from: &'a str,
        observed_from: &'a str,
        ipa: String,
        granules: usize,
        differing: usize,
        /// The first granule that differs, if any.
        first_difference: Option<usize>,
        expected: String,
        observed: String,
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
    /// Kernel log lines, one a line of the text.
    KernelLog {
        text: String,
    },
}

impl<'a> EvidenceView<'a> {
    fn new(evidence: &'a Evidence, detail: TagMapDetail) -> Self {
        let pictures = detail == TagMapDetail::Pictures;
        match evidence {
            Evidence::TagMaps {
                expected_from,
                observed_from,
                ipa,
                expected,
                observed,
                mismatches,
            } if detail == TagMapDetail::Brief => {
                let compared = MapComparison::of(expected, observed, mismatches);
                EvidenceView::TagMapsInBrief {
                    expected_from,
                    observed_from,
                    ipa: format!("{ipa:#x}"),
                    granules: compared.granules,
                    differing: compared.differing_count(),
                    first_difference: compared.differing.first().copied(),
                    expected: tag_map_summary(expected),
                    observed: tag_map_summary(observed),
                }
            }
            Evidence::TagMaps {
                expected_from,
                observed_from,
                ipa,
                expected,
                observed,
                mismatches,
            } => {
                let compared = MapComparison::of(expected, observed, mismatches);
                let differing = &compared.differing;
                let expected: Vec<char> = expected.chars().collect();
                let observed: Vec<char> = observed.chars().collect();
                EvidenceView::TagMaps {
                    expected_from,
                    observed_from,
                    ipa: format!("{ipa:#x}"),
                    granules: compared.granules,
                    differing: compared.differing_count(),
                    rows: tag_rows(*ipa, &expected, &observed, differing),
                    // Maps that agree need no picture: the grid says so in a line.
                    pictures: (pictures && !differing.is_empty())
                        .then(|| draw_both(*ipa, &expected, &observed, differing)),
                    brief: pictures && differing.is_empty(),
                }
            }
            Evidence::Fault {
                esr,
                far,
                elr,
                decoded,
            } => EvidenceView::fault(*esr, *far, *elr, decoded),
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
            Evidence::KernelLog { .. } => EvidenceView::KernelLog {
                text: evidence.to_string(),
            },
        }
    }

    /// The registers, and the report's own reading of them beside the runner's.
    fn fault(esr: u64, far: u64, elr: u64, decoded: &'a str) -> Self {
        let words = decode(esr, far);
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
}

/// The expected and the observed map drawn, over the lines of the grid.
fn draw_both(
    ipa: u64,
    expected: &[char],
    observed: &[char],
    differing: &BTreeSet<usize>,
) -> [TagPicture; 2] {
    let lines = HTML_TAG_MAP.lines(expected.len().max(observed.len()), differing);
    let draw = |map: &[char], other: &[char]| {
        picture::draw(ipa, map, other, differing, &lines, GRANULES_PER_ROW)
    };
    [draw(expected, observed), draw(observed, expected)]
}

/// One line of a tag-map grid, or the granules left out between lines.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum TagRow {
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
pub(super) struct TagCell {
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
}
