//! `cargo xtask kcidb [RUN]`: a run as a KCIDB submission (`kcidb.json` in the run directory),
//! and its validation against the schema of the kcidb-io package, which `cargo xtask test`
//! runs: kcidb-io is installed from PyPI into a venv under target/ the first time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use mte_results::kcidb;

use crate::build::{relative, repo_root};
use crate::reports::{load, run_dir};
use crate::ui;
use crate::Status;

/// The submission's file in a run directory.
pub const KCIDB_JSON: &str = "kcidb.json";
/// Where kcidb-io is installed.
const VENV: &str = "target/kcidb-venv";

/// `kcidb [RUN] [--origin NAME]`: write the submission of RUN (the latest by default).
pub fn kcidb_command(run: Option<&Path>, origin: &str) -> Result<Status> {
    let file = write(&run_dir(run), origin)?;
    println!("{}", relative(&file).display());
    Ok(Status::Clean)
}

/// Write the submission of the run in `dir` into it; its path.
pub fn write(dir: &Path, origin: &str) -> Result<PathBuf> {
    if !kcidb::valid_origin(origin) {
        bail!("--origin {origin:?}: KCIDB takes lowercase letters, digits and `_` only");
    }
    let run = load(dir)?;
    let document = kcidb::submission(&run, origin);
    let file = run.dir.join(KCIDB_JSON);
    let text = serde_json::to_string_pretty(&document).context("serialising the submission")?;
    std::fs::write(&file, text + "\n").with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// The step of `test`: write the run's submission and validate it with kcidb-io, against the
/// 4.0 schema it declares and, upgraded, against the newest. `Ok(false)` when it is invalid;
/// `Err` when the validator could not be had.
pub fn validate_step(dir: &Path) -> Result<bool> {
    let file = write(dir, kcidb::DEFAULT_ORIGIN)?;
    let python = ensure_kcidb_io()?;
    let output = Command::new(&python)
        .arg("-c")
        .arg(VALIDATE)
        .arg(&file)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    let said = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if output.status.success() {
        ui::note(&format!("kcidb-io: {said} ({})", relative(&file).display()));
        return Ok(true);
    }
    let error = String::from_utf8_lossy(&output.stderr);
    // jsonschema's message ends the traceback; its last lines say what and where.
    let tail: Vec<&str> = error.lines().rev().take(12).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    ui::error(&format!(
        "{} does not validate against kcidb-io's schema:\n{}",
        relative(&file).display(),
        tail.join("\n")
    ));
    Ok(false)
}

/// Validates argv[1] as the version it declares (4.0), then upgraded to kcidb-io's newest.
const VALIDATE: &str = "\
import json, sys
import kcidb_io
data = json.load(open(sys.argv[1]))
kcidb_io.schema.V4_0.validate_exactly(data)
latest = kcidb_io.schema.LATEST
latest.validate_exactly(latest.upgrade(data))
print(f\"valid v4.0 ({len(data['tests'])} tests), and as {latest} once upgraded\")
";

/// The venv's python with kcidb-io importable: made and filled on first use.
fn ensure_kcidb_io() -> Result<PathBuf> {
    let venv = repo_root().join(VENV);
    let python = venv.join("bin/python3");
    let importable = |python: &Path| {
        Command::new(python)
            .args(["-c", "import kcidb_io"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if importable(&python) {
        return Ok(python);
    }
    ui::note(&format!(
        "installing kcidb-io from PyPI into {}",
        relative(&venv).display()
    ));
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        bail!(
            "python3 -m venv {} failed: the KCIDB check needs python3 with venv (on Debian, \
             as root: apt-get install -y python3-venv)",
            venv.display()
        );
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "kcidb-io"])
        .status();
    if !pip.is_ok_and(|s| s.success()) || !importable(&python) {
        bail!(
            "pip could not install kcidb-io into {}: the KCIDB check needs PyPI reachable (or \
             a pip configured with a mirror: PIP_INDEX_URL); then run cargo xtask test again",
            venv.display()
        );
    }
    Ok(python)
}
