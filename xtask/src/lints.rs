//! The lints `test` holds the code to, with every warning an error: rustfmt, and clippy on the
//! host workspace, on the fuzz targets (a workspace of their own), on the runner for its
//! aarch64 target (code that only arm64 compiles) and on the guest payload for bare metal.

use std::path::Path;
use std::process::Command;

use crate::apt::{self, Apt};
use crate::build::{repo_root, PAYLOAD_TARGET, PAYLOAD_WORKSPACE};
use crate::tools::{self, CrossRoute, DEBIAN_RUSTC};
use crate::ui;

/// Debian's clippy, for the Debian route to aarch64: it matches Debian's rustc, whose core is
/// built from source for the payload.
const DEBIAN_CLIPPY_PACKAGE: &str = "rust-web-clippy";
const DEBIAN_CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";
/// Where the cross lints and the fuzz targets' lints keep their build, apart from the real builds.
const LINT_TARGET_DIR: &str = "target/mte-lints";
/// The fuzz targets' own workspace.
const FUZZ_WORKSPACE: &str = "fuzz";

/// Run every lint; whether all held. Each one that fails says what to run.
pub fn check(apt: &mut Apt) -> bool {
    ui::step("lints: rustfmt and clippy, warnings denied");
    let root = repo_root();
    let payload = root.join(PAYLOAD_WORKSPACE);
    // The fuzz targets are a workspace of their own (they build only under cargo-fuzz).
    let fuzz = root.join(FUZZ_WORKSPACE);
    let lint_target_dir = root.join(LINT_TARGET_DIR).to_string_lossy().into_owned();
    let mut held = true;
    held &= lint("rustfmt", cargo(&root, &["fmt", "--all", "--", "--check"]));
    held &= lint(
        "rustfmt (guest payload)",
        cargo(&payload, &["fmt", "--all", "--", "--check"]),
    );
    held &= lint(
        "rustfmt (fuzz targets)",
        cargo(&fuzz, &["fmt", "--all", "--", "--check"]),
    );
    held &= lint(
        "clippy (fuzz targets)",
        cargo(
            &fuzz,
            &[
                "clippy",
                "--all-targets",
                "--target-dir",
                &lint_target_dir,
                "--",
                "-D",
                "warnings",
            ],
        ),
    );
    held &= lint(
        "clippy (host workspace)",
        cargo(
            &root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
    );
    match tools::ensure_cross(apt).and_then(|route| cross_clippy(&route, apt)) {
        Ok([runner, payload_lint]) => {
            held &= lint("clippy (runner, aarch64)", runner);
            held &= lint("clippy (guest payload, bare metal)", payload_lint);
        }
        Err(e) => {
            ui::error(&format!("clippy for aarch64: {e:#}"));
            held = false;
        }
    }
    held
}

/// Run `command`, report it under `name`; whether it succeeded.
fn lint(name: &str, mut command: Command) -> bool {
    let shown = format!("{command:?}");
    match command.status() {
        Ok(status) if status.success() => {
            ui::note(&format!("{name}: ok"));
            true
        }
        Ok(status) => {
            ui::error(&format!("{name} failed ({status}); rerun: {shown}"));
            false
        }
        Err(e) => {
            ui::error(&format!("{name} could not start: {e}"));
            false
        }
    }
}

/// `cargo ARGS` in `dir`, with the cargo that runs xtask.
fn cargo(dir: &Path, args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).current_dir(dir);
    command
}

/// clippy for the runner's aarch64 Linux target and for the payload's bare-metal target, by
/// the route that builds them.
fn cross_clippy(route: &CrossRoute, apt: &mut Apt) -> anyhow::Result<[Command; 2]> {
    let root = repo_root();
    let target_dir = root.join(LINT_TARGET_DIR);
    let target_dir = target_dir.to_string_lossy().into_owned();
    let deny = ["--", "-D", "warnings"];
    let common = ["--target-dir", target_dir.as_str()];
    let runner_args: Vec<&str> = ["clippy", "-p", "mte-runner", "--target"]
        .into_iter()
        .chain([route.runner_target()])
        .chain(common)
        .chain(deny)
        .collect();
    let payload_args: Vec<&str> = ["clippy", "--release", "--target", PAYLOAD_TARGET]
        .into_iter()
        .chain(common)
        .collect();
    let payload_dir = root.join(PAYLOAD_WORKSPACE);
    match route {
        CrossRoute::Rustup { .. } => {
            let mut payload = cargo(&payload_dir, &payload_args);
            payload.args(deny);
            Ok([cargo(&root, &runner_args), payload])
        }
        CrossRoute::Debian => {
            ensure_debian_clippy(apt)?;
            let debian = |dir: &Path, args: &[&str]| {
                let mut command = Command::new(DEBIAN_CARGO_CLIPPY);
                command
                    .args(args)
                    .current_dir(dir)
                    .env("RUSTC", DEBIAN_RUSTC)
                    .env_remove("RUSTFLAGS")
                    .env_remove("CARGO_ENCODED_RUSTFLAGS");
                command
            };
            let mut payload = debian(&payload_dir, &payload_args);
            // As the payload's build does: core from Debian's rust-src.
            payload
                .args([
                    "-Zbuild-std=core",
                    "-Zbuild-std-features=compiler-builtins-mem",
                ])
                .args(deny)
                .env("RUSTC_BOOTSTRAP", "1");
            Ok([debian(&root, &runner_args), payload])
        }
    }
}

/// Debian's clippy, installed when missing (it is small, and only `test` needs it).
fn ensure_debian_clippy(apt: &mut Apt) -> anyhow::Result<()> {
    if Path::new(DEBIAN_CARGO_CLIPPY).is_file() {
        return Ok(());
    }
    if !apt.can_install() {
        apt::needs_root(
            "the aarch64 lints need Debian's clippy",
            &[format!("apt-get install -y {DEBIAN_CLIPPY_PACKAGE}")],
        )?;
    }
    apt.install(&[DEBIAN_CLIPPY_PACKAGE], None)
}
