//! A finished run as the reports see it (its columns: a boot of a lane, on its kernel), and its
//! plain-text table for the terminal.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::bench::Benchmark;
use crate::boot::BootKey;
use crate::group::in_order_of_first;
use crate::model::{Environment, Lane, NotRun, Outcome, Tally, Verdict};
use crate::text::{first_line, one_line, printable};

/// Everything the reports need about one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSummary {
    /// One per lane that ran, in the order the lanes ran.
    pub environments: Vec<Environment>,
    /// In the order they arrived.
    pub verdicts: Vec<Verdict>,
    /// The performance suite's results, in the order they arrived (a run of `bench`).
    pub benchmarks: Vec<Benchmark>,
    /// Wall time of the whole run, boot included, in milliseconds.
    pub wall_ms: f64,
    /// Why the run ended before every check reported, e.g. "QEMU exited early: ...".
    pub error: Option<String>,
    /// The planned checks that never reported, in the order they were planned.
    pub not_run: Vec<NotRun>,
}

/// The verdicts of one boot of a lane: a column of the reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Column<'a> {
    pub lane: Lane,
    /// The lane's boot, counted from 1.
    pub boot: u32,
    pub kernel: &'a str,
    /// As the reports head it: `lane · kernel`, with the boot where the lane booted more than
    /// once (`emulated boot 3 · 6.1.0-57-arm64`).
    pub name: String,
    pub verdicts: Vec<&'a Verdict>,
    /// Its planned checks that never reported.
    pub not_run: Vec<&'a NotRun>,
}

impl<'a> Column<'a> {
    pub fn key(&self) -> BootKey<'a> {
        BootKey {
            lane: self.lane,
            boot: self.boot,
            kernel: self.kernel,
        }
    }
}

impl NotRun {
    pub fn key(&self) -> BootKey<'_> {
        BootKey {
            lane: self.lane,
            boot: self.boot,
            kernel: &self.kernel,
        }
    }
}

/// The name of the column of boot `key`: `lane · kernel`, or `lane boot N · kernel` when its
/// lane has several columns (`several_in_lane`), which is what tells a kernel booted twice
/// apart.
pub fn column_name(key: BootKey, several_in_lane: bool) -> String {
    if several_in_lane {
        format!("{} boot {} · {}", key.lane, key.boot, key.kernel)
    } else {
        format!("{} · {}", key.lane, key.kernel)
    }
}

/// The columns of `verdicts`, in the order their first verdict arrived.
pub fn columns_of(verdicts: &[Verdict]) -> Vec<Column<'_>> {
    columns_with(verdicts, &[])
}

/// The columns of `verdicts` and of the checks that did not run: those of the verdicts in the
/// order their first verdict arrived, then the boots that stopped before any verdict.
fn columns_with<'a>(verdicts: &'a [Verdict], not_run: &'a [NotRun]) -> Vec<Column<'a>> {
    let mut groups: Vec<(BootKey, Vec<&Verdict>, Vec<&NotRun>)> =
        (in_order_of_first(verdicts, |v| BootKey::of(v)).into_iter())
            .map(|(key, verdicts)| (key, verdicts, Vec::new()))
            .collect();
    for n in not_run {
        match groups.iter_mut().find(|(key, _, _)| *key == n.key()) {
            Some((_, _, missing)) => missing.push(n),
            None => groups.push((n.key(), Vec::new(), vec![n])),
        }
    }
    let in_lane = |lane: Lane| groups.iter().filter(|(k, _, _)| k.lane == lane).count();
    let several: Vec<bool> = groups.iter().map(|(k, _, _)| in_lane(k.lane) > 1).collect();
    groups
        .into_iter()
        .zip(several)
        .map(|((key, verdicts, not_run), several)| Column {
            lane: key.lane,
            boot: key.boot,
            kernel: key.kernel,
            name: column_name(key, several),
            verdicts,
            not_run,
        })
        .collect()
}

/// The column name of each verdict of `verdicts`, as [`columns_of`] names them.
pub fn column_names(verdicts: &[Verdict]) -> HashMap<BootKey<'_>, String> {
    columns_of(verdicts)
        .into_iter()
        .map(|c| (c.key(), c.name))
        .collect()
}

impl RunSummary {
    pub fn tally(&self) -> Tally {
        Tally::of(&self.verdicts)
    }

    /// The run's columns: those of its verdicts in the order their first verdict arrived, then
    /// those of boots that stopped before any verdict.
    pub fn columns(&self) -> Vec<Column<'_>> {
        columns_with(&self.verdicts, &self.not_run)
    }

    /// Each column's name, by its boot.
    pub fn column_names(&self) -> HashMap<BootKey<'_>, String> {
        (self.columns().into_iter())
            .map(|c| (c.key(), c.name))
            .collect()
    }
}

/// One line per verdict (outcome, where it ran when the run has several places, test, duration
/// and, unless it passed, the reason), then the run's error if any, then a totals line per place
/// where there are several, then the totals line, `N passed, N failed, N skipped, N xfailed`,
/// last and alone on its line so that tools reading a harness's closing line find it. A place is
/// a lane, or a column (a boot of the lane, with its kernel) where one lane booted several
/// times. Text from the results is printable only ([`crate::text`]): the table goes to a
/// terminal.
pub fn table(summary: &RunSummary) -> String {
    let columns = summary.columns();
    let lane_has_several = |lane: Lane| columns.iter().filter(|c| c.lane == lane).count() > 1;
    let place_of = |key: BootKey| -> Place {
        match columns.iter().find(|c| c.key() == key) {
            Some(column) if lane_has_several(key.lane) => Place::Column(printable(&column.name)),
            _ => Place::Lane(key.lane),
        }
    };
    let places = in_order_of_first(&summary.verdicts, |v| place_of(BootKey::of(v)));
    let lanes = in_order_of_first(&columns, |c| place_of(c.key())).len();
    let names =
        (summary.verdicts.iter().map(|v| &v.test)).chain(summary.not_run.iter().map(|n| &n.test));
    let name_width = names.map(|t| one_line(t).chars().count()).max();
    let name_width = name_width.unwrap_or(0);
    let place_width = (columns.iter())
        .map(|c| place_of(c.key()).to_string().chars().count())
        .max()
        .filter(|_| lanes > 1);
    let mut out = String::new();
    for v in &summary.verdicts {
        let place = place_width.map(|width| (place_of(BootKey::of(v)), width));
        out.push_str(&verdict_line(v, name_width, place));
    }
    for n in &summary.not_run {
        let place = place_width.map(|width| (place_of(n.key()), width));
        out.push_str(&not_run_line(n, name_width, place));
    }
    if let Some(error) = &summary.error {
        let _ = writeln!(out, "error: {}", first_line(error));
    }
    if let Some(line) = not_run_totals(&summary.not_run) {
        let _ = writeln!(out, "{line}");
    }
    if lanes > 1 {
        for (place, verdicts) in &places {
            let _ = writeln!(
                out,
                "{}: {}",
                place.title(),
                Tally::of(verdicts.iter().copied())
            );
        }
    }
    let _ = writeln!(out, "run took {}", format_duration(summary.wall_ms));
    let _ = writeln!(out, "{}", summary.tally());
    out
}

/// Where the table says a verdict ran: its lane, or its column where its lane booted several
/// times.
#[derive(Clone, Debug, PartialEq)]
enum Place {
    Lane(Lane),
    /// The column's name, printable.
    Column(String),
}

impl Place {
    /// What its totals line is headed: `emulated lane`, `emulated boot 3 · 6.1.0-57-arm64`.
    fn title(&self) -> String {
        match self {
            Place::Lane(lane) => format!("{lane} lane"),
            Place::Column(name) => name.clone(),
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Lane(lane) => write!(f, "{lane}"),
            Place::Column(name) => f.write_str(name),
        }
    }
}

/// A verdict's line of the table, with its place padded to `width` where there are several.
fn verdict_line(v: &Verdict, name_width: usize, place: Option<(Place, usize)>) -> String {
    let place = place.map_or(String::new(), |(place, width)| {
        format!("{:<width$}  ", place.to_string())
    });
    let mut line = format!(
        "{:<5}  {place}{:<name_width$}  {:>9}",
        v.outcome.as_str(),
        one_line(&v.test),
        format_duration(v.duration_ms)
    );
    if v.outcome != Outcome::Pass {
        // Only the first line: the table stays one line per verdict.
        line.push_str("  ");
        line.push_str(&first_line(&v.reason));
    }
    format!("{}\n", line.trim_end())
}

/// A line of the table for a check that did not run: `norun` where the outcome goes.
fn not_run_line(n: &NotRun, name_width: usize, place: Option<(Place, usize)>) -> String {
    let place = place.map_or(String::new(), |(place, width)| {
        format!("{:<width$}  ", place.to_string())
    });
    let line = format!(
        "norun  {place}{:<name_width$}  {:>9}  {}",
        one_line(&n.test),
        "",
        n.reason()
    );
    format!("{}\n", line.trim_end())
}

/// `did not run: N checks (a and b were running when their machine stopped)`.
fn not_run_totals(not_run: &[NotRun]) -> Option<String> {
    if not_run.is_empty() {
        return None;
    }
    let running: Vec<String> = (not_run.iter())
        .filter(|n| n.was_running)
        .map(|n| one_line(&n.test))
        .collect();
    let plural = if not_run.len() == 1 { "" } else { "s" };
    let mut line = format!("did not run: {} check{plural}", not_run.len());
    if !running.is_empty() {
        let verb = if running.len() == 1 { "was" } else { "were" };
        let _ = write!(
            line,
            " ({} {verb} running when the machine stopped)",
            running.join(", ")
        );
    }
    Some(line)
}

/// A duration for people: milliseconds below ten seconds, then seconds, then minutes.
/// (humantime's format_duration writes every unit, `12s 345ms`; a table wants one figure.)
pub fn format_duration(ms: f64) -> String {
    let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
    if ms < 10_000.0 {
        format!("{ms:.1} ms")
    } else if ms < 600_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0).round() as u64;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(test: &str, outcome: Outcome, reason: &str) -> Verdict {
        Verdict {
            duration_ms: 12.34,
            ..crate::fixtures::verdict(test, outcome, reason)
        }
    }

    #[test]
    fn table_aligns_verdicts_and_ends_with_the_totals_line() {
        let summary = RunSummary {
            benchmarks: Vec::new(),
            verdicts: vec![
                verdict("tags::first_touch", Outcome::Pass, "tags agree"),
                verdict("cow::fork", Outcome::Fail, "child sees tag 0\nsecond line"),
                verdict("migrate::postcopy", Outcome::Skip, "no userfaultfd"),
                verdict("shared::memfd", Outcome::Xfail, "refused before 6.2"),
            ],
            wall_ms: 61_000.0,
            error: Some("QEMU exited early: signal 9".into()),
            ..RunSummary::default()
        };
        let table = table(&summary);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 7, "{table}");
        assert_eq!(lines[0], "pass   tags::first_touch    12.3 ms");
        assert_eq!(
            lines[1],
            "fail   cow::fork            12.3 ms  child sees tag 0"
        );
        assert!(
            lines[3].starts_with("xfail  shared::memfd        12.3 ms"),
            "{table}"
        );
        assert_eq!(lines[4], "error: QEMU exited early: signal 9");
        assert_eq!(lines[5], "run took 61.00 s");
        assert_eq!(lines[6], "1 passed, 1 failed, 1 skipped, 1 xfailed");
    }

    #[test]
    fn several_lanes_show_their_lane_and_their_own_totals() {
        let in_lane = |lane: &str, outcome| Verdict {
            lane: lane.parse().unwrap(),
            ..verdict("tags::a", outcome, "why")
        };
        let summary = RunSummary {
            benchmarks: Vec::new(),
            verdicts: vec![
                in_lane("emulated", Outcome::Pass),
                in_lane("qemu", Outcome::Skip),
            ],
            ..RunSummary::default()
        };
        let table = table(&summary);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "pass   emulated  tags::a    12.3 ms");
        assert!(lines[1].starts_with("skip   qemu      tags::a"), "{table}");
        assert_eq!(
            lines[2],
            "emulated lane: 1 passed, 0 failed, 0 skipped, 0 xfailed"
        );
        assert_eq!(
            lines[3],
            "qemu lane: 0 passed, 0 failed, 1 skipped, 0 xfailed"
        );
        assert_eq!(
            *lines.last().unwrap(),
            "1 passed, 0 failed, 1 skipped, 0 xfailed"
        );
    }

    #[test]
    fn a_lane_booted_several_times_shows_each_boot_with_its_kernel() {
        let on = |lane: &str, boot: u32, kernel: &str| Verdict {
            lane: lane.parse().unwrap(),
            boot,
            kernel: kernel.into(),
            ..verdict("tags::a", Outcome::Pass, "why")
        };
        let summary = RunSummary {
            benchmarks: Vec::new(),
            verdicts: vec![
                on("emulated", 1, "6.1.0-56-arm64"),
                on("emulated", 2, "6.12.95+deb12-arm64"),
                on("emulated", 3, "6.1.0-56-arm64"),
                on("qemu", 1, "qemu-10.0.2"),
            ],
            ..RunSummary::default()
        };
        let table = table(&summary);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "pass   emulated boot 1 · 6.1.0-56-arm64       tags::a    12.3 ms"
        );
        assert!(
            lines[2].starts_with("pass   emulated boot 3 · 6.1.0-56-arm64       tags::a"),
            "{table}"
        );
        assert!(lines[3].starts_with("pass   qemu     "), "{table}");
        assert_eq!(
            lines[6],
            "emulated boot 3 · 6.1.0-56-arm64: 1 passed, 0 failed, 0 skipped, 0 xfailed"
        );
        assert_eq!(
            lines[7],
            "qemu lane: 1 passed, 0 failed, 0 skipped, 0 xfailed"
        );
        assert_eq!(lines[9], "4 passed, 0 failed, 0 skipped, 0 xfailed");
    }

    #[test]
    fn text_from_results_cannot_drive_the_terminal() {
        let hostile = "x\u{1b}[2J\u{1b}]0;owned\u{7}\r\nforged line";
        let summary = RunSummary {
            verdicts: vec![verdict(hostile, Outcome::Fail, hostile)],
            error: Some(hostile.into()),
            ..RunSummary::default()
        };
        let table = table(&summary);
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.starts_with("fail   x\u{fffd}[2J"), "{table}");
    }

    #[test]
    fn checks_that_never_ran_are_listed_and_counted() {
        let missing = |test: &str, was_running| NotRun {
            test: test.into(),
            lane: Lane::Emulated,
            boot: 1,
            kernel: "6.12.95".into(),
            was_running,
        };
        let summary = RunSummary {
            verdicts: vec![verdict("tags::a", Outcome::Pass, "ok")],
            not_run: vec![missing("swap::b", true), missing("tags::c", false)],
            error: Some("the machine printed nothing for 30 s".into()),
            ..RunSummary::default()
        };
        let table = table(&summary);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "pass   tags::a    12.3 ms");
        assert_eq!(
            lines[1],
            "norun  swap::b             did not finish: it was running when its machine stopped"
        );
        assert_eq!(
            lines[2],
            "norun  tags::c             did not run: its machine stopped before it started"
        );
        assert_eq!(
            lines[4],
            "did not run: 2 checks (swap::b was running when the machine stopped)"
        );
        assert_eq!(lines[6], "1 passed, 0 failed, 0 skipped, 0 xfailed");
    }

    #[test]
    fn an_empty_run_still_prints_its_totals() {
        assert!(
            table(&RunSummary::default()).ends_with("\n0 passed, 0 failed, 0 skipped, 0 xfailed\n")
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(0.26), "0.3 ms");
        assert_eq!(format_duration(9_999.0), "9999.0 ms");
        assert_eq!(format_duration(12_345.0), "12.35 s");
        assert_eq!(format_duration(3_723_000.0), "62m03s");
        assert_eq!(format_duration(f64::NAN), "0.0 ms");
    }
}
