//! The suite's own speed: how many checks a run made and how fast, set against kvm-unit-tests'
//! mte group on the same kind of machine, and the targets the suite holds itself to.

use serde::Serialize;

use crate::model::{Environment, Lane, Outcome, Verdict};
use crate::summary::{format_duration, RunSummary};

/// A peer's run of its MTE checks: what the suite is set against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerRun {
    pub name: &'static str,
    pub entries: usize,
    pub checks: usize,
    pub wall_s: f64,
}

impl PeerRun {
    pub fn checks_per_second(&self) -> f64 {
        self.checks as f64 / self.wall_s
    }
}

/// kvm-unit-tests' mte group (arm/unittests.cfg: three entries, one QEMU boot each; six
/// report lines) under QEMU TCG on a 2-core x86_64 machine.
pub const KVM_UNIT_TESTS_MTE: PeerRun = PeerRun {
    name: "kvm-unit-tests' mte group",
    entries: 3,
    checks: 6,
    wall_s: 2.2,
};

/// The full default run (every check of the emulated lane, one kernel, after a warm build, on
/// a 2-core machine) takes less than this.
pub const TARGET_WALL_S: f64 = 60.0;
/// And makes at least this many times the peer's checks per second.
pub const TARGET_TIMES_PEER: f64 = 10.0;

/// One lane on one kernel: its checks and where its time went, from the timings xtask kept.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LaneSpeed {
    pub lane: Lane,
    pub kernel: String,
    pub checks: usize,
    /// From the start of the lane's machine (or runner) to its end.
    pub wall_s: Option<f64>,
    /// From the start of the machine to the runner's first record: the boot.
    pub boot_s: Option<f64>,
    /// The runner's own time for the checks.
    pub checks_s: Option<f64>,
    pub median_check_ms: f64,
    pub slowest: Vec<(String, f64)>,
}

/// A run's speed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuiteSpeed {
    /// Checks that ran (passed, failed or xfailed); skips are left out.
    pub checks: usize,
    pub skipped: usize,
    /// The whole run, as xtask timed it: tools, build, boots, checks, reports.
    pub wall_s: f64,
    pub checks_per_second: f64,
    pub median_check_ms: f64,
    /// Checks per second as a multiple of the peer's.
    pub times_peer: f64,
    pub lanes: Vec<LaneSpeed>,
    /// Whether the run is the one the targets are for: every check of the emulated lane on
    /// one kernel.
    pub full_default_run: bool,
    pub meets_wall_target: bool,
    pub meets_rate_target: bool,
}

/// The lane of the full default run, and how xtask records that the runner ran every check.
const DEFAULT_LANE: Lane = Lane::Emulated;
const SELECTION_FEATURE: &str = "runner.selection";
const EVERY_CHECK: &str = "every check";

/// The checks shown as the slowest of a lane.
const SLOWEST_SHOWN: usize = 5;

impl SuiteSpeed {
    /// The speed of a run of checks; `None` for a run without verdicts (a listing, a bench).
    pub fn of(summary: &RunSummary) -> Option<Self> {
        // A skipped check ran nothing; counting it would flatter the rate.
        let ran: Vec<&Verdict> = summary
            .verdicts
            .iter()
            .filter(|v| v.outcome != Outcome::Skip)
            .collect();
        let checks = ran.len();
        let skipped = summary.verdicts.len() - checks;
        if checks == 0 || summary.wall_ms <= 0.0 {
            return None;
        }
        let wall_s = summary.wall_ms / 1000.0;
        let checks_per_second = checks as f64 / wall_s;
        let lanes = (summary.environments.iter())
            .map(|env| LaneSpeed::of(env, &ran))
            .filter(|lane| lane.checks > 0)
            .collect();
        let times_peer = checks_per_second / KVM_UNIT_TESTS_MTE.checks_per_second();
        let full_default_run = match summary.environments.as_slice() {
            [only] => only.lane == DEFAULT_LANE && ran_every_check(only),
            _ => false,
        };
        Some(SuiteSpeed {
            checks,
            skipped,
            wall_s,
            checks_per_second,
            median_check_ms: median(ran.iter().map(|v| v.duration_ms)),
            times_peer,
            lanes,
            full_default_run,
            meets_wall_target: wall_s < TARGET_WALL_S,
            meets_rate_target: times_peer >= TARGET_TIMES_PEER,
        })
    }

    /// `suite speed: N checks in X s, Y checks/s, Z× kvm-unit-tests' mte group`.
    pub fn line(&self) -> String {
        let skipped = match self.skipped {
            0 => String::new(),
            n => format!(" ({n} skipped, not counted)"),
        };
        format!(
            "suite speed: {} checks{skipped} in {:.1} s, {:.1} checks/s, {:.1}× {} ({} checks in \
             {} s); median check {}",
            self.checks,
            self.wall_s,
            self.checks_per_second,
            self.times_peer,
            KVM_UNIT_TESTS_MTE.name,
            KVM_UNIT_TESTS_MTE.checks,
            KVM_UNIT_TESTS_MTE.wall_s,
            format_duration(self.median_check_ms)
        )
    }

    /// The targets in words, each with whether this run meets it; `None` for a run that is
    /// not the full default run, which they are not for.
    pub fn targets(&self) -> [(String, Option<bool>); 2] {
        let judged = |met: bool| self.full_default_run.then_some(met);
        [
            (
                format!(
                    "the full default run (every check of the emulated lane, one kernel, warm \
                     build, 2 cores) in under {TARGET_WALL_S:.0} s: this run took {:.1} s",
                    self.wall_s
                ),
                judged(self.meets_wall_target),
            ),
            (
                format!(
                    "at least {TARGET_TIMES_PEER:.0}× the checks per second of {} ({:.1} \
                     checks/s): this run made {:.1} checks/s ({:.1}×)",
                    KVM_UNIT_TESTS_MTE.name,
                    TARGET_TIMES_PEER * KVM_UNIT_TESTS_MTE.checks_per_second(),
                    self.checks_per_second,
                    self.times_peer
                ),
                judged(self.meets_rate_target),
            ),
        ]
    }
}

impl LaneSpeed {
    /// The lane of `env`: the checks of `ran` made there, and its timings as xtask recorded
    /// them.
    fn of(env: &Environment, ran: &[&Verdict]) -> Self {
        let mut durations: Vec<(String, f64)> = ran
            .iter()
            .filter(|v| v.lane == env.lane && v.boot == env.boot)
            .map(|v| (v.test.clone(), v.duration_ms))
            .collect();
        let timing = |name: &str| {
            env.host
                .iter()
                .find(|f| f.name == name)
                .and_then(|f| seconds(&f.value))
        };
        let median_check_ms = median(durations.iter().map(|(_, ms)| *ms));
        durations.sort_by(|a, b| b.1.total_cmp(&a.1));
        LaneSpeed {
            lane: env.lane,
            kernel: env.kernel_release.clone(),
            checks: durations.len(),
            wall_s: timing("timing.lane_wall"),
            boot_s: timing("timing.qemu_start_to_runner"),
            checks_s: timing("timing.checks_wall"),
            median_check_ms,
            slowest: durations.into_iter().take(SLOWEST_SHOWN).collect(),
        }
    }
}

/// Whether xtask recorded that the runner of `env` ran every check.
fn ran_every_check(env: &Environment) -> bool {
    (env.host.iter()).any(|f| f.name == SELECTION_FEATURE && f.value == EVERY_CHECK)
}

/// The median of some values; 0 for none.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// A timing as xtask records it (`4.39 s`, `25946 ms`), in seconds.
fn seconds(text: &str) -> Option<f64> {
    let (number, unit) = text.trim().split_once(' ')?;
    let value: f64 = number.parse().ok()?;
    match unit {
        "s" => Some(value),
        "ms" => Some(value / 1000.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Feature;

    fn summary(durations: &[f64], wall_ms: f64) -> RunSummary {
        let verdicts = durations
            .iter()
            .enumerate()
            .map(|(i, &ms)| crate::model::Verdict {
                duration_ms: ms,
                kernel: "6.12".into(),
                ..crate::fixtures::verdict(&format!("tags::c{i}"), Outcome::Pass, "ok")
            })
            .collect();
        RunSummary {
            benchmarks: Vec::new(),
            environments: vec![Environment {
                lane: Lane::Emulated,
                boot: 1,
                kernel_release: "6.12".into(),
                host: vec![
                    Feature::new("runner.selection", "every check"),
                    Feature::new("timing.lane_wall", "30.17 s"),
                    Feature::new("timing.qemu_start_to_runner", "4.39 s"),
                    Feature::new("timing.checks_wall", "25946 ms"),
                ],
                ..Environment::default()
            }],
            verdicts,
            wall_ms,
            error: None,
            not_run: Vec::new(),
        }
    }

    #[test]
    fn the_peer_makes_two_point_seven_checks_a_second() {
        assert!((KVM_UNIT_TESTS_MTE.checks_per_second() - 2.727).abs() < 1e-3);
    }

    #[test]
    fn a_run_s_speed_is_set_against_the_peer_and_the_targets() {
        let speed = SuiteSpeed::of(&summary(&[10.0, 30.0, 20.0, 5000.0], 2000.0)).unwrap();
        assert_eq!(speed.checks, 4);
        assert!((speed.checks_per_second - 2.0).abs() < 1e-12);
        assert_eq!(speed.median_check_ms, 25.0);
        assert!((speed.times_peer - 2.0 / (6.0 / 2.2)).abs() < 1e-12);
        assert!(speed.meets_wall_target && !speed.meets_rate_target);
        let lane = &speed.lanes[0];
        assert_eq!((lane.wall_s, lane.boot_s), (Some(30.17), Some(4.39)));
        assert_eq!(lane.checks_s, Some(25.946));
        assert_eq!(lane.slowest[0], ("tags::c3".to_string(), 5000.0));
        assert!(speed.line().starts_with(
            "suite speed: 4 checks in 2.0 s, 2.0 checks/s, 0.7× kvm-unit-tests' mte group"
        ));
        assert_eq!(speed.targets()[1].1, Some(false));
        assert_eq!(speed.targets()[0].1, Some(true));
        // A filtered run is measured, but the targets are not for it.
        let mut filtered = summary(&[10.0], 1000.0);
        filtered.environments[0].host[0].value = "tags::".into();
        assert_eq!(SuiteSpeed::of(&filtered).unwrap().targets()[0].1, None);
    }

    #[test]
    fn skipped_checks_do_not_count() {
        let mut run = summary(&[10.0, 30.0, 20.0], 1000.0);
        run.verdicts[0].outcome = Outcome::Skip;
        let speed = SuiteSpeed::of(&run).unwrap();
        assert_eq!((speed.checks, speed.skipped), (2, 1));
        assert!((speed.checks_per_second - 2.0).abs() < 1e-12);
        assert!(speed
            .line()
            .starts_with("suite speed: 2 checks (1 skipped, not counted) in 1.0 s"));
        for verdict in &mut run.verdicts {
            verdict.outcome = Outcome::Skip;
        }
        assert_eq!(SuiteSpeed::of(&run), None);
    }

    #[test]
    fn a_run_without_checks_has_no_speed() {
        assert_eq!(SuiteSpeed::of(&summary(&[], 1000.0)), None);
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(seconds("oops"), None);
    }
}
