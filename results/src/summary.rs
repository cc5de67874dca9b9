//! A finished run as the reports see it (its columns: a lane on a kernel), and its plain-text
//! table for the terminal.

use std::fmt::{self, Write as _};

use crate::bench::Benchmark;
use crate::group::in_order_of_first;
use crate::model::{Environment, Lane, Outcome, Tally, Verdict};

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
}

/// The verdicts of one lane on one kernel: a column of the reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Column<'a> {
    pub lane: Lane,
    pub kernel: &'a str,
    pub verdicts: Vec<&'a Verdict>,
}

impl Column<'_> {
    /// `lane · kernel`, as the HTML report and the comparison name a column.
    pub fn name(&self) -> String {
        column_name(self.lane, self.kernel)
    }
}

/// The name of the column of `lane` on `kernel`: `lane · kernel`.
pub fn column_name(lane: Lane, kernel: &str) -> String {
    format!("{lane} · {kernel}")
}

impl RunSummary {
    pub fn tally(&self) -> Tally {
        Tally::of(&self.verdicts)
    }

    /// The run's columns, in the order their first verdict arrived.
    pub fn columns(&self) -> Vec<Column<'_>> {
        in_order_of_first(&self.verdicts, |v| (v.lane, v.kernel.as_str()))
            .into_iter()
            .map(|((lane, kernel), verdicts)| Column {
                lane,
                kernel,
                verdicts,
            })
            .collect()
    }
}

/// One line per verdict (outcome, where it ran when the run has several places, test, duration
/// and, unless it passed, the reason), then the run's error if any, then a totals line per place
/// where there are several, then the totals line, `N passed, N failed, N skipped, N xfailed`,
/// last and alone on its line so that tools reading a harness's closing line find it. A place is
/// a lane, or a lane and a kernel where one lane ran on several kernels.
pub fn table(summary: &RunSummary) -> String {
    let columns = summary.columns();
    let with_kernel = columns.iter().any(|c| {
        columns
            .iter()
            .any(|o| o.lane == c.lane && o.kernel != c.kernel)
    });
    let places = in_order_of_first(&summary.verdicts, |v| Place::of(v, with_kernel));
    let name_width = summary.verdicts.iter().map(|v| v.test.chars().count());
    let name_width = name_width.max().unwrap_or(0);
    let place_width = places.iter().map(|(p, _)| p.to_string().chars().count());
    let place_width = (places.len() > 1).then(|| place_width.max().unwrap_or(0));
    let mut out = String::new();
    for v in &summary.verdicts {
        let place = place_width.map(|width| (Place::of(v, with_kernel), width));
        out.push_str(&verdict_line(v, name_width, place));
    }
    if let Some(error) = &summary.error {
        let _ = writeln!(out, "error: {}", error.lines().next().unwrap_or_default());
    }
    if places.len() > 1 {
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

/// Where the table says a verdict ran: its lane, with the kernel where a lane ran on several.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Place<'a> {
    lane: Lane,
    kernel: Option<&'a str>,
}

impl<'a> Place<'a> {
    fn of(v: &'a Verdict, with_kernel: bool) -> Self {
        Place {
            lane: v.lane,
            kernel: with_kernel.then_some(v.kernel.as_str()),
        }
    }

    /// What its totals line is headed: `emulated lane`, `emulated lane on 6.12`.
    fn title(&self) -> String {
        match self.kernel {
            Some(kernel) => format!("{} lane on {kernel}", self.lane),
            None => format!("{} lane", self.lane),
        }
    }
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kernel {
            Some(kernel) => write!(f, "{} {kernel}", self.lane),
            None => write!(f, "{}", self.lane),
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
        v.test,
        format_duration(v.duration_ms)
    );
    if v.outcome != Outcome::Pass {
        // Only the first line: the table stays one line per verdict.
        let reason = v.reason.lines().next().unwrap_or_default();
        line.push_str("  ");
        line.push_str(reason);
    }
    format!("{}\n", line.trim_end())
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
    fn a_lane_on_several_kernels_shows_each_kernel() {
        let on = |lane: &str, kernel: &str| Verdict {
            lane: lane.parse().unwrap(),
            kernel: kernel.into(),
            ..verdict("tags::a", Outcome::Pass, "why")
        };
        let summary = RunSummary {
            benchmarks: Vec::new(),
            verdicts: vec![
                on("emulated", "6.1.0-56-arm64"),
                on("emulated", "6.12.95+deb12-arm64"),
                on("qemu", "6.1.0-cloud"),
            ],
            ..RunSummary::default()
        };
        let table = table(&summary);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "pass   emulated 6.1.0-56-arm64       tags::a    12.3 ms"
        );
        assert!(
            lines[1].starts_with("pass   emulated 6.12.95+deb12-arm64  tags::a"),
            "{table}"
        );
        assert_eq!(
            lines[3],
            "emulated lane on 6.1.0-56-arm64: 1 passed, 0 failed, 0 skipped, 0 xfailed"
        );
        assert_eq!(
            lines[5],
            "qemu lane on 6.1.0-cloud: 1 passed, 0 failed, 0 skipped, 0 xfailed"
        );
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
