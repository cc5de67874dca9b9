//! What a run directory holds: its files' names, and the contents of `run.json`.

use serde::{Deserialize, Serialize};

use crate::model::{Environment, NotRun};

pub const RUN_JSON: &str = "run.json";
pub const RESULTS_JSONL: &str = "results.jsonl";
pub const BENCHMARKS_JSONL: &str = "benchmarks.jsonl";
pub const BENCH_JSON: &str = "bench.json";
/// criterion's files of the run's benchmarks, as criterion lays them out.
pub const CRITERION_DIR: &str = "criterion";
pub const CONSOLE_LOG: &str = "console.log";
pub const JUNIT_XML: &str = "junit.xml";
pub const RESULTS_TAP: &str = "results.tap";
pub const REPORT_HTML: &str = "report/index.html";
/// The report as a headless browser drew it.
pub const REPORT_SCREENSHOT: &str = "report/screenshot.png";
/// The run compared with a baseline, as `compare` left it.
pub const COMPARISON_JSON: &str = "comparison.json";
/// The symlink in the root that points at the newest run.
pub const LATEST: &str = "latest";

/// The contents of `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub schema: u32,
    pub run_id: String,
    /// UTC, RFC 3339.
    pub started: String,
    /// Set when the run finished, even if it ended early; absent while it runs or if it died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<f64>,
    /// Why the run ended early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One per lane of the run, in the order the lanes ran.
    pub environments: Vec<Environment>,
    /// The planned checks that never reported (a boot that stopped early).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_run: Vec<NotRun>,
}
