//! A lane whose VMM runs on this machine (the qemu and host lanes): the runner, built for this
//! machine, runs as a process here, and its records come back on its stdout, read like the
//! emulated machine's console.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build;
use crate::emulated::{self, Deadlines, Ending, Flow};
use anyhow::{Context, Result};

/// The runner on this machine, and the arguments that make it one lane.
#[derive(Clone, Debug)]
pub struct RunnerProcess {
    pub runner: PathBuf,
    /// `--lane NAME` and the lane's own options, before the payload directory.
    pub lane_args: Vec<String>,
    pub payload_dir: PathBuf,
}

impl RunnerProcess {
    /// Put the payload where the runner looks for it (`payload_dir`, under the repository).
    pub fn prepare(
        runner: PathBuf,
        lane_args: Vec<String>,
        payload_dir: &str,
        payload: &Path,
    ) -> Result<Self> {
        Ok(RunnerProcess {
            runner,
            lane_args,
            payload_dir: build::stage_payload(payload_dir, payload)?,
        })
    }

    /// The runner's arguments: the lane's own, the payloads, then `runner_args` untouched.
    pub fn args(&self, runner_args: &[String]) -> Vec<String> {
        let mut args = self.lane_args.clone();
        args.push("--payload-dir".into());
        args.push(self.payload_dir.display().to_string());
        args.extend(runner_args.iter().cloned());
        args
    }

    /// The command line, for the run's record.
    pub fn command_line(&self, runner_args: &[String]) -> String {
        std::iter::once(self.runner.display().to_string())
            .chain(self.args(runner_args))
            .map(|arg| emulated::shell_quote(&arg))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Run the lane, handing every line of the runner's output to `on_line`.
    pub fn run(
        &self,
        runner_args: &[String],
        deadlines: Deadlines,
        on_line: impl FnMut(&str) -> Flow,
    ) -> Result<Ending> {
        let mut command = Command::new(&self.runner);
        command.args(self.args(runner_args));
        emulated::watch(command, deadlines, on_line)
            .with_context(|| format!("starting {}", self.runner.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_and_the_payloads_come_before_the_harness_arguments() {
        let lane = RunnerProcess {
            runner: "/r/mte-runner".into(),
            lane_args: ["--lane", "qemu", "--qemu", "/usr/bin/qemu-system-aarch64"]
                .map(String::from)
                .to_vec(),
            payload_dir: "/p".into(),
        };
        let args = lane.args(&["tags::".into(), "--exact".into()]);
        assert_eq!(
            args.join(" "),
            "--lane qemu --qemu /usr/bin/qemu-system-aarch64 --payload-dir /p tags:: --exact"
        );
        assert!(lane
            .command_line(&["a b".into()])
            .ends_with("--payload-dir /p 'a b'"));
    }
}
