//! The aarch64 builds: the bare-metal guest payload and the static in-guest runner.

use std::path::{Path, PathBuf};
use std::time::Instant;

use xshell::{cmd, Cmd, Shell};

use crate::elf;
use crate::tools::{CrossRoute, DEBIAN_RUSTC};
use crate::ui;
use anyhow::{anyhow, bail, Context, Result};

/// The payload's own workspace, at the repository's top.
pub const PAYLOAD_WORKSPACE: &str = "guest-payloads";
const PAYLOAD_BINARY: &str = "mte-guest";
pub const PAYLOAD_TARGET: &str = "aarch64-unknown-none";
const PAYLOAD_LINKER_ENV: &str = "CARGO_TARGET_AARCH64_UNKNOWN_NONE_LINKER";
const RUNNER_PACKAGE: &str = "mte-runner";
/// The runner's own target directory: a cross build with another rustc would otherwise
/// invalidate the host build's artefacts, and the other way round.
const RUNNER_TARGET_DIR: &str = "target/cross";

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the repository")
        .to_path_buf()
}

/// A path relative to the repository's top, for shorter messages.
pub fn relative(path: &Path) -> &Path {
    path.strip_prefix(repo_root()).unwrap_or(path)
}

/// A shell in `dir`, with the cargo that runs xtask, so that builds use the same toolchain
/// unless told otherwise.
fn cargo_in(dir: &Path) -> Result<(Shell, PathBuf)> {
    let sh = Shell::new()?;
    sh.change_dir(dir);
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    Ok((sh, cargo))
}

/// Run a build with `env`, which is printed first: the command line alone would not say how
/// to repeat it.
fn run_with_env(build: Cmd<'_>, env: &[(String, String)]) -> xshell::Result<()> {
    if !env.is_empty() {
        let assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        ui::note(&ui::dim(&format!("with {}", assignments.join(" "))));
    }
    // Flags meant for host builds would override the per-target ones (and +crt-static with
    // them), and have no business in a bare-metal payload.
    build
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .run()
}

fn var(key: &str, value: &str) -> (String, String) {
    (key.to_string(), value.to_string())
}

/// Build `guest-payloads/` for bare-metal aarch64; returns the payload ELF.
pub fn payload(route: &CrossRoute) -> Result<PathBuf> {
    let workspace = repo_root().join(PAYLOAD_WORKSPACE);
    if !workspace.join("Cargo.toml").is_file() {
        bail!(
            "{} has no Cargo.toml: the guest payload workspace is missing",
            workspace.display()
        );
    }
    let (sh, cargo) = cargo_in(&workspace)?;
    let target_dir = workspace.join("target");
    let mut build = cmd!(
        sh,
        "{cargo} build --release --target {PAYLOAD_TARGET} --target-dir {target_dir}"
    );
    let mut env = Vec::new();
    if *route == CrossRoute::Debian {
        // Debian ships no prebuilt core for bare metal: build it from rust-src, with the mem*
        // functions a freestanding binary needs.
        build = build.args([
            "-Zbuild-std=core",
            "-Zbuild-std-features=compiler-builtins-mem",
        ]);
        env.push(var("RUSTC_BOOTSTRAP", "1"));
        env.push(var("RUSTC", DEBIAN_RUSTC));
        // Debian's rustc has no rust-lld, the target's default linker: the cross binutils' ld
        // links the payload, unless a linker is configured already.
        if !payload_linker_configured(&workspace) {
            env.push(var(PAYLOAD_LINKER_ENV, "aarch64-linux-gnu-ld"));
        }
    }
    let started = Instant::now();
    run_with_env(build, &env).context("building the guest payload failed")?;
    let elf_path = target_dir
        .join(PAYLOAD_TARGET)
        .join("release")
        .join(PAYLOAD_BINARY);
    check_built(&elf_path, started, "payload", "", |bytes| {
        elf::check_payload(bytes).map_err(|why| {
            anyhow!(
                "{} cannot be loaded as the guest payload: {why}",
                elf_path.display()
            )
        })
    })?;
    Ok(elf_path)
}

/// Read what the `what` build left at `path`, check it, and say what it is:
/// `payload: PATH (24 KiB, 60.4 s)`.
fn check_built(
    path: &Path,
    started: Instant,
    what: &str,
    kind: &str,
    check: impl FnOnce(&[u8]) -> Result<()>,
) -> Result<()> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("the {what} build left no {}", path.display()))?;
    check(&bytes)?;
    ui::note(&format!(
        "{what}: {} ({kind}{}, {:.1} s)",
        relative(path).display(),
        ui::size(bytes.len() as u64),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn payload_linker_configured(workspace: &Path) -> bool {
    std::env::var_os(PAYLOAD_LINKER_ENV).is_some()
        || std::fs::read_to_string(workspace.join(".cargo/config.toml"))
            .is_ok_and(|config| config.lines().any(|l| l.trim_start().starts_with("linker")))
}

/// Build the runner as a static aarch64 Linux executable; returns its path.
pub fn runner(route: &CrossRoute) -> Result<PathBuf> {
    let root = repo_root();
    let (sh, cargo) = cargo_in(&root)?;
    let target = route.runner_target();
    let target_dir = root.join(RUNNER_TARGET_DIR);
    let env_prefix = format!("CARGO_TARGET_{}", target.to_uppercase().replace('-', "_"));
    let linker = match route {
        CrossRoute::Rustup { linker, .. } => *linker,
        CrossRoute::Debian => "aarch64-linux-gnu-gcc",
    };
    let mut env = vec![
        var(&format!("{env_prefix}_LINKER"), linker),
        // No libc or loader in the initramfs: everything is linked in.
        var(
            &format!("{env_prefix}_RUSTFLAGS"),
            "-C target-feature=+crt-static",
        ),
    ];
    if *route == CrossRoute::Debian {
        env.push(var("RUSTC", DEBIAN_RUSTC));
    }
    let build = cmd!(
        sh,
        "{cargo} build --release -p {RUNNER_PACKAGE} --target {target} --target-dir {target_dir}"
    );
    let started = Instant::now();
    run_with_env(build, &env).context("building the runner for aarch64 failed")?;
    let binary = target_dir.join(target).join("release").join(RUNNER_PACKAGE);
    check_built(
        &binary,
        started,
        "runner",
        "static aarch64 ELF, ",
        |bytes| {
            elf::check_static_aarch64(bytes).map_err(|why| {
                anyhow!(
                    "{} cannot be the emulated machine's /init: {why}. It must be a static \
                 aarch64 executable (target {target}, -C target-feature=+crt-static, linker \
                 {linker})",
                    binary.display()
                )
            })
        },
    )?;
    Ok(binary)
}

/// The name a runner outside the emulated machine loads the payload by, as in the initramfs.
pub const STAGED_PAYLOAD_NAME: &str = "mte-guest.elf";

/// Copy the payload into `dir` (relative to the repository's top), where a runner on this
/// machine is pointed with `--payload-dir`; returns the directory.
pub fn stage_payload(dir: &str, payload: &Path) -> Result<PathBuf> {
    let payload_dir = repo_root().join(dir);
    std::fs::create_dir_all(&payload_dir)
        .with_context(|| format!("creating {}", payload_dir.display()))?;
    let target = payload_dir.join(STAGED_PAYLOAD_NAME);
    std::fs::copy(payload, &target)
        .with_context(|| format!("copying the payload to {}", target.display()))?;
    Ok(payload_dir)
}

/// Build the runner for this machine, for the lanes whose VMM runs here (the qemu and host
/// lanes); returns its path.
pub fn host_runner() -> Result<PathBuf> {
    let root = repo_root();
    let (sh, cargo) = cargo_in(&root)?;
    let build = cmd!(sh, "{cargo} build --release -p {RUNNER_PACKAGE}");
    let started = Instant::now();
    run_with_env(build, &[]).context("building the runner for this machine failed")?;
    let binary = root.join("target/release").join(RUNNER_PACKAGE);
    if !binary.is_file() {
        bail!("the runner build left no {}", binary.display());
    }
    ui::note(&format!(
        "runner: {} (for this machine, {:.1} s)",
        relative(&binary).display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(binary)
}
