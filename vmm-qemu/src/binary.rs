//! The `qemu-system-aarch64` to run: where it is, and whether its version is new enough.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mte_suites::vmm::VmmError;

/// The oldest QEMU whose gdbstub has the memory-tagging packets in system emulation.
pub const MINIMUM: Version = Version {
    major: 9,
    minor: 2,
    patch: 0,
};

/// How long `--version` may take.
const VERSION_LIMIT: Duration = Duration::from_secs(10);

const HOW_TO_INSTALL: &str = "`cargo xtask setup` installs QEMU 9.2 or newer (on Debian \
     bookworm, qemu-system-arm from bookworm-backports); or pass --qemu PATH";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version in the first line of `--version` (`QEMU emulator version 10.0.2 (Debian
/// ...)`): the dotted numbers after "version"; a missing patch level is 0.
pub fn parse_version(banner: &str) -> Option<Version> {
    let line = banner.lines().next()?;
    let dotted = line
        .split_whitespace()
        .skip_while(|&word| word != "version")
        .nth(1)?;
    let mut numbers = dotted.split('.').map(|n| n.parse::<u32>().ok());
    Some(Version {
        major: numbers.next()??,
        minor: numbers.next()??,
        patch: numbers.next().unwrap_or(Some(0))?,
    })
}

/// A QEMU binary that answered `--version` with a version new enough.
#[derive(Clone, Debug)]
pub struct QemuBinary {
    pub path: PathBuf,
    pub version: Version,
    /// The first line of `--version`, as QEMU wrote it.
    pub banner: String,
}

impl QemuBinary {
    /// Find `path` (a bare name is looked up on PATH), run `--version` and check it.
    pub fn probe(path: &Path) -> Result<Self, VmmError> {
        let resolved = resolve(path).ok_or_else(|| {
            VmmError::Unsupported(format!(
                "no QEMU at {}{}: {HOW_TO_INSTALL}",
                path.display(),
                if path.components().count() == 1 {
                    " on PATH"
                } else {
                    ""
                }
            ))
        })?;
        let banner = version_banner(&resolved)?;
        let version = parse_version(&banner).ok_or_else(|| {
            VmmError::Host(format!(
                "{} --version printed no version: {banner:?}",
                resolved.display()
            ))
        })?;
        if version < MINIMUM {
            return Err(VmmError::Unsupported(format!(
                "{} is QEMU {version}, older than {MINIMUM}, whose gdbstub first reads and \
                 writes memory tags: {HOW_TO_INSTALL}",
                resolved.display()
            )));
        }
        Ok(QemuBinary {
            path: resolved,
            version,
            banner,
        })
    }
}

/// `path` itself if it names a file, or a bare name's first match on PATH.
fn resolve(path: &Path) -> Option<PathBuf> {
    if path.components().count() > 1 {
        return path.is_file().then(|| path.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(path))
        .find(|candidate| candidate.is_file())
}

/// The first line of `<qemu> --version`, within [`VERSION_LIMIT`].
fn version_banner(qemu: &Path) -> Result<String, VmmError> {
    let failed = |why: String| VmmError::Host(format!("{} --version: {why}", qemu.display()));
    let mut child = Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let deadline = Instant::now() + VERSION_LIMIT;
    let status = loop {
        match child.try_wait().map_err(|e| failed(e.to_string()))? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "no answer within {} s",
                    VERSION_LIMIT.as_secs()
                )));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_string(&mut output)
            .map_err(|e| failed(e.to_string()))?;
    }
    if !status.success() {
        return Err(failed(format!("exited with {status}")));
    }
    Ok(output.lines().next().unwrap_or_default().trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(major: u32, minor: u32, patch: u32) -> Option<Version> {
        Some(Version {
            major,
            minor,
            patch,
        })
    }

    #[test]
    fn versions_are_read_from_the_banner() {
        assert_eq!(
            parse_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n\
                 Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers"
            ),
            version(10, 0, 2)
        );
        assert_eq!(
            parse_version("QEMU emulator version 9.2.0"),
            version(9, 2, 0)
        );
        assert_eq!(
            parse_version("QEMU emulator version 8.2.50 (v8.2.0-1234-gabc)"),
            version(8, 2, 50)
        );
        assert_eq!(parse_version("QEMU emulator version 9.1"), version(9, 1, 0));
        assert_eq!(parse_version("QEMU emulator version x.y"), None);
        assert_eq!(parse_version("qemu-system-aarch64: bad option"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn the_minimum_is_compared_numerically() {
        assert!(version(9, 1, 3).unwrap() < MINIMUM);
        assert!(version(9, 2, 0).unwrap() >= MINIMUM);
        assert!(version(10, 0, 0).unwrap() > MINIMUM);
        assert!(version(9, 10, 0).unwrap() > MINIMUM);
    }

    #[test]
    fn a_missing_binary_says_where_it_looked_and_how_to_get_one() {
        let error = QemuBinary::probe(Path::new("/nonexistent/qemu-system-aarch64"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("/nonexistent/qemu-system-aarch64"),
            "{error}"
        );
        assert!(error.contains("cargo xtask setup"), "{error}");
    }
}
