//! `cargo xtask`: checks and installs the tools, builds the aarch64 pieces, boots the emulated
//! machine and runs the MTE suite in it (or in QEMU, or on this host's KVM); compares, merges
//! and reports runs. `cargo xtask --help` lists the commands.

mod apt;
mod artifacts;
mod browser;
mod build;
mod bundle;
mod ci;
mod cli;
mod compare;
mod console;
mod cpio;
mod debian_version;
mod device;
mod elf;
mod facts;
mod fuzz;
mod groundwork;
mod harness_args;
mod host_load;
mod import;
mod initramfs;
mod kcidb;
mod kernel_modules;
mod kernels;
mod lanes;
mod lints;
mod modinfo;
mod qemu_package;
mod reports;
mod run;
mod runner_process;
mod session;
mod tap_check;
#[cfg(test)]
mod testing;
mod tools;
mod ui;

use std::process::ExitCode;

use mte_results::summary::RunSummary;
use mte_results::Outcome;

use cli::Command;

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

impl Status {
    /// A run's: its error, else a failed check or benchmark.
    pub fn of(summary: &RunSummary) -> Status {
        let failed = summary.verdicts.iter().any(|v| v.outcome == Outcome::Fail)
            || (summary.benchmarks.iter()).any(|b| b.outcome == Outcome::Fail);
        if summary.error.is_some() {
            Status::Error
        } else if failed {
            Status::Failed
        } else {
            Status::Clean
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args, std::env::var("MTE_KERNEL").ok()) {
        Ok(command) => command,
        // `--help` too: clap prints it on stdout with status 0, a mistake on stderr with 2.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let status = match command {
        Command::Run(options) | Command::Bench(options) => harness_args::answer(&options)
            .unwrap_or_else(|| report(run::run(&options).map(|finished| finished.status))),
        Command::Test(options) => ci::test(&options),
        Command::Setup(options) => report(groundwork::setup(&options).map(|()| Status::Clean)),
        Command::Build(options) => report(groundwork::build_only(&options).map(|()| Status::Clean)),
        Command::Compare(c) => report(compare::compare_command(
            &c.baseline,
            c.run.as_deref(),
            c.thresholds,
        )),
        Command::KeepBaseline { name, run } => report(compare::keep(&name, run.as_deref())),
        Command::ReportMerge { runs, out } => report(reports::merge_runs(&runs, &out)),
        Command::ReportCheck { run } => report(reports::check_in_browser(run.as_deref())),
        Command::LavaResults { run } => report(reports::lava_results(run.as_deref())),
        Command::Kcidb { run, origin } => report(kcidb::kcidb_command(run.as_deref(), &origin)),
        Command::Fuzz { target, seconds } => {
            report(fuzz::fuzz(target.as_deref(), seconds).map(|clean| {
                if clean {
                    Status::Clean
                } else {
                    Status::Failed
                }
            }))
        }
        Command::Bundle { out } => report(bundle::bundle_command(out.as_deref())),
        Command::Device { kernel, against } => report(
            device::step(&kernel, &reports::run_dir(against.as_deref())).map(|held| {
                if held {
                    Status::Clean
                } else {
                    Status::Failed
                }
            }),
        ),
        Command::Import { device_run, out } => {
            report(import::import_command(&device_run, out.as_deref()))
        }
        Command::Lint => report(apt::Apt::new().map(|mut apt| {
            if lints::check(&mut apt) {
                Status::Clean
            } else {
                Status::Failed
            }
        })),
    };
    ExitCode::from(status as u8)
}

/// A step's error ends xtask with status 2 and the message, each step on the way up named.
fn report(result: anyhow::Result<Status>) -> Status {
    result.unwrap_or_else(|e| {
        eprintln!("{} {e:#}", ui::red("error:"));
        Status::Error
    })
}
