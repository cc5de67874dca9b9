//! The kernel under test: a Debian arm64 kernel series (fetched once into a cache and unpacked)
//! or an image file given by path.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use crate::apt::{self, Apt};
use crate::debian_version;
use crate::kernel_modules;
use crate::ui;
use anyhow::{anyhow, bail, Context, Result};

/// The metapackage whose versions name the current kernel of each suite.
const METAPACKAGE: &str = "linux-image-arm64:arm64";
/// The `--kernel` word for the newest kernel any suite offers.
pub const NEWEST: &str = "newest";
/// Written last into a cache entry: an entry without it is incomplete and ignored.
const CACHE_RECORD: &str = "kernel.json";

/// What `--kernel` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSpec {
    /// A kernel series such as `6.12`: the newest Debian arm64 kernel of that series.
    Series(String),
    /// The newest Debian arm64 kernel of any suite xtask knows (see [`apt::NEWEST_SUITES`]).
    Newest,
    /// A kernel image file.
    Image(PathBuf),
}

impl KernelSpec {
    pub fn parse(text: &str) -> Result<KernelSpec> {
        if text == NEWEST {
            return Ok(KernelSpec::Newest);
        }
        let is_series = {
            let mut parts = text.split('.');
            let numeric = |p: Option<&str>| {
                p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            };
            numeric(parts.next()) && numeric(parts.next()) && parts.next().is_none()
        };
        if is_series {
            return Ok(KernelSpec::Series(text.to_string()));
        }
        let path = Path::new(text);
        if path.is_file() {
            return Ok(KernelSpec::Image(path.to_path_buf()));
        }
        if text.contains('/') || path.exists() {
            bail!("--kernel {text}: no such kernel image file");
        }
        bail!(
            "--kernel {text}: name a series such as 6.12 or 6.1, `{NEWEST}`, or a kernel image file"
        );
    }
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub image: PathBuf,
    /// The Debian package it came from, or "file" for an image given by path.
    pub package: String,
    pub version: String,
    pub series: Option<String>,
    /// The unpacked package (modules under `lib/modules/`), for kernels from the cache.
    pub tree: Option<PathBuf>,
}

impl Kernel {
    /// What `uname -r` will say, where the package tells: its `lib/modules/<release>/`.
    pub fn release(&self) -> Option<String> {
        let dir = kernel_modules::release_dir(self.tree.as_ref()?).ok()?;
        Some(dir.file_name()?.to_string_lossy().into_owned())
    }

    /// A short name for the run directory: the series, or the image's file name.
    pub fn hint(&self) -> String {
        match &self.series {
            Some(series) => series.clone(),
            None => self
                .image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}

/// What a cache entry holds, in its [`CACHE_RECORD`].
#[derive(Debug, Serialize, Deserialize)]
struct CachedKernel {
    series: String,
    package: String,
    version: String,
    /// Relative to the entry's `root/`.
    image: String,
}

/// `$MTE_CACHE_DIR`, else `~/.cache/mte-suite`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("MTE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/mte-suite")
}

/// Find the kernel `spec` names, fetching it into the cache if need be.
pub fn resolve(spec: &KernelSpec, apt: &mut Apt) -> Result<Kernel> {
    let dir = cache_root().join("kernels");
    match spec {
        KernelSpec::Image(path) => {
            ui::step(&format!("kernel {}", path.display()));
            let image = path.canonicalize()?;
            ui::note(
                "using the image file as given: no modules come with it, so the machine has \
                 what is built in (zram for swap, say); the runner reports what it found",
            );
            Ok(Kernel {
                image,
                package: "file".into(),
                version: path.display().to_string(),
                series: None,
                tree: None,
            })
        }
        KernelSpec::Series(series) => {
            ui::step(&format!("kernel {series}"));
            if let Some(kernel) = cached(&dir, |k| k.series.as_deref() == Some(series)) {
                note_kernel("cached", &kernel);
                return Ok(kernel);
            }
            let kernel = ensure_arm64(apt)
                .and_then(|()| choose_in_series(series, apt))
                .and_then(|choice| download(&dir, series, &choice, apt))
                .with_context(|| format!("fetching the {series} kernel"))?;
            note_kernel("fetched", &kernel);
            Ok(kernel)
        }
        KernelSpec::Newest => {
            ui::step(&format!("kernel {NEWEST}"));
            ensure_arm64(apt)?;
            apt.add_newest_suites()
                .with_context(|| format!("--kernel {NEWEST}"))?;
            let stanzas = parse_stanzas(&apt.show(METAPACKAGE)?);
            let choice = choose_newest(&stanzas).ok_or_else(|| {
                anyhow!("--kernel {NEWEST}: apt knows no {METAPACKAGE} with a kernel package")
            })?;
            ui::note(&format!(
                "the newest {METAPACKAGE} is {}, from {}",
                choice.version, choice.image_package
            ));
            let found = cached(&dir, |k| {
                k.package == choice.image_package && k.version == choice.version
            });
            if let Some(kernel) = found {
                note_kernel("cached", &kernel);
                return Ok(kernel);
            }
            let series = series_of(&choice.version)
                .ok_or_else(|| anyhow!("cannot read a series in version {}", choice.version))?;
            let kernel = download(&dir, &series, &choice, apt)
                .with_context(|| format!("fetching the {NEWEST} kernel ({})", choice.version))?;
            note_kernel("fetched", &kernel);
            Ok(kernel)
        }
    }
}

fn note_kernel(how: &str, kernel: &Kernel) {
    ui::note(&format!(
        "{how}: {} {} ({})",
        kernel.package,
        kernel.version,
        kernel.image.display()
    ));
}

/// The newest complete cache entry that `wanted` accepts.
fn cached(dir: &Path, wanted: impl Fn(&Kernel) -> bool) -> Option<Kernel> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|entry| {
            let text = std::fs::read_to_string(entry.path().join(CACHE_RECORD)).ok()?;
            let record: CachedKernel = serde_json::from_str(&text).ok()?;
            let tree = entry.path().join("root");
            let image = tree.join(&record.image);
            image.is_file().then_some(Kernel {
                image,
                package: record.package,
                version: record.version,
                series: Some(record.series),
                tree: Some(tree),
            })
        })
        .filter(|kernel| wanted(kernel))
        .max_by(|a, b| debian_version::compare(&a.version, &b.version))
}

/// Kernel packages are arm64 packages: dpkg must know the architecture to download them.
fn ensure_arm64(apt: &mut Apt) -> Result<()> {
    if apt.has_architecture("arm64") {
        return Ok(());
    }
    if !apt.can_install() {
        apt::needs_root(
            "arm64 packages are not enabled in dpkg",
            &[
                "dpkg --add-architecture arm64".into(),
                "apt-get update".into(),
            ],
        )?;
    }
    apt.add_architecture("arm64")
}

/// The newest metapackage version of `series` apt knows, refreshing its lists (and adding the
/// backports suite on bookworm) when they have none.
fn choose_in_series(series: &str, apt: &mut Apt) -> Result<Choice> {
    if let Some(choice) = choose(&parse_stanzas(&apt.show(METAPACKAGE)?), series) {
        return Ok(choice);
    }
    // The lists may be missing, old, or lack the suite that carries this series
    // (6.12 is in bookworm-backports).
    if !apt.can_install() {
        bail!(
            "apt knows no {METAPACKAGE} of series {series}; as root, run `apt-get update` \
             (and add the backports suite on bookworm)"
        );
    }
    if let Some(codename) = apt::os_codename().filter(|c| c == "bookworm") {
        apt.add_backports(&codename)?;
    }
    apt.update()?;
    let stanzas = parse_stanzas(&apt.show(METAPACKAGE)?);
    choose(&stanzas, series).ok_or_else(|| {
        let known: Vec<&str> = stanzas.iter().map(|s| s.version.as_str()).collect();
        anyhow!(
            "no {METAPACKAGE} of series {series} in apt's lists (apt knows: {}); \
             use one of those series, {NEWEST}, or --kernel PATH",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )
    })
}

/// Download the kernel package `choice` names, unpack it into the cache as a kernel of
/// `series`, and hand it back.
fn download(dir: &Path, series: &str, choice: &Choice, apt: &mut Apt) -> Result<Kernel> {
    ui::note(&format!(
        "{METAPACKAGE} {} depends on {}",
        choice.version, choice.image_package
    ));

    let entry = dir.join(format!(
        "{}_{}",
        choice.image_package,
        choice.version.replace(':', "%3a")
    ));
    let staging = dir.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let tree = staging.join("root");
    // Newer kernels come in parts: the image package then only depends on them.
    let image_stanzas = parse_stanzas(&apt.show(&format!("{}:arm64", choice.image_package))?);
    let parts = image_stanzas
        .iter()
        .find(|s| s.version == choice.version)
        .map(|s| split_parts(&s.depends, &choice.image_package))
        .unwrap_or_default();
    if !parts.is_empty() {
        ui::note(&format!(
            "{} comes in parts: {}",
            choice.image_package,
            parts.join(", ")
        ));
    }
    for name in std::iter::once(&choice.image_package).chain(&parts) {
        let package = format!("{name}:arm64");
        let deb = match apt.download(&package, &choice.version, &staging) {
            Ok(deb) => deb,
            // Old lists can name a version the mirror no longer has.
            Err(_) if apt.can_install() => {
                apt.update()?;
                apt.download(&package, &choice.version, &staging)?
            }
            Err(e) => return Err(e),
        };
        let sh = Shell::new()?;
        cmd!(sh, "dpkg-deb -x {deb} {tree}")
            .run()
            .with_context(|| format!("unpacking {name}"))?;
        std::fs::remove_file(&deb)?;
    }
    let image = find_image(&tree)?;
    let record = CachedKernel {
        series: series.to_string(),
        package: choice.image_package.clone(),
        version: choice.version.clone(),
        image: image
            .strip_prefix(&tree)
            .unwrap_or(&image)
            .to_string_lossy()
            .into_owned(),
    };
    std::fs::write(
        staging.join(CACHE_RECORD),
        serde_json::to_string_pretty(&record).unwrap(),
    )?;
    let _ = std::fs::remove_dir_all(&entry);
    std::fs::rename(&staging, &entry)
        .with_context(|| format!("moving the kernel into {}", entry.display()))?;
    let tree = entry.join("root");
    Ok(Kernel {
        image: tree.join(&record.image),
        package: record.package,
        version: record.version,
        series: Some(series.to_string()),
        tree: Some(tree),
    })
}

/// The packages a kernel's image package is split into, from its Depends: every
/// `linux-PART-RELEASE` of the same release (`linux-binary-7.3.4+deb13-arm64`, the image;
/// `linux-modules-...`; `linux-base-...`). A kernel in one package has none.
pub fn split_parts(depends: &str, image_package: &str) -> Vec<String> {
    let Some(release) = image_package.strip_prefix("linux-image-") else {
        return Vec::new();
    };
    let suffix = format!("-{release}");
    let mut parts: Vec<String> = Vec::new();
    for name in depends_names(depends) {
        let is_part =
            name.starts_with("linux-") && name.ends_with(&suffix) && name != image_package;
        if is_part && !parts.iter().any(|p| p == name) {
            parts.push(name.to_string());
        }
    }
    parts
}

/// The kernel image in an unpacked package: `boot/vmlinuz-RELEASE`, or, where the package
/// keeps everything under its modules directory, `usr/lib/modules/RELEASE/vmlinuz`.
fn find_image(tree: &Path) -> Result<PathBuf> {
    let in_boot = std::fs::read_dir(tree.join("boot"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        });
    let beside_modules = || {
        kernel_modules::release_dir(tree)
            .ok()
            .map(|dir| dir.join("vmlinuz"))
            .filter(|image| image.is_file())
    };
    in_boot.or_else(beside_modules).ok_or_else(|| {
        anyhow!(
            "the kernel package has no boot/vmlinuz-* nor usr/lib/modules/*/vmlinuz under {}",
            tree.display()
        )
    })
}

/// One package stanza of `apt-cache show`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stanza {
    pub package: String,
    pub version: String,
    pub depends: String,
}

/// Split `apt-cache show` output into stanzas, keeping the fields a kernel choice needs.
pub fn parse_stanzas(text: &str) -> Vec<Stanza> {
    let mut stanzas = Vec::new();
    let mut current = Stanza::default();
    let mut last_field = "";
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !current.package.is_empty() {
                stanzas.push(std::mem::take(&mut current));
            }
            last_field = "";
        } else if line.starts_with([' ', '\t']) {
            // A continuation line of the previous field.
            if last_field == "Depends" {
                current.depends.push(' ');
                current.depends.push_str(line.trim());
            }
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.trim().to_string();
            last_field = match field {
                "Package" => {
                    current.package = value;
                    "Package"
                }
                "Version" => {
                    current.version = value;
                    "Version"
                }
                "Depends" => {
                    current.depends = value;
                    "Depends"
                }
                _ => "",
            };
        }
    }
    stanzas
}

/// The image package behind the newest metapackage version of `series`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub image_package: String,
    pub version: String,
}

pub fn choose(stanzas: &[Stanza], series: &str) -> Option<Choice> {
    newest(stanzas.iter().filter(|s| in_series(&s.version, series)))
}

/// The image package behind the newest metapackage version of any series.
pub fn choose_newest(stanzas: &[Stanza]) -> Option<Choice> {
    newest(stanzas.iter())
}

/// The image package behind the newest of these metapackage versions.
fn newest<'a>(stanzas: impl Iterator<Item = &'a Stanza>) -> Option<Choice> {
    stanzas
        .filter_map(|s| {
            Some(Choice {
                image_package: image_package(&s.depends)?,
                version: s.version.clone(),
            })
        })
        .max_by(|a, b| debian_version::compare(&a.version, &b.version))
}

/// The series of a version: `7.3.4-1~bpo13+1` -> `7.3`.
pub fn series_of(version: &str) -> Option<String> {
    let upstream = version.split_once(':').map_or(version, |(_, rest)| rest);
    let upstream = upstream.rsplit_once('-').map_or(upstream, |(up, _)| up);
    let mut parts = upstream.split('.');
    let major = parts
        .next()
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?;
    let minor = parts.next()?;
    let minor = &minor[..minor.bytes().take_while(u8::is_ascii_digit).count()];
    (!minor.is_empty()).then(|| format!("{major}.{minor}"))
}

/// `6.12.95-1~bpo12+1` is in series `6.12`; `6.1.192-2` is in `6.1` but not in `6.12`, and
/// `6.12.1` is not in `6.1`.
pub fn in_series(version: &str, series: &str) -> bool {
    let upstream = version.split_once(':').map_or(version, |(_, rest)| rest);
    upstream
        .strip_prefix(series)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '-', '~', '+']))
}

/// The `linux-image-*` package a metapackage's Depends names.
fn image_package(depends: &str) -> Option<String> {
    depends_names(depends)
        .find(|name| name.starts_with("linux-image-"))
        .map(String::from)
}

/// The package names of a Depends field, alternatives included, without versions or
/// architectures: `a (>= 1) | b:arm64, c` -> `a`, `b`, `c`.
fn depends_names(depends: &str) -> impl Iterator<Item = &str> {
    depends
        .split([',', '|'])
        .map(|d| d.trim().split([' ', '(']).next().unwrap_or_default())
        .map(|name| name.split(':').next().unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APT_CACHE_SHOW: &str = "\
Package: linux-image-arm64
Source: linux-signed-arm64 (6.12.95+1~bpo12+1)
Version: 6.12.95-1~bpo12+1
Architecture: arm64
Depends: linux-image-6.12.95+deb12-arm64 (= 6.12.95-1~bpo12+1)
Description-en: Linux for 64-bit ARMv8 machines (meta-package)
 This package depends on the latest Linux kernel and modules for use on
 64-bit ARMv8 machines.

Package: linux-image-arm64
Source: linux-signed-arm64 (6.1.176+1)
Version: 6.1.176-1
Architecture: arm64
Depends: linux-image-6.1.0-50-arm64 (= 6.1.176-1)

Package: linux-image-arm64
Source: linux-signed-arm64 (6.1.192+2)
Version: 6.1.192-2
Architecture: arm64
Depends:
 linux-image-6.1.0-56-arm64 (= 6.1.192-2)
";

    #[test]
    fn stanzas_keep_package_version_and_depends() {
        let stanzas = parse_stanzas(APT_CACHE_SHOW);
        assert_eq!(stanzas.len(), 3);
        assert_eq!(stanzas[0].package, "linux-image-arm64");
        assert_eq!(stanzas[0].version, "6.12.95-1~bpo12+1");
        assert_eq!(
            stanzas[0].depends,
            "linux-image-6.12.95+deb12-arm64 (= 6.12.95-1~bpo12+1)"
        );
        assert_eq!(
            stanzas[2].depends.trim(),
            "linux-image-6.1.0-56-arm64 (= 6.1.192-2)"
        );
    }

    #[test]
    fn the_newest_version_of_the_series_is_chosen() {
        let stanzas = parse_stanzas(APT_CACHE_SHOW);
        assert_eq!(
            choose(&stanzas, "6.12"),
            Some(Choice {
                image_package: "linux-image-6.12.95+deb12-arm64".into(),
                version: "6.12.95-1~bpo12+1".into()
            })
        );
        assert_eq!(
            choose(&stanzas, "6.1"),
            Some(Choice {
                image_package: "linux-image-6.1.0-56-arm64".into(),
                version: "6.1.192-2".into()
            })
        );
        assert_eq!(choose(&stanzas, "7.2"), None);
        assert_eq!(choose(&[], "6.12"), None);
        assert_eq!(
            choose_newest(&stanzas).map(|c| c.version).as_deref(),
            Some("6.12.95-1~bpo12+1")
        );
        assert_eq!(choose_newest(&[]), None);
    }

    #[test]
    fn the_series_is_read_from_a_version() {
        assert_eq!(series_of("7.3.4-1~bpo13+1").as_deref(), Some("7.3"));
        assert_eq!(series_of("6.12.95-1~bpo12+1").as_deref(), Some("6.12"));
        assert_eq!(series_of("1:6.1.192-2").as_deref(), Some("6.1"));
        assert_eq!(series_of("7.4~rc2-1~exp1").as_deref(), Some("7.4"));
        assert_eq!(series_of("7-1"), None);
    }

    #[test]
    fn series_match_whole_components() {
        assert!(in_series("6.12.95-1~bpo12+1", "6.12"));
        assert!(in_series("6.1.192-2", "6.1"));
        assert!(!in_series("6.12.95-1", "6.1"));
        assert!(!in_series("6.1.192-2", "6.12"));
        assert!(in_series("1:6.1-1", "6.1"));
    }

    #[test]
    fn image_package_is_read_from_depends() {
        assert_eq!(
            image_package("linux-image-6.1.0-56-arm64 (= 6.1.192-2)").as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        assert_eq!(
            image_package("kmod, linux-image-6.12.95+deb12-arm64:arm64 (= 1) | linux-image-x")
                .as_deref(),
            Some("linux-image-6.12.95+deb12-arm64")
        );
        assert_eq!(image_package("kmod"), None);
    }

    #[test]
    fn a_kernel_in_parts_names_them_in_its_depends() {
        let depends = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                       linux-base-7.3.4+deb13-arm64 (= 7.3.4-1~bpo13+1), \
                       linux-binary-7.3.4+deb13-arm64 (= 7.3.4-1~bpo13+1), \
                       linux-modules-7.3.4+deb13-arm64 (= 7.3.4-1~bpo13+1)";
        assert_eq!(
            split_parts(depends, "linux-image-7.3.4+deb13-arm64"),
            [
                "linux-base-7.3.4+deb13-arm64",
                "linux-binary-7.3.4+deb13-arm64",
                "linux-modules-7.3.4+deb13-arm64"
            ]
        );
        // A kernel in one package: its Depends name other releases' packages, or none.
        let whole = "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2)";
        assert!(split_parts(whole, "linux-image-6.1.0-56-arm64").is_empty());
    }

    #[test]
    fn kernel_specs_are_series_or_files() {
        assert_eq!(
            KernelSpec::parse("6.12").unwrap(),
            KernelSpec::Series("6.12".into())
        );
        assert_eq!(
            KernelSpec::parse("6.1").unwrap(),
            KernelSpec::Series("6.1".into())
        );
        let file = std::env::current_exe().unwrap();
        assert_eq!(
            KernelSpec::parse(file.to_str().unwrap()).unwrap(),
            KernelSpec::Image(file)
        );
        assert!(KernelSpec::parse("/no/such/vmlinuz")
            .unwrap_err()
            .to_string()
            .contains("no such"));
        assert!(KernelSpec::parse("latest")
            .unwrap_err()
            .to_string()
            .contains("series such as"));
        assert!(KernelSpec::parse("6").is_err());
        assert_eq!(KernelSpec::parse("newest").unwrap(), KernelSpec::Newest);
    }

    #[test]
    fn the_cache_offers_the_newest_complete_entry_of_a_series() {
        let dir =
            std::env::temp_dir().join(format!("mte-kernel-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let add = |name: &str, series: &str, version: &str, complete: bool| {
            let entry = dir.join(name);
            std::fs::create_dir_all(entry.join("root/boot")).unwrap();
            std::fs::write(entry.join("root/boot/vmlinuz-x"), b"image").unwrap();
            if complete {
                let record = CachedKernel {
                    series: series.into(),
                    package: name.into(),
                    version: version.into(),
                    image: "boot/vmlinuz-x".into(),
                };
                std::fs::write(
                    entry.join(CACHE_RECORD),
                    serde_json::to_string(&record).unwrap(),
                )
                .unwrap();
            }
        };
        add("a", "6.1", "6.1.176-1", true);
        add("b", "6.1", "6.1.192-2", true);
        add("c", "6.1", "6.1.200-1", false);
        add("d", "6.12", "6.12.95-1~bpo12+1", true);
        let in_series =
            |series: &'static str| move |k: &Kernel| k.series.as_deref() == Some(series);
        let kernel = cached(&dir, in_series("6.1")).unwrap();
        assert_eq!(
            (kernel.package.as_str(), kernel.version.as_str()),
            ("b", "6.1.192-2")
        );
        assert_eq!(cached(&dir, in_series("6.12")).unwrap().package, "d");
        assert!(cached(&dir, in_series("7.0")).is_none());
        let exact = cached(&dir, |k| k.package == "a" && k.version == "6.1.176-1");
        assert_eq!(exact.unwrap().package, "a");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
