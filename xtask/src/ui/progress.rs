//! The lines a lane's run prints as its records arrive: the runner up, each verdict or
//! benchmark with how far the lane is, artifacts, the runner's own log, damaged records. What
//! came from the runner or the machine is printed through [`mte_results::text`]: it cannot
//! drive the terminal.

use std::time::Duration;

use mte_results::bench::Benchmark;
use mte_results::bench_summary::BenchLine;
use mte_results::summary::format_duration;
use mte_results::text::{first_line, one_line};
use mte_results::{Environment, Outcome, Verdict};

use super::{dim, green, note, red, size, yellow};
use crate::artifacts::Kept;
use crate::session::Selection;

/// How far a lane is, and where it runs: `[12/178 emulated 6.12.95+deb12-arm64, 1 failed]`.
pub struct Position<'a> {
    /// The results so far, this one included.
    pub done: usize,
    pub planned: Option<usize>,
    pub environment: &'a Environment,
    /// Failures so far (checks only).
    pub failed: usize,
}

impl std::fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let planned = self.planned.map_or("?".to_string(), |p| p.to_string());
        let failed = match self.failed {
            0 => String::new(),
            n => red(&format!(", {n} failed")),
        };
        let Environment {
            lane,
            kernel_release,
            ..
        } = self.environment;
        write!(
            f,
            "[{}/{planned} {lane} {}{failed}]",
            self.done,
            one_line(kernel_release)
        )
    }
}

/// The runner's first record: when it came, where the runner is, what it plans.
pub fn runner_up(
    after: Duration,
    environment: &Environment,
    selection: &Selection,
    planned: usize,
) {
    let things = if selection.bench {
        "benchmark"
    } else {
        "check"
    };
    let what = if selection.list {
        format!("listing the {things}s")
    } else {
        let plural = if planned == 1 { "" } else { "s" };
        format!("{planned} {things}{plural} planned")
    };
    note(&format!(
        "runner up {:.1} s after boot, on {} ({}): {what}",
        after.as_secs_f64(),
        one_line(&environment.kernel_release),
        one_line(&environment.machine),
    ));
    // What the machine gives the checks, as the runner found it (built in or loaded).
    let fact = |name: &str| {
        let found = environment.features.iter().find(|f| f.name == name);
        found.map(|f| one_line(&f.value))
    };
    for name in ["swap", "kernel config"] {
        if let Some(value) = fact(name) {
            note(&dim(&format!("{name}: {value}")));
        }
    }
}

/// `[12/178 emulated 6.12.95+deb12-arm64, 1 failed] FAIL  tags::x  3.2 ms`, and the first line
/// of the reason of anything but a pass.
pub fn verdict(at: &Position, verdict: &Verdict) {
    let outcome = match verdict.outcome {
        Outcome::Pass => green("pass "),
        Outcome::Fail => red("FAIL "),
        Outcome::Skip => yellow("skip "),
        Outcome::Xfail => yellow("xfail"),
    };
    println!(
        "    {at} {outcome} {} {}",
        one_line(&verdict.test),
        dim(&format_duration(verdict.duration_ms))
    );
    if verdict.outcome != Outcome::Pass {
        println!("           {}", dim(&first_line(&verdict.reason)));
    }
}

/// One benchmark as it arrives: `bench ID  median ... [lower, upper], rate`, or why not.
pub fn benchmark(at: &Position, benchmark: &Benchmark) {
    let reason = first_line(&benchmark.reason);
    let id = one_line(&benchmark.id);
    let result = match benchmark.outcome {
        Outcome::Pass => {
            let line = BenchLine::of(benchmark);
            let described = line.describe().unwrap_or_default();
            format!("{} {id}  {}", green("bench"), dim(&one_line(&described)))
        }
        Outcome::Skip | Outcome::Xfail => format!("{} {id}  {}", yellow("skip "), dim(&reason)),
        Outcome::Fail => format!("{} {id}  {reason}", red("FAIL ")),
    };
    println!("    {at} {result}");
}

pub fn artifact_kept(kept: &Kept) {
    let what = format!(
        "artifact kept: {} ({})",
        kept.path.display(),
        size(kept.bytes as u64)
    );
    println!("    {}", dim(&what));
}

pub fn artifact_not_kept(why: &str) {
    println!("    {} {}", red("artifact not kept:"), one_line(why));
}

/// The runner's log lines; a listing (which comes as log records) printed plainly.
pub fn runner_log(text: &str, listing: bool) {
    for line in text.lines().map(one_line) {
        if listing {
            println!("{line}");
        } else {
            println!("    {}", dim(&format!("runner: {line}")));
        }
    }
}

/// What the lane's machine or VMM lacks: the run's error, told as soon as the runner says it.
pub fn lane_lacks(why: &str) {
    println!("    {} {}", red("run error:"), one_line(why));
}

pub fn corrupt_record(reason: &str) {
    println!("    {} {}", red("corrupt record:"), one_line(reason));
}

pub fn cannot_write(error: &std::io::Error) {
    println!("    {} {error}", red("cannot write the run directory:"));
}
