//! One benchmark, from criterion to its record.
//!
//! Every routine is a custom one (`iter_custom`): it runs the iterations it is given and
//! returns the time that counts, which may leave out its set-up (fresh pages, a fork, a page-out
//! before a swap-in). criterion picks its iteration counts from the time that counts, so a
//! routine whose set-up dwarfs it would run for ages: one pilot iteration first says how much
//! longer an iteration really takes than it counts, and the warm-up and measurement times are
//! shortened by that much. Slow iterations are sampled flat (the same count in every sample).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use libtest_mimic::Arguments;
use mte_results::bench::{Benchmark, Estimates, Quantity};
use mte_results::stream::Record;
use mte_results::{Lane, Outcome, Tally, SCHEMA_VERSION};
use mte_suites::vmm::VmmError;

use super::{criterion_files, Declared};
use crate::emit;

/// Samples a benchmark takes: criterion's least.
const SAMPLES: usize = 10;
/// criterion's warm-up and measurement, at most: the emulated machine is slow.
const WARM_UP: Duration = Duration::from_millis(200);
const MEASUREMENT: Duration = Duration::from_secs(1);
/// Bootstrap resamples for the confidence intervals: enough for ten samples, and cheap at
/// emulation speed (criterion's default is 100 000).
const RESAMPLES: usize = 2000;
/// The shortest warm-up or measurement a pilot may shorten them to.
const SHORTEST: Duration = Duration::from_millis(1);
/// An iteration that takes longer than this is sampled flat.
const FLAT_ABOVE: Duration = Duration::from_millis(2);

/// Which benchmarks run: as libtest selects tests, by a name filter (a substring, or the whole
/// id with `--exact`) and `--skip` filters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    filter: Option<String>,
    exact: bool,
    skip: Vec<String>,
}

impl Selection {
    pub fn from_arguments(args: &Arguments) -> Self {
        Selection {
            filter: args.filter.clone(),
            exact: args.exact,
            skip: args.skip.clone(),
        }
    }

    pub fn selects(&self, id: &str) -> bool {
        let matches = |pattern: &str| {
            if self.exact {
                id == pattern
            } else {
                id.contains(pattern)
            }
        };
        self.filter.as_deref().is_none_or(matches) && !self.skip.iter().any(|s| matches(s))
    }

    /// The selection in words; empty for every benchmark.
    pub fn describe(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        if let Some(filter) = &self.filter {
            words.push(if self.exact {
                format!("exactly {filter}")
            } else {
                filter.clone()
            });
        }
        words.extend(self.skip.iter().map(|s| format!("--skip {s}")));
        words.join(" ")
    }
}

/// How much less to run criterion for a routine whose iteration took `wall` and counted
/// `counted`: the ratio, at least 1.
fn slowdown(wall: Duration, counted: Duration) -> f64 {
    let counted = counted.max(Duration::from_nanos(1)).as_secs_f64();
    (wall.as_secs_f64() / counted).max(1.0)
}

/// `full` divided by `slowdown`, no shorter than [`SHORTEST`].
fn shortened(full: Duration, slowdown: f64) -> Duration {
    full.div_f64(slowdown).max(SHORTEST)
}

/// The benchmarks' criterion, and what has been reported.
pub struct Bench {
    criterion: Criterion,
    output: PathBuf,
    /// Whether `output` is a directory of this run's own, removed at the end.
    own_output: bool,
    lane: Lane,
    kernel: String,
    selection: Selection,
    tally: Tally,
    reported: HashSet<String>,
}

impl Bench {
    pub fn new(lane: Lane, kernel: &str, selection: Selection) -> Self {
        let (output, own_output) = if crate::init::is_init() {
            (PathBuf::from(crate::init::CRITERION_DIR), false)
        } else {
            let dir = std::env::temp_dir().join(format!("mte-criterion-{}", std::process::id()));
            (dir, true)
        };
        // Set before criterion looks for its home, which otherwise asks `cargo metadata`
        // whenever cargo started this process. No other thread runs yet.
        std::env::set_var("CRITERION_HOME", &output);
        let criterion = Criterion::default()
            .without_plots()
            .with_output_color(false)
            .sample_size(SAMPLES)
            .warm_up_time(WARM_UP)
            .measurement_time(MEASUREMENT)
            .nresamples(RESAMPLES)
            .output_directory(&output);
        Bench {
            criterion,
            output,
            own_output,
            lane,
            kernel: kernel.into(),
            selection,
            tally: Tally::default(),
            reported: HashSet::new(),
        }
    }

    /// Whether `declared` is to run and has not reported yet.
    pub fn wants(&self, declared: &Declared) -> bool {
        let id = declared.id();
        self.selection.selects(&id) && !self.reported.contains(&id)
    }

    /// Whether any of `declared` is to run.
    pub fn wants_any(&self, declared: &[Declared]) -> bool {
        declared.iter().any(|d| self.wants(d))
    }

    /// Run `declared` under criterion. `routine(iterations, figures)` runs the iterations and
    /// returns the time that counts; it may set figures worth keeping (the last call's stay).
    pub fn measure(
        &mut self,
        declared: &Declared,
        mut routine: impl FnMut(u64, &mut Vec<Quantity>) -> Result<Duration, VmmError>,
    ) {
        if !self.wants(declared) {
            return;
        }
        let mut figures = Vec::new();
        let started = Instant::now();
        let counted = match routine(1, &mut figures) {
            Ok(counted) => counted,
            Err(error) => return self.unable(std::slice::from_ref(declared), &error),
        };
        let wall = started.elapsed();
        let slowdown = slowdown(wall, counted);
        let mut failure: Option<VmmError> = None;
        {
            let mut group = self.criterion.benchmark_group(declared.group);
            group
                .warm_up_time(shortened(WARM_UP, slowdown))
                .measurement_time(shortened(MEASUREMENT, slowdown))
                .sampling_mode(if wall > FLAT_ABOVE {
                    SamplingMode::Flat
                } else {
                    SamplingMode::Auto
                });
            if let Some(bytes) = declared.bytes {
                group.throughput(Throughput::Bytes(bytes));
            }
            let id = BenchmarkId::new(declared.function.clone(), &declared.parameter);
            group.bench_function(id, |b| {
                b.iter_custom(|iterations| {
                    // After a failure criterion still wants its samples: they cost nothing and
                    // are thrown away.
                    if failure.is_some() {
                        return Duration::from_nanos(iterations.max(1));
                    }
                    match routine(iterations, &mut figures) {
                        Ok(counted) => counted.max(Duration::from_nanos(1)),
                        Err(error) => {
                            failure = Some(error);
                            Duration::from_nanos(iterations.max(1))
                        }
                    }
                })
            });
            group.finish();
        }
        if let Some(error) = failure {
            return self.unable(std::slice::from_ref(declared), &error);
        }
        let id = declared.id();
        let files = criterion_files::find(&self.output, &id);
        let estimates = files
            .as_ref()
            .and_then(|f| Estimates::from_criterion(&f.estimates, &f.sample));
        let (outcome, reason) = match estimates {
            Some(_) => (Outcome::Pass, declared.summary.clone()),
            None => (
                Outcome::Fail,
                format!(
                    "criterion left no estimates for {id} under {}",
                    self.output.display()
                ),
            ),
        };
        self.report(Benchmark {
            outcome,
            reason,
            estimates,
            figures,
            criterion: files,
            ..self.record(declared)
        });
    }

    /// Report each of `declared` still to run as unable to: a skip where the lane lacks a
    /// step, a fail where a step went wrong.
    pub fn unable(&mut self, declared: &[Declared], error: &VmmError) {
        let (outcome, reason) = match error {
            VmmError::Unsupported(why) => (Outcome::Skip, why.clone()),
            other => (Outcome::Fail, other.to_string()),
        };
        for d in declared {
            if self.wants(d) {
                self.report(Benchmark {
                    outcome,
                    reason: reason.clone(),
                    ..self.record(d)
                });
            }
        }
    }

    /// The record of `declared`, still without a result.
    fn record(&self, declared: &Declared) -> Benchmark {
        Benchmark {
            schema: SCHEMA_VERSION,
            id: declared.id(),
            lane: self.lane,
            kernel: self.kernel.clone(),
            outcome: Outcome::Skip,
            reason: String::new(),
            bytes_per_iteration: declared.bytes,
            estimates: None,
            versus: declared.versus.clone(),
            figures: Vec::new(),
            criterion: None,
            // xtask measures the host's load as the record arrives.
            host_cpu_pressure: None,
        }
    }

    fn report(&mut self, benchmark: Benchmark) {
        self.tally.add(benchmark.outcome);
        self.reported.insert(benchmark.id.clone());
        emit::record(&Record::Benchmark(Box::new(benchmark)));
    }

    /// The tally of what was reported; criterion's files of this run are removed.
    pub fn finish(self) -> Tally {
        if self.own_output {
            let _ = std::fs::remove_dir_all(&self.output);
        }
        self.tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(args: &[&str]) -> Selection {
        let argv = std::iter::once("mte-runner").chain(args.iter().copied());
        Selection::from_arguments(&<Arguments as clap::Parser>::try_parse_from(argv).unwrap())
    }

    #[test]
    fn benchmarks_are_selected_as_libtest_selects_tests() {
        let id = "copy_tags/from_guest/4 KiB";
        assert!(selection(&[]).selects(id));
        assert!(selection(&["copy_tags/"]).selects(id));
        assert!(!selection(&["migration"]).selects(id));
        assert!(!selection(&["copy_tags", "--exact"]).selects(id));
        assert!(selection(&[id, "--exact"]).selects(id));
        assert!(!selection(&["--skip", "from_guest"]).selects(id));
        assert_eq!(
            selection(&["copy", "--skip", "16 MiB"]).describe(),
            "copy --skip 16 MiB"
        );
        assert_eq!(selection(&[]).describe(), "");
    }

    #[test]
    fn a_routine_whose_set_up_dominates_gets_shorter_times() {
        let s = slowdown(Duration::from_millis(30), Duration::from_millis(3));
        assert!((s - 10.0).abs() < 1e-9);
        assert_eq!(shortened(MEASUREMENT, s), Duration::from_millis(100));
        // Never longer than asked, never shorter than the floor.
        assert_eq!(
            slowdown(Duration::from_millis(1), Duration::from_millis(2)),
            1.0
        );
        assert_eq!(shortened(WARM_UP, 1e9), SHORTEST);
        assert!(slowdown(Duration::from_millis(1), Duration::ZERO).is_finite());
    }
}
