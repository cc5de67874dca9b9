//! What every lane is prepared from: the tools, the kernels under test and the builds. The
//! `setup` and `build` commands stop here.

use std::path::PathBuf;

use anyhow::Result;

use crate::apt::Apt;
use crate::build;
use crate::cli::Options;
use crate::initramfs::{self, Initramfs};
use crate::kernel_modules;
use crate::kernels::{self, Kernel, KernelSpec};
use crate::lanes::Needs;
use crate::qemu_package::{self, QemuPackage};
use crate::tools::{self, CrossRoute, Tools};
use crate::ui;

/// A kernel of the run, as asked for and as found.
#[derive(Clone, Debug)]
pub struct KernelUnderTest {
    /// The `--kernel` word that named it.
    pub requested: String,
    pub kernel: Kernel,
}

/// What `build` made.
pub struct Built {
    pub payload: PathBuf,
    /// The aarch64 runner, `/init` of every initramfs.
    pub runner: PathBuf,
    /// The initramfs of each kernel, in order.
    pub initramfs: Vec<Initramfs>,
}

/// What the run set up for its lanes.
pub struct Groundwork {
    pub tools: Tools,
    /// The kernels under test, when a lane needs them.
    pub kernels: Vec<KernelUnderTest>,
    pub built: Built,
    /// The runner built for this machine, when a lane needs it.
    pub host_runner: Option<PathBuf>,
    /// What every lane's runner is given after its lane's own options.
    pub runner_args: Vec<String>,
    /// The arm64 QEMU for inside the emulated machine, when a lane needs it.
    pub guest_qemu: Option<QemuPackage>,
    /// Whether the run is `cargo xtask test`'s, where a lane may run a share of its checks.
    pub for_test: bool,
}

/// Set up what the lanes need: tools, kernels, builds.
pub fn lay(options: &Options, needs: Needs) -> Result<Groundwork> {
    let (tools, kernels, guest_qemu) = tools_and_kernels(options, needs)?;
    let runner_args = options.runner_args();
    let built = build(&tools.cross, &runner_args, &kernels)?;
    let host_runner = match needs.host_runner {
        true => Some(build::host_runner()?),
        false => None,
    };
    Ok(Groundwork {
        tools,
        kernels,
        built,
        host_runner,
        runner_args,
        guest_qemu,
        for_test: options.for_test,
    })
}

/// `setup`: the tools and the kernels.
pub fn setup(options: &Options) -> Result<()> {
    let everything = Needs {
        kernels: true,
        qemu: true,
        host_runner: false,
        guest_qemu: true,
    };
    tools_and_kernels(options, everything).map(drop)
}

/// The tools, and the kernels and the arm64 QEMU when `needs` says so.
fn tools_and_kernels(
    options: &Options,
    needs: Needs,
) -> Result<(Tools, Vec<KernelUnderTest>, Option<QemuPackage>)> {
    let specs = match needs.kernels {
        true => kernel_specs(options)?,
        false => Vec::new(),
    };
    let mut apt = Apt::new()?;
    let tools = tools::ensure(&mut apt, needs.qemu)?;
    let kernels = resolve_kernels(&specs, &mut apt)?;
    let guest_qemu = match needs.guest_qemu {
        true => Some(qemu_package::ensure(&mut apt)?),
        false => None,
    };
    Ok((tools, kernels, guest_qemu))
}

/// `build` on its own: the cross toolchain and the kernels.
pub fn build_only(options: &Options) -> Result<()> {
    let specs = kernel_specs(options)?;
    let mut apt = Apt::new()?;
    ui::step("tools");
    let cross = tools::ensure_cross(&mut apt)?;
    let kernels = resolve_kernels(&specs, &mut apt)?;
    build(&cross, &options.runner_args(), &kernels).map(drop)
}

/// Every `--kernel` word understood, before anything is installed.
fn kernel_specs(options: &Options) -> Result<Vec<(String, KernelSpec)>> {
    options
        .kernels
        .iter()
        .map(|word| Ok((word.clone(), KernelSpec::parse(word)?)))
        .collect()
}

/// Each kernel found or fetched, a boot each word: a kernel named twice boots twice, also
/// right after itself (`6.12,6.12`, a same-kernel round trip) or under another name (`7.3`
/// then `newest`), which is said.
fn resolve_kernels(specs: &[(String, KernelSpec)], apt: &mut Apt) -> Result<Vec<KernelUnderTest>> {
    let mut kernels: Vec<KernelUnderTest> = Vec::new();
    for (word, spec) in specs {
        let kernel = kernels::resolve(spec, apt)?;
        if let Some(tree) = &kernel.tree {
            kernel_modules::ensure_decompressor(tree, apt)?;
        }
        if let Some(same) = kernels.last().filter(|k| k.kernel.image == kernel.image) {
            ui::note(&format!(
                "--kernel {word} is the kernel of --kernel {} before it: it boots again",
                same.requested
            ));
        }
        kernels.push(KernelUnderTest {
            requested: word.clone(),
            kernel,
        });
    }
    Ok(kernels)
}

/// Payload and runner, then an initramfs per kernel (whose runner is given `runner_args`).
fn build(cross: &CrossRoute, runner_args: &[String], kernels: &[KernelUnderTest]) -> Result<Built> {
    ui::step("build");
    let payload = build::payload(cross)?;
    let runner = build::runner(cross)?;
    let initramfs = kernels
        .iter()
        .map(|k| initramfs::for_kernel(&k.kernel, &runner, &payload, runner_args, None))
        .collect::<Result<_>>()?;
    Ok(Built {
        payload,
        runner,
        initramfs,
    })
}
