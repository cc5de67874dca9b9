//! The serde model of a run, shared by the runner (which emits it) and xtask (which stores and
//! reports it).
//!
//! - [`model`]: verdicts, evidence and the environment of a run; versioned by [`SCHEMA_VERSION`].
//! - [`boot`]: the boot a verdict came from, which with its lane and kernel is where it ran.
//! - [`tag_map`]: tag maps, the evidence most checks carry: where two differ, and their layout.
//! - [`mod@bench`]: what the performance suite measured, one record a benchmark.
//! - [`stream`]: the framed records the runner prints on its console, and their parser;
//!   [`base64`] carries an artifact's bytes in one, and [`artifact`] says where it is kept.
//! - [`shard`]: which checks a shard `K/N` of a run takes.
//! - [`text`]: text from results made safe for a terminal and line-based formats.
//!
//! With the `report` feature (host side only):
//! - [`summary`]: a finished run as the reports see it, its columns (a lane on a kernel), and
//!   its terminal table.
//! - [`figures`]: the numbers a check measured.
//! - [`junit`]: JUnit XML for CI (written by quick-junit).
//! - [`tap`]: TAP version 13, as kvm-unit-tests prints it.
//! - [`lava`]: `lava-test-case` lines for a LAVA test shell.
//! - [`compare`]: a run against a baseline run; [`merge`]: several runs as one.
//! - [`bench_summary`]: a run's benchmarks with their ratios (`bench.json`); [`speed`]: the
//!   suite's own speed.
//! - [`html`]: the self-contained HTML report, drawing tag maps with [`picture`] and figures
//!   with [`plot`], faults read by [`decode`].
//! - [`rundir`]: a run's directory: written as verdicts arrive, its reports and criterion's
//!   files written when it ends, the `latest` link, and reading a run back.
//!
//! Imports point one way: tag maps and the model at the bottom, the records above them; then a
//! run's summary, the figures, views and writers built on it, the run directory that writes
//! them all, and last the merge of run directories.
#![forbid(unsafe_code)]

pub mod artifact;
pub mod base64;
pub mod bench;
pub mod boot;
pub mod model;
pub mod shard;
pub mod stream;
pub mod tag_map;
pub mod text;

#[cfg(all(test, feature = "report"))]
mod fixtures;

#[cfg(feature = "report")]
pub mod bench_summary;
#[cfg(feature = "report")]
pub mod compare;
#[cfg(feature = "report")]
pub mod decode;
#[cfg(feature = "report")]
pub mod figures;
#[cfg(feature = "report")]
mod group;
#[cfg(feature = "report")]
pub mod html;
#[cfg(feature = "report")]
pub mod junit;
#[cfg(feature = "report")]
pub mod lava;
#[cfg(feature = "report")]
pub mod merge;
#[cfg(feature = "report")]
pub mod picture;
#[cfg(feature = "report")]
pub mod plot;
#[cfg(feature = "report")]
pub mod rundir;
#[cfg(feature = "report")]
pub mod speed;
#[cfg(feature = "report")]
pub mod summary;
#[cfg(feature = "report")]
pub mod tap;

pub use model::*;
#[cfg(feature = "report")]
pub use rundir::{load, LoadError, LoadedRun, RunDir, RunInfo};
#[cfg(feature = "report")]
pub use summary::RunSummary;
pub use tag_map::{
    differing_granules, tag_map_summary, tag_mismatches, tags_to_hex, TagMapLayout, TagMapLine,
    NOT_A_TAG,
};

/// Version of the JSON written to `results.jsonl` and `run.json`; bump on incompatible changes.
pub const SCHEMA_VERSION: u32 = 2;
