//! The fuzz targets (`fuzz/`): libFuzzer, coverage-guided, on everything the suite reads that
//! another program wrote. Built once with cargo-fuzz (installed from crates.io when missing;
//! on a stable toolchain with `RUSTC_BOOTSTRAP=1`, since the sanitizer flags are unstable), then
//! each target runs from its seeds (`fuzz/seeds/TARGET/`, small real inputs) and the corpus it
//! grew before (`target/fuzz/corpus/TARGET/`) for a bounded time. A panic, a hang or an
//! allocation past the bounds below is a finding: libFuzzer keeps the input under
//! `target/fuzz/artifacts/TARGET/`, and this step fails naming it and how to replay it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::build::{relative, repo_root};
use crate::ui;

/// The targets, in `fuzz/Cargo.toml`'s order; a test keeps the two lists the same.
pub const TARGETS: &[&str] = &[
    "console_records",
    "run_dir",
    "migration_stream",
    "gdb_replies",
    "qmp_messages",
    "modinfo",
];

/// The cargo-fuzz release whose flags this module passes.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Seconds a target runs in `cargo xtask test`: a smoke run that keeps CI fast.
pub const SMOKE_SECONDS: u64 = 4;
/// Seconds a target runs in `cargo xtask fuzz` without `--seconds`.
pub const DEFAULT_SECONDS: u64 = 60;
/// No input may take a parser longer than this (libFuzzer `-timeout`, seconds): a hang.
const TIMEOUT_SECONDS: u32 = 10;
/// No single allocation may exceed this, nor the process's memory the RSS limit (MiB): an
/// allocation a length field asked for, not the input's size.
const MALLOC_LIMIT_MB: u32 = 256;
const RSS_LIMIT_MB: u32 = 1024;
/// The largest input tried: room for a run's files and a migration stream with pages.
const MAX_LEN: u32 = 65536;

const FUZZ_DIR: &str = "fuzz";
const TARGET_DIR: &str = "target/fuzz";

/// What one target's run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub target: String,
    pub executions: u64,
    pub seconds: f64,
    pub corpus: Option<u64>,
    /// The input kept for a crash, a hang or an allocation past the bounds; its kind.
    pub finding: Option<(String, PathBuf)>,
}

impl Outcome {
    fn line(&self) -> String {
        let per_second = self.executions as f64 / self.seconds.max(0.001);
        let corpus = self
            .corpus
            .map_or(String::new(), |c| format!(", corpus {c} inputs"));
        let verdict = match &self.finding {
            None => ui::green("no finding"),
            Some((kind, path)) => ui::red(&format!("{kind}: {}", relative(path).display())),
        };
        format!(
            "{}: {} inputs in {:.0} s ({per_second:.0}/s){corpus}; {verdict}",
            self.target, self.executions, self.seconds
        )
    }
}

/// `cargo xtask fuzz [TARGET] [--seconds N]`: build, then run each target (or one) for
/// `seconds`; whether none found anything.
pub fn fuzz(target: Option<&str>, seconds: u64) -> Result<bool> {
    let targets: Vec<&str> = match target {
        None => TARGETS.to_vec(),
        Some(name) if TARGETS.contains(&name) => vec![name],
        Some(name) => bail!("no fuzz target {name}; the targets: {}", TARGETS.join(", ")),
    };
    ui::step(&format!(
        "fuzzing: {} for {seconds} s each (libFuzzer through cargo-fuzz)",
        targets.join(", ")
    ));
    build()?;
    let mut clean = true;
    for target in targets {
        let outcome = run(target, seconds)?;
        ui::note(&outcome.line());
        if let Some((_, input)) = &outcome.finding {
            clean = false;
            ui::note(&format!(
                "    replay: {} {}",
                relative(&binary(target)).display(),
                relative(input).display()
            ));
        }
    }
    Ok(clean)
}

/// cargo-fuzz, installed with `cargo install --locked` when `cargo fuzz` is missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    ui::note(&format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install --locked)"
    ));
    let status = cargo()
        .args(["install", "--locked", "cargo-fuzz", "--version"])
        .arg(CARGO_FUZZ_VERSION)
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("cargo install --locked cargo-fuzz --version {CARGO_FUZZ_VERSION} failed ({status})");
    }
    Ok(())
}

/// Build every target once: release with debug assertions and overflow checks, AddressSanitizer
/// (whose allocator enforces the allocation limit), libFuzzer's coverage.
fn build() -> Result<()> {
    ensure_cargo_fuzz()?;
    let started = Instant::now();
    let root = repo_root();
    let status = cargo()
        .args([
            "fuzz",
            "build",
            "--fuzz-dir",
            FUZZ_DIR,
            "--target",
            &triple(),
        ])
        .arg("--target-dir")
        .arg(root.join(TARGET_DIR))
        // Faster builds for a few seconds of fuzzing each; the code is no less instrumented.
        .args(["--codegen-units", "16"])
        .current_dir(&root)
        // The sanitizer and coverage flags are unstable options of rustc; the stable toolchain
        // takes them with this.
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status}); rerun: RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir {FUZZ_DIR}");
    }
    ui::note(&format!(
        "built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Run `target` for `seconds` from its seeds and its corpus.
fn run(target: &str, seconds: u64) -> Result<Outcome> {
    let root = repo_root();
    let corpus = root.join(TARGET_DIR).join("corpus").join(target);
    let artifacts = root.join(TARGET_DIR).join("artifacts").join(target);
    let seeds = root.join(FUZZ_DIR).join("seeds").join(target);
    let log = root
        .join(TARGET_DIR)
        .join("logs")
        .join(format!("{target}.log"));
    for dir in [
        &corpus,
        &artifacts,
        &log.parent().expect("in logs/").to_path_buf(),
    ] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let before = found_inputs(&artifacts);
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut artifact_prefix = artifacts.clone().into_os_string();
    artifact_prefix.push("/");
    let started = Instant::now();
    let status = Command::new(binary(target))
        .arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={TIMEOUT_SECONDS}"))
        .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg("-print_final_stats=1")
        .arg({
            let mut arg = std::ffi::OsString::from("-artifact_prefix=");
            arg.push(artifact_prefix);
            arg
        })
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .with_context(|| format!("running the fuzz target {target}"))?;
    let elapsed = started.elapsed().as_secs_f64();
    // Lossily: libFuzzer's closing dictionary quotes raw bytes.
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let stats = Stats::of(&text);
    let finding = found_inputs(&artifacts)
        .into_iter()
        .find(|p| !before.contains(p))
        .map(|input| (kind_of(&input), input));
    let finding = match (finding, status.success()) {
        (None, false) => Some((
            format!("ended with {status}, no input kept; see"),
            log.clone(),
        )),
        (finding, _) => finding,
    };
    Ok(Outcome {
        target: target.into(),
        executions: stats.executions,
        seconds: stats.seconds.unwrap_or(elapsed),
        corpus: stats.corpus,
        finding,
    })
}

/// The figures libFuzzer prints at the end (`-print_final_stats=1`).
#[derive(Clone, Debug, Default, PartialEq)]
struct Stats {
    executions: u64,
    seconds: Option<f64>,
    corpus: Option<u64>,
}

impl Stats {
    /// The last figures of `log`: libFuzzer may print a set after loading its corpus too.
    fn of(log: &str) -> Stats {
        let stat = |name: &str| {
            log.lines()
                .rev()
                .find_map(|l| l.strip_prefix(name)?.trim().strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        // `#1234  DONE   cov: .. corp: 56/7890b ..` or `Done 1234 runs in 9 second(s)`.
        let corpus = log
            .lines()
            .rev()
            .find_map(|l| l.split_once(" corp: ")?.1.split('/').next()?.parse().ok());
        Stats {
            executions: stat("stat::number_of_executed_units").unwrap_or_default(),
            seconds: log.lines().rev().find_map(|l| {
                let rest = l.strip_prefix("Done ")?;
                let (_, after) = rest.split_once(" runs in ")?;
                after.split_whitespace().next()?.parse().ok()
            }),
            corpus,
        }
    }
}

/// The inputs libFuzzer kept in `dir`.
fn found_inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries.filter_map(|e| e.ok().map(|e| e.path())).collect()
}

/// What libFuzzer's file name says the input did: `crash-..`, `timeout-..`, `oom-..`,
/// `leak-..`, `slow-unit-..`.
fn kind_of(input: &Path) -> String {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.split('-').next() {
        Some("crash") => "crash (a panic)".into(),
        Some("timeout") => "hang".into(),
        Some("oom") => "allocation past the limit".into(),
        Some(other) => other.to_string(),
        None => name,
    }
}

fn binary(target: &str) -> PathBuf {
    repo_root()
        .join(TARGET_DIR)
        .join(triple())
        .join("release")
        .join(target)
}

/// The host's target triple, which cargo-fuzz builds for.
fn triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_are_those_of_the_fuzz_crate() {
        let manifest = std::fs::read_to_string(repo_root().join(FUZZ_DIR).join("Cargo.toml"))
            .expect("fuzz/Cargo.toml");
        let declared: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|name| *name != "mte-fuzz")
            .collect();
        assert_eq!(declared, TARGETS);
        for target in TARGETS {
            let seeds = repo_root().join(FUZZ_DIR).join("seeds").join(target);
            assert!(
                found_inputs(&seeds).len() >= 2,
                "{target} has seeds from real inputs"
            );
        }
    }

    #[test]
    fn libfuzzer_figures_are_read_from_its_log() {
        let log = "#7\tDONE   cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   Done 7 runs in 1 second(s)\n\
                   stat::number_of_executed_units: 7\n\
                   #2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #68102\tDONE   cov: 1020 ft: 3000 corp: 245/19Kb lim: 4096 exec/s: 7566 rss: 90Mb\n\
                   Done 68102 runs in 9 second(s)\n\
                   stat::number_of_executed_units: 68102\n\
                   stat::average_exec_per_sec:     7566\n";
        assert_eq!(
            Stats::of(log),
            Stats {
                executions: 68102,
                seconds: Some(9.0),
                corpus: Some(245),
            }
        );
        assert_eq!(kind_of(Path::new("a/crash-0a1b")), "crash (a panic)");
        assert_eq!(
            kind_of(Path::new("a/oom-0a1b")),
            "allocation past the limit"
        );
        assert_eq!(kind_of(Path::new("a/timeout-0a1b")), "hang");
    }
}
