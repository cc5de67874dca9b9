//! What a run prints at its end: the checks' table with the peer lines, the report and the
//! suite's speed; the benchmarks' ratios and medians; for a listing, only what went wrong.

use std::path::Path;

use mte_results::bench_summary::BenchSummary;
use mte_results::rundir::{BENCH_JSON, CRITERION_DIR, REPORT_HTML};
use mte_results::speed::{Judged, SuiteSpeed};
use mte_results::summary::{table, RunSummary};
use mte_results::text::{self, one_line, printable};
use mte_results::{Lane, Outcome, Verdict};

use super::{error, green, red};
use crate::build::relative;
use crate::session::Selection;

/// The end of a run in `dir`, as its selection asks.
pub fn run(summary: &RunSummary, selection: &Selection, dir: &Path) {
    if selection.list {
        // No table for a listing, but a listing that went wrong says so.
        run_error(summary);
    } else if selection.bench {
        benchmarks(summary, dir);
    } else {
        checks(summary, dir);
    }
}

fn run_error(summary: &RunSummary) {
    if let Some(e) = &summary.error {
        error(&printable(e));
    }
}

fn report(dir: &Path) {
    println!("report: {}", relative(&dir.join(REPORT_HTML)).display());
}

/// The ratios and medians, where criterion's files are, the report.
fn benchmarks(summary: &RunSummary, dir: &Path) {
    println!();
    print!("{}", bench_table(&BenchSummary::of(&summary.benchmarks)));
    run_error(summary);
    if !summary.benchmarks.is_empty() {
        println!(
            "bench: {}, criterion's files in {}",
            relative(&dir.join(BENCH_JSON)).display(),
            relative(&dir.join(CRITERION_DIR)).display()
        );
    }
    report(dir);
}

/// The table of verdicts, how the checks mapped to kvm-unit-tests' lines fared, the report, the
/// suite's speed.
fn checks(summary: &RunSummary, dir: &Path) {
    println!();
    print!("{}", table(summary));
    for line in peer_agreement(&summary.verdicts) {
        println!("{line}");
    }
    report(dir);
    if let Some(speed) = SuiteSpeed::of(summary) {
        println!("{}", speed.line());
        if let Judged::Incomplete(why) = &speed.judged {
            println!("  targets not judged: {why}");
        }
        for (target, met) in speed.targets() {
            match met {
                Some(true) => println!("  target {}: {target}", green("met")),
                Some(false) => println!("  target {}: {target}", red("not met")),
                None => {}
            }
        }
    }
}

/// How this suite's checks that cover each of kvm-unit-tests' MTE report lines fared, per
/// lane: one line for each peer line whose checks ran, e.g. "mapped to kvm-unit-tests arm/mte.c
/// line `mte: sync: read`: emulated pass, qemu fail". A lane passes a line when every covering
/// check passed there. kvm-unit-tests itself does not run.
fn peer_agreement(verdicts: &[Verdict]) -> Vec<String> {
    mte_suites::peers::KVM_UNIT_TESTS_MTE
        .iter()
        .filter_map(|line| {
            let covering: Vec<&Verdict> = verdicts
                .iter()
                .filter(|v| line.ours.contains(&v.test.as_str()))
                .collect();
            let mut lanes: Vec<Lane> = Vec::new();
            for v in &covering {
                if !lanes.contains(&v.lane) {
                    lanes.push(v.lane);
                }
            }
            let per_lane: Vec<String> = lanes
                .iter()
                .map(|lane| {
                    let outcomes = covering
                        .iter()
                        .filter(|v| v.lane == *lane)
                        .map(|v| v.outcome);
                    let worst = outcomes
                        .clone()
                        .find(|o| *o == Outcome::Fail)
                        .or_else(|| outcomes.clone().find(|o| *o != Outcome::Pass))
                        .unwrap_or(Outcome::Pass);
                    format!("{lane} {worst}")
                })
                .collect();
            (!per_lane.is_empty()).then(|| {
                format!(
                    "mapped to kvm-unit-tests arm/mte.c line `{}`: {}",
                    line.peer,
                    per_lane.join(", ")
                )
            })
        })
        .collect()
}

/// The end of a run of `bench`: per lane and kernel, the ratios, then every benchmark.
fn bench_table(summary: &BenchSummary) -> String {
    let mut out = String::new();
    for column in &summary.columns {
        out.push_str(&format!(
            "{} lane on {}: ratios that carry across machines\n",
            column.lane,
            one_line(&column.kernel)
        ));
        if column.ratios.is_empty() {
            out.push_str("  none: no pair of benchmarks was measured on both sides\n");
        }
        for ratio in &column.ratios {
            out.push_str(&format!("  {}\n", ratio.describe()));
        }
        out.push_str(&format!(
            "{} lane on {}: benchmarks\n",
            column.lane,
            one_line(&column.kernel)
        ));
        let width = column
            .benchmarks
            .iter()
            .map(|b| b.id.chars().count())
            .max()
            .unwrap_or(0);
        for line in &column.benchmarks {
            let result = match line.outcome {
                Outcome::Pass => line.describe().unwrap_or_default(),
                outcome => format!("{outcome}: {}", text::first_line(&line.reason)),
            };
            out.push_str(&format!(
                "  {:<width$}  {}\n",
                one_line(&line.id),
                one_line(&result)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::verdict;
    use mte_results::bench::{Benchmark, Estimate, Estimates, Versus};

    fn benchmark(id: &str, outcome: Outcome, median: f64) -> Benchmark {
        Benchmark {
            schema: mte_results::SCHEMA_VERSION,
            id: id.into(),
            lane: Lane::Emulated,
            kernel: "6.12".into(),
            outcome,
            reason: "why\nmore".into(),
            bytes_per_iteration: None,
            estimates: (outcome == Outcome::Pass).then_some(Estimates {
                median: Estimate {
                    point_ns: median,
                    lower_ns: median,
                    upper_ns: median,
                },
                mean: Estimate {
                    point_ns: median,
                    lower_ns: median,
                    upper_ns: median,
                },
                std_dev_ns: 0.0,
                confidence_level: 0.95,
                samples: 10,
                iterations: 10,
            }),
            versus: None,
            figures: Vec::new(),
            criterion: None,
            host_cpu_pressure: None,
        }
    }

    #[test]
    fn the_table_leads_with_the_ratios() {
        let mut tagged = benchmark("f/fresh/tagged", Outcome::Pass, 2000.0);
        tagged.versus = Some(Versus {
            baseline: "f/fresh/untagged".into(),
            ratio: "tagged / untagged".into(),
        });
        let untagged = benchmark("f/fresh/untagged", Outcome::Pass, 1000.0);
        let skipped = benchmark("swap/out/tagged", Outcome::Skip, 0.0);
        let text = bench_table(&BenchSummary::of(&[tagged, untagged, skipped]));
        let ratios = text
            .find("f/fresh/tagged: tagged / untagged = 2.00")
            .unwrap();
        let medians = text.find("median 2.0 µs").unwrap();
        assert!(ratios < medians, "{text}");
        assert!(text.contains("swap/out/tagged   skip: why\n"), "{text}");
        assert!(!text.contains("more"));
    }

    #[test]
    fn the_peer_lines_answer_per_lane() {
        let mut fault = verdict("faults::sync_mismatched_load_faults", Outcome::Pass);
        let mut in_qemu = fault.clone();
        in_qemu.lane = Lane::Qemu;
        in_qemu.outcome = Outcome::Fail;
        fault.lane = Lane::Emulated;
        let lines = peer_agreement(&[fault, in_qemu]);
        assert_eq!(
            lines,
            ["mapped to kvm-unit-tests arm/mte.c line `mte: sync: read`: emulated pass, qemu fail"]
        );
        assert!(peer_agreement(&[verdict("tags::a", Outcome::Pass)]).is_empty());
    }
}
