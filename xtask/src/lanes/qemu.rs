//! The qemu lane: QEMU is the VMM under test. The runner, built for this machine, boots every
//! payload directly in qemu-system-aarch64 and drives it over the gdbstub.

use anyhow::Result;
use mte_results::Lane;

use super::{LaneDriver, LaneRun, Needs};
use crate::groundwork::Groundwork;
use crate::runner_process::{self, ProcessLane};

pub struct QemuLane;

impl LaneDriver for QemuLane {
    fn needs(&self) -> Needs {
        Needs {
            kernels: false,
            qemu: true,
            host_runner: true,
            guest_qemu: false,
        }
    }

    /// QEMU's version, where no kernel of the emulated lane names the run.
    fn run_hint(&self, ground: &Groundwork) -> Vec<String> {
        match ground.kernels.is_empty() {
            true => vec![format!("qemu-{}", ground.tools.qemu().version)],
            false => Vec::new(),
        }
    }

    fn prepare(&self, ground: &Groundwork) -> Result<Vec<Box<dyn LaneRun>>> {
        let qemu = ground.tools.qemu();
        let lane = ProcessLane {
            lane: Lane::Qemu,
            lane_args: vec![
                "--lane".into(),
                Lane::Qemu.to_string(),
                "--qemu".into(),
                qemu.path.display().to_string(),
            ],
            payload_dir: "target/mte-qemu/payloads",
            heading: format!(
                "qemu lane: QEMU {} is the VMM, one process per guest",
                qemu.version
            ),
            kernel: format!("qemu-{}", qemu.version),
            facts: Vec::new(),
        };
        runner_process::prepare(lane, ground)
    }
}
