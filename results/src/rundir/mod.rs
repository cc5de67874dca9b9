//! The directory of one run, `<root>/<run-id>/`, and reading it back.
//!
//! ```text
//! <root>/latest -> <run-id>     the newest run (a relative symlink)
//! <root>/<run-id>/run.json      where and when it ran (RunInfo), rewritten whole
//!                 results.jsonl one verdict a line, appended as each arrives
//!                 benchmarks.jsonl  one benchmark a line, as each arrives (a run of `bench`)
//!                 bench.json    the benchmarks with their ratios, when the run finishes
//!                 criterion/<lane>-<kernel>/<benchmark>/new/*.json  criterion's own files
//!                 console.log   the raw console, for post-mortem
//!                 junit.xml     written when the run finishes
//!                 results.tap   TAP 13, written when the run finishes
//!                 comparison.json  written by `compare`, which rewrites the report with it
//!                 report/index.html
//!                 report/screenshot.png  written by the browser check of `test`
//! ```
//!
//! Verdicts are written the moment they arrive, so a run that dies keeps every result it had;
//! `run.json` and the reports are replaced by rename, so they are either old or new, never half.
//!
//! Its parts: `layout` (the files' names, `run.json`), `writer` (a run being written), `reports`
//! (the reports written into it), `load` (a run read back), `files` (each file written
//! whole) and `utc` (the run's times).

mod files;
mod layout;
mod load;
mod reports;
mod utc;
mod writer;

pub use layout::*;
pub use load::{load, LoadError, LoadedRun};
pub use reports::{
    criterion_path, write_comparison, write_criterion_files, write_reports, write_run,
};
pub use writer::RunDir;

#[cfg(test)]
mod tests;
