//! The lanes: where the VMM under test runs. Each lane is one module behind [`LaneDriver`]
//! (what it needs set up, what names the run, how it prepares its runs), and each of its runs
//! is a [`LaneRun`] (what it records, how it executes). A new lane is a new module and one line
//! in [`driver`].

mod emulated;
mod host;
mod qemu;
mod qemu_kvm;

pub use emulated::Machine;
pub use host::device_facts;

use anyhow::Result;
use mte_results::{Feature, Lane};

use crate::artifacts::Incoming;
use crate::console::{Deadlines, Ending, Flow};
use crate::groundwork::Groundwork;
use crate::session::Source;

/// The module of `lane`.
pub fn driver(lane: Lane) -> &'static dyn LaneDriver {
    match lane {
        Lane::Emulated => &emulated::EmulatedLane,
        Lane::Qemu => &qemu::QemuLane,
        Lane::QemuKvm => &qemu_kvm::QemuKvmLane,
        Lane::Host => &host::HostLane,
    }
}

/// What a lane needs the run to set up before it can prepare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The kernels under test, fetched, each with its initramfs.
    pub kernels: bool,
    /// QEMU, checked (and installed where xtask may).
    pub qemu: bool,
    /// The runner built for this machine.
    pub host_runner: bool,
    /// Debian's arm64 QEMU with its libraries, for inside the emulated machine.
    pub guest_qemu: bool,
}

impl std::ops::BitOr for Needs {
    type Output = Needs;

    fn bitor(self, other: Needs) -> Needs {
        Needs {
            kernels: self.kernels || other.kernels,
            qemu: self.qemu || other.qemu,
            host_runner: self.host_runner || other.host_runner,
            guest_qemu: self.guest_qemu || other.guest_qemu,
        }
    }
}

/// A lane: what it needs, and how it gets its runs ready.
pub trait LaneDriver: Sync {
    /// What the run must set up for this lane.
    fn needs(&self) -> Needs;

    /// Whether `--lane all` takes this lane on a machine that is arm64 or not.
    fn in_all(&self, _arm64: bool) -> bool {
        true
    }

    /// What the lane says before anything is installed or built.
    fn announce(&self) {}

    /// What the lane adds to the run's id after the time and lanes (its kernels, its VMM).
    fn run_hint(&self, ground: &Groundwork) -> Vec<String>;

    /// The lane's runs, ready to execute, in order (the emulated lane: one per kernel).
    fn prepare(&self, ground: &Groundwork) -> Result<Vec<Box<dyn LaneRun>>>;
}

/// What the run records of a lane's run before its runner reports.
pub struct Recorded {
    /// Which boot of its lane the run is, counted from 1.
    pub boot: u32,
    /// The kernel as xtask can name it, until the runner reports its release.
    pub kernel: String,
    /// What carries the run's records.
    pub source: Source,
    /// What xtask knows of where the run happens, beyond what every lane records.
    pub facts: Vec<Feature>,
}

/// One run of a lane, in its own part of the run directory.
pub trait LaneRun {
    fn lane(&self) -> Lane;

    /// Its name where a command has several runs: `qemu lane`, `emulated lane on 6.1`.
    fn label(&self) -> String;

    /// The step heading printed as it starts.
    fn heading(&self) -> String;

    /// What the run's record holds of it before the runner says more.
    fn record(&self) -> Recorded;

    /// Whether the artifacts its runner sends go on to the lane's next run.
    fn hands_on_artifacts(&self) -> bool {
        false
    }

    /// Take what the run before it handed on, before it executes.
    fn receive(&mut self, _incoming: &Incoming) {}

    /// A fresh boot of the same kernel, numbered `boot`, that runs what this run would have
    /// run but the trials in `judged`: for a run whose kernel stopped its machine mid-run.
    /// `None` where the lane cannot boot again.
    fn resume(&self, _judged: &[String], _boot: u32) -> Result<Option<Box<dyn LaneRun>>> {
        Ok(None)
    }

    /// Start it and hand every line of its records' stream to `on_line` until it ends.
    fn execute(
        &self,
        deadlines: Deadlines,
        on_line: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Ending>;
}
