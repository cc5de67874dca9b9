//! The kernel modules the emulated machine loads at boot (zram, for swap), taken from the
//! unpacked kernel package with the modules they depend on.
//!
//! A kernel package that is only unpacked has no `modules.dep` (depmod writes it when the
//! package is installed), so each module's dependencies are read from its own `.modinfo`
//! section (`depends=a,b`). Modules may be shipped compressed (`.ko.xz`, `.ko.zst`, `.ko.gz`);
//! they are decompressed here, so that the machine loads plain ELF whatever compression its
//! kernel was built to accept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::{self, Apt};
use crate::modinfo::{modinfo, split_depends};
use anyhow::{anyhow, bail, Context, Result};

/// What the machine needs beyond the kernel image: zram, the swap device.
pub const WANTED: &[&str] = &["zram"];

/// A module ready to go into the initramfs.
#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    /// Relative to `lib/modules/<release>/`, without a compression suffix.
    pub path: PathBuf,
    /// The decompressed ELF object.
    pub bytes: Vec<u8>,
}

/// The modules to load, in an order that loads every dependency before its users.
#[derive(Clone, Debug, Default)]
pub struct ModuleSet {
    /// The kernel release, the directory under `lib/modules/`.
    pub release: String,
    pub modules: Vec<Module>,
    /// Wanted modules the kernel has built in: nothing to load for them.
    pub built_in: Vec<String>,
}

impl ModuleSet {
    /// What was packed, in words, for the run's record.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.modules.is_empty() {
            let names: Vec<&str> = self.modules.iter().map(|m| m.name.as_str()).collect();
            parts.push(format!("loads {}", names.join(", ")));
        }
        if !self.built_in.is_empty() {
            parts.push(format!("built in: {}", self.built_in.join(", ")));
        }
        parts.join("; ")
    }
}

/// The file suffixes of a module, plain or compressed, with the program and Debian package
/// that decompress them.
const SUFFIXES: &[(&str, Option<(&str, &str)>)] = &[
    (".ko", None),
    (".ko.xz", Some(("xz", "xz-utils"))),
    (".ko.zst", Some(("zstd", "zstd"))),
    (".ko.gz", Some(("gzip", "gzip"))),
];

/// The module name a file holds: `zram.ko.xz` -> `zram`. The kernel treats `-` and `_` in
/// module names alike; `depends=` uses `_`.
pub fn module_name(file_name: &str) -> Option<String> {
    SUFFIXES
        .iter()
        .find_map(|(suffix, _)| file_name.strip_suffix(suffix))
        .filter(|stem| !stem.is_empty())
        .map(|stem| stem.replace('-', "_"))
}

/// Where packages keep modules: `lib/modules/`, or `usr/lib/modules/` in newer ones.
const MODULE_ROOTS: [&str; 2] = ["lib/modules", "usr/lib/modules"];

/// The one kernel release directory of the unpacked package at `tree`
/// (`lib/modules/RELEASE/` or `usr/lib/modules/RELEASE/`).
pub fn release_dir(tree: &Path) -> Result<PathBuf> {
    let releases: Vec<PathBuf> = MODULE_ROOTS
        .iter()
        .filter_map(|root| std::fs::read_dir(tree.join(root)).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{} holds no kernel release under {}",
            tree.display(),
            MODULE_ROOTS.join(" or ")
        ),
        _ => bail!("{} holds several kernel releases", tree.display()),
    }
}

/// Install the program that decompresses the kernel's modules, if they are compressed and it
/// is missing.
pub fn ensure_decompressor(tree: &Path, apt: &mut Apt) -> Result<()> {
    let Ok(dir) = release_dir(tree) else {
        return Ok(());
    };
    let index = index(&dir)?;
    let needed = WANTED
        .iter()
        .filter_map(|name| index.get(*name))
        .filter_map(|path| decompressor(path));
    for (program, package) in needed {
        if apt::on_path(program).is_some() {
            continue;
        }
        if !apt.can_install() {
            apt::needs_root(
                &format!("the kernel's modules are compressed and `{program}` is missing"),
                &[format!("apt-get install -y {package}")],
            )?;
        }
        apt.install(&[package], None)?;
    }
    Ok(())
}

/// The modules of the kernel unpacked at `tree` that give the machine [`WANTED`], with their
/// dependencies, decompressed and in load order.
pub fn for_machine(tree: &Path) -> Result<ModuleSet> {
    let dir = release_dir(tree)?;
    let release = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let index = index(&dir)?;
    let built_in = built_in(&dir);
    let mut objects: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut wanted = Vec::new();
    let mut set = ModuleSet {
        release,
        ..ModuleSet::default()
    };
    for name in WANTED {
        if built_in.contains(*name) {
            set.built_in.push(name.to_string());
        } else {
            wanted.push(name.to_string());
        }
    }
    let order = load_order(&wanted, |name| {
        let path = index
            .get(name)
            .ok_or_else(|| anyhow!("the kernel has no module `{name}` under {}", dir.display()))?;
        let bytes = read_module(path)?;
        let depends = modinfo(&bytes)
            .with_context(|| format!("reading the .modinfo of {}", path.display()))?
            .into_iter()
            .find(|(key, _)| key == "depends")
            .map(|(_, value)| split_depends(&value))
            .unwrap_or_default();
        objects.insert(name.to_string(), bytes);
        Ok(depends
            .into_iter()
            .filter(|d| !built_in.contains(d))
            .collect())
    })?;
    for name in order {
        let path = &index[&name];
        let relative = path.strip_prefix(&dir).unwrap_or(path);
        let bytes = objects.remove(&name).expect("read while ordering");
        set.modules.push(Module {
            path: plain_path(relative),
            name,
            bytes,
        });
    }
    Ok(set)
}

/// Every module file under `dir`, by module name.
fn index(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .with_context(|| format!("reading {}", current.display()))?;
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            } else if let Some(name) = module_name(&entry.file_name().to_string_lossy()) {
                found.insert(name, path);
            }
        }
    }
    Ok(found)
}

/// The names of the modules built into the kernel, from `modules.builtin`.
fn built_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| module_name(line.rsplit('/').next().unwrap_or(line)))
        .collect()
}

/// `kernel/drivers/block/zram/zram.ko.xz` -> `kernel/drivers/block/zram/zram.ko`.
fn plain_path(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    SUFFIXES
        .iter()
        .find_map(|(suffix, _)| text.strip_suffix(suffix))
        .map_or_else(
            || path.to_path_buf(),
            |stem| PathBuf::from(format!("{stem}.ko")),
        )
}

/// The program and package that decompress `path`, if it is compressed.
fn decompressor(path: &Path) -> Option<(&'static str, &'static str)> {
    let name = path.file_name()?.to_string_lossy();
    SUFFIXES
        .iter()
        .filter(|(suffix, _)| name.ends_with(suffix))
        .find_map(|(_, tool)| *tool)
}

/// The module's ELF object, decompressed if need be.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let Some((program, package)) = decompressor(path) else {
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let output = Command::new(program)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| {
            format!(
                "running `{program} -dc {}` (package {package})",
                path.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "`{program} -dc {}` failed ({}): {}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.stdout)
}

/// `wanted` and everything they depend on, each after its dependencies and each once;
/// `depends_of` names a module's direct dependencies.
pub fn load_order(
    wanted: &[String],
    mut depends_of: impl FnMut(&str) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    enum Step {
        Visit(String),
        Emit(String),
    }
    let mut order: Vec<String> = Vec::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<Step> = wanted.iter().rev().cloned().map(Step::Visit).collect();
    // The chain of modules being visited, to name a cycle.
    let mut path: Vec<String> = Vec::new();
    while let Some(step) = stack.pop() {
        match step {
            Step::Visit(name) => {
                if order.contains(&name) {
                    continue;
                }
                if path.contains(&name) {
                    bail!(
                        "the module dependencies form a cycle: {} -> {name}",
                        path.join(" -> ")
                    );
                }
                if !started.insert(name.clone()) {
                    continue;
                }
                let depends = depends_of(&name)?;
                path.push(name.clone());
                stack.push(Step::Emit(name));
                stack.extend(depends.into_iter().rev().map(Step::Visit));
            }
            Step::Emit(name) => {
                path.pop();
                order.push(name);
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_drop_the_suffix_and_use_underscores() {
        assert_eq!(module_name("zram.ko").as_deref(), Some("zram"));
        assert_eq!(module_name("zram.ko.xz").as_deref(), Some("zram"));
        assert_eq!(
            module_name("lz4hc-compress.ko.zst").as_deref(),
            Some("lz4hc_compress")
        );
        assert_eq!(module_name("modules.order"), None);
        assert_eq!(module_name(".ko"), None);
        assert_eq!(
            plain_path(Path::new("kernel/drivers/block/zram/zram.ko.xz")),
            Path::new("kernel/drivers/block/zram/zram.ko")
        );
        assert_eq!(
            plain_path(Path::new("kernel/mm/zsmalloc.ko")),
            Path::new("kernel/mm/zsmalloc.ko")
        );
        assert_eq!(
            decompressor(Path::new("a/zram.ko.zst")),
            Some(("zstd", "zstd"))
        );
        assert_eq!(decompressor(Path::new("a/zram.ko")), None);
    }

    fn graph<'a>(
        edges: &'a [(&'a str, &'a [&'a str])],
    ) -> impl FnMut(&str) -> Result<Vec<String>> + 'a {
        move |name| {
            edges
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, deps)| deps.iter().map(|d| d.to_string()).collect())
                .ok_or_else(|| anyhow!("no module {name}"))
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dependencies_load_first_and_once() {
        // As zram on 6.12: two compression libraries, one of which needs a third.
        let edges: &[(&str, &[&str])] = &[
            ("zram", &["lz4_compress", "lz4hc_compress"]),
            ("lz4_compress", &[]),
            ("lz4hc_compress", &["lz4_compress", "xxhash"]),
            ("xxhash", &[]),
        ];
        assert_eq!(
            load_order(&names(&["zram"]), graph(edges)).unwrap(),
            ["lz4_compress", "xxhash", "lz4hc_compress", "zram"]
        );
        assert_eq!(
            load_order(&names(&["xxhash", "zram", "xxhash"]), graph(edges)).unwrap(),
            ["xxhash", "lz4_compress", "lz4hc_compress", "zram"]
        );
        assert!(load_order(&[], graph(edges)).unwrap().is_empty());
    }

    #[test]
    fn missing_modules_and_cycles_are_errors() {
        let edges: &[(&str, &[&str])] = &[("zram", &["zsmalloc"])];
        assert!(load_order(&names(&["zram"]), graph(edges))
            .unwrap_err()
            .to_string()
            .contains("no module zsmalloc"));
        let cycle: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &["a"])];
        assert_eq!(
            load_order(&names(&["a"]), graph(cycle))
                .unwrap_err()
                .to_string(),
            "the module dependencies form a cycle: a -> b -> a"
        );
    }
}
