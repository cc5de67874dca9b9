//! The qemu lane: QEMU is the VMM under test. The runner, built for this machine, boots every
//! payload directly in qemu-system-aarch64 and drives it over the gdbstub; its records come back
//! on its stdout, read like the emulated machine's console.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build;
use crate::emulated::{self, Deadlines, Ending, Flow};
use crate::error::{Context, Result};

/// Where the qemu lane's runner finds its payloads.
const PAYLOAD_DIR: &str = "target/mte-qemu/payloads";

/// The runner on this machine and what it drives.
#[derive(Clone, Debug)]
pub struct QemuLane {
    pub runner: PathBuf,
    pub qemu: PathBuf,
    pub payload_dir: PathBuf,
}

impl QemuLane {
    /// Put the payload where the runner looks for it.
    pub fn prepare(runner: PathBuf, qemu: PathBuf, payload: &Path) -> Result<Self> {
        Ok(QemuLane {
            runner,
            qemu,
            payload_dir: build::stage_payload(PAYLOAD_DIR, payload)?,
        })
    }

    /// The runner's arguments: the lane's own, then `runner_args` untouched.
    pub fn args(&self, runner_args: &[String]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--lane".into(),
            "qemu".into(),
            "--qemu".into(),
            self.qemu.display().to_string(),
            "--payload-dir".into(),
            self.payload_dir.display().to_string(),
        ];
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
    fn the_runner_is_told_its_lane_qemu_and_payloads_before_the_harness_arguments() {
        let lane = QemuLane {
            runner: "/r/mte-runner".into(),
            qemu: "/usr/bin/qemu-system-aarch64".into(),
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
