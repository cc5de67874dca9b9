//! A lane whose VMM runs on this machine (the qemu and host lanes): the runner, built for this
//! machine, runs as a process here, and its records come back on its stdout, read like the
//! emulated machine's console.

use std::path::{Path, PathBuf};

use anyhow::Result;
use mte_results::{Feature, Lane};

use crate::build;
use crate::console::{self, Deadlines, Ending, Flow};
use crate::groundwork::Groundwork;
use crate::lanes::{LaneRun, Recorded};
use crate::session::Source;

/// A lane the runner process runs, as the lane describes it.
pub struct ProcessLane {
    pub lane: Lane,
    /// `--lane NAME` and the lane's own options.
    pub lane_args: Vec<String>,
    /// Where its runner finds the payloads, under the repository.
    pub payload_dir: &'static str,
    pub heading: String,
    /// The kernel as the lane names it until the runner reports.
    pub kernel: String,
    /// What the lane knows of where it runs.
    pub facts: Vec<Feature>,
}

/// The lane's one run: the payload put where the runner looks for it, and the runner's
/// arguments.
pub fn prepare(lane: ProcessLane, ground: &Groundwork) -> Result<Vec<Box<dyn LaneRun>>> {
    let runner = ground
        .host_runner
        .clone()
        .expect("built for a lane that needs it");
    let payload_dir = build::stage_payload(lane.payload_dir, &ground.built.payload)?;
    let args = args(&lane.lane_args, &payload_dir, &ground.runner_args);
    Ok(vec![Box::new(RunnerProcess { lane, runner, args })])
}

/// The runner's arguments: the lane's own, the payloads, then the run's untouched.
fn args(lane_args: &[String], payload_dir: &Path, runner_args: &[String]) -> Vec<String> {
    let payloads = [
        "--payload-dir".to_string(),
        payload_dir.display().to_string(),
    ];
    [lane_args, &payloads, runner_args].concat()
}

/// The runner as one lane's process.
struct RunnerProcess {
    lane: ProcessLane,
    runner: PathBuf,
    args: Vec<String>,
}

impl LaneRun for RunnerProcess {
    fn lane(&self) -> Lane {
        self.lane.lane
    }

    fn label(&self) -> String {
        format!("{} lane", self.lane.lane)
    }

    fn heading(&self) -> String {
        self.lane.heading.clone()
    }

    fn record(&self) -> Recorded {
        let command = console::command_line(&self.runner, &self.args);
        let mut facts = self.lane.facts.clone();
        facts.push(Feature::new("runner.command", command));
        Recorded {
            // The lane's one boot: its runner runs once.
            boot: 1,
            kernel: self.lane.kernel.clone(),
            source: Source::RunnerProcess,
            facts,
        }
    }

    fn execute(
        &self,
        deadlines: Deadlines,
        on_line: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Ending> {
        console::run(&self.runner, &self.args, deadlines, on_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_and_the_payloads_come_before_the_harness_arguments() {
        let lane_args = ["--lane", "qemu", "--qemu", "/usr/bin/qemu-system-aarch64"];
        let harness = ["tags::", "--exact"].map(String::from);
        let args = args(&lane_args.map(String::from), Path::new("/p"), &harness);
        assert_eq!(
            args.join(" "),
            "--lane qemu --qemu /usr/bin/qemu-system-aarch64 --payload-dir /p tags:: --exact"
        );
    }
}
