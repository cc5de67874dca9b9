//! `cargo xtask`: checks and installs the tools, builds the aarch64 pieces, boots the emulated
//! machine and runs the MTE suite in it (or in QEMU, or on this host's KVM); compares, merges
//! and reports runs. `cargo xtask --help` lists the commands.

mod apt;
mod artifacts;
mod bench;
mod browser;
mod build;
mod cli;
mod compare;
mod cpio;
mod debian_version;
mod elf;
mod emulated;
mod host_lane;
mod initramfs;
mod kernel_modules;
mod kernels;
mod qemu_lane;
mod reports;
mod run;
mod runner_process;
mod session;
mod tools;
mod ui;

use std::process::ExitCode;

use run::Status;

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
        cli::Command::Run(options) => report(run::run(&options).map(|finished| finished.status)),
        cli::Command::Bench(options) => report(run::run(&options).map(|finished| finished.status)),
        cli::Command::Test(options) => run::test(&options),
        cli::Command::Setup(options) => report(run::setup(&options).map(|_| Status::Clean)),
        cli::Command::Build(options) => report(run::build_only(&options).map(|_| Status::Clean)),
        cli::Command::Compare(c) => report(compare::compare_command(
            &c.baseline,
            c.run.as_deref(),
            c.thresholds,
        )),
        cli::Command::KeepBaseline { name, run } => report(compare::keep(&name, run.as_deref())),
        cli::Command::ReportMerge { runs, out } => report(reports::merge_runs(&runs, &out)),
        cli::Command::ReportCheck { run } => report(reports::check_in_browser(run.as_deref())),
        cli::Command::LavaResults { run } => report(reports::lava_results(run.as_deref())),
    };
    ExitCode::from(status as u8)
}

/// A step's error ends xtask with status 2 and the message.
fn report(result: anyhow::Result<Status>) -> Status {
    result.unwrap_or_else(|e| {
        eprintln!("{} {e:#}", ui::red("error:"));
        Status::Error
    })
}
