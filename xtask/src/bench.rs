//! `cargo xtask bench`: the performance suite's results as xtask prints them, a line as each
//! benchmark arrives and the ratios and medians at the end. The run directory gets them from
//! the run itself (`benchmarks.jsonl`, `bench.json`, `criterion/`, the report).

use mte_results::bench::Benchmark;
use mte_results::bench_summary::{BenchLine, BenchSummary};
use mte_results::Outcome;

use crate::ui;

/// One benchmark as it arrives: `bench ID  median ... [lower, upper], rate`, or why not.
pub fn progress(benchmark: &Benchmark) -> String {
    let line = BenchLine::of(benchmark);
    match benchmark.outcome {
        Outcome::Pass => format!(
            "{} {}  {}",
            ui::green("bench"),
            benchmark.id,
            ui::dim(&line.describe().unwrap_or_default())
        ),
        Outcome::Skip | Outcome::Xfail => format!(
            "{} {}  {}",
            ui::yellow("skip "),
            benchmark.id,
            ui::dim(first_line(&benchmark.reason))
        ),
        Outcome::Fail => format!(
            "{} {}  {}",
            ui::red("FAIL "),
            benchmark.id,
            first_line(&benchmark.reason)
        ),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The end of a run of `bench`: per lane and kernel, the ratios, then every benchmark.
pub fn table(summary: &BenchSummary) -> String {
    let mut out = String::new();
    for column in &summary.columns {
        out.push_str(&format!(
            "{} lane on {}: ratios that carry across machines\n",
            column.lane, column.kernel
        ));
        if column.ratios.is_empty() {
            out.push_str("  none: no pair of benchmarks was measured on both sides\n");
        }
        for ratio in &column.ratios {
            out.push_str(&format!("  {}\n", ratio.describe()));
        }
        out.push_str(&format!(
            "{} lane on {}: benchmarks\n",
            column.lane, column.kernel
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
                outcome => format!("{outcome}: {}", first_line(&line.reason)),
            };
            out.push_str(&format!("  {:<width$}  {result}\n", line.id));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mte_results::bench::{Estimate, Estimates, Versus};
    use mte_results::Lane;

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
        let text = table(&BenchSummary::of(&[tagged, untagged, skipped]));
        let ratios = text
            .find("f/fresh/tagged: tagged / untagged = 2.00")
            .unwrap();
        let medians = text.find("median 2.0 µs").unwrap();
        assert!(ratios < medians, "{text}");
        assert!(text.contains("swap/out/tagged   skip: why\n"), "{text}");
        assert!(!text.contains("more"));
    }
}
