//! `import`: what the bundle's driver saved on a device (the runner's record stream, its exit
//! status and the device's facts) made a run directory, by the same session that reads a
//! runner's records as they arrive in the host lane.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mte_results::rundir::RunDir;
use mte_results::stream::{parse_line, Line, Record};
use mte_results::summary::RunSummary;
use mte_results::{Feature, Lane};

use crate::build::{relative, repo_root};
use crate::console::{End, Ending, Flow};
use crate::lanes;
use crate::run::RESULTS_ROOT;
use crate::session::{Selection, Session, Source};
use crate::ui;
use crate::Status;

/// The files of a device's run that the driver writes.
pub const RECORDS: &str = "records";
const EXIT_STATUS: &str = "exit-status";
const COMMAND: &str = "command";
const SUITE_VERSION: &str = "suite-version";

/// `cargo xtask import DEVICE_RUN [--out ROOT]`: a new run directory under ROOT (default
/// target/mte-results, whose `latest` then names it).
pub fn import_command(device_run: &Path, out: Option<&Path>) -> Result<Status> {
    let records = std::fs::read_to_string(device_run.join(RECORDS)).with_context(|| {
        format!(
            "{} has no {RECORDS}: is it a directory the bundle's run.sh wrote?",
            device_run.display()
        )
    })?;
    let (kernel, mut facts) = lanes::device_facts(device_run);
    facts.extend(driver_facts(device_run));
    let root = out.map_or_else(|| repo_root().join(RESULTS_ROOT), Path::to_path_buf);
    let run_dir =
        RunDir::create(&root, Lane::Host.name(), &kernel).context("creating the run directory")?;
    ui::step(&format!(
        "import: {} into {}",
        device_run.display(),
        relative(run_dir.path()).display()
    ));
    let exit = read_exit_status(device_run);
    let (summary, selection) = replay(&run_dir, &kernel, facts, records.lines(), exit);
    finish(&run_dir, &summary, &selection)
}

/// What the driver recorded of itself: the runner's command and the suite's revision.
fn driver_facts(device_run: &Path) -> Vec<Feature> {
    let read = |name: &str| std::fs::read_to_string(device_run.join(name)).ok();
    let mut facts = vec![Feature::new("device.run", device_run.display())];
    if let Some(command) = read(COMMAND) {
        facts.push(Feature::new("runner.command", command.trim()));
    }
    if let Some(version) = read(SUITE_VERSION) {
        facts.push(Feature::new("suite.revision", version.trim()));
    }
    facts
}

/// The runner's exit status as the driver saved it; a run cut short saved none.
fn read_exit_status(device_run: &Path) -> Option<i32> {
    std::fs::read_to_string(device_run.join(EXIT_STATUS))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// A device's records through the host lane's session into `run_dir`.
pub fn replay<'a>(
    run_dir: &RunDir,
    kernel: &str,
    facts: Vec<Feature>,
    lines: impl Iterator<Item = &'a str>,
    exit_code: Option<i32>,
) -> (RunSummary, Selection) {
    let mut session = Session::new(
        run_dir,
        Lane::Host,
        1,
        kernel,
        Source::RunnerProcess,
        facts,
        Instant::now(),
    );
    // The run took the runner's time on the device, not the replay's.
    let mut device_wall_ms = None;
    for line in lines {
        if let Line::Record(record) = parse_line(line) {
            if let Record::Done { wall_ms, .. } = *record {
                device_wall_ms = Some(wall_ms);
            }
        }
        if session.on_line(line) == Flow::Finished {
            break;
        }
    }
    let end = match exit_code {
        Some(code) => End::Exited(ExitStatus::from_raw((code & 0xff) << 8)),
        None => return session.conclude_with_error(
            "the device's run has no exit status: the driver was stopped before the runner ended"
                .into(),
        ),
    };
    let (mut summary, selection) = session.conclude(&Ending {
        end,
        qemu_stderr: Vec::new(),
    });
    summary.wall_ms = device_wall_ms.unwrap_or(summary.wall_ms);
    (summary, selection)
}

/// Write the reports and print the summary, as a run does.
pub fn finish(run_dir: &RunDir, summary: &RunSummary, selection: &Selection) -> Result<Status> {
    if let Err(e) = run_dir.finish(summary) {
        bail!("writing the reports: {e}");
    }
    ui::closing::run(summary, selection, run_dir.path());
    Ok(Status::of(summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mte_results::stream::frame;
    use mte_results::{Environment, Outcome, Tally};

    #[test]
    fn a_device_run_becomes_a_run_directory_with_the_device_facts() {
        let device = tempfile::tempdir().unwrap();
        let results = tempfile::tempdir().unwrap();
        let d = device.path();
        std::fs::create_dir_all(d.join("device/proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(d.join("device/dev")).unwrap();
        std::fs::write(d.join("device/proc/sys/kernel/osrelease"), "6.12.9-arm64\n").unwrap();
        std::fs::write(d.join("device/proc/cpuinfo"), "Features\t: fp mte mte3\n").unwrap();
        std::fs::write(d.join("device/dev/kvm"), "").unwrap();
        std::fs::write(d.join("device/arch"), "aarch64\n").unwrap();
        std::fs::write(d.join(EXIT_STATUS), "101\n").unwrap();
        let mut failed = crate::testing::verdict("tags::b", Outcome::Fail);
        failed.lane = Lane::Host;
        let records = [
            frame(&Record::Hello {
                schema: mte_results::SCHEMA_VERSION,
                environment: Environment {
                    lane: Lane::Host,
                    kernel_release: "6.12.9-arm64".into(),
                    ..Environment::default()
                },
                planned: 1,
                available: 1,
                list: false,
                selection: String::new(),
                bench: false,
                setup_error: None,
                checks: vec!["tags::b".into()],
            }),
            "runner chatter".into(),
            frame(&Record::Verdict(failed)),
            frame(&Record::Done {
                tally: Tally {
                    fail: 1,
                    ..Tally::default()
                },
                wall_ms: 3.0,
            }),
        ];
        std::fs::write(d.join(RECORDS), records.join("\n")).unwrap();
        let status = import_command(d, Some(results.path())).unwrap();
        assert_eq!(status, Status::Failed);
        let latest = results.path().join("latest");
        let run = mte_results::rundir::load(&latest).unwrap().summary();
        assert_eq!(run.verdicts.len(), 1);
        assert_eq!(run.error, None);
        let host = &run.environments[0].host;
        let fact = |name: &str| {
            host.iter()
                .find(|f| f.name == name)
                .map(|f| f.value.clone())
        };
        assert_eq!(
            fact("host.cpu.mte").as_deref(),
            Some("MTE3 (hwcaps mte, mte3)")
        );
        assert_eq!(fact("host.kvm").as_deref(), Some("/dev/kvm present"));
        assert!(latest.join("results.tap").is_file());
    }
}
