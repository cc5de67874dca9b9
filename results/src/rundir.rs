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

use std::borrow::Cow;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::bench::Benchmark;
use crate::bench_summary::{write_criterion_files, BenchSummary};
use crate::compare::Comparison;
use crate::model::{Environment, Verdict};
use crate::summary::RunSummary;
use crate::utc;
use crate::{html, junit, tap, SCHEMA_VERSION};

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

/// Longest lane or kernel part of a run id; the rest is cut.
const RUN_ID_PART_MAX: usize = 64;

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
}

/// A run being written.
///
/// Every method takes `&self`, so one thread can append the console while another appends
/// verdicts.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    run_id: String,
    started: String,
    /// What `create` was told, used while the runner has not reported its environment.
    lane: String,
    kernel_hint: String,
    /// Every lane's environment so far, as `run.json` holds them.
    environments: Mutex<Vec<Environment>>,
    results: File,
    console: File,
    /// `benchmarks.jsonl`, created with the first benchmark.
    benchmarks: Mutex<Option<File>>,
}

impl RunDir {
    /// Create `<root>/<run-id>/` with an initial `run.json`, and point `<root>/latest` at it.
    ///
    /// The run id is the UTC start time, the lane and the kernel, e.g.
    /// `20261121-235501-emulated-6.12.95`, with `-2`, `-3`, ... added if that directory exists.
    pub fn create(root: impl AsRef<Path>, lane: &str, kernel_hint: &str) -> io::Result<RunDir> {
        Self::create_at(root.as_ref(), lane, kernel_hint, SystemTime::now())
    }

    fn create_at(
        root: &Path,
        lane: &str,
        kernel_hint: &str,
        now: SystemTime,
    ) -> io::Result<RunDir> {
        fs::create_dir_all(root).map_err(|e| with_path(e, root))?;
        let base = format!(
            "{}-{}-{}",
            utc::compact(now),
            path_safe(lane),
            path_safe(kernel_hint)
        );
        let (run_id, path) = create_unique_dir(root, &base)?;
        let open_new = |name: &str| {
            let file_path = path.join(name);
            OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&file_path)
                .map_err(|e| with_path(e, &file_path))
        };
        let run = RunDir {
            results: open_new(RESULTS_JSONL)?,
            console: open_new(CONSOLE_LOG)?,
            benchmarks: Mutex::new(None),
            path,
            run_id,
            started: utc::rfc3339(now),
            lane: lane.to_string(),
            kernel_hint: kernel_hint.to_string(),
            environments: Mutex::new(Vec::new()),
        };
        // A run that dies before any runner reports its environment can still be loaded.
        run.write_info(&RunInfo {
            schema: SCHEMA_VERSION,
            run_id: run.run_id.clone(),
            started: run.started.clone(),
            finished: None,
            wall_ms: None,
            error: None,
            environments: Vec::new(),
        })?;
        point_latest_at(root, &run.run_id)?;
        Ok(run)
    }

    /// The run's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's name, e.g. `20261121-235501-emulated-6.12.95`.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Record where a lane of the run happens on one kernel, once its runner has said so: it
    /// replaces what was recorded for the same lane and kernel release, and joins the others'
    /// (one lane may run on several kernels).
    pub fn write_environment(&self, environment: &Environment) -> io::Result<()> {
        self.write_environment_over(&environment.kernel_release, environment)
    }

    /// As [`RunDir::write_environment`], for an environment first recorded under another kernel
    /// name, `recorded_as` (the host's name for the kernel before the runner reported its
    /// release): that record is the one replaced.
    pub fn write_environment_over(
        &self,
        recorded_as: &str,
        environment: &Environment,
    ) -> io::Result<()> {
        let environments = {
            let mut all = self.environments.lock().unwrap_or_else(|e| e.into_inner());
            let position = |kernel: &str| {
                all.iter()
                    .position(|e| e.lane == environment.lane && e.kernel_release == kernel)
            };
            match position(&environment.kernel_release).or_else(|| position(recorded_as)) {
                Some(at) => all[at] = environment.clone(),
                None => all.push(environment.clone()),
            }
            all.clone()
        };
        self.write_info(&RunInfo {
            schema: SCHEMA_VERSION,
            run_id: self.run_id.clone(),
            started: self.started.clone(),
            finished: None,
            wall_ms: None,
            error: None,
            environments,
        })
    }

    /// Append one verdict to `results.jsonl`. The line is with the operating system when this
    /// returns, so it survives the death of this process or of the run.
    pub fn append_verdict(&self, verdict: &Verdict) -> io::Result<()> {
        let mut line = serde_json::to_string(verdict).map_err(io::Error::other)?;
        line.push('\n');
        // One write of the whole line: a run killed mid-way leaves at most one partial line.
        (&self.results)
            .write_all(line.as_bytes())
            .map_err(|e| with_path(e, &self.path.join(RESULTS_JSONL)))
    }

    /// Append one benchmark to `benchmarks.jsonl`, as [`RunDir::append_verdict`] does a
    /// verdict.
    pub fn append_benchmark(&self, benchmark: &Benchmark) -> io::Result<()> {
        let mut line = serde_json::to_string(benchmark).map_err(io::Error::other)?;
        line.push('\n');
        let path = self.path.join(BENCHMARKS_JSONL);
        let mut file = self.benchmarks.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            *file = Some(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&path)
                    .map_err(|e| with_path(e, &path))?,
            );
        }
        let file = file.as_mut().expect("opened above");
        file.write_all(line.as_bytes())
            .map_err(|e| with_path(e, &path))
    }

    /// Append one line of the raw console to `console.log`.
    pub fn append_log(&self, line: &str) -> io::Result<()> {
        let mut text = String::with_capacity(line.len() + 1);
        text.push_str(line);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        (&self.console)
            .write_all(text.as_bytes())
            .map_err(|e| with_path(e, &self.path.join(CONSOLE_LOG)))
    }

    /// Close the run: record its end in `run.json`, and write `junit.xml` and
    /// `report/index.html`. Calling it again rewrites them.
    pub fn finish(&self, summary: &RunSummary) -> io::Result<()> {
        let summary = self.with_identity(summary);
        self.write_info(&RunInfo {
            schema: SCHEMA_VERSION,
            run_id: self.run_id.clone(),
            started: self.started.clone(),
            finished: Some(utc::rfc3339(SystemTime::now())),
            wall_ms: Some(summary.wall_ms),
            error: summary.error.clone(),
            environments: summary.environments.clone(),
        })?;
        write_reports(&self.path, &self.run_id, &summary, None)
    }

    /// The summary, with the lane and kernel `create` was told filled in where the runner never
    /// reported them (a guest that died during boot), so the reports still say what ran.
    fn with_identity<'a>(&self, summary: &'a RunSummary) -> Cow<'a, RunSummary> {
        let known = |env: &Environment| !env.kernel_release.is_empty();
        if !summary.environments.is_empty() && summary.environments.iter().all(known) {
            return Cow::Borrowed(summary);
        }
        let mut filled = summary.clone();
        if filled.environments.is_empty() {
            // The directory's label starts with the run's first lane (`emulated+qemu`).
            let first_lane = self.lane.split('+').next().and_then(|w| w.parse().ok());
            filled.environments.push(Environment {
                lane: first_lane.unwrap_or_default(),
                ..Environment::default()
            });
        }
        for env in &mut filled.environments {
            if env.kernel_release.is_empty() {
                env.kernel_release = self.kernel_hint.clone();
            }
        }
        Cow::Owned(filled)
    }

    fn write_info(&self, info: &RunInfo) -> io::Result<()> {
        write_info_at(&self.path, info)
    }
}

/// Write the reports of a run into its directory `dir`: `junit.xml`, `results.tap` and
/// `report/index.html` (with `comparison` at its top, when there is one).
pub fn write_reports(
    dir: &Path,
    run_id: &str,
    summary: &RunSummary,
    comparison: Option<&Comparison>,
) -> io::Result<()> {
    if !summary.benchmarks.is_empty() {
        let mut json = serde_json::to_string_pretty(&BenchSummary::of(&summary.benchmarks))
            .map_err(io::Error::other)?;
        json.push('\n');
        write_replacing(&dir.join(BENCH_JSON), json.as_bytes())?;
        write_criterion_files(&dir.join(CRITERION_DIR), &summary.benchmarks)
            .map_err(|e| with_path(e, &dir.join(CRITERION_DIR)))?;
    }
    write_replacing(&dir.join(JUNIT_XML), junit::render(summary).as_bytes())?;
    write_replacing(&dir.join(RESULTS_TAP), tap::render(summary).as_bytes())?;
    let page = html::render_compared(summary, run_id, comparison)
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
    let mut lines = String::new();
    for verdict in verdicts {
        lines.push_str(&serde_json::to_string(verdict).map_err(io::Error::other)?);
        lines.push('\n');
    }
    write_replacing(&dir.join(RESULTS_JSONL), lines.as_bytes())?;
    write_info_at(dir, info)?;
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
    let mut json = serde_json::to_string_pretty(comparison).map_err(io::Error::other)?;
    json.push('\n');
    write_replacing(&run.dir.join(COMPARISON_JSON), json.as_bytes())?;
    write_reports(&run.dir, &run.info.run_id, &run.summary(), Some(comparison))
}

fn write_info_at(dir: &Path, info: &RunInfo) -> io::Result<()> {
    let mut json = serde_json::to_string_pretty(info).map_err(io::Error::other)?;
    json.push('\n');
    write_replacing(&dir.join(RUN_JSON), json.as_bytes())
}

/// Keep letters, digits and `.`, `_`, `+`, `-`: a lane or kernel string becomes one path
/// component that needs no quoting in a shell.
fn path_safe(part: &str) -> String {
    let safe: String = part
        .chars()
        .take(RUN_ID_PART_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() {
        "unknown".to_string()
    } else {
        safe
    }
}

/// Create `<root>/<base>`, or `<base>-2`, `<base>-3`, ... if taken; `create_dir` fails on an
/// existing directory, so two runs started at once never share one.
fn create_unique_dir(root: &Path, base: &str) -> io::Result<(String, PathBuf)> {
    for n in 1..=1000 {
        let run_id = if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        let path = root.join(&run_id);
        match fs::create_dir(&path) {
            Ok(()) => return Ok((run_id, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(with_path(e, &path)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{}: 1000 runs named {base}", root.display()),
    ))
}

/// Point `<root>/latest` at `run_id` by renaming a new symlink over it: readers see the old run or
/// the new one, never a missing link.
#[cfg(unix)]
fn point_latest_at(root: &Path, run_id: &str) -> io::Result<()> {
    let temporary = root.join(format!(".{LATEST}.{}.tmp", std::process::id()));
    match fs::remove_file(&temporary) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(with_path(e, &temporary)),
        _ => {}
    }
    std::os::unix::fs::symlink(run_id, &temporary).map_err(|e| with_path(e, &temporary))?;
    let latest = root.join(LATEST);
    fs::rename(&temporary, &latest).map_err(|e| with_path(e, &latest))
}

/// Without symlinks there is no `latest`; runs are still found by name.
#[cfg(not(unix))]
fn point_latest_at(_root: &Path, _run_id: &str) -> io::Result<()> {
    Ok(())
}

/// Write a file whole by renaming a finished temporary over it.
fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // On disk before the rename, so that a crash leaves the old file or the new one, never an
    // empty one.
    let mut file = fs::File::create(&temporary).map_err(|e| with_path(e, &temporary))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| with_path(e, &temporary))?;
    fs::rename(&temporary, path).map_err(|e| with_path(e, path))
}

/// Name the file in an I/O error, which std leaves out.
fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A run read back from its directory.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedRun {
    pub dir: PathBuf,
    pub info: RunInfo,
    pub verdicts: Vec<Verdict>,
    /// The benchmarks of a run of `bench` (`benchmarks.jsonl`); none for a run of checks.
    pub benchmarks: Vec<Benchmark>,
    /// Problems that did not stop the load (an unfinished last line), each naming file and line.
    pub warnings: Vec<String>,
}

impl LoadedRun {
    /// The run as the reports see it. A run that never finished says so as its error.
    pub fn summary(&self) -> RunSummary {
        let error = match (&self.info.error, &self.info.finished) {
            (Some(error), _) => Some(error.clone()),
            (None, Some(_)) => None,
            (None, None) => {
                Some("the run did not finish: it is still running, or it was cut short".to_string())
            }
        };
        RunSummary {
            benchmarks: self.benchmarks.clone(),
            environments: self.info.environments.clone(),
            verdicts: self.verdicts.clone(),
            wall_ms: self.info.wall_ms.unwrap_or_default(),
            error,
        }
    }
}

/// Why a run directory could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// A file of the run could not be read.
    Read { path: PathBuf, source: io::Error },
    /// `run.json` is not a run record.
    BadRunInfo { path: PathBuf, reason: String },
    /// A complete line of `results.jsonl` is not a verdict.
    BadVerdict {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Written by a build of the suite with another results schema.
    Schema {
        path: PathBuf,
        line: Option<usize>,
        found: u64,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { path, source } if source.kind() == io::ErrorKind::NotFound => write!(
                f,
                "{}: not found; is {} a run directory (e.g. target/mte-results/{LATEST})?",
                path.display(),
                path.parent().unwrap_or(path).display()
            ),
            LoadError::Read { path, source } => write!(f, "{}: {source}", path.display()),
            LoadError::BadRunInfo { path, reason } => {
                write!(f, "{}: not a valid run record ({reason}); the file was damaged or edited: rerun", path.display())
            }
            LoadError::BadVerdict { path, line, reason } => write!(
                f,
                "{}:{line}: not a valid verdict ({reason}); the run was cut short or the file was edited: \
                 rerun, or delete line {line} to keep the other results",
                path.display()
            ),
            LoadError::Schema { path, line, found } => {
                write!(f, "{}", path.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                write!(
                    f,
                    ": written with results schema {found}, this build reads schema {SCHEMA_VERSION}; \
                     read it with the build of the suite that wrote it"
                )
            }
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Read a run directory (or the `latest` link) back: `run.json`, every verdict of
/// `results.jsonl` and, for a run of `bench`, every benchmark of `benchmarks.jsonl`. An
/// unfinished last line, left by a run killed while writing it, is skipped with a warning; any
/// other damaged line is an error naming the file and line.
pub fn load(dir: impl AsRef<Path>) -> Result<LoadedRun, LoadError> {
    let dir = dir.as_ref();
    let info = read_info(&dir.join(RUN_JSON))?;
    let (verdicts, mut warnings) = read_verdicts(&dir.join(RESULTS_JSONL))?;
    let benchmarks_path = dir.join(BENCHMARKS_JSONL);
    let benchmarks = if benchmarks_path.exists() {
        let (benchmarks, more) = read_lines(&benchmarks_path, |line, bytes| {
            serde_json::from_slice::<Benchmark>(bytes).map_err(|e| LoadError::BadVerdict {
                path: benchmarks_path.clone(),
                line,
                reason: e.to_string(),
            })
        })?;
        warnings.extend(more);
        benchmarks
    } else {
        Vec::new()
    };
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        info,
        verdicts,
        benchmarks,
        warnings,
    })
}

fn read_info(path: &Path) -> Result<RunInfo, LoadError> {
    let bytes = fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| LoadError::BadRunInfo {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    // Checked before the fields, so that a newer file says "schema", not "missing field".
    match value.get("schema").and_then(serde_json::Value::as_u64) {
        Some(found) if found != u64::from(SCHEMA_VERSION) => {
            return Err(LoadError::Schema {
                path: path.to_path_buf(),
                line: None,
                found,
            })
        }
        _ => {}
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

fn read_verdicts(path: &Path) -> Result<(Vec<Verdict>, Vec<String>), LoadError> {
    read_lines(path, |line, bytes| parse_verdict(path, line, bytes))
}

/// Every line of a JSON-lines file, parsed: an error for a damaged line, a warning for an
/// unfinished last one.
fn read_lines<T>(
    path: &Path,
    parse: impl Fn(usize, &[u8]) -> Result<T, LoadError>,
) -> Result<(Vec<T>, Vec<String>), LoadError> {
    let bytes = fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Every line is written with its newline in one go: bytes after the last newline are a
    // line the run was writing when it died.
    let (complete, unfinished) = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(last) => bytes.split_at(last + 1),
        None => (&[][..], &bytes[..]),
    };
    let mut parsed = Vec::new();
    let mut line_number = 0;
    for line in complete.split_inclusive(|&b| b == b'\n') {
        line_number += 1;
        let line = line.trim_ascii();
        if !line.is_empty() {
            parsed.push(parse(line_number, line)?);
        }
    }
    let mut warnings = Vec::new();
    let unfinished = unfinished.trim_ascii();
    if !unfinished.is_empty() {
        line_number += 1;
        // Cut exactly before its newline, the line is whole and worth keeping.
        match parse(line_number, unfinished) {
            Ok(value) => parsed.push(value),
            Err(_) => warnings.push(format!(
                "{}:{line_number}: skipped an unfinished last line ({} bytes): the run was cut short while writing it",
                path.display(),
                unfinished.len()
            )),
        }
    }
    Ok((parsed, warnings))
}

fn parse_verdict(path: &Path, line: usize, bytes: &[u8]) -> Result<Verdict, LoadError> {
    let schema_error = |found| LoadError::Schema {
        path: path.to_path_buf(),
        line: Some(line),
        found,
    };
    match serde_json::from_slice::<Verdict>(bytes) {
        Ok(verdict) if verdict.schema == SCHEMA_VERSION => Ok(verdict),
        Ok(verdict) => Err(schema_error(u64::from(verdict.schema))),
        Err(error) => {
            let found = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| v.get("schema").and_then(serde_json::Value::as_u64));
            match found {
                Some(found) if found != u64::from(SCHEMA_VERSION) => Err(schema_error(found)),
                _ => Err(LoadError::BadVerdict {
                    path: path.to_path_buf(),
                    line,
                    reason: error.to_string(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::environment;
    use crate::model::{Evidence, Lane, Outcome};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    /// A scratch root removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("mte-results-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// 2026-11-21T23:55:01Z
    const START: u64 = 1_795_305_301;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn verdict(test: &str, outcome: Outcome) -> Verdict {
        Verdict {
            schema: SCHEMA_VERSION,
            test: test.into(),
            lane: Lane::Emulated,
            kernel: "6.12.95".into(),
            outcome,
            reason: format!("{test} {outcome}"),
            detail: vec![Evidence::TagMaps {
                expected_from: "guest".into(),
                observed_from: "host".into(),
                ipa: 0x4000_0000,
                expected: "0123".into(),
                observed: "0123".into(),
                mismatches: vec![],
            }],
            duration_ms: 3.5,
        }
    }

    #[test]
    fn run_ids_name_the_time_lane_and_kernel() {
        let scratch = Scratch::new();
        let run = RunDir::create_at(&scratch.0, "emulated", "6.12.95", at(START)).unwrap();
        assert_eq!(run.run_id(), "20261121-235501-emulated-6.12.95");
        assert_eq!(
            run.path(),
            scratch.0.join("20261121-235501-emulated-6.12.95")
        );
        let odd = RunDir::create_at(&scratch.0, "", "6.1/../x y", at(START)).unwrap();
        assert_eq!(odd.run_id(), "20261121-235501-unknown-6.1_.._x_y");
    }

    #[test]
    fn latest_points_at_the_newest_run() {
        let scratch = Scratch::new();
        let first = RunDir::create_at(&scratch.0, "emulated", "6.12.95", at(START)).unwrap();
        let same_second = RunDir::create_at(&scratch.0, "emulated", "6.12.95", at(START)).unwrap();
        assert_eq!(same_second.run_id(), format!("{}-2", first.run_id()));
        let latest = scratch.0.join(LATEST);
        assert_eq!(
            fs::read_link(&latest).unwrap(),
            PathBuf::from(same_second.run_id())
        );

        let next = RunDir::create_at(&scratch.0, "host", "6.13.0", at(START + 1)).unwrap();
        assert_eq!(
            fs::read_link(&latest).unwrap(),
            PathBuf::from(next.run_id())
        );
        assert_eq!(
            fs::canonicalize(&latest).unwrap(),
            fs::canonicalize(next.path()).unwrap()
        );
        let leftovers: Vec<_> = fs::read_dir(&scratch.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn results_round_trip_through_load() {
        let scratch = Scratch::new();
        let run = RunDir::create_at(&scratch.0, "emulated", "6.12.95", at(START)).unwrap();
        run.write_environment(&environment()).unwrap();
        let verdicts = vec![
            verdict("tags::a", Outcome::Pass),
            verdict("cow::b", Outcome::Fail),
            verdict("swap::c", Outcome::Skip),
        ];
        for v in &verdicts {
            run.append_verdict(v).unwrap();
        }
        run.append_log("[    0.000] Booting Linux").unwrap();
        run.append_log("runner: done\n").unwrap();

        // Readable before the run finishes: what was written is already there.
        let during = load(scratch.0.join(LATEST)).unwrap();
        assert_eq!(during.verdicts, verdicts);
        assert!(during.summary().error.unwrap().contains("did not finish"));

        let summary = RunSummary {
            benchmarks: Vec::new(),
            environments: vec![environment()],
            verdicts: verdicts.clone(),
            wall_ms: 1234.0,
            error: None,
        };
        run.finish(&summary).unwrap();
        let loaded = load(run.path()).unwrap();
        assert_eq!(loaded.verdicts, verdicts);
        assert!(loaded.warnings.is_empty());
        assert_eq!(loaded.info.run_id, run.run_id());
        assert_eq!(loaded.info.started, "2026-11-21T23:55:01Z");
        assert!(loaded.info.finished.is_some());
        assert_eq!(loaded.summary(), summary);

        let console = fs::read_to_string(run.path().join(CONSOLE_LOG)).unwrap();
        assert_eq!(console, "[    0.000] Booting Linux\nrunner: done\n");
        let junit = fs::read_to_string(run.path().join(JUNIT_XML)).unwrap();
        assert!(
            junit.contains(r#"tests="3" skipped="1" failures="1" errors="0""#),
            "{junit}"
        );
        let html = fs::read_to_string(run.path().join(REPORT_HTML)).unwrap();
        assert!(html.contains("cow::b"));
    }

    #[test]
    fn a_merged_run_is_written_whole_and_a_comparison_tops_its_report() {
        let scratch = Scratch::new();
        let dir = scratch.0.join("merged");
        let info = RunInfo {
            schema: SCHEMA_VERSION,
            run_id: "merged".into(),
            started: "2026-11-21T23:55:01Z".into(),
            finished: Some("2026-11-21T23:59:01Z".into()),
            wall_ms: Some(10.0),
            error: None,
            environments: vec![environment()],
        };
        let verdicts = vec![
            verdict("tags::a", Outcome::Pass),
            verdict("cow::b", Outcome::Fail),
        ];
        write_run(&dir, &info, &verdicts).unwrap();
        let loaded = load(&dir).unwrap();
        assert_eq!(loaded.info, info);
        assert_eq!(loaded.verdicts, verdicts);
        let tap = fs::read_to_string(dir.join(RESULTS_TAP)).unwrap();
        assert!(
            tap.starts_with("TAP version 13\n1..2\nok 1 - tags::a\nnot ok 2 - cow::b\n"),
            "{tap}"
        );
        assert!(!fs::read_to_string(dir.join(REPORT_HTML))
            .unwrap()
            .contains("id=\"comparison\""));

        let mut baseline = loaded.summary();
        baseline.verdicts[1].outcome = Outcome::Pass;
        let comparison = Comparison::of(&baseline, &loaded.summary(), Default::default())
            .named("nightly", "old-run", "merged");
        write_comparison(&loaded, &comparison).unwrap();
        let html = fs::read_to_string(dir.join(REPORT_HTML)).unwrap();
        let top = html.find("id=\"comparison\"").expect("comparison section");
        assert!(top < html.find("id=\"matrix\"").unwrap());
        assert!(html.contains("Compared with nightly"), "{html}");
        let kept: Comparison =
            serde_json::from_str(&fs::read_to_string(dir.join(COMPARISON_JSON)).unwrap()).unwrap();
        assert_eq!(kept, comparison);
    }

    #[test]
    fn environments_are_kept_per_lane_and_kernel() {
        let scratch = Scratch::new();
        let run = RunDir::create_at(&scratch.0, "emulated", "6.1+6.12", at(START)).unwrap();
        let on = |lane: &str, kernel: &str, version: &str| Environment {
            lane: lane.parse().unwrap(),
            kernel_release: kernel.into(),
            kernel_version: version.into(),
            ..Environment::default()
        };
        let recorded = || load(run.path()).unwrap().info.environments;
        run.write_environment(&on("emulated", "6.1.0-56-arm64", "booting"))
            .unwrap();
        run.write_environment(&on("emulated", "6.1.0-56-arm64", "#1 SMP"))
            .unwrap();
        run.write_environment(&on("emulated", "6.12.95", "#1 SMP"))
            .unwrap();
        run.write_environment(&on("qemu", "6.12.95", "#2")).unwrap();
        let kernels: Vec<(String, String, String)> = recorded()
            .into_iter()
            .map(|e| (e.lane.to_string(), e.kernel_release, e.kernel_version))
            .collect();
        assert_eq!(
            kernels,
            [
                ("emulated".into(), "6.1.0-56-arm64".into(), "#1 SMP".into()),
                ("emulated".into(), "6.12.95".into(), "#1 SMP".into()),
                ("qemu".into(), "6.12.95".into(), "#2".into()),
            ]
        );
        // A record made under the host's name for a kernel gives way to the runner's.
        run.write_environment(&on("emulated", "vmlinuz-custom", "booting"))
            .unwrap();
        run.write_environment_over("vmlinuz-custom", &on("emulated", "7.0.1", "#3"))
            .unwrap();
        let environments = recorded();
        assert_eq!(environments.len(), 4);
        assert_eq!(environments[3].kernel_release, "7.0.1");
    }

    #[test]
    fn reports_of_a_run_that_died_at_boot_still_say_what_ran() {
        let scratch = Scratch::new();
        let run = RunDir::create_at(&scratch.0, "emulated", "6.12.95", at(START)).unwrap();
        run.finish(&RunSummary {
            benchmarks: Vec::new(),
            error: Some("QEMU exited early: status 1".into()),
            ..RunSummary::default()
        })
        .unwrap();
        let junit = fs::read_to_string(run.path().join(JUNIT_XML)).unwrap();
        assert!(
            junit.contains(
                r#"<testsuite name="emulated.6.12.95" tests="1" skipped="0" errors="1" failures="0""#
            ),
            "{junit}"
        );
        let loaded = load(run.path()).unwrap();
        assert_eq!(loaded.info.environments[0].lane, Lane::Emulated);
        assert_eq!(
            loaded.summary().error.as_deref(),
            Some("QEMU exited early: status 1")
        );
    }

    fn run_with_results(scratch: &Scratch, results: &[u8]) -> PathBuf {
        let run = RunDir::create_at(&scratch.0, "emulated", "6.12.95", at(START)).unwrap();
        fs::write(run.path().join(RESULTS_JSONL), results).unwrap();
        run.path().to_path_buf()
    }

    fn line(v: &Verdict) -> String {
        serde_json::to_string(v).unwrap() + "\n"
    }

    #[test]
    fn an_unfinished_last_line_is_a_warning_not_an_error() {
        let scratch = Scratch::new();
        let (a, b) = (verdict("a", Outcome::Pass), verdict("b", Outcome::Fail));
        let cut = &line(&b)[..40];
        let dir = run_with_results(
            &scratch,
            format!("{}{}{cut}", line(&a), line(&b)).as_bytes(),
        );
        let loaded = load(&dir).unwrap();
        assert_eq!(loaded.verdicts, vec![a.clone(), b.clone()]);
        assert_eq!(loaded.warnings.len(), 1);
        let warning = &loaded.warnings[0];
        assert!(
            warning.contains("results.jsonl:3: skipped an unfinished last line"),
            "{warning}"
        );

        // A last line cut just before its newline is whole: kept, without a warning.
        let whole = line(&b);
        let dir = run_with_results(
            &scratch,
            format!("{}{}", line(&a), whole.trim_end()).as_bytes(),
        );
        let loaded = load(&dir).unwrap();
        assert_eq!(loaded.verdicts, vec![a, b]);
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn a_damaged_line_names_file_line_and_remedy() {
        let scratch = Scratch::new();
        let a = verdict("a", Outcome::Pass);
        let damaged = format!("{}{{\"schema\":1,\"test\":\n{}", line(&a), line(&a));
        let dir = run_with_results(&scratch, damaged.as_bytes());
        let error = load(&dir).unwrap_err();
        assert!(
            matches!(error, LoadError::BadVerdict { line: 2, .. }),
            "{error:?}"
        );
        let message = error.to_string();
        let file = dir.join(RESULTS_JSONL).display().to_string();
        assert!(
            message.starts_with(&format!("{file}:2: not a valid verdict")),
            "{message}"
        );
        assert!(message.contains("rerun, or delete line 2"), "{message}");

        let binary = [line(&a).as_bytes(), b"\xff\xfe\n"].concat();
        let error = load(run_with_results(&scratch, &binary)).unwrap_err();
        assert!(
            matches!(error, LoadError::BadVerdict { line: 2, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn another_schema_is_named_as_such() {
        let scratch = Scratch::new();
        let mut future = verdict("a", Outcome::Pass);
        future.schema = SCHEMA_VERSION + 1;
        let dir = run_with_results(&scratch, line(&future).as_bytes());
        let error = load(&dir).unwrap_err();
        assert!(
            matches!(error, LoadError::Schema { line: Some(1), .. }),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .contains(&format!("results schema {}", SCHEMA_VERSION + 1)));

        let info = dir.join(RUN_JSON);
        fs::write(&info, r#"{"schema": 99, "renamed": true}"#).unwrap();
        let error = load(&dir).unwrap_err();
        assert!(
            matches!(
                error,
                LoadError::Schema {
                    line: None,
                    found: 99,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn missing_or_damaged_run_records_are_explained() {
        let scratch = Scratch::new();
        let error = load(scratch.0.join("nowhere")).unwrap_err();
        assert!(
            error.to_string().contains("run.json: not found; is"),
            "{error}"
        );

        let dir = run_with_results(&scratch, b"");
        fs::write(dir.join(RUN_JSON), "{\"schema\": 1, \"run_id\": ").unwrap();
        let error = load(&dir).unwrap_err();
        assert!(matches!(error, LoadError::BadRunInfo { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("run.json: not a valid run record"),
            "{error}"
        );
    }

    #[test]
    fn appends_from_two_threads_keep_lines_whole() {
        let scratch = Scratch::new();
        let run = RunDir::create_at(&scratch.0, "emulated", "6.12.95", at(START)).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| (0..50).for_each(|i| run.append_log(&format!("console {i}")).unwrap()));
            s.spawn(|| {
                (0..50).for_each(|i| {
                    run.append_verdict(&verdict(&format!("t{i}"), Outcome::Pass))
                        .unwrap()
                })
            });
        });
        let loaded = load(run.path()).unwrap();
        assert_eq!(loaded.verdicts.len(), 50);
        assert_eq!(
            fs::read_to_string(run.path().join(CONSOLE_LOG))
                .unwrap()
                .lines()
                .count(),
            50
        );
    }
}
