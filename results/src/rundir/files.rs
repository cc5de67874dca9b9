//! Writing a run directory's files safely: each file whole or not at all, the run's own
//! directory never shared, and the file named in every error.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::layout::{RunInfo, LATEST, RUN_JSON};

/// Longest lane or kernel part of a run id; the rest is cut.
const RUN_ID_PART_MAX: usize = 64;

/// Keep letters, digits and `.`, `_`, `+`, `-`: a lane or kernel string becomes one path
/// component that needs no quoting in a shell.
pub(super) fn path_safe(part: &str) -> String {
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
pub(super) fn create_unique_dir(root: &Path, base: &str) -> io::Result<(String, PathBuf)> {
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
pub(super) fn point_latest_at(root: &Path, run_id: &str) -> io::Result<()> {
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
pub(super) fn point_latest_at(_root: &Path, _run_id: &str) -> io::Result<()> {
    Ok(())
}

/// Write a file whole by renaming a finished temporary over it (std's rename is all it takes).
pub(super) fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
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

/// Write `value` as pretty JSON, whole, by [`write_replacing`].
pub(super) fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let mut json = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    json.push('\n');
    write_replacing(path, json.as_bytes())
}

/// Write `run.json` of the run in `dir`.
pub(super) fn write_info(dir: &Path, info: &RunInfo) -> io::Result<()> {
    write_json(&dir.join(RUN_JSON), info)
}

/// `value` as one line of a JSON-lines file, with its newline.
pub(super) fn json_line(value: &impl Serialize) -> io::Result<String> {
    let mut line = serde_json::to_string(value).map_err(io::Error::other)?;
    line.push('\n');
    Ok(line)
}

/// Name the file in an I/O error, which std leaves out.
pub(super) fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// An error and its causes, `: ` between them.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
