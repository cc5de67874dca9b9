//! A finished run as the reports see it, and its plain-text table for the terminal.

use std::fmt::Write as _;

use crate::bench::Benchmark;
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

impl RunSummary {
    pub fn tally(&self) -> Tally {
        Tally::of(&self.verdicts)
    }
}

/// One line per verdict (outcome, where it ran when the run has several places, test, duration
/// and, unless it passed, the reason), then the run's error if any, then a totals line per place
/// where there are several, then the totals line, `N passed, N failed, N skipped, N xfailed`,
/// last and alone on its line so that tools reading a harness's closing line find it. A place is
/// a lane, or a lane and a kernel where one lane ran on several kernels.
pub fn table(summary: &RunSummary) -> String {
    let name_width = summary
        .verdicts
        .iter()
        .map(|v| v.test.chars().count())
        .max()
        .unwrap_or(0);
    let mut places: Vec<(Lane, &str)> = Vec::new();
    for v in &summary.verdicts {
        if !places.contains(&(v.lane, v.kernel.as_str())) {
            places.push((v.lane, &v.kernel));
        }
    }
    let several_kernels = places
        .iter()
        .any(|(lane, kernel)| places.iter().any(|(l, k)| l == lane && k != kernel));
    let place_of = |v: &Verdict| {
        if several_kernels {
            format!("{} {}", v.lane, v.kernel)
        } else {
            v.lane.to_string()
        }
    };
    let mut names: Vec<String> = Vec::new();
    for v in &summary.verdicts {
        let name = place_of(v);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let several = names.len() > 1;
    let place_width = names.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for v in &summary.verdicts {
        let place = if several {
            format!("{:<place_width$}  ", place_of(v))
        } else {
            String::new()
        };
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
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if let Some(error) = &summary.error {
        let _ = writeln!(out, "error: {}", error.lines().next().unwrap_or_default());
    }
    if several {
        for name in &names {
            let tally = Tally::of(summary.verdicts.iter().filter(|v| place_of(v) == *name));
            let name = match name.split_once(' ') {
                Some((lane, kernel)) => format!("{lane} lane on {kernel}"),
                None => format!("{name} lane"),
            };
            let _ = writeln!(out, "{name}: {tally}");
        }
    }
    let _ = writeln!(out, "run took {}", format_duration(summary.wall_ms));
    let _ = writeln!(out, "{}", summary.tally());
    out
}

/// A duration for people: milliseconds below ten seconds, then seconds, then minutes.
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
