//! The QEMU the qemu-kvm lane runs inside the emulated machine: Debian's arm64
//! `qemu-system-arm` (9.2 or newer), with every shared library it loads, taken from the arm64
//! packages as the kernel is.
//!
//! Which packages come with it is apt's answer, not a list kept here: apt resolves the install
//! of the QEMU package on an empty arm64 system (a simulation against an empty dpkg status);
//! the arm64 packages of that answer are downloaded and unpacked into the cache, once. What goes
//! into the initramfs is then read from the binaries themselves: `qemu-system-aarch64`, its
//! program interpreter, and the libraries their `DT_NEEDED` entries name, transitively.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use object::elf::PT_INTERP;
use object::read::elf::{FileHeader, ProgramHeader};
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use crate::apt::{self, Apt};
use crate::debian_version;
use crate::kernels::cache_root;
use crate::tools::{Version, QEMU_MINIMUM};
use crate::ui;

/// The Debian package of the aarch64 system emulator.
pub const PACKAGE: &str = "qemu-system-arm";
/// The emulator in it, where the package installs it.
pub const BINARY: &str = "usr/bin/qemu-system-aarch64";
/// Written last into a cache entry: an entry without it is incomplete and ignored.
const CACHE_RECORD: &str = "qemu.json";
/// Where the dynamic loader looks for a library without a cache (`/etc/ld.so.cache`), in its
/// order: Debian's multiarch directories, then the classic ones.
const LIBRARY_DIRS: &[&str] = &[
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib",
    "usr/lib",
];

/// The arm64 QEMU, unpacked in the cache.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QemuPackage {
    /// The Debian version of [`PACKAGE`], e.g. `1:10.0.2+ds-2+deb13u1~bpo12+1`.
    pub version: String,
    /// The suite it came from, e.g. `bookworm-backports`.
    pub suite: String,
    /// Every arm64 package apt's resolution named, as `name version`, unpacked into the tree.
    pub packages: Vec<String>,
    /// The unpacked packages (not serialised: the entry's `root/`).
    #[serde(skip)]
    pub root: PathBuf,
}

/// A file the initramfs gets: where it goes, and the file on this machine it is read from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageFile {
    pub path: String,
    pub source: PathBuf,
    pub mode: u32,
}

impl QemuPackage {
    /// QEMU's version as upstream numbers it: `1:10.0.2+ds-2...` -> 10.0.2.
    pub fn upstream_version(&self) -> Option<Version> {
        upstream_version(&self.version)
    }

    /// The emulator and everything it loads, at the paths the packages give them: the
    /// binary, its program interpreter, and its libraries by their sonames.
    pub fn image_files(&self) -> Result<Vec<ImageFile>> {
        closure(&self.root, BINARY)
    }
}

/// The arm64 QEMU from the cache, or fetched into it.
pub fn ensure(apt: &mut Apt) -> Result<QemuPackage> {
    ui::step("QEMU for inside the machine (arm64)");
    let dir = cache_root().join("qemu");
    if let Some(qemu) = cached(&dir) {
        note("cached", &qemu);
        return Ok(qemu);
    }
    if !apt.has_architecture("arm64") {
        if !apt.can_install() {
            apt::needs_root(
                "arm64 packages are not enabled in dpkg",
                &[
                    "dpkg --add-architecture arm64".into(),
                    "apt-get update".into(),
                ],
            )?;
        }
        apt.add_architecture("arm64")?;
    }
    let choice = choose_version(apt)?;
    let qemu = fetch(&dir, &choice, apt)
        .with_context(|| format!("fetching {PACKAGE}:arm64 {}", choice.version))?;
    note("fetched", &qemu);
    Ok(qemu)
}

fn note(how: &str, qemu: &QemuPackage) {
    ui::note(&format!(
        "{how}: {PACKAGE}:arm64 {} from {} with {} arm64 packages ({})",
        qemu.version,
        qemu.suite,
        qemu.packages.len(),
        qemu.root.display()
    ));
}

/// The newest complete cache entry.
fn cached(dir: &Path) -> Option<QemuPackage> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|entry| {
            let text = std::fs::read_to_string(entry.path().join(CACHE_RECORD)).ok()?;
            let mut qemu: QemuPackage = serde_json::from_str(&text).ok()?;
            qemu.root = entry.path().join("root");
            qemu.root.join(BINARY).is_file().then_some(qemu)
        })
        .max_by(|a, b| debian_version::compare(&a.version, &b.version))
}

/// A version of the package and a suite that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub version: String,
    pub suite: String,
}

/// The newest version of the QEMU package that is new enough, from a suite apt may install
/// from; on bookworm, whose own QEMU is 7.2, the backports suite is added for it.
fn choose_version(apt: &mut Apt) -> Result<Choice> {
    let spec = format!("{PACKAGE}:arm64");
    if let Some(choice) = choose(&parse_policy(&apt.policy_of(&spec)?)) {
        return Ok(choice);
    }
    if !apt.can_install() {
        bail!(
            "apt knows no {spec} of QEMU {QEMU_MINIMUM} or newer; as root, add the backports \
             suite on bookworm and run `apt-get update`"
        );
    }
    if let Some(codename) = apt::os_codename().filter(|c| c == "bookworm") {
        apt.add_backports(&codename)?;
    }
    apt.update()?;
    choose(&parse_policy(&apt.policy_of(&spec)?)).ok_or_else(|| {
        anyhow!("apt knows no {spec} of QEMU {QEMU_MINIMUM} or newer, even after an update")
    })
}

/// One version in `apt-cache policy`, with the `(priority, suite)` of each source that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyVersion {
    pub version: String,
    pub sources: Vec<(i32, String)>,
}

/// The version table of `apt-cache policy PACKAGE`.
pub fn parse_policy(text: &str) -> Vec<PolicyVersion> {
    let mut versions: Vec<PolicyVersion> = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.trim_start().starts_with("Version table:") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let words: Vec<&str> = line
            .split_whitespace()
            .filter(|word| *word != "***")
            .collect();
        match words[..] {
            // `1:10.0.2+ds-2+deb13u1~bpo12+1 100`: a version and its priority.
            [version, priority] if priority.parse::<i32>().is_ok() => {
                versions.push(PolicyVersion {
                    version: version.to_string(),
                    sources: Vec::new(),
                });
            }
            // `100 http://deb.debian.org/debian bookworm-backports/main arm64 Packages`.
            [priority, _uri, suite_component, ..] => {
                let (Ok(priority), Some(current)) = (priority.parse(), versions.last_mut()) else {
                    continue;
                };
                let suite = suite_component.split('/').next().unwrap_or_default();
                current.sources.push((priority, suite.to_string()));
            }
            _ => {}
        }
    }
    versions
}

/// QEMU's upstream version in a Debian version: `1:10.0.2+ds-2` -> 10.0.2.
pub fn upstream_version(debian: &str) -> Option<Version> {
    let upstream = debian.split_once(':').map_or(debian, |(_, rest)| rest);
    let mut numbers = upstream
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    Some(Version(
        numbers.next()??,
        numbers.next()??,
        numbers.next().flatten().unwrap_or(0),
    ))
}

/// The newest version of QEMU [`QEMU_MINIMUM`] or newer from a source apt may install from
/// (priority above 1: not the kernel-only suites xtask pins away).
pub fn choose(versions: &[PolicyVersion]) -> Option<Choice> {
    versions
        .iter()
        .filter(|v| upstream_version(&v.version).is_some_and(|u| u >= QEMU_MINIMUM))
        .filter_map(|v| {
            let (_, suite) = v.sources.iter().find(|(priority, _)| *priority > 1)?;
            Some(Choice {
                version: v.version.clone(),
                suite: suite.clone(),
            })
        })
        .max_by(|a, b| debian_version::compare(&a.version, &b.version))
}

/// A package apt would install: `Inst NAME (VERSION SOURCES [ARCH])`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// The packages of an `apt-get -s install` simulation, in its order.
pub fn parse_simulation(text: &str) -> Vec<Planned> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let inside = rest.strip_prefix('(')?.strip_suffix(')')?;
            let version = inside.split_whitespace().next()?;
            let arch = inside.rsplit_once('[')?.1.strip_suffix(']')?;
            Some(Planned {
                name: name.split(':').next().unwrap_or(name).to_string(),
                version: version.to_string(),
                arch: arch.to_string(),
            })
        })
        .collect()
}

/// Resolve, download and unpack `choice` and its dependencies into the cache.
fn fetch(dir: &Path, choice: &Choice, apt: &Apt) -> Result<QemuPackage> {
    let staging = dir.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let empty_status = staging.join("empty-status");
    std::fs::write(&empty_status, b"")?;
    let spec = format!("{PACKAGE}={}", choice.version);
    let simulated = apt.simulate_install_on_empty(&spec, &choice.suite, "arm64", &empty_status)?;
    let planned = parse_simulation(&simulated);
    let ours = planned
        .iter()
        .find(|p| p.name == PACKAGE)
        .ok_or_else(|| anyhow!("apt's resolution of {spec} does not install {PACKAGE}"))?;
    if ours.version != choice.version {
        bail!(
            "apt resolved {spec} to version {}, not {}",
            ours.version,
            choice.version
        );
    }
    // Packages for every architecture hold data (firmware, keymaps), never the arm64 code the
    // emulator loads.
    let arm64: Vec<&Planned> = planned.iter().filter(|p| p.arch == "arm64").collect();
    ui::note(&format!(
        "apt resolves {spec} to {} packages, {} of them arm64: downloading those",
        planned.len(),
        arm64.len()
    ));
    let specs: Vec<String> = arm64
        .iter()
        .map(|p| format!("{}:arm64={}", p.name, p.version))
        .collect();
    let debs = staging.join("debs");
    std::fs::create_dir_all(&debs)?;
    apt.download_all(&specs, &debs)?;
    let root = staging.join("root");
    std::fs::create_dir_all(&root)?;
    let sh = Shell::new()?;
    for entry in std::fs::read_dir(&debs)? {
        let deb = entry?.path();
        cmd!(sh, "dpkg-deb -x {deb} {root}")
            .quiet()
            .run()
            .with_context(|| format!("unpacking {}", deb.display()))?;
    }
    std::fs::remove_dir_all(&debs)?;
    std::fs::remove_file(&empty_status)?;
    let mut qemu = QemuPackage {
        version: choice.version.clone(),
        suite: choice.suite.clone(),
        packages: arm64
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect(),
        root: PathBuf::new(),
    };
    // The closure must be complete before the entry counts as cached.
    closure(&root, BINARY)?;
    std::fs::write(
        staging.join(CACHE_RECORD),
        serde_json::to_string_pretty(&qemu)?,
    )?;
    let entry = dir.join(format!("{PACKAGE}_{}", choice.version.replace(':', "%3a")));
    let _ = std::fs::remove_dir_all(&entry);
    std::fs::rename(&staging, &entry)
        .with_context(|| format!("moving QEMU into {}", entry.display()))?;
    qemu.root = entry.join("root");
    Ok(qemu)
}

/// `binary` (relative to `root`) and what it loads: its program interpreter and every library
/// its `DT_NEEDED` entries name, and theirs, found in [`LIBRARY_DIRS`] under `root`. Each goes
/// where the loader looks for it (a library under its soname), read through the symlinks of
/// the unpacked packages.
pub fn closure(root: &Path, binary: &str) -> Result<Vec<ImageFile>> {
    let mut files = vec![ImageFile {
        path: format!("/{binary}"),
        source: resolve_in(root, binary)?,
        mode: 0o755,
    }];
    let mut pending = vec![files[0].source.clone()];
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some(elf) = pending.pop() {
        let bytes = std::fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
        let (interpreter, needed) =
            dynamic_needs(&bytes).map_err(|e| anyhow!("{}: {e}", elf.display()))?;
        if let Some(interpreter) = interpreter.filter(|i| seen.insert(i.clone())) {
            let source = resolve_in(root, &interpreter)?;
            files.push(ImageFile {
                path: interpreter,
                source: source.clone(),
                mode: 0o755,
            });
            pending.push(source);
        }
        for soname in needed {
            if !seen.insert(soname.clone()) {
                continue;
            }
            let (dir, source) = LIBRARY_DIRS
                .iter()
                .find_map(|dir| {
                    let relative = format!("{dir}/{soname}");
                    resolve_in(root, &relative).ok().map(|s| (dir, s))
                })
                .ok_or_else(|| {
                    anyhow!(
                        "{} needs {soname}, which no unpacked package has in {}",
                        elf.display(),
                        LIBRARY_DIRS.join(", ")
                    )
                })?;
            files.push(ImageFile {
                path: format!("/{dir}/{soname}"),
                source: source.clone(),
                mode: 0o644,
            });
            pending.push(source);
        }
    }
    Ok(files)
}

/// An ELF's program interpreter (`PT_INTERP`) and the libraries its dynamic section needs.
pub fn dynamic_needs(bytes: &[u8]) -> Result<(Option<String>, Vec<String>), String> {
    let elf = mte_vmm::payload::aarch64_elf(bytes)?;
    let endian = elf.endian();
    let header = elf.elf_header();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let interpreter = elf
        .elf_program_headers()
        .iter()
        .find(|p| p.p_type(endian) == PT_INTERP)
        .and_then(|p| p.data(endian, bytes).ok())
        .map(|data| text(data.split(|&b| b == 0).next().unwrap_or_default()));
    let sections = header
        .sections(endian, bytes)
        .map_err(|e| format!("section table: {e}"))?;
    let dynamic = sections
        .dynamic_table(endian, bytes)
        .map_err(|e| format!("dynamic section: {e}"))?;
    let needed = dynamic
        .iter()
        .filter(|d| d.tag == object::elf::DT_NEEDED)
        .map(|d| dynamic.string(d).map(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("DT_NEEDED: {e}"))?;
    Ok((interpreter, needed))
}

/// The file `path` names inside `root`, following symlinks as the target system would (an
/// absolute link points into `root`, not into this machine).
fn resolve_in(root: &Path, path: &str) -> Result<PathBuf> {
    let mut at = root.join(path.trim_start_matches('/'));
    for _ in 0..40 {
        let meta = std::fs::symlink_metadata(&at)
            .with_context(|| format!("{} is not in the unpacked packages", at.display()))?;
        if !meta.file_type().is_symlink() {
            return Ok(at);
        }
        let target = std::fs::read_link(&at)?;
        at = match target.strip_prefix("/") {
            Ok(inside) => root.join(inside),
            Err(_) => at.parent().unwrap_or(root).join(target),
        };
    }
    bail!(
        "{path}: too many levels of symbolic links under {}",
        root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "\
qemu-system-arm:arm64:
  Installed: (none)
  Candidate: 1:7.2+dfsg-7+deb12u18+b3
  Version table:
     1:11.1.3+ds-1 1
          1 http://deb.debian.org/debian unstable/main arm64 Packages
     1:10.0.2+ds-2+deb13u1~bpo12+1 100
        100 http://deb.debian.org/debian bookworm-backports/main arm64 Packages
 *** 1:7.2+dfsg-7+deb12u18+b3 500
        500 http://deb.debian.org/debian bookworm/main arm64 Packages
        100 /var/lib/dpkg/status
";

    #[test]
    fn the_newest_installable_qemu_new_enough_is_chosen() {
        let versions = parse_policy(POLICY);
        assert_eq!(versions.len(), 3);
        assert_eq!(versions[2].version, "1:7.2+dfsg-7+deb12u18+b3");
        // The installed version's status line names no suite.
        assert_eq!(versions[2].sources, [(500, "bookworm".to_string())]);
        // 11.1 only in a suite pinned to priority 1; 7.2 too old.
        assert_eq!(
            choose(&versions),
            Some(Choice {
                version: "1:10.0.2+ds-2+deb13u1~bpo12+1".into(),
                suite: "bookworm-backports".into()
            })
        );
        assert_eq!(choose(&versions[2..]), None);
    }

    #[test]
    fn upstream_versions_drop_epoch_and_revision() {
        assert_eq!(
            upstream_version("1:10.0.2+ds-2+deb13u1~bpo12+1"),
            Some(Version(10, 0, 2))
        );
        assert_eq!(upstream_version("1:9.2+ds-1"), Some(Version(9, 2, 0)));
        assert_eq!(upstream_version("x"), None);
    }

    #[test]
    fn a_simulation_names_each_package_with_version_and_architecture() {
        let text = "\
NOTE: This is only a simulation!
Inst libc6 (2.36-9+deb12u13 Debian:12.13/stable, Debian-Security:12/stable-security [arm64])
Inst qemu-system-data (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:bookworm-backports [all])
Inst qemu-system-arm (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:bookworm-backports [arm64])
Conf libc6 (2.36-9+deb12u13 Debian:12.13/stable [arm64])
";
        let planned = parse_simulation(text);
        assert_eq!(planned.len(), 3);
        assert_eq!(
            planned[0],
            Planned {
                name: "libc6".into(),
                version: "2.36-9+deb12u13".into(),
                arch: "arm64".into()
            }
        );
        assert_eq!(planned[1].arch, "all");
        assert_eq!(planned[2].name, "qemu-system-arm");
    }

    #[test]
    fn links_resolve_inside_the_unpacked_tree() {
        let root =
            std::env::temp_dir().join(format!("mte-qemu-package-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("lib/aarch64-linux-gnu")).unwrap();
        std::fs::write(root.join("lib/aarch64-linux-gnu/libz.so.1.2.13"), b"z").unwrap();
        std::os::unix::fs::symlink(
            "libz.so.1.2.13",
            root.join("lib/aarch64-linux-gnu/libz.so.1"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/lib/aarch64-linux-gnu/libz.so.1",
            root.join("lib/ld-test.so.1"),
        )
        .unwrap();
        let real = root.join("lib/aarch64-linux-gnu/libz.so.1.2.13");
        assert_eq!(
            resolve_in(&root, "lib/aarch64-linux-gnu/libz.so.1").unwrap(),
            real
        );
        assert_eq!(resolve_in(&root, "/lib/ld-test.so.1").unwrap(), real);
        assert!(resolve_in(&root, "lib/missing.so").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
