//! The reports of a run, written into its directory: JUnit, TAP, the HTML page, and for a run
//! of benchmarks `bench.json` and criterion's own files; and whole runs put together
//! elsewhere (a merge), or compared with a baseline.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::files::{error_chain, json_line, with_path, write_info, write_json, write_replacing};
use super::layout::{
    RunInfo, BENCH_JSON, COMPARISON_JSON, CRITERION_DIR, JUNIT_XML, REPORT_HTML, RESULTS_JSONL,
    RESULTS_TAP,
};
use super::load::LoadedRun;
use crate::bench::Benchmark;
use crate::bench_summary::BenchSummary;
use crate::compare::Comparison;
use crate::model::{Lane, Verdict};
use crate::summary::RunSummary;
use crate::{html, junit, tap};

/// Write the reports of a run into its directory `dir`: `junit.xml`, `results.tap` and
/// `report/index.html` (with `comparison` at its top, when there is one).
pub fn write_reports(
    dir: &Path,
    run_id: &str,
    summary: &RunSummary,
    comparison: Option<&Comparison>,
) -> io::Result<()> {
    if !summary.benchmarks.is_empty() {
        write_json(
            &dir.join(BENCH_JSON),
            &BenchSummary::of(&summary.benchmarks),
        )?;
        write_criterion_files(&dir.join(CRITERION_DIR), &summary.benchmarks)
            .map_err(|e| with_path(e, &dir.join(CRITERION_DIR)))?;
    }
    write_replacing(&dir.join(JUNIT_XML), junit::render(summary).as_bytes())?;
    write_replacing(&dir.join(RESULTS_TAP), tap::render(summary).as_bytes())?;
    let options = html::ReportOptions::from_env();
    let page = html::render_compared(summary, run_id, comparison, options)
        .map_err(|e| io::Error::other(format!("rendering the HTML report: {}", error_chain(&e))))?;
    let report = dir.join(REPORT_HTML);
    if let Some(parent) = report.parent() {
        fs::create_dir_all(parent).map_err(|e| with_path(e, parent))?;
    }
    write_replacing(&report, page.as_bytes())
}

/// Write a whole run that was put together elsewhere (a merge) into `dir`: `run.json`,
/// `results.jsonl` and the reports. `dir` is created if needed; files of the same names there
/// are replaced.
pub fn write_run(dir: &Path, info: &RunInfo, verdicts: &[Verdict]) -> io::Result<()> {
    fs::create_dir_all(dir).map_err(|e| with_path(e, dir))?;
    let lines: String = verdicts.iter().map(json_line).collect::<io::Result<_>>()?;
    write_replacing(&dir.join(RESULTS_JSONL), lines.as_bytes())?;
    write_info(dir, info)?;
    let loaded = LoadedRun {
        dir: dir.to_path_buf(),
        info: info.clone(),
        verdicts: verdicts.to_vec(),
        benchmarks: Vec::new(),
        warnings: Vec::new(),
    };
    write_reports(dir, &info.run_id, &loaded.summary(), None)
}

/// Record a comparison in a run's directory and rewrite its report with the comparison first.
pub fn write_comparison(run: &LoadedRun, comparison: &Comparison) -> io::Result<()> {
    write_json(&run.dir.join(COMPARISON_JSON), comparison)?;
    write_reports(&run.dir, &run.info.run_id, &run.summary(), Some(comparison))
}

/// Where a benchmark's criterion files go below the run's `criterion/` directory:
/// `<lane>-<kernel>/<criterion's directory>`, every part made a plain name (a record cannot
/// send a file outside the run directory).
pub fn criterion_path(lane: Lane, kernel: &str, directory: &str) -> PathBuf {
    let plain = |part: &str| -> String {
        let name: String = part
            .chars()
            .map(|c| {
                if matches!(c, '/' | '\\') || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        match name.as_str() {
            "" | "." | ".." => "_".to_string(),
            _ => name,
        }
    };
    let mut path = PathBuf::from(plain(&format!("{lane}-{kernel}")));
    for part in directory.split('/') {
        path.push(plain(part));
    }
    path
}

/// Write criterion's files of every measured benchmark below `dir`, as criterion lays them
/// out: `<lane>-<kernel>/<directory>/new/{sample,estimates,benchmark}.json`.
pub fn write_criterion_files(dir: &Path, benchmarks: &[Benchmark]) -> std::io::Result<()> {
    for b in benchmarks {
        let Some(files) = &b.criterion else { continue };
        let new = dir
            .join(criterion_path(b.lane, &b.kernel, &files.directory))
            .join("new");
        std::fs::create_dir_all(&new)?;
        for (name, json) in files.files() {
            std::fs::write(new.join(name), serde_json::to_vec(json)?)?;
        }
    }
    Ok(())
}
