//! A run being written: its directory created under a unique run id, verdicts and the console
//! appended as they arrive, and the reports written when it finishes.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use super::files::{
    create_unique_dir, json_line, path_safe, point_latest_at, with_path, write_info,
};
use super::layout::{RunInfo, BENCHMARKS_JSONL, CONSOLE_LOG, RESULTS_JSONL};
use super::reports::write_reports;
use super::utc;
use crate::bench::Benchmark;
use crate::model::{Environment, Verdict};
use crate::summary::RunSummary;
use crate::SCHEMA_VERSION;

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

    pub(super) fn create_at(
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
        write_info(&run.path, &run.info(Vec::new()))?;
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

    /// Record where a boot of a lane happens: it replaces what was recorded for the same lane
    /// and boot (the host's facts before its runner reported, say), and joins the others' (one
    /// lane may boot several times).
    pub fn write_environment(&self, environment: &Environment) -> io::Result<()> {
        let environments = {
            let mut all = self.environments.lock().unwrap_or_else(|e| e.into_inner());
            let same = |e: &Environment| e.lane == environment.lane && e.boot == environment.boot;
            match all.iter().position(same) {
                Some(at) => all[at] = environment.clone(),
                None => all.push(environment.clone()),
            }
            all.clone()
        };
        write_info(&self.path, &self.info(environments))
    }

    /// Append one verdict to `results.jsonl`. The line is with the operating system when this
    /// returns, so it survives the death of this process or of the run.
    pub fn append_verdict(&self, verdict: &Verdict) -> io::Result<()> {
        let line = json_line(verdict)?;
        // One write of the whole line: a run killed mid-way leaves at most one partial line.
        (&self.results)
            .write_all(line.as_bytes())
            .map_err(|e| with_path(e, &self.path.join(RESULTS_JSONL)))
    }

    /// Append one benchmark to `benchmarks.jsonl`, as [`RunDir::append_verdict`] does a
    /// verdict.
    pub fn append_benchmark(&self, benchmark: &Benchmark) -> io::Result<()> {
        let line = json_line(benchmark)?;
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
        let info = RunInfo {
            finished: Some(utc::rfc3339(SystemTime::now())),
            wall_ms: Some(summary.wall_ms),
            error: summary.error.clone(),
            not_run: summary.not_run.clone(),
            ..self.info(summary.environments.clone())
        };
        write_info(&self.path, &info)?;
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
                boot: 1,
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

    /// `run.json` of the run while it runs: not finished.
    fn info(&self, environments: Vec<Environment>) -> RunInfo {
        RunInfo {
            schema: SCHEMA_VERSION,
            run_id: self.run_id.clone(),
            started: self.started.clone(),
            finished: None,
            wall_ms: None,
            error: None,
            environments,
            not_run: Vec::new(),
        }
    }
}
