//! The serde model of a run, shared by the runner (which emits it) and xtask (which stores and
//! reports it).
//!
//! - [`model`]: verdicts, evidence and the environment of a run; versioned by [`SCHEMA_VERSION`].
//! - [`stream`]: the framed records the runner prints on its console, and their parser.
#![forbid(unsafe_code)]

pub mod model;
pub mod stream;

pub use model::*;

/// Version of the JSON written to `results.jsonl` and `run.json`; bump on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;
