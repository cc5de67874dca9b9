//! A run's benchmarks as the reports show them (`bench.json`): per lane and kernel, each
//! benchmark's median with its interval and throughput, and the ratios of the pairs the
//! benchmarks declared, which carry from one machine to another where the times do not.

use serde::{Deserialize, Serialize};

use crate::bench::{Benchmark, Quantity, BYTES, GUEST_COUNTER_FREQUENCY};
use crate::figures::{format_figure, FigureKind};
use crate::group::in_order_of_first;
use crate::model::{Lane, Outcome};
use crate::SCHEMA_VERSION;

/// The contents of `bench.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchSummary {
    pub schema: u32,
    /// One per lane and kernel, in the order they reported.
    pub columns: Vec<BenchColumn>,
}

/// The benchmarks of one lane on one kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchColumn {
    pub lane: Lane,
    pub kernel: String,
    /// The ratios first: they are what carries across machines.
    pub ratios: Vec<Ratio>,
    pub benchmarks: Vec<BenchLine>,
}

/// One benchmark's result in a line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchLine {
    pub id: String,
    pub outcome: Outcome,
    /// What an iteration does; for a skip or a fail, why.
    pub reason: String,
    /// One iteration, in nanoseconds: the median with its confidence interval, and the mean.
    pub median_ns: Option<f64>,
    pub lower_ns: Option<f64>,
    pub upper_ns: Option<f64>,
    pub mean_ns: Option<f64>,
    pub samples: Option<usize>,
    pub bytes_per_iteration: Option<u64>,
    /// Bytes of guest memory per second at the median.
    pub bytes_per_second: Option<f64>,
    pub figures: Vec<Quantity>,
    /// The share of the time it ran in which some task on the host waited for a CPU, and
    /// whether that makes it a figure taken under pressure ([`UNDER_PRESSURE`]).
    #[serde(default)]
    pub host_cpu_pressure: Option<f64>,
    #[serde(default)]
    pub under_pressure: bool,
    /// For a benchmark timed with the guest's counter whose iteration is under
    /// [`CLOSE_TO_RESOLUTION`] ticks: the counter's resolution beside the figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

/// A benchmark that ran while some task on the host waited for a CPU this share of the time or
/// more is flagged: its figures moved 2-3x on a busy machine.
pub const UNDER_PRESSURE: f64 = 0.10;

/// An iteration shorter than this many ticks of the counter that timed it gets the counter's
/// resolution stated beside it.
pub const CLOSE_TO_RESOLUTION: f64 = 1000.0;

/// A benchmark's median against its baseline's, or one of its byte counts against the
/// baseline's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// What the ratio says, e.g. `tagged / untagged`.
    pub what: String,
    /// What is set against what: `median time`, or a quantity's name.
    pub of: String,
    pub numerator: String,
    pub denominator: String,
    pub value: f64,
    /// From the medians' intervals: the numerator's lower bound over the denominator's upper,
    /// and the other way round. None for quantities, which are exact.
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

/// What a ratio of median times is of.
pub const MEDIAN_TIME: &str = "median time";

impl BenchSummary {
    pub fn of(benchmarks: &[Benchmark]) -> Self {
        let columns = in_order_of_first(benchmarks, |b| (b.lane, b.kernel.as_str()))
            .into_iter()
            .map(|((lane, kernel), of_column)| BenchColumn {
                lane,
                kernel: kernel.to_string(),
                ratios: ratios(&of_column),
                benchmarks: of_column.into_iter().map(BenchLine::of).collect(),
            })
            .collect();
        BenchSummary {
            schema: SCHEMA_VERSION,
            columns,
        }
    }
}

impl BenchLine {
    pub fn of(b: &Benchmark) -> Self {
        let median = b.estimates.as_ref().map(|e| e.median);
        BenchLine {
            id: b.id.clone(),
            outcome: b.outcome,
            reason: b.reason.clone(),
            median_ns: median.map(|m| m.point_ns),
            lower_ns: median.map(|m| m.lower_ns),
            upper_ns: median.map(|m| m.upper_ns),
            mean_ns: b.estimates.as_ref().map(|e| e.mean.point_ns),
            samples: b.estimates.as_ref().map(|e| e.samples),
            bytes_per_iteration: b.bytes_per_iteration,
            bytes_per_second: match (b.bytes_per_iteration, median) {
                (Some(bytes), Some(m)) if m.point_ns > 0.0 => Some(bytes as f64 * 1e9 / m.point_ns),
                _ => None,
            },
            figures: b.figures.clone(),
            host_cpu_pressure: b.host_cpu_pressure,
            under_pressure: b.host_cpu_pressure.is_some_and(|p| p >= UNDER_PRESSURE),
            resolution: median.and_then(|m| resolution(b, m.point_ns)),
        }
    }
}

/// The resolution of the guest counter that timed `b`, in words, where its iteration
/// (`median_ns`) is close to it: the tick, the ticks of one iteration, and the fewest
/// iterations a sample timed between two reads of the counter.
fn resolution(b: &Benchmark, median_ns: f64) -> Option<String> {
    let frequency = (b.figures.iter())
        .find(|q| q.what == GUEST_COUNTER_FREQUENCY && q.unit == "Hz" && q.value > 0.0)?
        .value;
    let tick_ns = 1e9 / frequency;
    let ticks = median_ns / tick_ns;
    if ticks >= CLOSE_TO_RESOLUTION {
        return None;
    }
    let fewest = (b.criterion.as_ref())
        .and_then(|files| files.sample.get("iters")?.as_array().cloned())
        .and_then(|iters| iters.iter().filter_map(|n| n.as_f64()).reduce(f64::min))
        .map(|n| format!("; a sample timed at least {n:.0} iterations between two reads"))
        .unwrap_or_default();
    Some(format!(
        "counter resolution {} ({} MHz): one iteration is {ticks:.0} ticks{fewest}",
        format_ns(tick_ns),
        (frequency / 1e5).round() / 10.0
    ))
}

/// The ratios the benchmarks of one column declared, in their order: of the median times, and
/// of each byte count both sides measured. A pair where either side has no result, or the
/// denominator is zero, gives none.
pub fn ratios(benchmarks: &[&Benchmark]) -> Vec<Ratio> {
    let mut found = Vec::new();
    for b in benchmarks {
        let Some(versus) = &b.versus else { continue };
        let Some(base) = benchmarks.iter().find(|o| o.id == versus.baseline) else {
            continue;
        };
        let ratio = |of: &str, value: f64, lower: Option<f64>, upper: Option<f64>| Ratio {
            what: versus.ratio.clone(),
            of: of.into(),
            numerator: b.id.clone(),
            denominator: base.id.clone(),
            value,
            lower,
            upper,
        };
        if let (Some(n), Some(d)) = (&b.estimates, &base.estimates) {
            let (n, d) = (n.median, d.median);
            if d.point_ns > 0.0 {
                let over = |a: f64, b: f64| (b > 0.0).then(|| a / b);
                found.push(ratio(
                    MEDIAN_TIME,
                    n.point_ns / d.point_ns,
                    over(n.lower_ns, d.upper_ns),
                    over(n.upper_ns, d.lower_ns),
                ));
            }
        }
        for q in b.figures.iter().filter(|q| q.unit == BYTES) {
            let theirs = base
                .figures
                .iter()
                .find(|o| o.what == q.what && o.unit == BYTES);
            if let Some(theirs) = theirs.filter(|t| t.value > 0.0) {
                found.push(ratio(&q.what, q.value / theirs.value, None, None));
            }
        }
    }
    found
}

/// A time in nanoseconds for a person, in the unit that reads best.
pub fn format_ns(ns: f64) -> String {
    format_figure(FigureKind::Timing, ns / 1e6)
}

/// Bytes per second for a person, in binary units.
pub fn format_rate(bytes_per_second: f64) -> String {
    const UNITS: [&str; 4] = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    let mut value = bytes_per_second;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl BenchLine {
    /// The median, its interval and the throughput, for a person.
    pub fn describe(&self) -> Option<String> {
        let median = self.median_ns?;
        let mut text = format!("median {}", format_ns(median));
        if let (Some(lower), Some(upper)) = (self.lower_ns, self.upper_ns) {
            text.push_str(&format!(" [{}, {}]", format_ns(lower), format_ns(upper)));
        }
        if let Some(rate) = self.bytes_per_second {
            text.push_str(&format!(", {}", format_rate(rate)));
        }
        if let Some(resolution) = &self.resolution {
            text.push_str(&format!("; {resolution}"));
        }
        if let Some(flag) = self.pressure_flag() {
            text.push_str(&format!("; {flag}"));
        }
        Some(text)
    }

    /// What a figure taken under pressure says of itself.
    pub fn pressure_flag(&self) -> Option<String> {
        let pressure = self.host_cpu_pressure.filter(|_| self.under_pressure)?;
        Some(format!(
            "UNDER HOST CPU PRESSURE: some task waited for a CPU {:.0} % of the time it ran",
            pressure * 100.0
        ))
    }
}

impl Ratio {
    /// `numerator: what = value [lower, upper]`, for a person.
    pub fn describe(&self) -> String {
        let of = if self.of == MEDIAN_TIME {
            String::new()
        } else {
            format!(", {}", self.of)
        };
        let interval = match (self.lower, self.upper) {
            (Some(lower), Some(upper)) => format!(" [{lower:.2}, {upper:.2}]"),
            _ => String::new(),
        };
        format!(
            "{}: {}{of} = {:.2}{interval}",
            self.numerator, self.what, self.value
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Versus;
    use crate::fixtures::benchmark;

    fn measured(id: &str, median: f64, versus: Option<&str>) -> Benchmark {
        Benchmark {
            versus: versus.map(|baseline| Versus {
                baseline: baseline.into(),
                ratio: "tagged / untagged".into(),
            }),
            ..benchmark(id, median)
        }
    }

    #[test]
    fn pairs_become_ratios_with_intervals_from_the_medians() {
        let tagged = measured("g/f/tagged", 300.0, Some("g/f/untagged"));
        let untagged = measured("g/f/untagged", 100.0, None);
        let found = ratios(&[&tagged, &untagged]);
        assert_eq!(found.len(), 1);
        let r = &found[0];
        assert_eq!(
            (r.numerator.as_str(), r.of.as_str()),
            ("g/f/tagged", MEDIAN_TIME)
        );
        assert!((r.value - 3.0).abs() < 1e-12);
        assert!((r.lower.unwrap() - 270.0 / 110.0).abs() < 1e-12);
        assert!((r.upper.unwrap() - 330.0 / 90.0).abs() < 1e-12);
    }

    #[test]
    fn byte_counts_are_set_against_each_other_and_missing_sides_give_nothing() {
        let bytes = |value: f64| Quantity {
            what: "stream bytes".into(),
            value,
            unit: BYTES.into(),
        };
        let mut with = measured("m/s/with tags", 200.0, Some("m/s/without tags"));
        with.figures = vec![bytes(3000.0)];
        let mut without = measured("m/s/without tags", 100.0, None);
        without.figures = vec![bytes(1000.0)];
        let found = ratios(&[&with, &without]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].of, "stream bytes");
        assert_eq!((found[1].value, found[1].lower), (3.0, None));
        // A skipped baseline: no ratio of times; nor of bytes it never counted.
        without.estimates = None;
        without.figures.clear();
        assert!(ratios(&[&with, &without]).is_empty());
        assert!(ratios(&[&with]).is_empty());
    }

    #[test]
    fn columns_keep_lanes_and_kernels_apart_with_throughput() {
        let a = measured("g/f/x", 1000.0, None);
        let mut b = a.clone();
        b.kernel = "6.1".into();
        let summary = BenchSummary::of(&[a, b]);
        assert_eq!(summary.columns.len(), 2);
        let line = &summary.columns[0].benchmarks[0];
        // 4096 bytes in a microsecond.
        assert!((line.bytes_per_second.unwrap() - 4.096e9).abs() < 1.0);
    }

    #[test]
    fn results_read_in_units_that_suit_them() {
        assert_eq!(format_rate(3.0 * 1024.0 * 1024.0), "3.0 MiB/s");
        assert_eq!(format_rate(512.0), "512.0 B/s");
        assert_eq!(format_ns(12_300.0), "12.3 µs");
        let tagged = measured("g/f/tagged", 300.0, Some("g/f/untagged"));
        let untagged = measured("g/f/untagged", 100.0, None);
        let line = BenchLine::of(&tagged).describe().unwrap();
        assert_eq!(line, "median 300 ns [270 ns, 330 ns], 12.7 GiB/s");
        assert_eq!(
            ratios(&[&tagged, &untagged])[0].describe(),
            "g/f/tagged: tagged / untagged = 3.00 [2.45, 3.67]"
        );
    }

    #[test]
    fn figures_taken_under_pressure_or_near_the_counter_s_tick_say_so() {
        let mut busy = measured("g/f/x", 1000.0, None);
        busy.host_cpu_pressure = Some(0.34);
        let line = BenchLine::of(&busy);
        assert!(line.under_pressure);
        assert!(line.describe().unwrap().ends_with(
            "UNDER HOST CPU PRESSURE: some task waited for a CPU 34 % of the time it ran"
        ));
        busy.host_cpu_pressure = Some(0.02);
        assert!(!BenchLine::of(&busy).under_pressure);
        let mut timed = measured("tag_instructions/stgm/TCF none", 438.0, None);
        timed.figures.push(Quantity {
            what: GUEST_COUNTER_FREQUENCY.into(),
            value: 62.5e6,
            unit: "Hz".into(),
        });
        let resolution = BenchLine::of(&timed).resolution.unwrap();
        assert_eq!(
            resolution,
            "counter resolution 16 ns (62.5 MHz): one iteration is 27 ticks"
        );
        let slow = Benchmark {
            figures: timed.figures.clone(),
            ..measured("tag_instructions/str/TCF sync", 18_000.0 * 16.0, None)
        };
        assert_eq!(BenchLine::of(&slow).resolution, None);
    }
}
