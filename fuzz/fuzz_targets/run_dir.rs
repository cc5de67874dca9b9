//! A run directory read back (`cargo xtask compare`, `report merge`, `lava-results`, the
//! browser check): `run.json`, `results.jsonl` and `benchmarks.jsonl` as a run, an edit or a
//! damaged disk left them. Loading is a run or an error naming file and line, never a panic,
//! and the text reports, the comparison and the merge of a run that loads are made.
//!
//! The input is the three files one after the other, each ended by a line holding only NUL.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mte_fuzz::{render_text_reports, split_parts};
use mte_results::compare::{Comparison, Thresholds};
use mte_results::rundir::{self, BENCHMARKS_JSONL, RESULTS_JSONL, RUN_JSON};

fuzz_target!(|input: &[u8]| {
    let dir = run_dir();
    let parts = split_parts(input, b"\n\0\n", 3);
    for (name, part) in [RUN_JSON, RESULTS_JSONL, BENCHMARKS_JSONL]
        .iter()
        .zip(&parts)
    {
        std::fs::write(dir.join(name), part).expect("the run directory is writable");
    }
    if parts.len() < 3 {
        let _ = std::fs::remove_file(dir.join(BENCHMARKS_JSONL));
    }
    let Ok(run) = rundir::load(dir) else {
        return;
    };
    let summary = run.summary();
    render_text_reports(&summary);
    let comparison = Comparison::of(&summary, &summary, Thresholds::default());
    let _ = comparison.text();
    let _ = mte_results::merge::merge(&[run.clone(), run], "merged");
    // Not the HTML report: it parses its template anew for every render, which took nine
    // tenths of the time and gave the fuzzer the template parser's paths to chase.
});

/// This process's run directory, written anew for each input.
fn run_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // In memory where there is a tmpfs: three files are written for every input.
        let shm = std::path::Path::new("/dev/shm");
        let temp = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = temp.join(format!("mte-fuzz-run-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary run directory");
        dir
    })
}
