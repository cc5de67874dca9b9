//! Verdicts, runs and benchmarks for the unit tests of the report modules.

use crate::bench::{Benchmark, Estimate, Estimates};
use crate::model::{Environment, Feature, Lane, Outcome, Verdict};
use crate::summary::RunSummary;

/// A verdict of the emulated lane on 6.12.95 without evidence, taking 12 ms.
pub fn verdict(test: &str, outcome: Outcome, reason: &str) -> Verdict {
    Verdict {
        schema: crate::SCHEMA_VERSION,
        test: test.into(),
        lane: Lane::Emulated,
        kernel: "6.12.95".into(),
        boot: 1,
        outcome,
        reason: reason.into(),
        detail: vec![],
        duration_ms: 12.0,
    }
}

/// The emulated lane on 6.12.95, with an MTE feature and a QEMU version.
pub fn environment() -> Environment {
    Environment {
        lane: Lane::Emulated,
        boot: 1,
        kernel_release: "6.12.95".into(),
        kernel_version: "#1 SMP Debian 6.12.95-1".into(),
        machine: "aarch64".into(),
        runner_version: "0.1.0".into(),
        features: vec![Feature::new("mte", "MTE3")],
        host: vec![Feature::new("qemu", "9.2.0")],
    }
}

/// A run of `verdicts` in [`environment`], taking 30 s.
pub fn summary(verdicts: Vec<Verdict>) -> RunSummary {
    RunSummary {
        environments: vec![environment()],
        verdicts,
        wall_ms: 30_000.0,
        ..RunSummary::default()
    }
}

/// One check passed in two lanes: the emulated lane on 6.12.95 and QEMU 10.0.2.
pub fn two_lanes() -> RunSummary {
    let check = verdict("tags::a", Outcome::Pass, "ok");
    let qemu = Verdict {
        lane: Lane::Qemu,
        kernel: "qemu-10.0.2".into(),
        ..check.clone()
    };
    RunSummary {
        verdicts: vec![check, qemu],
        ..RunSummary::default()
    }
}

/// A benchmark of the emulated lane on 6.12, measured at `median_ns` an iteration of 4 KiB,
/// its interval 10 % either side.
pub fn benchmark(id: &str, median_ns: f64) -> Benchmark {
    let median = Estimate {
        point_ns: median_ns,
        lower_ns: median_ns * 0.9,
        upper_ns: median_ns * 1.1,
    };
    Benchmark {
        schema: crate::SCHEMA_VERSION,
        id: id.into(),
        lane: Lane::Emulated,
        kernel: "6.12".into(),
        outcome: Outcome::Pass,
        reason: "what it does".into(),
        bytes_per_iteration: Some(4096),
        estimates: Some(Estimates {
            median,
            mean: Estimate {
                lower_ns: median_ns,
                upper_ns: median_ns,
                ..median
            },
            std_dev_ns: 1.0,
            confidence_level: 0.95,
            samples: 10,
            iterations: 100,
        }),
        versus: None,
        figures: Vec::new(),
        criterion: None,
        host_cpu_pressure: None,
    }
}
