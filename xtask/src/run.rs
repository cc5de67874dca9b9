//! The commands' steps in order: tools, kernel, builds, the machine, the run directory.

use std::path::PathBuf;
use std::time::Instant;

use mte_results::rundir::{RunDir, REPORT_HTML};
use mte_results::summary::{table, RunSummary};
use mte_results::{Feature, Outcome, Tally, Verdict, FAULT_INJECTION_PROOFS};

use crate::apt::{self, Apt};
use crate::build::{self, relative, repo_root};
use crate::cli::Options;
use crate::emulated::{self, Machine};
use crate::error::{Context, Result};
use crate::initramfs;
use crate::kernels::{self, Kernel, KernelSpec};
use crate::session::{Selection, Session};
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

/// `build`: payload, runner and initramfs; returns the initramfs.
pub fn build(cross: &CrossRoute, harness_args: &[String]) -> Result<PathBuf> {
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
    Ok(out)
}

/// `build` on its own: it needs only the cross toolchain.
pub fn build_only(options: &Options) -> Result<PathBuf> {
    let mut apt = Apt::new()?;
    ui::step("tools");
    let cross = tools::ensure_cross(&mut apt)?;
    build(&cross, &options.harness_args)
}

/// `run`: everything, then the summary. Errors before the run directory exists come back as
/// `Err`; after that, they are the run's error, recorded with whatever verdicts arrived.
pub fn run(options: &Options) -> Result<Finished> {
    let (tools, kernel) = setup(options)?;
    let initramfs = build(&tools.cross, &options.harness_args)?;

    let machine = Machine {
        qemu: tools.qemu.path.clone(),
        kernel: kernel.image.clone(),
        initramfs,
    };
    let run_dir = RunDir::create(repo_root().join(RESULTS_ROOT), "emulated", &kernel.hint())
        .context("creating the run directory")?;
    let host = host_facts(&tools, &kernel, &machine, options);
    // Until the runner says hello, the run's record holds what the host knows.
    let _ = run_dir.write_environment(&mte_results::Environment {
        lane: "emulated".into(),
        kernel_release: kernel.hint(),
        host: host.clone(),
        ..Default::default()
    });

    ui::step(&format!("run: {}", relative(run_dir.path()).display()));
    ui::note(&format!(
        "kernel booting: {} {} under QEMU {}",
        kernel.package, kernel.version, tools.qemu.version
    ));
    let mut session = Session::new(&run_dir, host, Instant::now());
    let (summary, selection) = match emulated::boot(
        &machine,
        emulated::Deadlines::with_overall(options.timeout),
        |line| session.on_line(line),
    ) {
        Ok(ending) => session.conclude(&ending),
        Err(e) => session.conclude_with_error(e.to_string()),
    };

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

/// What xtask knows of this run that the runner cannot see from inside the machine.
fn host_facts(
    tools: &Tools,
    kernel: &Kernel,
    machine: &Machine,
    options: &Options,
) -> Vec<Feature> {
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
        Feature::new("qemu.command", machine.command_line()),
        Feature::new("kernel.package", &kernel.package),
        Feature::new("kernel.package_version", &kernel.version),
        Feature::new("kernel.image", kernel.image.display()),
        Feature::new("kernel.requested", &options.kernel),
        Feature::new(
            "kernel.tree",
            kernel
                .tree
                .as_ref()
                .map_or(String::new(), |t| t.display().to_string()),
        ),
        Feature::new("runner.build", format!("{:?}", tools.cross)),
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
