//! The commands' steps in order: tools, kernel, builds, the machine, the run directory.

use std::path::PathBuf;
use std::time::Instant;

use mte_results::bench_summary::BenchSummary;
use mte_results::rundir::{RunDir, BENCH_JSON, CRITERION_DIR, REPORT_HTML};
use mte_results::speed::SuiteSpeed;
use mte_results::summary::{table, RunSummary};
use mte_results::{Feature, Outcome, Tally, Verdict, FAULT_INJECTION_PROOFS};

use crate::apt::{self, Apt};
use crate::artifacts::{Incoming, Kept};
use crate::bench;
use crate::build::{self, relative, repo_root};
use crate::cli::{Lane, Options};
use crate::compare;
use crate::emulated::{self, Machine};
use crate::host_lane::{self, HostMachine};
use crate::initramfs;
use crate::kernel_modules::{self, ModuleSet};
use crate::kernels::{self, Kernel, KernelSpec};
use crate::qemu_lane;
use crate::reports;
use crate::runner_process::RunnerProcess;
use crate::session::{Selection, Session, Source};
use crate::tools::{self, CrossRoute, Tools};
use crate::ui;
use anyhow::{Context, Result};

/// Where run directories go.
pub const RESULTS_ROOT: &str = "target/mte-results";
/// Where each kernel's initramfs goes: `<this>/<kernel hint>/initramfs.cpio`.
const INITRAMFS_DIR: &str = "target/mte-emulated";

/// How xtask exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every check passed, skipped or xfailed, and the run completed.
    Clean = 0,
    /// A check failed (or, for `test`, nothing passed).
    Failed = 1,
    /// Setup or the run itself went wrong.
    Error = 2,
}

/// A finished run.
pub struct Finished {
    /// The run's directory.
    pub dir: PathBuf,
    pub summary: RunSummary,
    pub selection: Selection,
    pub status: Status,
}

/// A kernel of the run, as asked for and as found.
#[derive(Clone, Debug)]
pub struct KernelUnderTest {
    /// The `--kernel` word that named it.
    pub requested: String,
    pub kernel: Kernel,
}

/// `setup`: the tools and the kernels.
pub fn setup(options: &Options) -> Result<(Tools, Vec<KernelUnderTest>)> {
    let specs = kernel_specs(options)?;
    let mut apt = Apt::new()?;
    let tools = tools::ensure(&mut apt, true)?;
    let kernels = resolve_kernels(&specs, &mut apt)?;
    Ok((tools, kernels))
}

/// Every `--kernel` word understood, before anything is installed.
fn kernel_specs(options: &Options) -> Result<Vec<(String, KernelSpec)>> {
    options
        .kernels
        .iter()
        .map(|word| Ok((word.clone(), KernelSpec::parse(word)?)))
        .collect()
}

/// Each kernel found or fetched. A word that names the kernel of the word before it (`7.3`
/// then `newest`) boots it once; a kernel named again after another boots again, as the way
/// back of a migration round trip (`6.1,6.12,6.1`).
fn resolve_kernels(specs: &[(String, KernelSpec)], apt: &mut Apt) -> Result<Vec<KernelUnderTest>> {
    let mut kernels: Vec<KernelUnderTest> = Vec::new();
    for (word, spec) in specs {
        let kernel = kernels::resolve(spec, apt)?;
        if let Some(tree) = &kernel.tree {
            kernel_modules::ensure_decompressor(tree, apt)?;
        }
        match kernels.last().filter(|k| k.kernel.image == kernel.image) {
            Some(same) => ui::note(&format!(
                "--kernel {word} is the kernel of --kernel {}: it runs once",
                same.requested
            )),
            None => kernels.push(KernelUnderTest {
                requested: word.clone(),
                kernel,
            }),
        }
    }
    Ok(kernels)
}

/// An initramfs built for one kernel.
#[derive(Clone, Debug)]
pub struct Initramfs {
    pub path: PathBuf,
    /// The modules it loads, or why it has none, for the run's record.
    pub modules: String,
}

/// What `build` made.
pub struct Built {
    pub payload: PathBuf,
    /// The aarch64 runner, `/init` of every initramfs.
    pub runner: PathBuf,
    /// The initramfs of each kernel, in order.
    pub initramfs: Vec<Initramfs>,
}

/// `build`: payload and runner, then an initramfs per kernel (whose runner is given
/// `runner_args`).
pub fn build(
    cross: &CrossRoute,
    runner_args: &[String],
    kernels: &[KernelUnderTest],
) -> Result<Built> {
    ui::step("build");
    let payload = build::payload(cross)?;
    let runner = build::runner(cross)?;
    let mut initramfs = Vec::new();
    for KernelUnderTest { kernel, .. } in kernels {
        let written = write_initramfs(kernel, &runner, &payload, runner_args, None)?;
        initramfs.push(written);
    }
    Ok(Built {
        payload,
        runner,
        initramfs,
    })
}

/// The initramfs of `kernel`, with what the run's previous kernel left for it, if anything.
fn write_initramfs(
    kernel: &Kernel,
    runner: &std::path::Path,
    payload: &std::path::Path,
    runner_args: &[String],
    incoming: Option<&Incoming>,
) -> Result<Initramfs> {
    let (modules, described) = machine_modules(kernel);
    let out = repo_root()
        .join(INITRAMFS_DIR)
        .join(path_safe(&kernel.hint()))
        .join("initramfs.cpio");
    let files = match incoming {
        Some(incoming) => incoming
            .files()
            .context("reading the artifacts of the previous kernel")?,
        None => Vec::new(),
    };
    let args = initramfs::runner_args(runner_args);
    let size = initramfs::write(&out, runner, payload, &args, &modules, &files)
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
    })
}

/// The modules the machine loads at boot for `kernel`, and what they are in words. A kernel
/// without them still boots: its machine has no zram swap, and the runner says so.
fn machine_modules(kernel: &Kernel) -> (ModuleSet, String) {
    let Some(tree) = &kernel.tree else {
        return (
            ModuleSet::default(),
            "none: the kernel is an image file, without its package's modules".into(),
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

/// `build` on its own: the cross toolchain and the kernels.
pub fn build_only(options: &Options) -> Result<Vec<Initramfs>> {
    let specs = kernel_specs(options)?;
    let mut apt = Apt::new()?;
    ui::step("tools");
    let cross = tools::ensure_cross(&mut apt)?;
    let kernels = resolve_kernels(&specs, &mut apt)?;
    build(&cross, &options.runner_args(), &kernels).map(|built| built.initramfs)
}

/// A lane ready to run: the emulated lane once per kernel.
enum Prepared {
    Emulated {
        machine: Machine,
        kernel: KernelUnderTest,
        modules: String,
        /// Which of the run's kernels this is, counted from 1, and how many there are.
        position: (usize, usize),
    },
    Qemu(RunnerProcess),
    Host(RunnerProcess, HostMachine),
}

impl Prepared {
    fn lane(&self) -> Lane {
        match self {
            Prepared::Emulated { .. } => Lane::Emulated,
            Prepared::Qemu(_) => Lane::Qemu,
            Prepared::Host(..) => Lane::Host,
        }
    }
}

/// Say before anything is built what the host lane will find here; the runner still runs, and
/// each check records the same reason as its skip.
fn announce_host_lane(machine: &HostMachine) {
    match &machine.unready {
        None => ui::note(&format!(
            "host lane: an arm64 host with /dev/kvm and MTE, kernel {}",
            machine.kernel_release
        )),
        Some(why) => ui::note(&format!(
            "{} the host lane needs an arm64 host with /dev/kvm and MTE, and here {why}: \
             every check of the host lane will be a skip saying why",
            ui::yellow("note:")
        )),
    }
}

/// `run`: every lane asked for, one after the other (the emulated lane once per kernel), into
/// one run directory; then the summary. Errors before the run directory exists come back as
/// `Err`; after that, they are the run's error, recorded with whatever verdicts arrived, and
/// the other lanes and kernels still run.
pub fn run(options: &Options) -> Result<Finished> {
    let started = Instant::now();
    // A baseline that cannot be found stops the run before it starts, not after.
    if let Some(baseline) = &options.baseline {
        compare::resolve_baseline(baseline)?;
    }
    let host_machine = options.lanes.contains(&Lane::Host).then(|| {
        let machine = host_lane::survey();
        announce_host_lane(&machine);
        machine
    });
    let emulated = options.lanes.contains(&Lane::Emulated);
    let needs_qemu = emulated || options.lanes.contains(&Lane::Qemu);
    let (tools, kernels) = if emulated {
        setup(options)?
    } else {
        let mut apt = Apt::new()?;
        (tools::ensure(&mut apt, needs_qemu)?, Vec::new())
    };
    let runner_args = options.runner_args();
    let built = build(&tools.cross, &runner_args, &kernels)?;
    let (payload, initramfs) = (&built.payload, &built.initramfs);
    let host_runner = if options
        .lanes
        .iter()
        .any(|l| matches!(l, Lane::Qemu | Lane::Host))
    {
        Some(build::host_runner()?)
    } else {
        None
    };
    let mut lanes = Vec::new();
    for &lane in &options.lanes {
        match lane {
            Lane::Emulated => {
                for (index, (kernel, initramfs)) in kernels.iter().zip(initramfs).enumerate() {
                    lanes.push(Prepared::Emulated {
                        machine: Machine {
                            qemu: tools.qemu().path.clone(),
                            kernel: kernel.kernel.image.clone(),
                            initramfs: initramfs.path.clone(),
                        },
                        kernel: kernel.clone(),
                        modules: initramfs.modules.clone(),
                        position: (index + 1, kernels.len()),
                    });
                }
            }
            Lane::Qemu => lanes.push(Prepared::Qemu(qemu_lane::prepare(
                host_runner.clone().expect("built for the qemu lane"),
                &tools.qemu().path,
                payload,
            )?)),
            Lane::Host => lanes.push(Prepared::Host(
                host_lane::prepare(
                    host_runner.clone().expect("built for the host lane"),
                    payload,
                )?,
                host_machine.clone().expect("surveyed for the host lane"),
            )),
        }
    }

    let lane_names: Vec<&str> = options.lanes.iter().map(|l| l.name()).collect();
    let run_dir = RunDir::create(
        repo_root().join(RESULTS_ROOT),
        &lane_names.join("+"),
        &run_hint(&tools, &kernels, host_machine.as_ref()),
    )
    .context("creating the run directory")?;
    ui::step(&format!("run: {}", relative(run_dir.path()).display()));

    let several_kernels = kernels.len() > 1;
    let mut parts = Vec::new();
    // What the emulated lane's last boot left for the next kernel.
    let mut incoming: Option<Incoming> = None;
    for lane in &lanes {
        let remaining = options.timeout.saturating_sub(started.elapsed());
        let deadlines = emulated::Deadlines::with_overall(remaining);
        let label = match lane {
            Prepared::Emulated { kernel, .. } if several_kernels => {
                format!("emulated lane on {}", kernel.kernel.hint())
            }
            _ => format!("{} lane", lane.lane().name()),
        };
        if let (Prepared::Emulated { kernel, .. }, Some(incoming)) = (lane, incoming.take()) {
            // Rewritten in place: the machine that booted from it before has exited.
            let written = write_initramfs(
                &kernel.kernel,
                &built.runner,
                payload,
                &runner_args,
                Some(&incoming),
            );
            if let Err(e) = written {
                println!(
                    "{} {}: the artifacts of {} are not passed on: {e:#}",
                    ui::red("error:"),
                    kernel.kernel.hint(),
                    incoming.saved_on
                );
            }
        }
        let (summary, selection, kept) = run_lane(lane, &tools, options, &run_dir, deadlines);
        if let (Prepared::Emulated { .. }, false) = (lane, kept.is_empty()) {
            incoming = summary.environments.first().map(|e| Incoming {
                saved_on: e.kernel_release.clone(),
                artifacts: kept,
            });
        }
        parts.push((label, summary, selection));
    }
    let (summary, selection) = merge(parts, started.elapsed().as_secs_f64() * 1000.0);

    let dir = run_dir.path().to_path_buf();
    if let Err(e) = run_dir.finish(&summary) {
        println!("{} writing the reports: {e}", ui::red("error:"));
        return Ok(Finished {
            dir,
            summary,
            selection,
            status: Status::Error,
        });
    }
    if selection.list {
        // No table for a listing, but a listing that went wrong says so.
        if let Some(error) = &summary.error {
            println!("{} {error}", ui::red("error:"));
        }
    } else if selection.bench {
        println!();
        print!("{}", bench::table(&BenchSummary::of(&summary.benchmarks)));
        if let Some(error) = &summary.error {
            println!("{} {error}", ui::red("error:"));
        }
        if !summary.benchmarks.is_empty() {
            println!(
                "bench: {}, criterion's files in {}",
                relative(&run_dir.path().join(BENCH_JSON)).display(),
                relative(&run_dir.path().join(CRITERION_DIR)).display()
            );
        }
        println!(
            "report: {}",
            relative(&run_dir.path().join(REPORT_HTML)).display()
        );
    } else {
        println!();
        print!("{}", table(&summary));
        for line in peer_agreement(&summary.verdicts) {
            println!("{line}");
        }
        println!(
            "report: {}",
            relative(&run_dir.path().join(REPORT_HTML)).display()
        );
        if let Some(speed) = SuiteSpeed::of(&summary) {
            println!("{}", speed.line());
            for (target, met) in speed.targets() {
                match met {
                    Some(true) => println!("  target {}: {target}", ui::green("met")),
                    Some(false) => println!("  target {}: {target}", ui::red("not met")),
                    None => {}
                }
            }
        }
    }
    let failed = summary.verdicts.iter().any(|v| v.outcome == Outcome::Fail)
        || summary
            .benchmarks
            .iter()
            .any(|b| b.outcome == Outcome::Fail);
    let mut status = if summary.error.is_some() {
        Status::Error
    } else if failed {
        Status::Failed
    } else {
        Status::Clean
    };
    if let (Some(baseline), false) = (&options.baseline, selection.list) {
        // Against a baseline, what counts is whether the run regressed: failures the baseline
        // had already are known ones.
        match compare::compare(baseline, &dir, options.thresholds) {
            Ok(regressed_or_not) if status != Status::Error => status = regressed_or_not,
            Ok(_) => {}
            Err(e) => {
                println!("{} comparing with {baseline}: {e:#}", ui::red("error:"));
                status = Status::Error;
            }
        }
    }
    Ok(Finished {
        dir,
        summary,
        selection,
        status,
    })
}

/// The part of the run id after the time and lanes: the emulated lane's kernels, else QEMU's
/// version for the qemu lane, and this machine's kernel for the host lane.
fn run_hint(tools: &Tools, kernels: &[KernelUnderTest], host: Option<&HostMachine>) -> String {
    let mut parts: Vec<String> = kernels.iter().map(|k| k.kernel.hint()).collect();
    if parts.is_empty() {
        if let Some(qemu) = &tools.qemu {
            parts.push(format!("qemu-{}", qemu.version));
        }
    }
    if let Some(host) = host {
        parts.push(host.kernel_release.clone());
    }
    parts.join("+")
}

/// Run one lane (for the emulated lane, one kernel) into the run directory; with the artifacts
/// its runner sent.
fn run_lane(
    lane: &Prepared,
    tools: &Tools,
    options: &Options,
    run_dir: &RunDir,
    deadlines: emulated::Deadlines,
) -> (RunSummary, Selection, Vec<Kept>) {
    let mut host = common_host_facts(tools, options);
    let runner_args = options.runner_args();
    // Until the runner reports the kernel's release, the run's record names it as xtask can.
    let (kernel_name, source) = match lane {
        Prepared::Emulated {
            machine,
            kernel,
            modules,
            ..
        } => {
            host.extend(emulated_host_facts(&kernel.kernel, machine));
            host.push(Feature::new("kernel.requested", &kernel.requested));
            host.push(Feature::new("machine.modules", modules));
            host.push(Feature::new("runner.build", format!("{:?}", tools.cross)));
            let name = kernel
                .kernel
                .release()
                .unwrap_or_else(|| kernel.kernel.hint());
            (name, Source::Machine)
        }
        Prepared::Qemu(qemu) => {
            host.push(Feature::new(
                "runner.command",
                qemu.command_line(&runner_args),
            ));
            (
                format!("qemu-{}", tools.qemu().version),
                Source::RunnerProcess,
            )
        }
        Prepared::Host(host_lane, machine) => {
            host.extend(machine.facts.iter().cloned());
            host.push(Feature::new(
                "runner.command",
                host_lane.command_line(&runner_args),
            ));
            (machine.kernel_release.clone(), Source::RunnerProcess)
        }
    };
    let mut session = Session::new(
        run_dir,
        lane.lane(),
        &kernel_name,
        source,
        host,
        Instant::now(),
    );
    let ended = match lane {
        Prepared::Emulated {
            machine,
            kernel,
            position: (index, count),
            ..
        } => {
            ui::step(&format!(
                "emulated lane, kernel {index} of {count}: booting {} {} under QEMU {}",
                kernel.kernel.package,
                kernel.kernel.version,
                tools.qemu().version
            ));
            emulated::boot(machine, deadlines, |line| session.on_line(line))
        }
        Prepared::Qemu(qemu) => {
            ui::step(&format!(
                "qemu lane: QEMU {} is the VMM, one process per guest",
                tools.qemu().version
            ));
            qemu.run(&runner_args, deadlines, |line| session.on_line(line))
        }
        Prepared::Host(host_lane, machine) => {
            ui::step(&format!(
                "host lane: the runner is the VMM on this machine's KVM, kernel {}",
                machine.kernel_release
            ));
            host_lane.run(&runner_args, deadlines, |line| session.on_line(line))
        }
    };
    let kept = session.take_kept_artifacts();
    let (summary, selection) = match ended {
        Ok(ending) => session.conclude(&ending),
        Err(e) => session.conclude_with_error(format!("{e:#}")),
    };
    (summary, selection, kept)
}

/// The lanes' summaries as one run: environments and verdicts in lane order, and each lane's
/// error named by its label (a lane, or a lane and its kernel) when there are several.
fn merge(parts: Vec<(String, RunSummary, Selection)>, wall_ms: f64) -> (RunSummary, Selection) {
    let several = parts.len() > 1;
    let mut summary = RunSummary {
        benchmarks: Vec::new(),
        environments: Vec::new(),
        verdicts: Vec::new(),
        wall_ms,
        error: None,
    };
    let mut selection: Option<Selection> = None;
    let mut errors = Vec::new();
    for (label, part, part_selection) in parts {
        summary.environments.extend(part.environments);
        summary.verdicts.extend(part.verdicts);
        summary.benchmarks.extend(part.benchmarks);
        if let Some(error) = part.error {
            errors.push(if several {
                format!("{label}: {error}")
            } else {
                error
            });
        }
        selection = Some(match selection {
            None => part_selection,
            Some(so_far) => Selection {
                list: so_far.list || part_selection.list,
                words: so_far.words,
                all: so_far.all && part_selection.all,
                bench: so_far.bench || part_selection.bench,
            },
        });
    }
    if !errors.is_empty() {
        summary.error = Some(errors.join("; "));
    }
    (summary, selection.unwrap_or_default())
}

/// `test`: the host unit tests, then a run; ends with the totals line.
pub fn test(options: &Options) -> Status {
    ui::step("host unit tests: cargo test --workspace");
    let unit_tests_passed = host_unit_tests();
    if !unit_tests_passed {
        println!(
            "{} the host unit tests failed; the emulated run goes on",
            ui::red("error:")
        );
    }
    let (tally, unproven, mut status, rendered) = match run(options) {
        Ok(finished) => {
            let unproven = unproven_checks(&finished.summary.verdicts, finished.selection.all);
            let rendered = finished.selection.list || report_renders(&finished.dir);
            (
                finished.summary.tally(),
                unproven,
                finished.status,
                rendered,
            )
        }
        Err(e) => {
            eprintln!("{} {e:#}", ui::red("error:"));
            (Tally::default(), Vec::new(), Status::Error, true)
        }
    };
    if status == Status::Clean && !rendered {
        status = Status::Failed;
    }
    if status == Status::Clean && tally.pass == 0 {
        println!("{} the run recorded no pass verdict", ui::red("error:"));
        status = Status::Failed;
    }
    if status == Status::Clean && !unproven.is_empty() {
        for problem in &unproven {
            println!("{} {problem}", ui::red("error:"));
        }
        status = Status::Failed;
    }
    if !unit_tests_passed && status == Status::Clean {
        status = Status::Failed;
    }
    // The closing line in the form CI reads ("N passed, N failed, N skipped"); an expected
    // failure is neither a pass nor a fail, so it counts with the skips there.
    println!(
        "suite: {} passed, {} failed, {} skipped",
        tally.pass,
        tally.fail,
        tally.skip + tally.xfail
    );
    status
}

/// Whether the run's report renders in a headless browser as the run says (or no browser could
/// be had, which the step reports as a skip).
fn report_renders(dir: &std::path::Path) -> bool {
    let checked = reports::load(dir).and_then(|run| Ok((run, Apt::new()?)));
    match checked {
        Ok((run, mut apt)) => reports::browser_step(&run, &mut apt),
        Err(e) => {
            println!("{} browser check: {e:#}", ui::red("error:"));
            false
        }
    }
}

/// Why the run does not show that its checks can fail: a fault-injection proof that did not
/// pass (a skip proves nothing either), or, in a run of every check, no proof at all.
fn unproven_checks(verdicts: &[Verdict], all_selected: bool) -> Vec<String> {
    let proofs: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.test.starts_with(FAULT_INJECTION_PROOFS))
        .collect();
    // A proof that could not be made (skipped or xfailed) only matters where its check passed:
    // a check that skipped or xfailed in that lane claims nothing that needs proving.
    let check_passed = |proof: &Verdict| {
        let check = proof.test[FAULT_INJECTION_PROOFS.len()..]
            .split_once("::")
            .map(|(_injection, check)| check);
        verdicts.iter().any(|v| {
            Some(v.test.as_str()) == check
                && v.lane == proof.lane
                && v.kernel == proof.kernel
                && v.outcome == Outcome::Pass
        })
    };
    let mut problems: Vec<String> = proofs
        .iter()
        .filter(|v| match v.outcome {
            Outcome::Pass => false,
            Outcome::Fail => true,
            Outcome::Skip | Outcome::Xfail => check_passed(v),
        })
        .map(|v| {
            format!(
                "fault-injection proof {} was {} in the {} lane on {}: {}",
                v.test, v.outcome, v.lane, v.kernel, v.reason
            )
        })
        .collect();
    if proofs.is_empty() && all_selected {
        problems.push("no fault-injection proof ran, so no check was shown able to fail".into());
    }
    problems
}

/// How the checks that cover each of kvm-unit-tests' MTE report lines fared, per lane: one
/// line for each peer line whose checks ran, e.g. "peer kvm-unit-tests `mte: sync: read`:
/// emulated pass, qemu fail". A lane passes a line when every covering check passed there.
fn peer_agreement(verdicts: &[Verdict]) -> Vec<String> {
    mte_suites::peers::KVM_UNIT_TESTS_MTE
        .iter()
        .filter_map(|line| {
            let covering: Vec<&Verdict> = verdicts
                .iter()
                .filter(|v| line.ours.contains(&v.test.as_str()))
                .collect();
            let mut lanes: Vec<Lane> = Vec::new();
            for v in &covering {
                if !lanes.contains(&v.lane) {
                    lanes.push(v.lane);
                }
            }
            let per_lane: Vec<String> = lanes
                .iter()
                .map(|lane| {
                    let outcomes = covering
                        .iter()
                        .filter(|v| v.lane == *lane)
                        .map(|v| v.outcome);
                    let worst = outcomes
                        .clone()
                        .find(|o| *o == Outcome::Fail)
                        .or_else(|| outcomes.clone().find(|o| *o != Outcome::Pass))
                        .unwrap_or(Outcome::Pass);
                    format!("{lane} {worst}")
                })
                .collect();
            (!per_lane.is_empty()).then(|| {
                format!(
                    "peer kvm-unit-tests `{}`: {}",
                    line.peer,
                    per_lane.join(", ")
                )
            })
        })
        .collect()
}

fn host_unit_tests() -> bool {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    std::process::Command::new(cargo)
        .args(["test", "--workspace"])
        .current_dir(repo_root())
        .status()
        .is_ok_and(|s| s.success())
}

/// What xtask knows of this machine and of the run, for every lane.
fn common_host_facts(tools: &Tools, options: &Options) -> Vec<Feature> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']));
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()));
    let os = read("/etc/os-release").lines().find_map(|l| {
        l.strip_prefix("PRETTY_NAME=")
            .map(|v| v.trim_matches('"').to_string())
    });
    let mut facts = Vec::new();
    if let Some(qemu) = &tools.qemu {
        facts.push(Feature::new("qemu.version", qemu.version));
        facts.push(Feature::new("qemu.banner", &qemu.banner));
    }
    facts.extend([
        Feature::new("harness.args", options.harness_args.join(" ")),
        Feature::new("host.arch", std::env::consts::ARCH),
        Feature::new("host.kernel", read("/proc/sys/kernel/osrelease").trim()),
        Feature::new(
            "host.cpus",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        ),
        Feature::new("xtask.version", env!("CARGO_PKG_VERSION")),
        Feature::new("xtask.root", apt::is_root()),
    ]);
    if let Some(shard) = options.shard {
        facts.push(Feature::new("shard", shard));
    }
    if let Some(model) = cpu_model {
        facts.push(Feature::new("host.cpu", model));
    }
    if let Some(memory) = memory {
        facts.push(Feature::new("host.memory", memory));
    }
    if let Some(os) = os {
        facts.push(Feature::new("host.os", os));
    }
    facts
}

/// What xtask knows of the emulated machine that the runner cannot see from inside it.
fn emulated_host_facts(kernel: &Kernel, machine: &Machine) -> Vec<Feature> {
    vec![
        Feature::new("qemu.command", machine.command_line()),
        Feature::new("kernel.package", &kernel.package),
        Feature::new("kernel.package_version", &kernel.version),
        Feature::new("kernel.image", kernel.image.display()),
        Feature::new(
            "kernel.tree",
            kernel
                .tree
                .as_ref()
                .map_or(String::new(), |t| t.display().to_string()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(test: &str, outcome: Outcome) -> Verdict {
        Verdict {
            schema: mte_results::SCHEMA_VERSION,
            test: test.into(),
            lane: Lane::Emulated,
            kernel: "6.12".into(),
            outcome,
            reason: "why".into(),
            detail: vec![],
            duration_ms: 1.0,
        }
    }

    #[test]
    fn lanes_merge_in_order_and_name_their_errors() {
        let part = |lane: Lane, error: Option<&str>, all: bool| {
            let mut v = verdict("tags::a", Outcome::Pass);
            v.lane = lane;
            let summary = RunSummary {
                benchmarks: Vec::new(),
                environments: vec![mte_results::Environment {
                    lane,
                    ..Default::default()
                }],
                verdicts: vec![v],
                wall_ms: 1.0,
                error: error.map(String::from),
            };
            let selection = Selection {
                all,
                ..Selection::default()
            };
            (format!("{} lane", lane.name()), summary, selection)
        };
        let (summary, selection) = merge(
            vec![
                part(Lane::Emulated, None, true),
                part(Lane::Qemu, Some("the runner gave up"), false),
            ],
            5.0,
        );
        let lanes: Vec<Lane> = summary.verdicts.iter().map(|v| v.lane).collect();
        assert_eq!(lanes, [Lane::Emulated, Lane::Qemu]);
        assert_eq!(summary.environments.len(), 2);
        assert_eq!(
            summary.error.as_deref(),
            Some("qemu lane: the runner gave up")
        );
        assert!(!selection.all);
        // One lane keeps its error as it was.
        let (summary, _) = merge(vec![part(Lane::Qemu, Some("x"), true)], 1.0);
        assert_eq!(summary.error.as_deref(), Some("x"));
    }

    #[test]
    fn the_peer_lines_answer_per_lane() {
        let mut fault = verdict("faults::sync_mismatched_load_faults", Outcome::Pass);
        let mut in_qemu = fault.clone();
        in_qemu.lane = Lane::Qemu;
        in_qemu.outcome = Outcome::Fail;
        fault.lane = Lane::Emulated;
        let lines = peer_agreement(&[fault, in_qemu]);
        assert_eq!(
            lines,
            ["peer kvm-unit-tests `mte: sync: read`: emulated pass, qemu fail"]
        );
        assert!(peer_agreement(&[verdict("tags::a", Outcome::Pass)]).is_empty());
    }

    #[test]
    fn a_run_must_show_its_checks_can_fail() {
        let check = verdict("tags::a", Outcome::Pass);
        let proof = |outcome| verdict("fault_injection::corrupt_tag::tags::a", outcome);
        assert!(unproven_checks(&[check.clone(), proof(Outcome::Pass)], true).is_empty());
        let skipped = unproven_checks(&[check.clone(), proof(Outcome::Skip)], true);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("was skip"), "{skipped:?}");
        assert_eq!(unproven_checks(std::slice::from_ref(&check), true).len(), 1);
        // A filtered run may leave the proofs out.
        assert!(unproven_checks(std::slice::from_ref(&check), false).is_empty());
        // A check that skipped (or xfailed) has nothing to prove; one that failed fails anyway.
        let skipped_check = verdict("tags::a", Outcome::Skip);
        assert!(unproven_checks(&[skipped_check, proof(Outcome::Skip)], true).is_empty());
        let failed_proof = unproven_checks(&[check.clone(), proof(Outcome::Fail)], true);
        assert_eq!(failed_proof.len(), 1);
        // The proof answers for its check in its own lane only: a pass elsewhere claims
        // nothing here.
        let mut elsewhere = check;
        elsewhere.lane = Lane::Qemu;
        assert!(unproven_checks(&[elsewhere, proof(Outcome::Skip)], true).is_empty());
    }
}
