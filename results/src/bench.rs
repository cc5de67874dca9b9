//! Benchmarks: what the performance suite measured, one [`Benchmark`] record each, with
//! criterion's estimates and criterion's own files, so that they survive the trip over the
//! emulated machine's console.
//!
//! A benchmark may name another as its baseline ([`Versus`]): the report sets the two side by
//! side as a ratio (tagged / untagged, with / without tags, copy tags / plain copy), the figure
//! that carries from one machine to another where absolute times do not.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Lane, Outcome};

/// One benchmark's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Benchmark {
    pub schema: u32,
    /// criterion's id, `group/function/parameter`, e.g. `copy_tags/from_guest/4 KiB`.
    pub id: String,
    pub lane: Lane,
    /// The release of the kernel under test.
    pub kernel: String,
    /// `pass` once measured; `skip` where the lane cannot take its steps; `fail` where a step
    /// went wrong.
    pub outcome: Outcome,
    /// What one iteration does, in words; for a skip or a fail, why.
    pub reason: String,
    /// Bytes of guest memory one iteration covers, where a throughput means something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_iteration: Option<u64>,
    /// One iteration's time as criterion estimated it; present once measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimates: Option<Estimates>,
    /// The benchmark this one is set against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versus: Option<Versus>,
    /// Other numbers the benchmark saw, such as the bytes a migration sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Quantity>,
    /// criterion's files for this benchmark, as criterion wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criterion: Option<CriterionFiles>,
    /// The share of the time it ran in which some task on the host waited for a CPU
    /// (`/proc/pressure/cpu`), as xtask saw it from the record before this one to this one;
    /// `None` where the host has no such file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cpu_pressure: Option<f64>,
}

/// A ratio of this benchmark's median to another's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versus {
    /// The other benchmark's id: the denominator.
    pub baseline: String,
    /// What the ratio says, e.g. `tagged / untagged`.
    pub ratio: String,
}

/// A number with its unit. Quantities in `bytes` are also set against the baseline's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantity {
    pub what: String,
    pub value: f64,
    pub unit: String,
}

/// The unit of quantities compared between a benchmark and its baseline.
pub const BYTES: &str = "bytes";

/// The quantity, in Hz, of a benchmark timed with the guest's own counter.
pub const GUEST_COUNTER_FREQUENCY: &str = "guest counter frequency (CNTFRQ_EL0)";

/// An estimate of one iteration's time, in nanoseconds, with its confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub point_ns: f64,
    pub lower_ns: f64,
    pub upper_ns: f64,
}

/// criterion's estimates of one iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimates {
    pub median: Estimate,
    pub mean: Estimate,
    pub std_dev_ns: f64,
    /// The confidence level of the intervals, e.g. 0.95.
    pub confidence_level: f64,
    /// Samples taken, and iterations over all of them.
    pub samples: usize,
    pub iterations: u64,
}

impl Estimates {
    /// Read criterion's `estimates.json` and `sample.json`; `None` for files of another shape.
    pub fn from_criterion(estimates: &Value, sample: &Value) -> Option<Self> {
        let estimate = |name: &str| -> Option<(Estimate, f64)> {
            let e = estimates.get(name)?;
            let interval = e.get("confidence_interval")?;
            Some((
                Estimate {
                    point_ns: e.get("point_estimate")?.as_f64()?,
                    lower_ns: interval.get("lower_bound")?.as_f64()?,
                    upper_ns: interval.get("upper_bound")?.as_f64()?,
                },
                interval.get("confidence_level")?.as_f64()?,
            ))
        };
        let (median, confidence_level) = estimate("median")?;
        let (mean, _) = estimate("mean")?;
        let (std_dev, _) = estimate("std_dev")?;
        let iters = sample.get("iters")?.as_array()?;
        Some(Estimates {
            median,
            mean,
            std_dev_ns: std_dev.point_ns,
            confidence_level,
            samples: iters.len(),
            iterations: iters.iter().filter_map(Value::as_f64).sum::<f64>() as u64,
        })
    }
}

/// criterion's files for one benchmark: its directory (below criterion's output directory)
/// and the JSON of the files it wrote under `new/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CriterionFiles {
    pub directory: String,
    pub benchmark: Value,
    pub estimates: Value,
    pub sample: Value,
}

impl CriterionFiles {
    /// The files as `(name, JSON)`, in the order criterion writes them.
    pub fn files(&self) -> [(&'static str, &Value); 3] {
        [
            ("sample.json", &self.sample),
            ("estimates.json", &self.estimates),
            ("benchmark.json", &self.benchmark),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lane;
    use serde_json::json;

    fn interval(point: f64, lower: f64, upper: f64) -> Value {
        json!({
            "confidence_interval": {"confidence_level": 0.95, "lower_bound": lower, "upper_bound": upper},
            "point_estimate": point,
            "standard_error": 1.0
        })
    }

    #[test]
    fn criterion_estimates_are_read_with_their_intervals() {
        let estimates = json!({
            "mean": interval(110.0, 100.0, 120.0),
            "median": interval(105.0, 101.0, 109.0),
            "median_abs_dev": interval(3.0, 2.0, 4.0),
            "slope": null,
            "std_dev": interval(7.5, 6.0, 9.0)
        });
        let sample =
            json!({"sampling_mode": "Flat", "iters": [4.0, 4.0, 4.0], "times": [1.0, 2.0, 3.0]});
        let read = Estimates::from_criterion(&estimates, &sample).unwrap();
        assert_eq!(
            read.median,
            Estimate {
                point_ns: 105.0,
                lower_ns: 101.0,
                upper_ns: 109.0
            }
        );
        assert_eq!(read.mean.point_ns, 110.0);
        assert_eq!(read.std_dev_ns, 7.5);
        assert_eq!((read.samples, read.iterations), (3, 12));
        assert_eq!(read.confidence_level, 0.95);
        assert_eq!(Estimates::from_criterion(&json!({}), &sample), None);
    }

    #[test]
    fn a_skipped_benchmark_serialises_without_its_empty_parts() {
        let b = Benchmark {
            schema: crate::SCHEMA_VERSION,
            id: "copy_tags/from_guest/4 KiB".into(),
            lane: Lane::Host,
            kernel: "6.18".into(),
            outcome: Outcome::Skip,
            reason: "no /dev/kvm".into(),
            bytes_per_iteration: None,
            estimates: None,
            versus: None,
            figures: Vec::new(),
            criterion: None,
            host_cpu_pressure: None,
        };
        let json = serde_json::to_value(&b).unwrap();
        assert!(json.get("estimates").is_none() && json.get("figures").is_none());
        assert_eq!(serde_json::from_value::<Benchmark>(json).unwrap(), b);
    }
}
