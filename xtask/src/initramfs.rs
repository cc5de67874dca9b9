//! The initramfs of the emulated machine: the runner as `/init`, its arguments, the guest
//! payloads it loads into the nested VMs, the kernel modules it loads at boot, what the run's
//! previous kernel left for this one, and what the lane adds (the qemu-kvm lane: QEMU and its
//! libraries). The modules tie an initramfs to its kernel: each kernel gets its own.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mte_results::artifact::INCOMING_DIR;
use mte_results::Lane;

use crate::artifacts::Incoming;
use crate::build::{relative, repo_root};
use crate::cpio::CpioWriter;
use crate::kernel_modules::{self, ModuleSet};
use crate::kernels::Kernel;
use crate::qemu_package::ImageFile;
use crate::ui;

/// Where each kernel's initramfs goes: `<this>/<kernel hint>/initramfs.cpio`.
const INITRAMFS_DIR: &str = "target/mte-emulated";

/// A lane's part of the initramfs: how its runner is started, and the files it adds.
#[derive(Clone, Debug)]
pub struct LaneImage {
    pub lane: Lane,
    /// The runner's options for the lane, after `--lane NAME`.
    pub lane_args: Vec<String>,
    /// Where its initramfs goes: `<dir>/<kernel hint>/initramfs.cpio`.
    pub dir: &'static str,
    pub files: Vec<ImageFile>,
}

impl LaneImage {
    /// The emulated lane's: the runner alone.
    pub fn emulated() -> LaneImage {
        LaneImage {
            lane: Lane::Emulated,
            lane_args: Vec::new(),
            dir: INITRAMFS_DIR,
            files: Vec::new(),
        }
    }
}

/// An initramfs built for one kernel.
#[derive(Clone, Debug)]
pub struct Initramfs {
    pub path: PathBuf,
    /// The modules it loads, or why it has none, for the run's record.
    pub modules: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Write the emulated lane's initramfs of `kernel`, whose runner is given `runner_args`, with
/// what the run's previous kernel left for it, if anything.
pub fn for_kernel(
    kernel: &Kernel,
    runner: &Path,
    payload: &Path,
    runner_args: &[String],
    incoming: Option<&Incoming>,
) -> Result<Initramfs> {
    let image = LaneImage::emulated();
    for_lane(&image, kernel, runner, payload, runner_args, incoming)
}

/// Write the initramfs of `kernel` for the lane `image` describes.
pub fn for_lane(
    image: &LaneImage,
    kernel: &Kernel,
    runner: &Path,
    payload: &Path,
    runner_args: &[String],
    incoming: Option<&Incoming>,
) -> Result<Initramfs> {
    let (modules, described) = machine_modules(kernel);
    let out = repo_root()
        .join(image.dir)
        .join(path_safe(&kernel.hint()))
        .join("initramfs.cpio");
    let files = match incoming {
        Some(incoming) => incoming
            .files()
            .context("reading the artifacts of the previous kernel")?,
        None => Vec::new(),
    };
    let args = self::runner_args(image.lane, &image.lane_args, runner_args);
    let config = packaged_config(kernel);
    let contents = Contents {
        runner,
        payload,
        args: &args,
        modules: &modules,
        config: config.as_deref(),
        incoming: &files,
        extra: &image.files,
    };
    let size = write(&out, &contents)
        .with_context(|| format!("writing the initramfs for {}", kernel.hint()))?;
    let passed_on = match incoming {
        Some(incoming) => format!(
            "; from {}: {}",
            incoming.saved_on,
            incoming
                .artifacts
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => String::new(),
    };
    ui::note(&format!(
        "initramfs: {} ({}; modules: {described}{passed_on})",
        relative(&out).display(),
        ui::size(size)
    ));
    Ok(Initramfs {
        path: out,
        modules: described,
        size,
    })
}

/// The modules the machine loads at boot for `kernel`, and what they are in words. A kernel
/// without them still boots: its machine has no zram swap, and the runner says so.
fn machine_modules(kernel: &Kernel) -> (ModuleSet, String) {
    let Some(tree) = &kernel.tree else {
        return (
            ModuleSet::default(),
            "none packed: an image file comes without its package's modules (what the \
             machine needs must be built in)"
                .into(),
        );
    };
    match kernel_modules::for_machine(tree) {
        Ok(set) => {
            let described = set.describe();
            (set, described)
        }
        Err(e) => {
            ui::note(&format!(
                "{}: no zram module packed, so no swap in the machine: {e:#}",
                kernel.hint()
            ));
            (ModuleSet::default(), format!("none: {e:#}"))
        }
    }
}

/// The config a kernel package ships (`boot/config-<release>`), which the runner reads where
/// the kernel has no /proc/config.gz; none for an image file.
fn packaged_config(kernel: &Kernel) -> Option<Vec<u8>> {
    let tree = kernel.tree.as_ref()?;
    std::fs::read(
        tree.join("boot")
            .join(format!("config-{}", kernel.release()?)),
    )
    .ok()
}

/// A kernel hint as one directory name.
fn path_safe(hint: &str) -> String {
    hint.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where the runner finds its arguments, one per line.
pub const ARGS_PATH: &str = "/mte/args";
/// Where the runner finds the bare-metal payload.
pub const PAYLOAD_PATH: &str = "/mte/payloads/mte-guest.elf";
/// Where the runner finds the kernel modules to load: one path a line, in load order.
pub const MODULES_LIST_PATH: &str = "/mte/modules";
/// Where the runner finds the config of a kernel from a package.
pub const KERNEL_CONFIG_PATH: &str = "/mte/kernel-config";

/// The runner's arguments: the lane and its options, then the harness arguments as the person
/// gave them. (What xtask knows of the kernel package goes into the run's environment, not to
/// the runner.)
pub fn runner_args(lane: Lane, lane_args: &[String], harness_args: &[String]) -> Vec<String> {
    let mut args = vec!["--lane".to_string(), lane.to_string()];
    args.extend(lane_args.iter().cloned());
    args.extend(harness_args.iter().cloned());
    args
}

/// The text of [`ARGS_PATH`]: one argument a line, so an argument cannot hold a newline.
pub fn args_file(args: &[String]) -> Result<String> {
    let mut text = String::new();
    for arg in args {
        if arg.contains('\n') {
            bail!(
                "harness argument {arg:?} holds a newline, which the in-guest argument file \
                 cannot carry"
            );
        }
        text.push_str(arg);
        text.push('\n');
    }
    Ok(text)
}

/// Where a module goes in the initramfs, as the kernel's own layout has it.
fn module_path(release: &str, relative: &Path) -> String {
    format!("/lib/modules/{release}/{}", relative.display())
}

/// The directories above `paths`, each once, every parent before its children.
fn parent_directories<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut directories: Vec<String> = Vec::new();
    for path in paths {
        let mut at = 0;
        while let Some(slash) = path[at + 1..].find('/') {
            at += 1 + slash;
            let directory = &path[..at];
            if !directories.iter().any(|d| d == directory) {
                directories.push(directory.to_string());
            }
        }
    }
    directories
}

/// What goes into an initramfs besides its directories and device nodes.
pub struct Contents<'a> {
    pub runner: &'a Path,
    pub payload: &'a Path,
    pub args: &'a [String],
    /// Loaded at boot in their order.
    pub modules: &'a ModuleSet,
    /// The kernel's config, where its package has one.
    pub config: Option<&'a [u8]>,
    /// Files (by name) the previous kernel of the run left for this one, put in
    /// `mte_results::artifact::INCOMING_DIR`.
    pub incoming: &'a [(String, Vec<u8>)],
    /// The lane's own files.
    pub extra: &'a [ImageFile],
}

/// Write the initramfs of `contents` to `out`; returns its size in bytes.
pub fn write(out: &Path, contents: &Contents) -> Result<u64> {
    let &Contents {
        runner,
        payload,
        args,
        modules,
        config,
        incoming,
        extra,
    } = contents;
    let runner_bytes =
        std::fs::read(runner).with_context(|| format!("reading {}", runner.display()))?;
    let payload_bytes =
        std::fs::read(payload).with_context(|| format!("reading {}", payload.display()))?;
    let args_text = args_file(args)?;
    let module_paths: Vec<String> = modules
        .modules
        .iter()
        .map(|m| module_path(&modules.release, &m.path))
        .collect();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written aside and renamed into place: a machine still booting from the old archive (of
    // another run on this tree) keeps reading whole, old bytes.
    let staging = out.with_extension(format!("cpio.{}.tmp", std::process::id()));
    let file = std::fs::File::create(&staging)
        .with_context(|| format!("creating {}", staging.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    for dir in ["/dev", "/proc", "/sys", "/mte", "/mte/payloads"] {
        cpio.directory(dir, 0o755)?;
    }
    // Where programs keep their temporary files (QEMU's sockets, in the qemu-kvm lane).
    cpio.directory("/tmp", 0o1777)?;
    // The kernel gives /init its console through this node, before devtmpfs can be mounted.
    cpio.char_device("/dev/console", 0o600, 5, 1)?;
    cpio.file("/init", 0o755, &runner_bytes)?;
    cpio.file(ARGS_PATH, 0o644, args_text.as_bytes())?;
    cpio.file(PAYLOAD_PATH, 0o644, &payload_bytes)?;
    if let Some(config) = config {
        cpio.file(KERNEL_CONFIG_PATH, 0o644, config)?;
    }
    if !module_paths.is_empty() {
        for dir in parent_directories(module_paths.iter().map(String::as_str)) {
            cpio.directory(&dir, 0o755)?;
        }
        for (path, module) in module_paths.iter().zip(&modules.modules) {
            cpio.file(path, 0o644, &module.bytes)?;
        }
        let list: String = module_paths.iter().map(|p| format!("{p}\n")).collect();
        cpio.file(MODULES_LIST_PATH, 0o644, list.as_bytes())?;
    }
    if !extra.is_empty() {
        for dir in parent_directories(extra.iter().map(|f| f.path.as_str())) {
            cpio.directory(&dir, 0o755)?;
        }
        for file in extra {
            let bytes = std::fs::read(&file.source)
                .with_context(|| format!("reading {}", file.source.display()))?;
            cpio.file(&file.path, file.mode, &bytes)?;
        }
    }
    if !incoming.is_empty() {
        cpio.directory(INCOMING_DIR, 0o755)?;
        for (name, bytes) in incoming {
            cpio.file(&format!("{INCOMING_DIR}/{name}"), 0o644, bytes)?;
        }
    }
    cpio.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(&staging, out)
        .with_context(|| format!("moving {} into place", staging.display()))?;
    Ok(std::fs::metadata(out)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_args_start_with_the_lane_and_keep_harness_args_verbatim() {
        let harness = vec![
            "tags::".to_string(),
            "--exact".to_string(),
            "--inject".to_string(),
            "drop".to_string(),
        ];
        assert_eq!(
            runner_args(Lane::Emulated, &[], &harness),
            ["--lane", "emulated", "tags::", "--exact", "--inject", "drop"]
        );
        assert_eq!(
            runner_args(Lane::Emulated, &[], &[]),
            ["--lane", "emulated"]
        );
        let qemu = [
            "--qemu".to_string(),
            "/usr/bin/qemu-system-aarch64".to_string(),
        ];
        assert_eq!(
            runner_args(Lane::QemuKvm, &qemu, &harness[..1]),
            [
                "--lane",
                "qemu-kvm",
                "--qemu",
                "/usr/bin/qemu-system-aarch64",
                "tags::"
            ]
        );
    }

    #[test]
    fn modules_sit_where_the_kernel_keeps_them_below_their_directories() {
        let path = module_path(
            "6.12.95+deb12-arm64",
            Path::new("kernel/drivers/block/zram/zram.ko"),
        );
        assert_eq!(
            path,
            "/lib/modules/6.12.95+deb12-arm64/kernel/drivers/block/zram/zram.ko"
        );
        let directories = parent_directories([
            path.as_str(),
            "/lib/modules/6.12.95+deb12-arm64/kernel/lib/lz4/lz4_compress.ko",
        ]);
        assert_eq!(
            directories,
            [
                "/lib",
                "/lib/modules",
                "/lib/modules/6.12.95+deb12-arm64",
                "/lib/modules/6.12.95+deb12-arm64/kernel",
                "/lib/modules/6.12.95+deb12-arm64/kernel/drivers",
                "/lib/modules/6.12.95+deb12-arm64/kernel/drivers/block",
                "/lib/modules/6.12.95+deb12-arm64/kernel/drivers/block/zram",
                "/lib/modules/6.12.95+deb12-arm64/kernel/lib",
                "/lib/modules/6.12.95+deb12-arm64/kernel/lib/lz4",
            ]
        );
    }

    #[test]
    fn args_file_is_one_argument_a_line() {
        let args = vec![
            "--lane".to_string(),
            "emulated".to_string(),
            "a b".to_string(),
        ];
        assert_eq!(args_file(&args).unwrap(), "--lane\nemulated\na b\n");
        assert!(args_file(&["a\nb".to_string()]).is_err());
    }
}
