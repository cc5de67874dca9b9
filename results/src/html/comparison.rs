//! The comparison with a baseline, as the top of the report shows it.

use std::collections::HashMap;

use serde::Serialize;

use crate::boot::BootKey;
use crate::compare::{outcome_name, ChangeKind, Comparison};
use crate::model::Verdict;
use crate::summary::column_names;

/// The comparison with a baseline, as the top of the page shows it.
#[derive(Serialize)]
pub(super) struct ComparisonView<'a> {
    baseline: &'a str,
    baseline_run_id: &'a str,
    regressions: Vec<String>,
    rule: String,
    /// Columns matched across a change of kernel (or left without a partner).
    renamed_columns: Vec<(String, String)>,
    /// Columns of the same release on both sides from different builds: what differs.
    other_builds: Vec<String>,
    groups: Vec<ChangeGroup<'a>>,
    figures: Vec<FigureMoveRow<'a>>,
    unchanged: usize,
}

#[derive(Serialize)]
pub(super) struct ChangeGroup<'a> {
    title: &'static str,
    regression: bool,
    changes: Vec<ChangeRow<'a>>,
}

#[derive(Serialize)]
pub(super) struct ChangeRow<'a> {
    column: &'a str,
    test: &'a str,
    before: &'static str,
    after: &'static str,
    reason: &'a str,
    /// The verdict in this report, where there is one.
    anchor: Option<String>,
}

#[derive(Serialize)]
pub(super) struct FigureMoveRow<'a> {
    column: &'a str,
    test: &'a str,
    what: &'a str,
    change: String,
    worse: bool,
}

impl<'a> ComparisonView<'a> {
    pub(super) fn new(c: &'a Comparison, verdicts: &[Verdict]) -> Self {
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
            other_builds: (c.columns.iter())
                .filter_map(|m| m.other_build.clone())
                .collect(),
            groups: change_groups(c, verdicts),
            figures: figure_rows(c),
            unchanged: c.unchanged,
        }
    }
}

/// The changes by kind, each linking to its verdict in this report where it has one.
fn change_groups<'a>(c: &'a Comparison, verdicts: &[Verdict]) -> Vec<ChangeGroup<'a>> {
    let names = column_names(verdicts);
    let anchors: HashMap<(String, &str), String> = verdicts
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let column = names.get(&BootKey::of(v)).cloned().unwrap_or_default();
            ((column, v.test.as_str()), format!("v{i}"))
        })
        .collect();
    ChangeKind::ALL
        .into_iter()
        .map(|kind| ChangeGroup {
            title: kind.title(),
            regression: kind.is_regression(),
            changes: c
                .of_kind(kind)
                .map(|change| ChangeRow {
                    column: &change.column,
                    test: &change.test,
                    before: outcome_name(change.before),
                    after: outcome_name(change.after),
                    reason: &change.reason,
                    anchor: anchors
                        .get(&(change.column.clone(), change.test.as_str()))
                        .filter(|_| change.after.is_some())
                        .cloned(),
                })
                .collect(),
        })
        .filter(|group| !group.changes.is_empty())
        .collect()
}

/// The figures that moved, worse first: they are what made the run regress.
fn figure_rows(c: &Comparison) -> Vec<FigureMoveRow<'_>> {
    let (worse, better): (Vec<_>, Vec<_>) = c.figures.iter().partition(|f| f.worse());
    worse
        .into_iter()
        .chain(better)
        .map(|f| FigureMoveRow {
            column: &f.column,
            test: &f.test,
            what: &f.what,
            change: f.describe(),
            worse: f.worse(),
        })
        .collect()
}
