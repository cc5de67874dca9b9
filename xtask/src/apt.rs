//! Debian's package tools: what is configured, and the few changes xtask makes (an extra
//! architecture, the backports suite, installs, kernel downloads).
//!
//! `apt-get update` runs at most once per xtask run, and only when something must be installed
//! or looked up that the current lists cannot answer: a second run on a prepared machine does no
//! network work.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use xshell::{cmd, Shell};

use crate::error::{bail, Context, Result};
use crate::ui;

/// The file xtask writes to enable the backports suite, in deb822 form.
pub const BACKPORTS_SOURCE_FILE: &str = "/etc/apt/sources.list.d/mte-suite-backports.sources";

pub struct Apt {
    sh: Shell,
    updated: bool,
}

impl Apt {
    pub fn new() -> Result<Apt> {
        Ok(Apt {
            sh: Shell::new()?,
            updated: false,
        })
    }

    /// Whether xtask may change the system's packages: root, with apt-get at hand.
    pub fn can_install(&self) -> bool {
        is_root() && on_path("apt-get").is_some()
    }

    /// `apt-get update`, once.
    pub fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        ui::note("updating the package lists");
        cmd!(self.sh, "apt-get -q update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
            .context("apt-get update failed")?;
        self.updated = true;
        Ok(())
    }

    /// Install `packages`, from `suite` if given (`-t bookworm-backports`).
    pub fn install(&mut self, packages: &[&str], suite: Option<&str>) -> Result<()> {
        self.update()?;
        ui::note(&format!("installing {}", packages.join(" ")));
        let target_release: Vec<String> = suite
            .map(|s| vec!["-t".into(), s.into()])
            .unwrap_or_default();
        cmd!(
            self.sh,
            "apt-get -q install -y --no-install-recommends {target_release...} {packages...}"
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .with_context(|| format!("apt-get install {} failed", packages.join(" ")))
    }

    pub fn has_architecture(&self, arch: &str) -> bool {
        let native = cmd!(self.sh, "dpkg --print-architecture")
            .quiet()
            .read()
            .unwrap_or_default();
        let foreign = cmd!(self.sh, "dpkg --print-foreign-architectures")
            .quiet()
            .read()
            .unwrap_or_default();
        native.trim() == arch || foreign.split_whitespace().any(|a| a == arch)
    }

    /// Make `arch` packages installable and downloadable; the lists are refreshed after.
    pub fn add_architecture(&mut self, arch: &str) -> Result<()> {
        if self.has_architecture(arch) {
            return Ok(());
        }
        ui::note(&format!("enabling the {arch} package architecture"));
        cmd!(self.sh, "dpkg --add-architecture {arch}")
            .run()
            .context("dpkg --add-architecture failed")?;
        self.updated = false;
        self.update()
    }

    /// Add `CODENAME-backports` as a source unless one already names it; the lists are refreshed
    /// after.
    pub fn add_backports(&mut self, codename: &str) -> Result<()> {
        let suite = format!("{codename}-backports");
        if sources_name_suite(&configured_sources(), &suite) {
            return Ok(());
        }
        ui::note(&format!(
            "adding the {suite} suite in {BACKPORTS_SOURCE_FILE}"
        ));
        std::fs::write(BACKPORTS_SOURCE_FILE, backports_source(codename))
            .with_context(|| format!("writing {BACKPORTS_SOURCE_FILE}"))?;
        self.updated = false;
        self.update()
    }

    /// `apt-cache show PACKAGE`: the stanzas of every version apt knows.
    pub fn show(&self, package: &str) -> Result<String> {
        Ok(cmd!(self.sh, "apt-cache show {package}")
            .quiet()
            .ignore_stderr()
            .read()?)
    }

    /// Download `package` at `version` into `dir` without installing it; returns the `.deb`.
    pub fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        let _cwd = self.sh.push_dir(dir);
        let spec = format!("{package}={version}");
        // As root, apt would hand the download to its sandbox user, who cannot write here.
        let sandbox: &[&str] = if is_root() {
            &["-o", "APT::Sandbox::User=root"]
        } else {
            &[]
        };
        cmd!(self.sh, "apt-get -q {sandbox...} download {spec}")
            .run()
            .with_context(|| format!("apt-get download {spec} failed"))?;
        let debs = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{}_", strip_arch(package))))
            });
        debs.ok_or_else(|| {
            crate::error::Error::msg(format!(
                "apt-get download {spec} left no .deb in {}",
                dir.display()
            ))
        })
    }
}

/// `linux-image-arm64:arm64` -> `linux-image-arm64`.
fn strip_arch(package: &str) -> &str {
    package.split(':').next().unwrap_or(package)
}

/// The deb822 source that enables `CODENAME-backports` from the main mirror.
pub fn backports_source(codename: &str) -> String {
    format!(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {codename}-backports\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
}

/// The text of every source file apt reads (`sources.list`, `*.list` and `*.sources`).
pub fn configured_sources() -> String {
    let mut text = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            if file
                .extension()
                .is_some_and(|e| e == "list" || e == "sources")
            {
                text.push('\n');
                text.push_str(&std::fs::read_to_string(&file).unwrap_or_default());
            }
        }
    }
    text
}

/// Whether an uncommented line of the sources names `suite` (one-line or deb822 form).
pub fn sources_name_suite(sources: &str, suite: &str) -> bool {
    sources
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .any(|line| line.split_whitespace().any(|word| word == suite))
}

/// The release's codename (`bookworm`), from /etc/os-release.
pub fn os_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    os_release_value(&text, "VERSION_CODENAME")
}

fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The first `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Stop with the commands a person must run as root, when xtask cannot run them itself.
pub fn needs_root(what: &str, commands: &[String]) -> Result<()> {
    bail!(
        "{what}, and installing needs root with apt-get. Run these as root \
         (or run xtask as root):\n{}",
        commands
            .iter()
            .map(|c| format!("    {c}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_are_found_in_both_source_forms_but_not_in_comments() {
        let one_line = "deb http://deb.debian.org/debian bookworm-backports main\n";
        let deb822 =
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-backports\n";
        let commented = "# deb http://deb.debian.org/debian bookworm-backports main\nSuites: bookworm # bookworm-backports\n";
        assert!(sources_name_suite(one_line, "bookworm-backports"));
        assert!(sources_name_suite(deb822, "bookworm-backports"));
        assert!(!sources_name_suite(commented, "bookworm-backports"));
        assert!(!sources_name_suite(deb822, "trixie-backports"));
        assert!(sources_name_suite(
            &backports_source("bookworm"),
            "bookworm-backports"
        ));
    }

    #[test]
    fn os_release_codename_is_read() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(
            os_release_value(text, "VERSION_CODENAME").as_deref(),
            Some("bookworm")
        );
        assert_eq!(os_release_value("ID=debian\n", "VERSION_CODENAME"), None);
    }
}
