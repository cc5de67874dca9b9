//! The report's views of performance: a run's benchmarks (the ratios first, then the medians by
//! group, with their intervals) and the suite's own speed. Layout only; the template draws it.

use serde::Serialize;

use crate::bench::Benchmark;
use crate::bench_summary::{format_ns, format_rate, BenchLine, BenchSummary, Ratio, MEDIAN_TIME};
use crate::figures::FigureKind;
use crate::group::in_order_of_first;
use crate::model::Outcome;
use crate::plot::{interval_chart, BarChart, Interval};
use crate::speed::{Judged, SuiteSpeed};
use crate::summary::{format_duration, RunSummary};

/// The benchmarks of one lane on one kernel.
#[derive(Serialize)]
pub struct BenchColumnView {
    pub lane: String,
    pub kernel: String,
    /// The ratios of the declared pairs, with their intervals, against the line at 1.0: a
    /// chart a group, each to its own scale (tag copies cost tens of plain copies, the rest
    /// near one).
    pub ratios: Vec<BenchGroupView>,
    pub groups: Vec<BenchGroupView>,
    pub rows: Vec<BenchRow>,
}

/// The medians (or ratios) of one group of benchmarks (`copy_tags`, `swap`, ...), with their
/// intervals.
#[derive(Serialize)]
pub struct BenchGroupView {
    pub name: String,
    pub chart: BarChart,
}

/// One benchmark in the table.
#[derive(Serialize)]
pub struct BenchRow {
    pub id: String,
    pub outcome: &'static str,
    pub median: String,
    pub interval: String,
    pub mean: String,
    pub throughput: String,
    pub samples: String,
    pub figures: String,
    pub reason: String,
    /// The counter's resolution, beside a figure close to it.
    pub resolution: String,
    /// Why the figure is not to be trusted: taken under host CPU pressure.
    pub pressure: String,
}

/// The part of a benchmark id before its first `/` (its group), and the rest.
fn split_group(id: &str) -> (&str, &str) {
    let (group, rest) = id.split_once('/').unwrap_or((id, ""));
    (group, rest.trim_start_matches('/'))
}

/// The benchmarks of a run, by lane and kernel.
pub fn bench_view(benchmarks: &[Benchmark]) -> Vec<BenchColumnView> {
    BenchSummary::of(benchmarks)
        .columns
        .into_iter()
        .map(|column| BenchColumnView {
            lane: column.lane.to_string(),
            ratios: ratio_charts(&column.ratios),
            groups: median_charts(&column.benchmarks),
            rows: column.benchmarks.iter().map(BenchRow::of).collect(),
            kernel: column.kernel,
        })
        .collect()
}

/// A chart a group of the ratios, each to its own scale.
fn ratio_charts(ratios: &[Ratio]) -> Vec<BenchGroupView> {
    let interval = |r: &Ratio, which: &str| {
        Some(Interval {
            label: if r.of == MEDIAN_TIME {
                format!("{which}: {}", r.what)
            } else {
                format!("{which}: {}, {}", r.what, r.of)
            },
            value: r.value,
            lower: r.lower,
            upper: r.upper,
        })
    };
    group_charts(
        ratios,
        |r| &r.numerator,
        interval,
        "ratios",
        FigureKind::Ratio,
    )
}

/// A chart a group of the medians, in milliseconds.
fn median_charts(benchmarks: &[BenchLine]) -> Vec<BenchGroupView> {
    let interval = |b: &BenchLine, which: &str| {
        Some(Interval {
            label: which.to_string(),
            value: b.median_ns? / 1e6,
            lower: b.lower_ns.map(|ns| ns / 1e6),
            upper: b.upper_ns.map(|ns| ns / 1e6),
        })
    };
    group_charts(
        benchmarks,
        |b| &b.id,
        interval,
        "timings",
        FigureKind::Timing,
    )
}

/// A chart a group of `items`, by the group of the benchmark id each names, a bar an item
/// that has an interval (`interval` is given the id past its group); none for a group
/// without one.
fn group_charts<T>(
    items: &[T],
    id: impl Fn(&T) -> &str,
    interval: impl Fn(&T, &str) -> Option<Interval>,
    title: &'static str,
    kind: FigureKind,
) -> Vec<BenchGroupView> {
    in_order_of_first(items, |item| split_group(id(item)).0)
        .into_iter()
        .filter_map(|(name, of_group)| {
            let intervals: Vec<Interval> = (of_group.into_iter())
                .filter_map(|item| interval(item, split_group(id(item)).1))
                .collect();
            (!intervals.is_empty()).then(|| BenchGroupView {
                name: name.to_string(),
                chart: interval_chart(title, kind, &intervals),
            })
        })
        .collect()
}

impl BenchRow {
    fn of(b: &BenchLine) -> Self {
        BenchRow {
            id: b.id.clone(),
            outcome: if b.outcome == Outcome::Pass {
                "measured"
            } else {
                b.outcome.as_str()
            },
            median: b.median_ns.map(format_ns).unwrap_or_default(),
            interval: match (b.lower_ns, b.upper_ns) {
                (Some(l), Some(u)) => format!("{} – {}", format_ns(l), format_ns(u)),
                _ => String::new(),
            },
            mean: b.mean_ns.map(format_ns).unwrap_or_default(),
            throughput: b.bytes_per_second.map(format_rate).unwrap_or_default(),
            samples: b.samples.map(|n| n.to_string()).unwrap_or_default(),
            figures: b
                .figures
                .iter()
                .map(|q| format!("{}: {} {}", q.what, q.value, q.unit))
                .collect::<Vec<_>>()
                .join("; "),
            reason: b.reason.clone(),
            resolution: b.resolution.clone().unwrap_or_default(),
            pressure: b.pressure_flag().unwrap_or_default(),
        }
    }
}

/// The suite's speed, as the report states it.
#[derive(Serialize)]
pub struct SpeedView {
    pub line: String,
    /// Why the targets are not judged on this run; empty where they are.
    pub not_judged: String,
    pub targets: Vec<TargetView>,
    pub lanes: Vec<LaneSpeedView>,
}

#[derive(Serialize)]
pub struct TargetView {
    pub text: String,
    /// `met`, `not met`, or `not judged` for a run the targets are not for.
    pub verdict: &'static str,
}

#[derive(Serialize)]
pub struct LaneSpeedView {
    pub lane: String,
    pub kernel: String,
    pub checks: usize,
    pub proofs: usize,
    pub wall: String,
    pub boot: String,
    pub first_verdict: String,
    pub checks_time: String,
    pub median_check: String,
    pub slowest: Vec<(String, String)>,
}

/// The speed of a run of checks; none for a run without verdicts.
pub fn speed_view(summary: &RunSummary) -> Option<SpeedView> {
    let speed = SuiteSpeed::of(summary)?;
    let seconds = |s: Option<f64>| s.map_or("not recorded".to_string(), |s| format!("{s:.2} s"));
    let not_judged = match &speed.judged {
        Judged::Yes => String::new(),
        Judged::NotTheirRun => "not the full default run".into(),
        Judged::Incomplete(why) => why.clone(),
    };
    Some(SpeedView {
        line: speed.line(),
        targets: speed
            .targets()
            .into_iter()
            .map(|(text, met)| TargetView {
                text,
                verdict: match met {
                    Some(true) => "met",
                    Some(false) => "not met",
                    None => "not judged",
                },
            })
            .collect(),
        not_judged,
        lanes: speed
            .lanes
            .iter()
            .map(|lane| LaneSpeedView {
                lane: lane.lane.to_string(),
                kernel: lane.kernel.clone(),
                checks: lane.checks,
                proofs: lane.proofs,
                wall: seconds(lane.wall_s),
                boot: seconds(lane.boot_s),
                first_verdict: seconds(lane.first_verdict_s),
                checks_time: seconds(lane.checks_s),
                median_check: format_duration(lane.median_check_ms),
                slowest: lane
                    .slowest
                    .iter()
                    .map(|(test, ms)| (test.clone(), format_duration(*ms)))
                    .collect(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Versus;
    use crate::fixtures::benchmark as measured;

    #[test]
    fn columns_lead_with_their_ratios_and_chart_each_group() {
        let mut tagged = measured("swap/in/tagged", 2e6);
        tagged.versus = Some(Versus {
            baseline: "swap/in/untagged".into(),
            ratio: "tagged / untagged".into(),
        });
        let untagged = measured("swap/in/untagged", 1e6);
        let copy = measured("copy_tags/from_guest/4 KiB", 1e3);
        let view = bench_view(&[tagged, untagged, copy]);
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].ratios.len(), 1);
        let ratios = &view[0].ratios[0];
        assert_eq!(ratios.name, "swap");
        assert_eq!(ratios.chart.bars[0].label, "in/tagged: tagged / untagged");
        assert_eq!(ratios.chart.bars[0].value, "2.00");
        let names: Vec<&str> = view[0].groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["swap", "copy_tags"]);
        assert_eq!(view[0].groups[0].chart.bars[0].label, "in/tagged");
        assert_eq!(view[0].rows[2].throughput, "3.8 GiB/s");
        assert_eq!(view[0].rows[0].median, "2.00 ms");
    }
}
