//! `compare` and `baseline`: a run against a baseline, and keeping a run as a named baseline
//! under `results/baselines/NAME/` in the repository.
//!
//! A kept baseline is the run's `run.json` and `results.jsonl`, with the tag maps of the
//! verdicts that did not fail left out: the comparison reads outcomes, reasons and figures only,
//! and a full run's maps would weigh megabytes in the repository.

use std::path::{Path, PathBuf};

use mte_results::compare::{Comparison, Thresholds};
use mte_results::rundir::{self, LoadedRun, RESULTS_JSONL, RUN_JSON};
use mte_results::{Evidence, Outcome};

use crate::build::{relative, repo_root};
use crate::reports::{load, run_dir};
use crate::ui;
use crate::Status;
use anyhow::{bail, Context, Result};

/// Where named baselines are kept.
const BASELINES: &str = "results/baselines";

/// A baseline as given: a run directory, or the name of a kept one. Its name for the reports
/// and its directory.
pub fn resolve_baseline(given: &str) -> Result<(String, PathBuf)> {
    let as_path = Path::new(given);
    if as_path.join(RUN_JSON).is_file() {
        return Ok((given.to_string(), as_path.to_path_buf()));
    }
    let kept = repo_root().join(BASELINES).join(given);
    if valid_name(given) && kept.join(RUN_JSON).is_file() {
        return Ok((given.to_string(), kept));
    }
    let names = kept_names();
    bail!(
        "baseline `{given}` is neither a run directory nor a baseline kept under {BASELINES}/ \
         (kept: {}); keep one with `cargo xtask baseline NAME [RUN]`",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )
}

fn kept_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join(BASELINES))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.path().join(RUN_JSON).is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A baseline name is one path component a shell need not quote.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

/// Compare `run` with the baseline: print the differences, record them in the run's directory
/// (`comparison.json`, and the report rewritten with them first). Clean when it did not
/// regress, Failed when it did.
pub fn compare(baseline: &str, run: &Path, thresholds: Thresholds) -> Result<Status> {
    let (name, baseline_dir) = resolve_baseline(baseline)?;
    let baseline = load(&baseline_dir)?;
    let run = load(run)?;
    if baseline.dir.canonicalize().ok() == run.dir.canonicalize().ok() {
        bail!("the run and its baseline are the same directory");
    }
    let comparison = Comparison::of(&baseline.summary(), &run.summary(), thresholds).named(
        &name,
        &baseline.info.run_id,
        &run.info.run_id,
    );
    rundir::write_comparison(&run, &comparison)
        .with_context(|| format!("recording the comparison in {}", run.dir.display()))?;
    println!();
    print!("{}", comparison.text());
    println!(
        "report: {}",
        relative(&run.dir.join(rundir::REPORT_HTML)).display()
    );
    Ok(if comparison.regressed() {
        Status::Failed
    } else {
        Status::Clean
    })
}

/// `compare BASELINE [RUN]`.
pub fn compare_command(
    baseline: &str,
    run: Option<&Path>,
    thresholds: Thresholds,
) -> Result<Status> {
    compare(baseline, &run_dir(run), thresholds)
}

/// `baseline NAME [RUN]`: keep the run under `results/baselines/NAME/`.
pub fn keep(name: &str, run: Option<&Path>) -> Result<Status> {
    if !valid_name(name) {
        bail!("`{name}` cannot name a baseline: use letters, digits, `.`, `_`, `-` and `+`");
    }
    let run = load(&run_dir(run))?;
    let dir = repo_root().join(BASELINES).join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let kept = slimmed(&run);
    std::fs::copy(run.dir.join(RUN_JSON), dir.join(RUN_JSON))
        .with_context(|| format!("copying {RUN_JSON} to {}", dir.display()))?;
    let mut lines = String::new();
    for verdict in &kept.verdicts {
        lines.push_str(&serde_json::to_string(verdict).context("writing a verdict as JSON")?);
        lines.push('\n');
    }
    std::fs::write(dir.join(RESULTS_JSONL), lines)
        .with_context(|| format!("writing {}", dir.join(RESULTS_JSONL).display()))?;
    ui::note(&format!(
        "kept run {} ({} verdicts) as baseline `{name}` in {}; compare with it: cargo xtask \
         compare {name}",
        run.info.run_id,
        kept.verdicts.len(),
        relative(&dir).display()
    ));
    Ok(Status::Clean)
}

/// The run without the tag maps of the verdicts that did not fail.
fn slimmed(run: &LoadedRun) -> LoadedRun {
    let mut run = run.clone();
    for verdict in &mut run.verdicts {
        if verdict.outcome != Outcome::Fail {
            verdict
                .detail
                .retain(|e| !matches!(e, Evidence::TagMaps { .. }));
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use mte_results::Lane;

    #[test]
    fn baseline_names_are_single_plain_components() {
        for good in ["nightly", "6.12.95+deb12", "lab_a-1"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a b", "x;y"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_kept_baseline_drops_only_the_tag_maps_of_what_did_not_fail() {
        let maps = Evidence::TagMaps {
            expected_from: "a".into(),
            observed_from: "b".into(),
            ipa: 0,
            expected: "0".into(),
            observed: "0".into(),
            mismatches: vec![],
        };
        let figure = Evidence::Values {
            what: "x per page".into(),
            expected: "measured".into(),
            observed: "1 ms".into(),
        };
        let verdict = |outcome| mte_results::Verdict {
            schema: mte_results::SCHEMA_VERSION,
            test: "t".into(),
            lane: Lane::Host,
            kernel: "k".into(),
            boot: 1,
            outcome,
            reason: String::new(),
            detail: vec![maps.clone(), figure.clone()],
            duration_ms: 1.0,
        };
        let run = LoadedRun {
            benchmarks: Vec::new(),
            dir: PathBuf::new(),
            info: mte_results::RunInfo {
                schema: mte_results::SCHEMA_VERSION,
                run_id: "r".into(),
                started: String::new(),
                finished: None,
                wall_ms: None,
                error: None,
                environments: vec![],
                not_run: vec![],
            },
            verdicts: vec![verdict(Outcome::Pass), verdict(Outcome::Fail)],
            warnings: vec![],
        };
        let kept = slimmed(&run);
        assert_eq!(kept.verdicts[0].detail, std::slice::from_ref(&figure));
        assert_eq!(kept.verdicts[1].detail, [maps, figure]);
    }
}
