//! A run read back from its directory: `run.json`, and every verdict and benchmark, with an
//! unfinished last line (a run killed while writing it) told apart from a damaged one.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::layout::{RunInfo, BENCHMARKS_JSONL, LATEST, RESULTS_JSONL, RUN_JSON};
use crate::bench::Benchmark;
use crate::boot::{number_unstamped_environments, number_unstamped_verdicts};
use crate::model::Verdict;
use crate::summary::RunSummary;
use crate::SCHEMA_VERSION;

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
            not_run: self.info.not_run.clone(),
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
/// `results.jsonl` and, for a run of `bench`, every benchmark of `benchmarks.jsonl`; verdicts
/// and environments of files from before boots were recorded get theirs. An
/// unfinished last line, left by a run killed while writing it, is skipped with a warning; any
/// other damaged line is an error naming the file and line.
pub fn load(dir: impl AsRef<Path>) -> Result<LoadedRun, LoadError> {
    let dir = dir.as_ref();
    let mut info = read_info(&dir.join(RUN_JSON))?;
    let (mut verdicts, mut warnings) = read_verdicts(&dir.join(RESULTS_JSONL))?;
    number_unstamped_environments(&mut info.environments);
    number_unstamped_verdicts(&mut verdicts);
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
