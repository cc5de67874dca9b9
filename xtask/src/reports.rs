//! Commands on run directories that exist already: merging shards into one run, checking a
//! report in a browser, and printing a run's verdicts as LAVA result lines.

use std::path::{Path, PathBuf};

use mte_results::lava;
use mte_results::merge::merge;
use mte_results::rundir::{self, LoadedRun, LATEST, REPORT_HTML};
use mte_results::summary::table;
use mte_results::text::one_line;

use crate::apt::Apt;
use crate::browser::{self, BrowserCheck};
use crate::build::{relative, repo_root};
use crate::run::RESULTS_ROOT;
use crate::ui;
use crate::Status;
use anyhow::{bail, Context, Result};

/// A run directory as given, or the latest run.
pub fn run_dir(given: Option<&Path>) -> PathBuf {
    given.map_or_else(
        || repo_root().join(RESULTS_ROOT).join(LATEST),
        Path::to_path_buf,
    )
}

/// Read a run directory, passing on what its loading warned about (on stderr: stdout may be
/// result lines a shell runs).
pub fn load(dir: &Path) -> Result<LoadedRun> {
    let run = rundir::load(dir).map_err(anyhow::Error::msg)?;
    for warning in &run.warnings {
        eprintln!("warning: {}", one_line(warning));
    }
    Ok(run)
}

/// `report merge DIR... --out DIR`: the runs as one run in `out`, with its reports.
pub fn merge_runs(runs: &[PathBuf], out: &Path) -> Result<Status> {
    let loaded: Vec<LoadedRun> = runs.iter().map(|dir| load(dir)).collect::<Result<_>>()?;
    let out_canonical = out.canonicalize().ok();
    for run in &loaded {
        if out_canonical.is_some() && run.dir.canonicalize().ok() == out_canonical {
            bail!(
                "--out {} is one of the runs merged: give a new directory",
                out.display()
            );
        }
    }
    let run_id = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "merged".into());
    let merged = merge(&loaded, &run_id);
    for warning in &merged.warnings {
        ui::note(&format!("{} {}", ui::yellow("warning:"), one_line(warning)));
    }
    rundir::write_run(out, &merged.info, &merged.verdicts)
        .with_context(|| format!("writing the merged run to {}", out.display()))?;
    let summary = load(out)?.summary();
    print!("{}", table(&summary));
    println!(
        "merged {} runs into {}; report: {}",
        loaded.len(),
        relative(out).display(),
        relative(&out.join(REPORT_HTML)).display()
    );
    Ok(Status::of(&summary))
}

/// `report check [RUN]`: the report in a headless browser; fails when it does not render as
/// the run says.
pub fn check_in_browser(run: Option<&Path>) -> Result<Status> {
    let run = load(&run_dir(run))?;
    let mut apt = Apt::new()?;
    Ok(if browser_step(&run, &mut apt) {
        Status::Clean
    } else {
        Status::Failed
    })
}

/// The browser check as a step of a command: prints what it found; false when it failed.
pub fn browser_step(run: &LoadedRun, apt: &mut Apt) -> bool {
    ui::step("report in a headless browser");
    match browser::check(run, apt) {
        Ok(BrowserCheck::Passed {
            screenshot,
            rows,
            columns,
        }) => {
            ui::note(&format!(
                "the page renders; its matrix shows the run's {rows} checks in {columns} \
                 column{}; screenshot: {}",
                if columns == 1 { "" } else { "s" },
                relative(&screenshot).display()
            ));
            true
        }
        Ok(BrowserCheck::Skipped(why)) => {
            ui::note(&format!("{} skipped: {why}", ui::yellow("browser check")));
            true
        }
        Err(e) => {
            println!("{} browser check: {e:#}", ui::red("error:"));
            false
        }
    }
}

/// `lava-results [RUN]`: the run's verdicts as `lava-test-case` lines on stdout.
pub fn lava_results(run: Option<&Path>) -> Result<Status> {
    let run = load(&run_dir(run))?;
    print!("{}", lava::render(&run.summary()));
    Ok(Status::Clean)
}

#[cfg(test)]
mod tests {
    use crate::build::repo_root;
    use crate::bundle::{DRIVER, TOP};

    /// The lab's LAVA definition deploys the bundle and runs what its driver takes, and
    /// carries the metadata LAVA's validator asks for.
    #[test]
    fn the_lava_definition_runs_the_bundles_driver() {
        let definition = std::fs::read_to_string(repo_root().join("lab/lava/mte-suite.yaml"))
            .expect("lab/lava/mte-suite.yaml");
        for line in [
            format!("{TOP}/run.sh --out \"$RUN_DIR\" ${{SHARD:+--shard \"$SHARD\"}} -- $FILTERS"),
            format!("{TOP}/run.sh lava \"$RUN_DIR\""),
            "maintainer:".into(),
            "devices:".into(),
        ] {
            assert!(definition.contains(&line), "{line} missing");
        }
        let steps = definition.split("\nrun:").nth(1).expect("run steps");
        assert!(!steps.contains("cargo "), "the device has no toolchain");
        for word in ["--out)", "--shard)", "\nlava)", "run | bench | list)"] {
            assert!(DRIVER.contains(word), "run.sh takes no {word}");
        }
    }
}
