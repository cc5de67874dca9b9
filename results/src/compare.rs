//! A run against a baseline run: what got worse, what got better, and whether that is a
//! regression.
//!
//! Verdicts are matched per column, a column being a boot of a lane, on its kernel. Within a
//! lane, columns match in this order: the same boot of the same kernel release; the same release
//! at another boot (a run of fewer kernels, `6.12` against `6.1,6.12`), the nearest boot
//! first; the same boot (new builds of the run's kernels, compared with the old ones: that is
//! what a baseline is for); and last the one column left in each run. A kernel booted twice is
//! two columns, each compared with its own. Columns left over have their checks appear or
//! disappear.
//!
//! Each check that changed falls in one class, the first that fits:
//! - new failure: fails now, and did not (or did not run) in the baseline;
//! - new skip: skips now, and ran in the baseline (its coverage is lost);
//! - fixed: failed in the baseline, passes (or xfails) now;
//! - changed: any other change of outcome (a skip that runs now, pass and xfail swapped);
//! - appeared / disappeared: in one run only (a new check, a filter, a shard).
//!
//! A figure ([`crate::figures`]) moved when it changed by more than [`Thresholds::relative`] of
//! its baseline value *and* by more than a floor that keeps noise in tiny numbers out: 1 µs for a
//! timing, 0.05 for a ratio. Larger is worse for both kinds.
//!
//! The run regressed when it has a new failure, a new skip, a figure that moved up, an error
//! the baseline did not have (a lane that ended early), or when no check is in both runs (a run
//! with no verdict, or whose checks all vanished, shows nothing kept working). Otherwise checks
//! that appeared or disappeared are listed, never counted: a filtered or sharded run would
//! always regress.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::boot::BootKey;
use crate::figures::{figures, format_figure, FigureKind};
use crate::model::{Environment, Outcome, Verdict, KERNEL_IMAGE_SHA256};
use crate::summary::{Column, RunSummary};
use crate::text::{first_line, one_line, printable};

/// When a figure counts as moved.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Fraction of the baseline value, e.g. 0.25 for 25 %.
    pub relative: f64,
    /// Smallest change of a timing that counts, in milliseconds.
    pub timing_floor_ms: f64,
    /// Smallest change of a ratio that counts.
    pub ratio_floor: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            relative: 0.25,
            timing_floor_ms: 0.001,
            ratio_floor: 0.05,
        }
    }
}

impl Thresholds {
    fn floor(&self, kind: FigureKind) -> f64 {
        match kind {
            FigureKind::Timing => self.timing_floor_ms,
            FigureKind::Ratio => self.ratio_floor,
        }
    }

    fn moved(&self, kind: FigureKind, before: f64, after: f64) -> bool {
        let change = (after - before).abs();
        change > self.relative * before.abs() && change > self.floor(kind)
    }

    /// The rule in words, for the reports.
    pub fn describe(&self) -> String {
        format!(
            "more than {:.0} % and more than {} (timings) or {} (ratios)",
            self.relative * 100.0,
            format_figure(FigureKind::Timing, self.timing_floor_ms),
            format_figure(FigureKind::Ratio, self.ratio_floor)
        )
    }
}

/// How a check changed against the baseline; see the module's documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    NewFailure,
    NewSkip,
    Fixed,
    Changed,
    Appeared,
    Disappeared,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 6] = [
        ChangeKind::NewFailure,
        ChangeKind::NewSkip,
        ChangeKind::Fixed,
        ChangeKind::Changed,
        ChangeKind::Appeared,
        ChangeKind::Disappeared,
    ];

    pub fn title(self) -> &'static str {
        match self {
            ChangeKind::NewFailure => "new failures",
            ChangeKind::NewSkip => "new skips",
            ChangeKind::Fixed => "fixed",
            ChangeKind::Changed => "other changes of outcome",
            ChangeKind::Appeared => "checks only in this run",
            ChangeKind::Disappeared => "checks only in the baseline",
        }
    }

    pub fn is_regression(self) -> bool {
        matches!(self, ChangeKind::NewFailure | ChangeKind::NewSkip)
    }
}

/// One check whose outcome differs from the baseline's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// The column, `lane · kernel` (with the boot where the lane booted several times), as this
    /// run names it (the baseline's for a check that disappeared).
    pub column: String,
    pub test: String,
    pub before: Option<Outcome>,
    pub after: Option<Outcome>,
    /// This run's reason (the baseline's for a check that disappeared).
    pub reason: String,
}

/// A figure that moved beyond the thresholds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FigureMove {
    pub column: String,
    pub test: String,
    pub what: String,
    pub kind: FigureKind,
    pub before: f64,
    pub after: f64,
}

impl FigureMove {
    /// Larger is worse, for timings and ratios alike.
    pub fn worse(&self) -> bool {
        self.after > self.before
    }

    /// The change in percent of the baseline value; `None` from a zero baseline.
    pub fn percent(&self) -> Option<f64> {
        (self.before != 0.0).then(|| (self.after - self.before) / self.before.abs() * 100.0)
    }

    /// `30.0 µs → 45.0 µs (+50 %)`.
    pub fn describe(&self) -> String {
        let percent = self
            .percent()
            .map_or(String::new(), |p| format!(" ({p:+.0} %)"));
        format!(
            "{} → {}{percent}",
            format_figure(self.kind, self.before),
            format_figure(self.kind, self.after)
        )
    }
}

/// How a column of this run was matched with one of the baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnMatch {
    pub baseline: Option<String>,
    pub run: Option<String>,
    /// Where both sides ran the same release from different builds (their images' SHA-256, or
    /// `uname -v`, differ): what differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_build: Option<String>,
}

/// How the builds behind two columns of the same release differ, if they do: the image's
/// SHA-256 (recorded by xtask for the kernels it boots), else `uname -v`.
fn other_build(baseline: Option<&Environment>, run: Option<&Environment>) -> Option<String> {
    let (before, now) = (baseline?, run?);
    if before.kernel_release != now.kernel_release {
        return None;
    }
    let image = |env: &Environment| {
        (env.host.iter())
            .find(|f| f.name == KERNEL_IMAGE_SHA256)
            .map(|f| f.value.clone())
    };
    let short = |hash: &str| hash.chars().take(12).collect::<String>();
    match (image(before), image(now)) {
        (Some(a), Some(b)) if a != b => Some(format!(
            "another build of {}: image sha256 {}… → {}…",
            now.kernel_release,
            short(&a),
            short(&b)
        )),
        _ if before.kernel_version != now.kernel_version => Some(format!(
            "another build of {}: {} → {}",
            now.kernel_release,
            one_line(&before.kernel_version),
            one_line(&now.kernel_version)
        )),
        _ => None,
    }
}

/// A run compared with a baseline; kept as `comparison.json` in the run's directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The baseline as it was named: a kept name or a directory.
    pub baseline: String,
    pub baseline_run_id: String,
    pub run_id: String,
    pub thresholds: Thresholds,
    pub columns: Vec<ColumnMatch>,
    pub changes: Vec<Change>,
    pub figures: Vec<FigureMove>,
    /// Checks with the same outcome in both runs.
    pub unchanged: usize,
    /// Verdicts of the baseline; none compared when no check is in both runs.
    #[serde(default)]
    pub baseline_verdicts: usize,
    /// Verdicts of this run.
    #[serde(default)]
    pub run_verdicts: usize,
    /// This run's error, when the baseline ended cleanly and this run did not.
    pub run_error: Option<String>,
}

/// Pairs of column indices (baseline, run); `None` where a column has no partner. Each pass
/// pairs what the one before left, in the order the module's documentation gives.
fn match_columns(baseline: &[BootKey], run: &[BootKey]) -> Vec<(Option<usize>, Option<usize>)> {
    type Same = fn(&BootKey, &BootKey) -> bool;
    let passes: [Same; 3] = [
        |b, r| b == r,
        |b, r| b.lane == r.lane && b.kernel == r.kernel,
        |b, r| b.lane == r.lane && b.boot == r.boot,
    ];
    let mut partner_of_run: Vec<Option<usize>> = vec![None; run.len()];
    let taken = |partners: &[Option<usize>], b: usize| partners.contains(&Some(b));
    for same in passes {
        for r in 0..run.len() {
            if partner_of_run[r].is_some() {
                continue;
            }
            partner_of_run[r] = (0..baseline.len())
                .filter(|&b| !taken(&partner_of_run, b) && same(&baseline[b], &run[r]))
                .min_by_key(|&b| baseline[b].boot.abs_diff(run[r].boot));
        }
    }
    for r in 0..run.len() {
        if partner_of_run[r].is_some() {
            continue;
        }
        let lane = run[r].lane;
        let run_left =
            (0..run.len()).filter(|&i| partner_of_run[i].is_none() && run[i].lane == lane);
        let baseline_left: Vec<usize> = (0..baseline.len())
            .filter(|&b| !taken(&partner_of_run, b) && baseline[b].lane == lane)
            .collect();
        if run_left.count() == 1 && baseline_left.len() == 1 {
            partner_of_run[r] = Some(baseline_left[0]);
        }
    }
    let mut pairs: Vec<(Option<usize>, Option<usize>)> = partner_of_run
        .iter()
        .enumerate()
        .map(|(r, b)| (*b, Some(r)))
        .collect();
    for b in 0..baseline.len() {
        if !taken(&partner_of_run, b) {
            pairs.push((Some(b), None));
        }
    }
    pairs
}

fn classify(before: Option<Outcome>, after: Option<Outcome>) -> Option<ChangeKind> {
    use Outcome::*;
    Some(match (before, after) {
        (b, Some(Fail)) if b != Some(Fail) => ChangeKind::NewFailure,
        (Some(b), Some(Skip)) if b != Skip => ChangeKind::NewSkip,
        (Some(Fail), Some(Pass | Xfail)) => ChangeKind::Fixed,
        (Some(b), Some(a)) if b != a => ChangeKind::Changed,
        (None, Some(_)) => ChangeKind::Appeared,
        (Some(_), None) => ChangeKind::Disappeared,
        _ => return None,
    })
}

impl Comparison {
    /// Compare `run` with `baseline`; the names are left empty for the caller to fill in.
    pub fn of<'a>(
        baseline: &'a RunSummary,
        run: &'a RunSummary,
        thresholds: Thresholds,
    ) -> Comparison {
        let base_columns = baseline.columns();
        let run_columns = run.columns();
        let keys = |columns: &[Column<'a>]| -> Vec<BootKey<'a>> {
            columns.iter().map(Column::key).collect()
        };
        let (base_keys, run_keys) = (keys(&base_columns), keys(&run_columns));
        let mut comparison = Comparison {
            baseline: String::new(),
            baseline_run_id: String::new(),
            run_id: String::new(),
            thresholds,
            columns: Vec::new(),
            changes: Vec::new(),
            figures: Vec::new(),
            unchanged: 0,
            baseline_verdicts: baseline.verdicts.len(),
            run_verdicts: run.verdicts.len(),
            run_error: match (&baseline.error, &run.error) {
                (None, Some(error)) => Some(error.clone()),
                _ => None,
            },
        };
        for (b, r) in match_columns(&base_keys, &run_keys) {
            let (before, now) = (b.map(|b| &base_columns[b]), r.map(|r| &run_columns[r]));
            let name_of = |c: &Column| c.name.clone();
            let environment = |summary: &'a RunSummary, column: Option<&Column>| {
                let key = column?.key();
                (summary.environments.iter()).find(|e| BootKey::of_environment(e) == key)
            };
            comparison.columns.push(ColumnMatch {
                baseline: before.map(name_of),
                run: now.map(name_of),
                other_build: other_build(environment(baseline, before), environment(run, now)),
            });
            // Named as this run names it; as the baseline did for a column that is gone.
            let name = now.or(before).map(name_of).unwrap_or_default();
            let before_verdicts = before.map_or(&[][..], |c| &c.verdicts);
            let now_verdicts = now.map_or(&[][..], |c| &c.verdicts);
            comparison.compare_column(&name, before_verdicts, now_verdicts);
        }
        comparison
    }

    fn compare_column(&mut self, column: &str, baseline: &[&Verdict], run: &[&Verdict]) {
        let mut before: HashMap<&str, &Verdict> = HashMap::new();
        for v in baseline {
            before.entry(v.test.as_str()).or_insert(v);
        }
        let mut seen: HashMap<&str, ()> = HashMap::new();
        for v in run {
            if seen.insert(&v.test, ()).is_some() {
                continue;
            }
            let old = before.get(v.test.as_str()).copied();
            match classify(old.map(|o| o.outcome), Some(v.outcome)) {
                Some(kind) => self.changes.push(Change {
                    kind,
                    column: column.to_string(),
                    test: v.test.clone(),
                    before: old.map(|o| o.outcome),
                    after: Some(v.outcome),
                    reason: v.reason.clone(),
                }),
                None => self.unchanged += 1,
            }
            if let Some(old) = old {
                self.compare_figures(column, old, v);
            }
        }
        for v in baseline {
            if !seen.contains_key(v.test.as_str()) {
                seen.insert(&v.test, ());
                self.changes.push(Change {
                    kind: ChangeKind::Disappeared,
                    column: column.to_string(),
                    test: v.test.clone(),
                    before: Some(v.outcome),
                    after: None,
                    reason: v.reason.clone(),
                });
            }
        }
    }

    fn compare_figures(&mut self, column: &str, baseline: &Verdict, run: &Verdict) {
        let old = figures(baseline);
        let mut compared: Vec<&str> = Vec::new();
        for new in figures(run) {
            if compared.contains(&new.what) {
                continue;
            }
            compared.push(new.what);
            let Some(old) = old
                .iter()
                .find(|o| o.what == new.what && o.kind == new.kind)
            else {
                continue;
            };
            if self.thresholds.moved(new.kind, old.value, new.value) {
                self.figures.push(FigureMove {
                    column: column.to_string(),
                    test: run.test.clone(),
                    what: new.what.to_string(),
                    kind: new.kind,
                    before: old.value,
                    after: new.value,
                });
            }
        }
    }

    /// Fill in what the baseline and the run are called.
    pub fn named(mut self, baseline: &str, baseline_run_id: &str, run_id: &str) -> Self {
        self.baseline = baseline.to_string();
        self.baseline_run_id = baseline_run_id.to_string();
        self.run_id = run_id.to_string();
        self
    }

    pub fn of_kind(&self, kind: ChangeKind) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| c.kind == kind)
    }

    pub fn figures_worse(&self) -> usize {
        self.figures.iter().filter(|f| f.worse()).count()
    }

    /// Checks that are in both runs (in matching columns).
    pub fn compared(&self) -> usize {
        let both = |c: &&Change| c.before.is_some() && c.after.is_some();
        self.unchanged + self.changes.iter().filter(both).count()
    }

    /// Why nothing could be compared, when no check is in both runs.
    fn nothing_compared(&self) -> Option<String> {
        if self.compared() > 0 {
            return None;
        }
        Some(if self.run_verdicts == 0 {
            "the run has no verdict".to_string()
        } else if self.baseline_verdicts == 0 {
            "the baseline has no verdict to compare with".to_string()
        } else {
            format!(
                "none of the baseline's {} checks ran (every one vanished)",
                self.baseline_verdicts
            )
        })
    }

    /// What made the run regress, in words; empty when it did not.
    pub fn regressions(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        for (kind, one, many) in [
            (ChangeKind::NewFailure, "new failure", "new failures"),
            (ChangeKind::NewSkip, "new skip", "new skips"),
        ] {
            let n = self.of_kind(kind).count();
            if n > 0 {
                reasons.push(count(n, one, many));
            }
        }
        let worse = self.figures_worse();
        if worse > 0 {
            reasons.push(count(worse, "figure worse", "figures worse"));
        }
        if let Some(error) = &self.run_error {
            reasons.push(format!("the run ended early: {error}"));
        }
        reasons.extend(self.nothing_compared());
        reasons
    }

    pub fn regressed(&self) -> bool {
        !self.regressions().is_empty()
    }

    /// The comparison for a terminal: every change, the figures that moved, the verdict. Text
    /// from the runs is printable only ([`crate::text`]).
    pub fn text(&self) -> String {
        printable(&self.plain_text())
    }

    fn plain_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "compared with {} ({})",
            self.baseline, self.baseline_run_id
        );
        for column in &self.columns {
            let side = |s: &Option<String>| s.clone().unwrap_or_else(|| "(none)".into());
            if column.baseline != column.run {
                let _ = writeln!(
                    out,
                    "  column {} → {}",
                    side(&column.baseline),
                    side(&column.run)
                );
            }
            if let Some(build) = &column.other_build {
                let _ = writeln!(out, "  column {}: {build}", side(&column.run));
            }
        }
        self.write_changes(&mut out);
        self.write_figures(&mut out);
        let _ = writeln!(out, "unchanged: {} checks", self.unchanged);
        let regressions = self.regressions();
        if regressions.is_empty() {
            let _ = writeln!(out, "no regression");
        } else {
            let _ = writeln!(out, "regressed: {}", regressions.join(", "));
        }
        out
    }

    /// Every change by kind, a line each.
    fn write_changes(&self, out: &mut String) {
        for kind in ChangeKind::ALL {
            let changes: Vec<&Change> = self.of_kind(kind).collect();
            if changes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{} ({}):", kind.title(), changes.len());
            for c in changes {
                let reason = shortened(&first_line(&c.reason));
                let _ = writeln!(
                    out,
                    "  {}  {}  {} → {}  {reason}",
                    c.column,
                    c.test.replace(['\n', '\r'], " "),
                    outcome_name(c.before),
                    outcome_name(c.after)
                );
            }
        }
    }

    /// The figures that moved, a line each.
    fn write_figures(&self, out: &mut String) {
        if self.figures.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "figures that moved {} ({}):",
            self.thresholds.describe(),
            self.figures.len()
        );
        for f in &self.figures {
            let _ = writeln!(
                out,
                "  {}  {}  {}  {}: {}",
                if f.worse() { "worse " } else { "better" },
                f.column,
                f.test,
                f.what,
                f.describe()
            );
        }
    }
}

/// An outcome in a change, `absent` on the side where the check did not run.
pub fn outcome_name(outcome: Option<Outcome>) -> &'static str {
    outcome.map_or("absent", Outcome::as_str)
}

/// Longest reason a line of the terminal text shows; the report has them whole.
const REASON_CHARS: usize = 120;

fn shortened(reason: &str) -> String {
    match reason.char_indices().nth(REASON_CHARS) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Evidence;
    use crate::model::Lane;

    fn v(test: &str, outcome: Outcome) -> Verdict {
        crate::fixtures::verdict(test, outcome, &format!("{test} {outcome}"))
    }

    fn on(kernel: &str, verdict: Verdict) -> Verdict {
        at(1, kernel, verdict)
    }

    fn at(boot: u32, kernel: &str, mut verdict: Verdict) -> Verdict {
        verdict.boot = boot;
        verdict.kernel = kernel.into();
        verdict
    }

    fn run(verdicts: Vec<Verdict>) -> RunSummary {
        RunSummary {
            benchmarks: Vec::new(),
            verdicts,
            ..RunSummary::default()
        }
    }

    fn kinds(c: &Comparison) -> Vec<(ChangeKind, &str)> {
        c.changes
            .iter()
            .map(|c| (c.kind, c.test.as_str()))
            .collect()
    }

    #[test]
    fn each_change_falls_in_its_class() {
        use Outcome::*;
        let baseline = run(vec![
            v("still_passes", Pass),
            v("breaks", Pass),
            v("loses_coverage", Pass),
            v("gets_fixed", Fail),
            v("now_runs", Skip),
            v("goes_away", Pass),
            v("still_fails", Fail),
        ]);
        let now = run(vec![
            v("still_passes", Pass),
            v("breaks", Fail),
            v("loses_coverage", Skip),
            v("gets_fixed", Pass),
            v("now_runs", Pass),
            v("is_new", Pass),
            v("is_new_and_fails", Fail),
            v("still_fails", Fail),
        ]);
        let c = Comparison::of(&baseline, &now, Thresholds::default());
        assert_eq!(
            kinds(&c),
            [
                (ChangeKind::NewFailure, "breaks"),
                (ChangeKind::NewSkip, "loses_coverage"),
                (ChangeKind::Fixed, "gets_fixed"),
                (ChangeKind::Changed, "now_runs"),
                (ChangeKind::Appeared, "is_new"),
                (ChangeKind::NewFailure, "is_new_and_fails"),
                (ChangeKind::Disappeared, "goes_away"),
            ]
        );
        assert_eq!(c.unchanged, 2);
        assert!(c.regressed());
        assert_eq!(c.regressions(), ["2 new failures", "1 new skip"]);
        let text = c.text();
        assert!(text.contains("new failures (2):"), "{text}");
        assert!(
            text.contains("emulated · 6.12.95  breaks  pass → fail  breaks fail"),
            "{text}"
        );
        assert!(
            text.ends_with("regressed: 2 new failures, 1 new skip\n"),
            "{text}"
        );
    }

    #[test]
    fn fixes_and_vanished_checks_are_no_regression() {
        use Outcome::*;
        let baseline = run(vec![v("a", Fail), v("b", Pass)]);
        let now = run(vec![v("a", Pass)]);
        let c = Comparison::of(&baseline, &now, Thresholds::default());
        assert!(!c.regressed(), "{c:?}");
        assert!(c.text().ends_with("no regression\n"));
    }

    #[test]
    fn a_lane_on_a_new_kernel_is_compared_with_its_old_kernel() {
        use Outcome::*;
        let baseline = run(vec![
            on("6.12.90", v("a", Pass)),
            Verdict {
                lane: Lane::Qemu,
                ..on("qemu-9.2", v("a", Pass))
            },
        ]);
        let now = run(vec![on("6.12.95", v("a", Fail))]);
        let c = Comparison::of(&baseline, &now, Thresholds::default());
        assert_eq!(
            c.columns,
            [
                ColumnMatch {
                    baseline: Some("emulated · 6.12.90".into()),
                    run: Some("emulated · 6.12.95".into()),
                    other_build: None,
                },
                ColumnMatch {
                    baseline: Some("qemu · qemu-9.2".into()),
                    run: None,
                    other_build: None,
                },
            ]
        );
        assert_eq!(
            kinds(&c),
            [
                (ChangeKind::NewFailure, "a"),
                (ChangeKind::Disappeared, "a")
            ]
        );
        assert_eq!(c.changes[1].column, "qemu · qemu-9.2");
    }

    #[test]
    fn several_kernels_of_a_lane_match_by_boot_and_release() {
        use Outcome::*;
        let baseline = run(vec![
            at(1, "6.1", v("a", Pass)),
            at(2, "6.12", v("a", Pass)),
        ]);
        let now = run(vec![
            at(1, "6.1", v("a", Pass)),
            at(2, "6.13", v("a", Pass)),
        ]);
        let c = Comparison::of(&baseline, &now, Thresholds::default());
        // 6.1 matches 6.1; the second boots (6.12, 6.13) match each other.
        assert_eq!(c.unchanged, 2);
        assert!(c.changes.is_empty());
        // A run of fewer kernels: its 6.12 is the baseline's 6.12, at another boot.
        let now = run(vec![at(1, "6.12", v("a", Fail))]);
        let c = Comparison::of(&baseline, &now, Thresholds::default());
        assert_eq!(
            c.columns[0],
            ColumnMatch {
                baseline: Some("emulated boot 2 · 6.12".into()),
                run: Some("emulated · 6.12".into()),
                other_build: None,
            }
        );
        assert_eq!(
            kinds(&c),
            [
                (ChangeKind::NewFailure, "a"),
                (ChangeKind::Disappeared, "a")
            ]
        );
    }

    #[test]
    fn a_kernel_booted_twice_is_compared_boot_by_boot() {
        use Outcome::*;
        let boots = |third: Outcome| {
            run(vec![
                at(1, "6.1", v("a", Pass)),
                at(2, "6.12", v("a", Pass)),
                at(3, "6.1", v("a", third)),
            ])
        };
        let c = Comparison::of(&boots(Pass), &boots(Fail), Thresholds::default());
        assert_eq!(c.unchanged, 2);
        assert_eq!(kinds(&c), [(ChangeKind::NewFailure, "a")]);
        assert_eq!(c.changes[0].column, "emulated boot 3 · 6.1");
        assert!(c.regressed());
    }

    #[test]
    fn two_builds_of_one_release_are_told_apart() {
        let built = |sha: &str| RunSummary {
            environments: vec![Environment {
                host: vec![crate::model::Feature::new(KERNEL_IMAGE_SHA256, sha)],
                ..crate::fixtures::environment()
            }],
            ..run(vec![v("a", Outcome::Pass)])
        };
        let c = Comparison::of(
            &built("aaaaaaaaaaaaaaaa"),
            &built("bbbbbbbbbbbbbbbb"),
            Thresholds::default(),
        );
        assert_eq!(
            c.columns[0].other_build.as_deref(),
            Some("another build of 6.12.95: image sha256 aaaaaaaaaaaa… → bbbbbbbbbbbb…")
        );
        assert!(
            c.text()
                .contains("  column emulated · 6.12.95: another build of 6.12.95"),
            "{}",
            c.text()
        );
        let same = Comparison::of(&built("aaaa"), &built("aaaa"), Thresholds::default());
        assert_eq!(same.columns[0].other_build, None);
    }

    #[test]
    fn a_run_with_nothing_to_compare_regressed() {
        use Outcome::*;
        let baseline = run(vec![v("a", Pass), v("b", Pass)]);
        let empty = Comparison::of(&baseline, &run(vec![]), Thresholds::default());
        assert_eq!(empty.regressions(), ["the run has no verdict"]);
        let vanished = Comparison::of(&baseline, &run(vec![v("c", Pass)]), Thresholds::default());
        assert_eq!(
            vanished.regressions(),
            ["none of the baseline's 2 checks ran (every one vanished)"]
        );
        assert!(vanished
            .text()
            .ends_with("regressed: none of the baseline's 2 checks ran (every one vanished)\n"));
        // One check left in common is a comparison: the others vanished as a filter does.
        let filtered = Comparison::of(&baseline, &run(vec![v("a", Pass)]), Thresholds::default());
        assert!(!filtered.regressed(), "{filtered:?}");
    }

    #[test]
    fn the_terminal_text_carries_no_control_characters() {
        let hostile = "t\u{1b}[2J\nforged";
        let baseline = run(vec![v(hostile, Outcome::Pass)]);
        let now = run(vec![crate::fixtures::verdict(
            hostile,
            Outcome::Fail,
            hostile,
        )]);
        let text = Comparison::of(&baseline, &now, Thresholds::default()).text();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("t\u{fffd}[2J forged  pass → fail"), "{text}");
    }

    fn measured(test: &str, values: &[(&str, &str)]) -> Verdict {
        let mut verdict = v(test, Outcome::Pass);
        verdict.detail = values
            .iter()
            .map(|(what, observed)| Evidence::Values {
                what: what.to_string(),
                expected: "measured".into(),
                observed: observed.to_string(),
            })
            .collect();
        verdict
    }

    #[test]
    fn figures_move_past_both_the_share_and_the_floor() {
        let baseline = run(vec![measured(
            "cost::cow",
            &[
                ("per page, MTE VM", "40.0 µs"),
                ("per page, VM without MTE", "30.0 µs"),
                ("tagged / untagged", "1.33"),
                ("tiny", "0.2 µs"),
                ("fork", "2.0 ms"),
            ],
        )]);
        let now = run(vec![measured(
            "cost::cow",
            &[
                ("per page, MTE VM", "60.0 µs"),         // +50 %: worse
                ("per page, VM without MTE", "20.0 µs"), // -33 %: better
                ("tagged / untagged", "1.40"),           // +5 %: within
                ("tiny", "0.9 µs"),                      // +350 %, but under 1 µs
                ("fork", "2.4 ms"),                      // +20 %: within
            ],
        )]);
        let c = Comparison::of(&baseline, &now, Thresholds::default());
        let moved: Vec<(&str, bool)> = c
            .figures
            .iter()
            .map(|f| (f.what.as_str(), f.worse()))
            .collect();
        assert_eq!(
            moved,
            [
                ("per page, MTE VM", true),
                ("per page, VM without MTE", false)
            ]
        );
        assert_eq!(c.figures[0].describe(), "40.0 µs → 60.0 µs (+50 %)");
        assert_eq!(c.regressions(), ["1 figure worse"]);
        let text = c.text();
        assert!(
            text.contains("worse   emulated · 6.12.95  cost::cow  per page, MTE VM: 40.0 µs → 60.0 µs (+50 %)"),
            "{text}"
        );
    }

    #[test]
    fn long_reasons_are_cut_in_the_terminal_text() {
        assert_eq!(shortened("short"), "short");
        let long = "é".repeat(200);
        assert_eq!(shortened(&long).chars().count(), REASON_CHARS + 1);
    }

    #[test]
    fn a_run_that_ended_early_regressed() {
        let baseline = run(vec![v("a", Outcome::Pass)]);
        let mut now = run(vec![v("a", Outcome::Pass)]);
        now.error = Some("emulated lane: the kernel panicked".into());
        let c = Comparison::of(&baseline, &now, Thresholds::default());
        assert_eq!(
            c.regressions(),
            ["the run ended early: emulated lane: the kernel panicked"]
        );
    }

    #[test]
    fn a_comparison_round_trips_through_json() {
        let c = Comparison::of(
            &run(vec![measured("t", &[("x", "1 ms")])]),
            &run(vec![measured("t", &[("x", "3 ms")])]),
            Thresholds::default(),
        )
        .named(
            "nightly",
            "20261121-000000-host-6.12",
            "20261122-000000-host-6.12",
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Comparison>(&json).unwrap(), c);
    }
}
