//! The qemu lane: QEMU is the VMM under test. The runner, built for this machine, boots every
//! payload directly in qemu-system-aarch64 and drives it over the gdbstub.

use mte_results::Lane;
use std::path::{Path, PathBuf};

use crate::runner_process::RunnerProcess;
use anyhow::Result;

/// Where the qemu lane's runner finds its payloads.
const PAYLOAD_DIR: &str = "target/mte-qemu/payloads";

/// The qemu lane's runner, driving `qemu`.
pub fn prepare(runner: PathBuf, qemu: &Path, payload: &Path) -> Result<RunnerProcess> {
    let lane_args = vec![
        "--lane".into(),
        Lane::Qemu.to_string(),
        "--qemu".into(),
        qemu.display().to_string(),
    ];
    RunnerProcess::prepare(runner, lane_args, PAYLOAD_DIR, payload)
}
