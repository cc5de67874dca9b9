//! The commands' steps in order: tools, kernel, builds, the machine, the run directory.

use std::path::PathBuf;
use std::time::Instant;

use mte_results::rundir::{RunDir, REPORT_HTML};
use mte_results::summary::{table, RunSummary};
use mte_results::{Feature, Outcome, Tally, Verdict, FAULT_INJECTION_PROOFS};

use crate::apt::{self, Apt};
use crate::build::{self, relative, repo_root};
use crate::cli::{Lane, Options};
use crate::emulated::{self, Machine};
use crate::error::{Context, Result};
use crate::initramfs;
use crate::kernels::{self, Kernel, KernelSpec};
use crate::qemu_lane::QemuLane;
use crate::session::{Selection, Session, Source};
use crate::tools::{self, CrossRoute, Tools};
use crate::ui;

/// Where run directories go.
const RESULTS_ROOT: &str = "target/mte-results";
/// Where the initramfs of the current build goes.
const INITRAMFS: &str = "target/mte-emulated/initramfs.cpio";

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
    pub summary: RunSummary,
    pub selection: Selection,
    pub status: Status,
}

/// `setup`: the tools and the kernel.
pub fn setup(options: &Options) -> Result<(Tools, Kernel)> {
    let spec = KernelSpec::parse(&options.kernel)?;
    let mut apt = Apt::new()?;
    let tools = tools::ensure(&mut apt)?;
    let kernel = kernels::resolve(&spec, &mut apt)?;
    Ok((tools, kernel))
}

/// `build`: payload, runner and initramfs; returns the payload and the initramfs.
pub fn build(cross: &CrossRoute, harness_args: &[String]) -> Result<(PathBuf, PathBuf)> {
    ui::step("build");
    let payload = build::payload(cross)?;
    let runner = build::runner(cross)?;
    let args = initramfs::runner_args(harness_args);
    let out = repo_root().join(INITRAMFS);
    let size = initramfs::write(&out, &runner, &payload, &args).context("writing the initramfs")?;
    ui::note(&format!(
        "initramfs: {} ({})",
        relative(&out).display(),
        ui::size(size)
    ));
    Ok((payload, out))
}

/// `build` on its own: it needs only the cross toolchain.
pub fn build_only(options: &Options) -> Result<PathBuf> {
    let mut apt = Apt::new()?;
    ui::step("tools");
    let cross = tools::ensure_cross(&mut apt)?;
    build(&cross, &options.harness_args).map(|(_, initramfs)| initramfs)
}

/// A lane ready to run.
enum Prepared {
    Emulated { machine: Machine, kernel: Kernel },
    Qemu(QemuLane),
}

/// `run`: every lane asked for, one after the other, into one run directory; then the summary.
/// Errors before the run directory exists come back as `Err`; after that, they are the run's
/// error, recorded with whatever verdicts arrived.
pub fn run(options: &Options) -> Result<Finished> {
    let started = Instant::now();
    let emulated = options.lanes.contains(&Lane::Emulated);
    let (tools, kernel) = if emulated {
        let (tools, kernel) = setup(options)?;
        (tools, Some(kernel))
    } else {
        let mut apt = Apt::new()?;
        (tools::ensure(&mut apt)?, None)
    };
    let (payload, initramfs) = build(&tools.cross, &options.harness_args)?;
    let mut lanes = Vec::new();
    for &lane in &options.lanes {
        lanes.push(match lane {
            Lane::Emulated => Prepared::Emulated {
                machine: Machine {
                    qemu: tools.qemu.path.clone(),
                    kernel: kernel.as_ref().expect("resolved above").image.clone(),
                    initramfs: initramfs.clone(),
                },
                kernel: kernel.clone().expect("resolved above"),
            },
            Lane::Qemu => Prepared::Qemu(QemuLane::prepare(
                build::host_runner()?,
                tools.qemu.path.clone(),
                &payload,
            )?),
        });
    }

    let lane_names: Vec<&str> = options.lanes.iter().map(|l| l.name()).collect();
    let hint = match &kernel {
        Some(kernel) => kernel.hint(),
        None => format!("qemu-{}", tools.qemu.version),
    };
    let run_dir = RunDir::create(repo_root().join(RESULTS_ROOT), &lane_names.join("+"), &hint)
        .context("creating the run directory")?;
    ui::step(&format!("run: {}", relative(run_dir.path()).display()));

    let mut parts = Vec::new();
    for lane in &lanes {
        let remaining = options.timeout.saturating_sub(started.elapsed());
        let deadlines = emulated::Deadlines::with_overall(remaining);
        parts.push(run_lane(lane, &tools, options, &run_dir, deadlines));
    }
    let (summary, selection) = merge(parts, started.elapsed().as_secs_f64() * 1000.0);

    if let Err(e) = run_dir.finish(&summary) {
        println!("{} writing the reports: {e}", ui::red("error:"));
        return Ok(Finished {
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
    } else {
        println!();
        print!("{}", table(&summary));
        println!(
            "report: {}",
            relative(&run_dir.path().join(REPORT_HTML)).display()
        );
    }
    let status = if summary.error.is_some() {
        Status::Error
    } else if summary.verdicts.iter().any(|v| v.outcome == Outcome::Fail) {
        Status::Failed
    } else {
        Status::Clean
    };
    Ok(Finished {
        summary,
        selection,
        status,
    })
}

/// Run one lane into the run directory.
fn run_lane(
    lane: &Prepared,
    tools: &Tools,
    options: &Options,
    run_dir: &RunDir,
    deadlines: emulated::Deadlines,
) -> (Lane, RunSummary, Selection) {
    let mut host = common_host_facts(tools, options);
    let (name, kernel_hint, source) = match lane {
        Prepared::Emulated { machine, kernel } => {
            host.extend(emulated_host_facts(kernel, machine));
            host.push(Feature::new("kernel.requested", &options.kernel));
            host.push(Feature::new("runner.build", format!("{:?}", tools.cross)));
            (Lane::Emulated, kernel.hint(), Source::Machine)
        }
        Prepared::Qemu(qemu) => {
            host.push(Feature::new(
                "runner.command",
                qemu.command_line(&options.harness_args),
            ));
            (
                Lane::Qemu,
                format!("qemu-{}", tools.qemu.version),
                Source::RunnerProcess,
            )
        }
    };
    // Until the runner says hello, the run's record holds what the host knows.
    let _ = run_dir.write_environment(&mte_results::Environment {
        lane: name.name().into(),
        kernel_release: kernel_hint,
        host: host.clone(),
        ..Default::default()
    });
    let mut session = Session::new(run_dir, name.name(), source, host, Instant::now());
    let ended = match lane {
        Prepared::Emulated { machine, kernel } => {
            ui::note(&format!(
                "emulated lane: kernel booting: {} {} under QEMU {}",
                kernel.package, kernel.version, tools.qemu.version
            ));
            emulated::boot(machine, deadlines, |line| session.on_line(line))
        }
        Prepared::Qemu(qemu) => {
            ui::note(&format!(
                "qemu lane: QEMU {} is the VMM, one process per guest",
                tools.qemu.version
            ));
            qemu.run(&options.harness_args, deadlines, |line| {
                session.on_line(line)
            })
        }
    };
    let (summary, selection) = match ended {
        Ok(ending) => session.conclude(&ending),
        Err(e) => session.conclude_with_error(e.to_string()),
    };
    (name, summary, selection)
}

/// The lanes' summaries as one run: environments and verdicts in lane order, and each lane's
/// error named by its lane when there are several.
fn merge(parts: Vec<(Lane, RunSummary, Selection)>, wall_ms: f64) -> (RunSummary, Selection) {
    let several = parts.len() > 1;
    let mut summary = RunSummary {
        environments: Vec::new(),
        verdicts: Vec::new(),
        wall_ms,
        error: None,
    };
    let mut selection: Option<Selection> = None;
    let mut errors = Vec::new();
    for (lane, part, part_selection) in parts {
        summary.environments.extend(part.environments);
        summary.verdicts.extend(part.verdicts);
        if let Some(error) = part.error {
            errors.push(if several {
                format!("{} lane: {error}", lane.name())
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
    let (tally, unproven, mut status) = match run(options) {
        Ok(finished) => {
            let unproven = unproven_checks(&finished.summary.verdicts, finished.selection.all);
            (finished.summary.tally(), unproven, finished.status)
        }
        Err(e) => {
            eprintln!("{} {e}", ui::red("error:"));
            (Tally::default(), Vec::new(), Status::Error)
        }
    };
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

/// Why the run does not show that its checks can fail: a fault-injection proof that did not
/// pass (a skip proves nothing either), or, in a run of every check, no proof at all.
fn unproven_checks(verdicts: &[Verdict], all_selected: bool) -> Vec<String> {
    let proofs: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.test.starts_with(FAULT_INJECTION_PROOFS))
        .collect();
    let mut problems: Vec<String> = proofs
        .iter()
        .filter(|v| v.outcome != Outcome::Pass)
        .map(|v| {
            format!(
                "fault-injection proof {} was {}: {}",
                v.test, v.outcome, v.reason
            )
        })
        .collect();
    if proofs.is_empty() && all_selected {
        problems.push("no fault-injection proof ran, so no check was shown able to fail".into());
    }
    problems
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
    let mut facts = vec![
        Feature::new("qemu.version", tools.qemu.version),
        Feature::new("qemu.banner", &tools.qemu.banner),
        Feature::new("harness.args", options.harness_args.join(" ")),
        Feature::new("host.arch", std::env::consts::ARCH),
        Feature::new("host.kernel", read("/proc/sys/kernel/osrelease").trim()),
        Feature::new(
            "host.cpus",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        ),
        Feature::new("xtask.version", env!("CARGO_PKG_VERSION")),
        Feature::new("xtask.root", apt::is_root()),
    ];
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
            lane: "emulated".into(),
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
            v.lane = lane.name().into();
            let summary = RunSummary {
                environments: vec![mte_results::Environment {
                    lane: lane.name().into(),
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
            (lane, summary, selection)
        };
        let (summary, selection) = merge(
            vec![
                part(Lane::Emulated, None, true),
                part(Lane::Qemu, Some("the runner gave up"), false),
            ],
            5.0,
        );
        let lanes: Vec<&str> = summary.verdicts.iter().map(|v| v.lane.as_str()).collect();
        assert_eq!(lanes, ["emulated", "qemu"]);
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
    fn a_run_must_show_its_checks_can_fail() {
        let check = verdict("tags::a", Outcome::Pass);
        let proof = |outcome| verdict("fault_injection::corrupt_tag::tags::a", outcome);
        assert!(unproven_checks(&[check.clone(), proof(Outcome::Pass)], true).is_empty());
        let skipped = unproven_checks(&[check.clone(), proof(Outcome::Skip)], true);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("was skip"), "{skipped:?}");
        assert_eq!(unproven_checks(std::slice::from_ref(&check), true).len(), 1);
        // A filtered run may leave the proofs out.
        assert!(unproven_checks(&[check], false).is_empty());
    }
}
