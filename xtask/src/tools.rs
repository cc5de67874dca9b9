//! The tools a run needs, checked and, where xtask may, installed: QEMU with MTE under TCG, a
//! Rust toolchain that builds for aarch64 (bare metal and static Linux), and the headless browser
//! that `test` opens the report in.

use std::path::{Path, PathBuf};

use xshell::{cmd, Cmd, Shell};

use crate::apt::{self, Apt};
use crate::ui;
use anyhow::{anyhow, bail, Context, Result};

/// QEMU's TCG gained what the emulated lane relies on by 9.2 (MTE with virtualization=on, and
/// the memory-tagging gdbstub packets the qemu lane uses).
pub const QEMU_MINIMUM: Version = Version(9, 2, 0);

/// Packages of the Debian route to an aarch64 Rust toolchain: Debian's rustc with the arm64
/// std, the standard library source (for `-Zbuild-std=core`), a cross linker and the arm64
/// C library it links the static runner against (only a Recommends of the linker, which
/// `--no-install-recommends` leaves out).
pub const DEBIAN_RUST_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev:arm64",
    "rust-web-src",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
];

/// The static arm64 C library (package libc6-dev-arm64-cross) the cross gcc links against.
const CROSS_LIBC: &str = "/usr/aarch64-linux-gnu/lib/libc.a";

/// Debian's rustc; the rustup proxy usually comes first on PATH, so it is named by path.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// Setting this lets xtask run `rustup target add` (it needs the rustup distribution server).
pub const RUSTUP_TARGET_ADD_ENV: &str = "MTE_RUSTUP_TARGET_ADD";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[derive(Clone, Debug)]
pub struct Qemu {
    pub path: PathBuf,
    pub version: Version,
    /// The first line of `--version`, for the run's record.
    pub banner: String,
}

/// How aarch64 code gets built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrossRoute {
    /// rustup's own targets; the runner builds for `linux_target`, linked by `linker`.
    Rustup {
        linux_target: &'static str,
        linker: &'static str,
    },
    /// Debian's rustc (at [`DEBIAN_RUSTC`]) with its arm64 std and rust-src.
    Debian,
}

impl CrossRoute {
    pub fn runner_target(&self) -> &'static str {
        match self {
            CrossRoute::Rustup { linux_target, .. } => linux_target,
            CrossRoute::Debian => "aarch64-unknown-linux-gnu",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Tools {
    /// Checked only when a lane needs it: the host lane runs without QEMU.
    pub qemu: Option<Qemu>,
    pub cross: CrossRoute,
}

impl Tools {
    /// QEMU, for a lane that asked [`ensure`] for it.
    pub fn qemu(&self) -> &Qemu {
        self.qemu
            .as_ref()
            .expect("the lanes that need QEMU have it checked first")
    }
}

/// Check every tool, installing what is missing where possible; QEMU only `with_qemu`.
pub fn ensure(apt: &mut Apt, with_qemu: bool) -> Result<Tools> {
    ui::step("tools");
    let qemu = with_qemu.then(|| ensure_qemu(apt)).transpose()?;
    let cross = ensure_cross(apt)?;
    Ok(Tools { qemu, cross })
}

/// The names Debian's and other distributions' Chromium go by.
const CHROMIUM_NAMES: &[&str] = &["chromium", "chromium-browser"];

/// A headless Chromium for the report check: found on PATH, or installed from Debian's
/// `chromium` package. `Err` is why there is none, for the check to say when it skips.
pub fn ensure_chromium(apt: &mut Apt) -> std::result::Result<PathBuf, String> {
    let found = || CHROMIUM_NAMES.iter().find_map(|name| apt::on_path(name));
    if let Some(path) = found() {
        ui::note(&format!("chromium ({}): ok", path.display()));
        return Ok(path);
    }
    if !apt.can_install() {
        return Err(
            "chromium is not installed, and xtask cannot install it without root and \
                    apt-get (as root: apt-get install -y chromium)"
                .into(),
        );
    }
    apt.install(&["chromium"], None)
        .map_err(|e| format!("chromium cannot be installed: {e:#}"))?;
    found().ok_or_else(|| "chromium is still not on PATH after installing it".to_string())
}

/// The first `x.y[.z]` after "version" in `qemu-system-aarch64 --version`.
pub fn parse_qemu_version(text: &str) -> Option<Version> {
    let after = &text[text.find("version ")? + "version ".len()..];
    let word = after
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = word.split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = parts.next().and_then(|p| p.ok()).unwrap_or(0);
    Some(Version(major, minor, patch))
}

fn probe_qemu(sh: &Shell, path: &Path) -> Result<Qemu> {
    let text = cmd!(sh, "{path} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .with_context(|| format!("running {} --version", path.display()))?;
    let version = parse_qemu_version(&text)
        .ok_or_else(|| anyhow!("cannot read a version in `{}`", text.trim()))?;
    Ok(Qemu {
        path: path.to_path_buf(),
        version,
        banner: text.lines().next().unwrap_or_default().to_string(),
    })
}

/// QEMU 9.2 or newer: the one `MTE_QEMU` names, else the one on PATH, else installed.
fn ensure_qemu(apt: &mut Apt) -> Result<Qemu> {
    let sh = Shell::new()?;
    if let Some(path) = std::env::var_os("MTE_QEMU").filter(|p| !p.is_empty()) {
        return chosen_qemu(&sh, Path::new(&path));
    }
    match qemu_on_path(&sh)? {
        Some(qemu) => Ok(qemu),
        None => install_qemu(&sh, apt),
    }
}

/// `qemu-system-aarch64 10.0.2 (/usr/bin/qemu-system-aarch64): ok`
fn note_qemu(qemu: &Qemu, whence: &str, how: &str) {
    ui::note(&format!(
        "qemu-system-aarch64 {} ({}{whence}): {how}",
        qemu.version,
        qemu.path.display()
    ));
}

/// A person chose this QEMU: check it, never replace it.
fn chosen_qemu(sh: &Shell, path: &Path) -> Result<Qemu> {
    let qemu = probe_qemu(sh, path).context("MTE_QEMU")?;
    if qemu.version < QEMU_MINIMUM {
        bail!(
            "MTE_QEMU={} is QEMU {}; the suite needs {QEMU_MINIMUM} or newer",
            qemu.path.display(),
            qemu.version
        );
    }
    note_qemu(&qemu, ", from MTE_QEMU", "ok");
    Ok(qemu)
}

/// The QEMU on PATH, if it is new enough.
fn qemu_on_path(sh: &Shell) -> Result<Option<Qemu>> {
    let found = apt::on_path("qemu-system-aarch64")
        .map(|p| probe_qemu(sh, &p))
        .transpose()?;
    match found {
        Some(qemu) if qemu.version >= QEMU_MINIMUM => {
            note_qemu(&qemu, "", "ok");
            return Ok(Some(qemu));
        }
        Some(qemu) => ui::note(&format!(
            "qemu-system-aarch64 {} is older than {QEMU_MINIMUM}",
            qemu.version
        )),
        None => ui::note("qemu-system-aarch64: not found"),
    }
    Ok(None)
}

/// Install qemu-system-arm: bookworm's own QEMU is 7.2, so there from the backports suite.
/// Without root, the commands to run as root.
fn install_qemu(sh: &Shell, apt: &mut Apt) -> Result<Qemu> {
    let codename = apt::os_codename().unwrap_or_default();
    let backports = (codename == "bookworm").then(|| format!("{codename}-backports"));
    if !apt.can_install() {
        let mut commands = Vec::new();
        if let Some(suite) = &backports {
            if !apt::sources_name_suite(&apt::configured_sources(), suite) {
                commands.push(format!(
                    "printf '{}' > {}",
                    apt::backports_source(&codename).replace('\n', "\\n"),
                    apt::BACKPORTS_SOURCE_FILE
                ));
            }
        }
        commands.push("apt-get update".into());
        commands.push(match &backports {
            Some(suite) => format!("apt-get install -y -t {suite} qemu-system-arm"),
            None => "apt-get install -y qemu-system-arm".into(),
        });
        apt::needs_root(
            &format!("qemu-system-aarch64 {QEMU_MINIMUM} or newer is needed (or set MTE_QEMU)"),
            &commands,
        )?;
    }
    if backports.is_some() {
        apt.add_backports(&codename)?;
    }
    apt.install(&["qemu-system-arm"], backports.as_deref())?;
    let path = apt::on_path("qemu-system-aarch64").ok_or_else(|| {
        anyhow!("qemu-system-aarch64 is still not on PATH after installing qemu-system-arm")
    })?;
    let qemu = probe_qemu(sh, &path)?;
    if qemu.version < QEMU_MINIMUM {
        bail!(
            "installed QEMU is {} and the suite needs {QEMU_MINIMUM}; \
             install a newer qemu-system-arm or set MTE_QEMU",
            qemu.version
        );
    }
    note_qemu(&qemu, "", "installed");
    Ok(qemu)
}

/// What `command` prints, or nothing if it fails: for probes whose failure says "not here".
fn output(command: Cmd<'_>) -> String {
    command.quiet().ignore_stderr().read().unwrap_or_default()
}

/// Which route the installed toolchains allow, if any.
fn detect_cross(sh: &Shell) -> Option<CrossRoute> {
    // The static runner links against glibc for arm64: the cross gcc alone is not enough.
    let has_gnu_linker =
        apt::on_path("aarch64-linux-gnu-gcc").is_some() && Path::new(CROSS_LIBC).is_file();
    if apt::on_path("rustup").is_some() {
        let installed = output(cmd!(sh, "rustup target list --installed"));
        let has = |t: &str| installed.lines().any(|l| l.trim() == t);
        if has("aarch64-unknown-none") {
            if has("aarch64-unknown-linux-musl") {
                // musl's target ships its own C runtime objects, so rust-lld links it alone.
                return Some(CrossRoute::Rustup {
                    linux_target: "aarch64-unknown-linux-musl",
                    linker: "rust-lld",
                });
            }
            if has("aarch64-unknown-linux-gnu") && has_gnu_linker {
                return Some(CrossRoute::Rustup {
                    linux_target: "aarch64-unknown-linux-gnu",
                    linker: "aarch64-linux-gnu-gcc",
                });
            }
        }
    }
    debian_route_ready(sh, has_gnu_linker).then_some(CrossRoute::Debian)
}

fn debian_route_ready(sh: &Shell, has_gnu_linker: bool) -> bool {
    if !has_gnu_linker || !Path::new(DEBIAN_RUSTC).is_file() {
        return false;
    }
    let rustc = DEBIAN_RUSTC;
    let libdir = output(cmd!(
        sh,
        "{rustc} --print target-libdir --target aarch64-unknown-linux-gnu"
    ));
    let sysroot = output(cmd!(sh, "{rustc} --print sysroot"));
    let has_std = std::fs::read_dir(libdir.trim())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false);
    let has_src = Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file();
    has_std && has_src
}

fn describe(sh: &Shell, route: &CrossRoute) -> String {
    match route {
        CrossRoute::Rustup {
            linux_target,
            linker,
        } => {
            format!("rustup targets aarch64-unknown-none and {linux_target}, linked with {linker}")
        }
        CrossRoute::Debian => {
            let rustc = DEBIAN_RUSTC;
            let version = output(cmd!(sh, "{rustc} --version"));
            let version: Vec<&str> = version.split_whitespace().take(2).collect();
            format!(
                "Debian {} ({DEBIAN_RUSTC}) with the arm64 std, rust-src and aarch64-linux-gnu-gcc",
                version.join(" ")
            )
        }
    }
}

pub fn ensure_cross(apt: &mut Apt) -> Result<CrossRoute> {
    let sh = Shell::new()?;
    if let Some(route) = detect_cross(&sh) {
        ui::note(&format!("aarch64 Rust: {}: ok", describe(&sh, &route)));
        return Ok(route);
    }
    ui::note("aarch64 Rust: no toolchain builds for aarch64 yet");

    if std::env::var_os(RUSTUP_TARGET_ADD_ENV).is_some_and(|v| !v.is_empty())
        && apt::on_path("rustup").is_some()
    {
        ui::note(&format!(
            "{RUSTUP_TARGET_ADD_ENV} is set: adding the rustup targets"
        ));
        cmd!(
            sh,
            "rustup target add aarch64-unknown-none aarch64-unknown-linux-musl"
        )
        .run()
        .context("rustup target add failed")?;
    } else if apt.can_install() {
        apt.add_architecture("arm64")?;
        apt.install(DEBIAN_RUST_PACKAGES, None)?;
    } else {
        apt::needs_root(
            "no Rust toolchain here builds for aarch64",
            &[
                "dpkg --add-architecture arm64".into(),
                "apt-get update".into(),
                format!("apt-get install -y {}", DEBIAN_RUST_PACKAGES.join(" ")),
                format!(
                    "(or, with access to the rustup servers: rustup target add \
                     aarch64-unknown-none aarch64-unknown-linux-musl, \
                     or set {RUSTUP_TARGET_ADD_ENV}=1)"
                ),
            ],
        )?;
    }
    match detect_cross(&sh) {
        Some(route) => {
            ui::note(&format!("aarch64 Rust: {}: installed", describe(&sh, &route)));
            Ok(route)
        }
        None => bail!(
            "the aarch64 Rust toolchain is still incomplete after installing; check that {DEBIAN_RUSTC} \
             has the aarch64-unknown-linux-gnu std \
             (`{DEBIAN_RUSTC} --print target-libdir --target aarch64-unknown-linux-gnu`) \
             and rust-src, and that aarch64-linux-gnu-gcc is on PATH"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions_are_read_from_the_banner() {
        let debian = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025";
        assert_eq!(parse_qemu_version(debian), Some(Version(10, 0, 2)));
        assert_eq!(
            parse_qemu_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u7)"),
            Some(Version(7, 2, 15))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 9.2"),
            Some(Version(9, 2, 0))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 9.1.50"),
            Some(Version(9, 1, 50))
        );
        assert_eq!(parse_qemu_version("something else"), None);
    }

    #[test]
    fn the_minimum_is_compared_numerically() {
        assert!(Version(10, 0, 2) >= QEMU_MINIMUM);
        assert!(Version(9, 2, 0) >= QEMU_MINIMUM);
        assert!(Version(9, 1, 99) < QEMU_MINIMUM);
        assert!(Version(7, 2, 15) < QEMU_MINIMUM);
    }
}
