//! Debian's package tools: what is configured, and the few changes xtask makes (an extra
//! architecture, the backports suite, installs, kernel downloads).
//!
//! `apt-get update` runs at most once per xtask run, and only when something must be installed
//! or looked up that the current lists cannot answer: a second run on a prepared machine does no
//! network work.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use xshell::{cmd, Shell};

use crate::ui;
use anyhow::{anyhow, bail, Context, Result};

/// The file xtask writes to enable the backports suite, in deb822 form.
pub const BACKPORTS_SOURCE_FILE: &str = "/etc/apt/sources.list.d/mte-suite-backports.sources";

/// The suites `--kernel newest` looks in, with the codename apt reports for each: they carry
/// Debian's newest kernels (backports and unstable run ahead of the stable release).
pub const NEWEST_SUITES: &[(&str, &str)] = &[
    ("trixie", "trixie"),
    ("trixie-backports", "trixie-backports"),
    ("unstable", "sid"),
];
/// The source file xtask writes for [`NEWEST_SUITES`], in deb822 form.
pub const NEWEST_SOURCE_FILE: &str = "/etc/apt/sources.list.d/mte-suite-newest-kernels.sources";
/// The preferences file that keeps the packages of those suites from ever being installed.
pub const NEWEST_PIN_FILE: &str = "/etc/apt/preferences.d/mte-suite-newest-kernels";

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

    /// Make the suites of [`NEWEST_SUITES`] known to apt, for downloading kernels only: their
    /// source names the arm64 architecture alone, and a pin keeps apt from installing anything
    /// from them. Fails, naming them, when apt could not read one of them.
    pub fn add_newest_suites(&mut self) -> Result<()> {
        let configured = configured_sources_except(NEWEST_SOURCE_FILE);
        let missing: Vec<(&str, &str)> = NEWEST_SUITES
            .iter()
            .copied()
            .filter(|(suite, _)| !sources_name_suite(&configured, suite))
            .collect();
        let source = newest_source(&missing);
        let pin = newest_pin(&missing);
        let written = std::fs::read_to_string(NEWEST_SOURCE_FILE).unwrap_or_default();
        let mut update_error = None;
        if !missing.is_empty() && written != source {
            if !self.can_install() {
                needs_root(
                    "the newest kernel is looked up in Debian suites apt does not have yet",
                    &[
                        format!(
                            "printf '{}' > {NEWEST_SOURCE_FILE}",
                            source.replace('\n', "\\n")
                        ),
                        format!("printf '{}' > {NEWEST_PIN_FILE}", pin.replace('\n', "\\n")),
                        "apt-get update".into(),
                    ],
                )?;
            }
            let names: Vec<&str> = missing.iter().map(|(suite, _)| *suite).collect();
            ui::note(&format!(
                "adding the suites {} in {NEWEST_SOURCE_FILE} (arm64 only, pinned in \
                 {NEWEST_PIN_FILE} so that nothing is installed from them)",
                names.join(", ")
            ));
            std::fs::write(NEWEST_PIN_FILE, &pin)
                .with_context(|| format!("writing {NEWEST_PIN_FILE}"))?;
            std::fs::write(NEWEST_SOURCE_FILE, &source)
                .with_context(|| format!("writing {NEWEST_SOURCE_FILE}"))?;
            self.updated = false;
            update_error = self.update().err();
        }
        let unread = |apt: &Apt| -> Result<Vec<&'static str>> {
            let read = policy_suites(&apt.policy()?);
            Ok(NEWEST_SUITES
                .iter()
                .filter(|(_, codename)| !read.iter().any(|r| r == codename))
                .map(|(suite, _)| *suite)
                .collect())
        };
        let mut unread_suites = unread(self)?;
        // Sources added earlier whose lists were never fetched.
        if !unread_suites.is_empty()
            && !self.updated
            && update_error.is_none()
            && self.can_install()
        {
            update_error = self.update().err();
            unread_suites = unread(self)?;
        }
        if unread_suites.is_empty() {
            return Ok(());
        }
        bail!(
            "apt could not read the suite{} {} (needed to find the newest kernel){}; check that \
             the Debian mirror is reachable and run `apt-get update`, or name a series instead \
             (--kernel 6.12)",
            if unread_suites.len() == 1 { "" } else { "s" },
            unread_suites.join(", "),
            update_error.map(|e| format!(": {e:#}")).unwrap_or_default()
        )
    }

    /// `apt-cache policy`: the sources apt has read, with their release fields.
    fn policy(&self) -> Result<String> {
        Ok(cmd!(self.sh, "apt-cache policy")
            .quiet()
            .ignore_stderr()
            .read()?)
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
        debs.ok_or_else(|| anyhow!("apt-get download {spec} left no .deb in {}", dir.display()))
    }
}

impl Apt {
    /// `apt-cache policy PACKAGE`: each version apt knows, with the sources and priorities
    /// it comes from.
    pub fn policy_of(&self, package: &str) -> Result<String> {
        Ok(cmd!(self.sh, "apt-cache policy {package}")
            .quiet()
            .ignore_stderr()
            .read()?)
    }

    /// What `apt-get -t SUITE install SPEC` would install on an empty system of architecture
    /// `arch`, without recommends: apt's own resolution of the dependencies from its lists
    /// (from `suite` where it has them, as a backport is installed), simulated (`-s`) against
    /// `empty_status`, an empty dpkg status file, so that nothing of this machine's packages
    /// counts and nothing is locked or changed. The `Inst` lines of the simulation.
    pub fn simulate_install_on_empty(
        &self,
        spec: &str,
        suite: &str,
        arch: &str,
        empty_status: &Path,
    ) -> Result<String> {
        let status = format!("Dir::State::status={}", empty_status.display());
        let native = format!("APT::Architecture={arch}");
        let only = format!("APT::Architectures::={arch}");
        let output = cmd!(
            self.sh,
            "apt-get -q -s -o {status} -o {native} -o {only} -o APT::Install-Recommends=false
             -o Debug::NoLocking=1 -t {suite} install {spec}"
        )
        .quiet()
        .ignore_status()
        .output()?;
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        if !output.status.success() {
            bail!(
                "apt-get -s install {spec} for an empty {arch} system failed ({}): {}{}",
                output.status,
                text(&output.stderr).trim(),
                text(&output.stdout).trim()
            );
        }
        Ok(text(&output.stdout))
    }

    /// Download the packages `specs` (`NAME:ARCH=VERSION`) into `dir` in one apt-get call.
    pub fn download_all(&self, specs: &[String], dir: &Path) -> Result<()> {
        let _cwd = self.sh.push_dir(dir);
        let sandbox: &[&str] = if is_root() {
            &["-o", "APT::Sandbox::User=root"]
        } else {
            &[]
        };
        cmd!(self.sh, "apt-get -q {sandbox...} download {specs...}")
            .run()
            .with_context(|| format!("apt-get download of {} packages failed", specs.len()))
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

/// The deb822 source for the `(suite, codename)` pairs, arm64 only: nothing but kernels is
/// wanted from them.
pub fn newest_source(suites: &[(&str, &str)]) -> String {
    let names: Vec<&str> = suites.iter().map(|(suite, _)| *suite).collect();
    format!(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {}\nComponents: main\n\
         Architectures: arm64\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        names.join(" ")
    )
}

/// Preferences that give every package of those suites priority 1: apt never picks them for
/// an install or an upgrade, yet `apt-get download NAME=VERSION` still fetches them.
pub fn newest_pin(suites: &[(&str, &str)]) -> String {
    suites
        .iter()
        .map(|(suite, codename)| {
            format!(
                "Explanation: {suite}: kernel packages to test, downloaded and unpacked, never installed\n\
                 Package: *\nPin: release n={codename}\nPin-Priority: 1\n"
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The codenames (`n=`) of the releases in `apt-cache policy` output: the suites whose lists
/// apt has.
pub fn policy_suites(policy: &str) -> Vec<String> {
    policy
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("release "))
        .flat_map(|fields| fields.split(','))
        .filter_map(|field| field.strip_prefix("n="))
        .map(String::from)
        .collect()
}

/// The text of every source file apt reads (`sources.list`, `*.list` and `*.sources`).
pub fn configured_sources() -> String {
    configured_sources_except("")
}

/// [`configured_sources`] without `file`.
fn configured_sources_except(file: &str) -> String {
    source_files()
        .into_iter()
        .filter(|path| path != Path::new(file))
        .map(|path| std::fs::read_to_string(path).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `sources.list`, then the `*.list` and `*.sources` of `sources.list.d` in name order.
fn source_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut listed: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        listed.sort();
        files.extend(listed);
    }
    files
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
    fn the_newest_suites_are_arm64_only_and_pinned_away() {
        let source = newest_source(NEWEST_SUITES);
        assert!(source.contains("Suites: trixie trixie-backports unstable\n"));
        assert!(source.contains("Architectures: arm64\n"));
        for (suite, _) in NEWEST_SUITES {
            assert!(sources_name_suite(&source, suite), "{suite}");
        }
        let pin = newest_pin(NEWEST_SUITES);
        assert_eq!(pin.matches("Pin-Priority: 1\n").count(), 3);
        assert!(pin.contains("Pin: release n=sid\n"));
        assert!(pin.contains("Pin: release n=trixie-backports\n"));
        // Stanzas are separated by one blank line.
        assert_eq!(pin.matches("\n\n").count(), 2);
    }

    #[test]
    fn policy_names_the_suites_apt_has_read() {
        let policy = "\
Package files:
 100 /var/lib/dpkg/status
     release a=now
   1 http://deb.debian.org/debian unstable/main arm64 Packages
     release o=Debian,a=unstable,n=sid,l=Debian,c=main,b=arm64
     origin deb.debian.org
 500 http://deb.debian.org/debian trixie-backports/main arm64 Packages
     release o=Debian Backports,a=stable-backports,n=trixie-backports,l=Debian Backports,c=main,b=arm64
Pinned packages:
";
        assert_eq!(policy_suites(policy), ["sid", "trixie-backports"]);
        assert!(policy_suites("").is_empty());
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
