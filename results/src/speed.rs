//! The suite's own speed: how many checks a run made and how fast, with the fault-injection
//! proofs counted apart from the checks, and the targets the suite holds itself to. The
//! targets are for the full default run (every check of the emulated lane on one kernel,
//! without proofs), and are judged only on such a run that completed: no run error, every
//! planned check reported, none failed. No other project's figures appear here: a peer's speed
//! is only worth stating when it was measured beside the suite, in the same run.

use serde::Serialize;

use crate::model::{Environment, Lane, Outcome, Verdict, FAULT_INJECTION_PROOFS};
use crate::summary::{format_duration, RunSummary};

/// The full default run (after a warm build, on a 2-core machine) takes less than this.
pub const TARGET_WALL_S: f64 = 10.0;
/// And its first verdict arrives this soon after the machine starts.
pub const TARGET_FIRST_VERDICT_S: f64 = 3.5;

/// One lane on one kernel: its checks and proofs, and where its time went, from the timings
/// xtask kept.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LaneSpeed {
    pub lane: Lane,
    pub kernel: String,
    pub checks: usize,
    pub proofs: usize,
    /// From the start of the lane's machine (or runner) to its end.
    pub wall_s: Option<f64>,
    /// From the start of the machine to the runner's first record: the boot.
    pub boot_s: Option<f64>,
    /// From the start of the machine to the first verdict.
    pub first_verdict_s: Option<f64>,
    /// The runner's own time for the checks and proofs.
    pub checks_s: Option<f64>,
    pub median_check_ms: f64,
    /// The slowest checks (proofs left out).
    pub slowest: Vec<(String, f64)>,
}

/// Whether a run's targets are judged, and if not, why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Judged {
    /// The full default run, complete: its targets are judged.
    Yes,
    /// A run the targets are not for (filtered, with proofs, several lanes or kernels).
    NotTheirRun,
    /// The full default run, but incomplete or failing: a speed that proves nothing.
    Incomplete(String),
}

/// A run's speed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuiteSpeed {
    /// Checks that ran (passed, failed or xfailed); proofs and skips are left out.
    pub checks: usize,
    /// Fault-injection proofs that ran, counted apart from the checks.
    pub proofs: usize,
    /// Checks and proofs that skipped, which ran nothing.
    pub skipped: usize,
    /// The whole run, as xtask timed it: tools, build, boots, checks, reports.
    pub wall_s: f64,
    /// The checks' own durations, summed over the test threads; likewise the proofs'.
    pub checks_time_s: f64,
    pub proofs_time_s: f64,
    pub median_check_ms: f64,
    pub median_proof_ms: f64,
    /// The first lane's first verdict, from the start of its machine.
    pub first_verdict_s: Option<f64>,
    pub lanes: Vec<LaneSpeed>,
    pub judged: Judged,
}

/// The lane of the full default run, and how xtask records that the runner ran every check.
const DEFAULT_LANE: Lane = Lane::Emulated;
const SELECTION_FEATURE: &str = "runner.selection";
const EVERY_CHECK: &str = "every check";

/// The checks shown as the slowest of a lane.
const SLOWEST_SHOWN: usize = 5;

fn is_proof(verdict: &Verdict) -> bool {
    verdict.test.starts_with(FAULT_INJECTION_PROOFS)
}

impl SuiteSpeed {
    /// The speed of a run of checks; `None` for a run in which nothing ran (a listing, a
    /// bench, a run of skips).
    pub fn of(summary: &RunSummary) -> Option<Self> {
        // A skipped check ran nothing; counting it would flatter the rate.
        let ran: Vec<&Verdict> = (summary.verdicts.iter())
            .filter(|v| v.outcome != Outcome::Skip)
            .collect();
        let (proofs, checks): (Vec<&Verdict>, Vec<&Verdict>) =
            ran.iter().partition(|v| is_proof(v));
        if ran.is_empty() || summary.wall_ms <= 0.0 {
            return None;
        }
        let total_s =
            |verdicts: &[&Verdict]| verdicts.iter().map(|v| v.duration_ms).sum::<f64>() / 1000.0;
        let lanes: Vec<LaneSpeed> = (summary.environments.iter())
            .map(|env| LaneSpeed::of(env, &ran))
            .filter(|lane| lane.checks + lane.proofs > 0)
            .collect();
        Some(SuiteSpeed {
            checks: checks.len(),
            proofs: proofs.len(),
            skipped: summary.verdicts.len() - ran.len(),
            wall_s: summary.wall_ms / 1000.0,
            checks_time_s: total_s(&checks),
            proofs_time_s: total_s(&proofs),
            median_check_ms: median(checks.iter().map(|v| v.duration_ms)),
            median_proof_ms: median(proofs.iter().map(|v| v.duration_ms)),
            first_verdict_s: lanes.first().and_then(|lane| lane.first_verdict_s),
            lanes,
            judged: judged(summary),
        })
    }

    /// `suite speed: N checks in X s, Y checks/s; median check Z; first verdict after T s`,
    /// and with proofs, their count and time apart.
    pub fn line(&self) -> String {
        let skipped = match self.skipped {
            0 => String::new(),
            n => format!(" ({n} skipped, not counted)"),
        };
        let first = self
            .first_verdict_s
            .map(|s| format!("; first verdict {s:.1} s after the machine started"))
            .unwrap_or_default();
        if self.proofs == 0 {
            return format!(
                "suite speed: {} checks{skipped} in {:.1} s, {:.1} checks/s; median check {}{first}",
                self.checks,
                self.wall_s,
                self.checks as f64 / self.wall_s,
                format_duration(self.median_check_ms),
            );
        }
        format!(
            "suite speed: {} checks and {} fault-injection proofs{skipped} in {:.1} s; the checks \
             took {:.1} s of test-thread time (median {}), the proofs {:.1} s (median {}){first}",
            self.checks,
            self.proofs,
            self.wall_s,
            self.checks_time_s,
            format_duration(self.median_check_ms),
            self.proofs_time_s,
            format_duration(self.median_proof_ms),
        )
    }

    /// The targets in words, each with whether this run meets it: `None` where the targets
    /// are not judged on this run (see [`SuiteSpeed::judged`]).
    pub fn targets(&self) -> [(String, Option<bool>); 2] {
        let judged = |met: bool| (self.judged == Judged::Yes).then_some(met);
        let first = self.first_verdict_s;
        [
            (
                format!(
                    "the full default run (every check of the emulated lane, one kernel, no \
                     proofs, warm build, 2 cores) in under {TARGET_WALL_S:.0} s: this run took \
                     {:.1} s",
                    self.wall_s
                ),
                judged(self.wall_s < TARGET_WALL_S),
            ),
            (
                format!(
                    "its first verdict under {TARGET_FIRST_VERDICT_S} s after the machine \
                     starts: {}",
                    first.map_or("not recorded".into(), |s| format!(
                        "this run's after {s:.1} s"
                    ))
                ),
                judged(first.is_some_and(|s| s < TARGET_FIRST_VERDICT_S)),
            ),
        ]
    }
}

/// Whether the targets are for `summary`, and whether it is complete enough to judge them.
fn judged(summary: &RunSummary) -> Judged {
    let full_default_run = match summary.environments.as_slice() {
        [only] => only.lane == DEFAULT_LANE && ran_every_check(only),
        _ => false,
    };
    if !full_default_run {
        return Judged::NotTheirRun;
    }
    if let Some(error) = &summary.error {
        return Judged::Incomplete(format!("the run ended with an error ({error})"));
    }
    let failed = (summary.verdicts.iter())
        .filter(|v| v.outcome == Outcome::Fail)
        .count();
    match failed {
        0 => Judged::Yes,
        n => Judged::Incomplete(format!(
            "{n} check{} failed: a run with failures says nothing of the suite's speed",
            if n == 1 { "" } else { "s" }
        )),
    }
}

impl LaneSpeed {
    /// The lane of `env`: what of `ran` was made there, and its timings as xtask recorded
    /// them.
    fn of(env: &Environment, ran: &[&Verdict]) -> Self {
        let here: Vec<&&Verdict> = (ran.iter())
            .filter(|v| v.lane == env.lane && v.boot == env.boot)
            .collect();
        let mut durations: Vec<(String, f64)> = (here.iter())
            .filter(|v| !is_proof(v))
            .map(|v| (v.test.clone(), v.duration_ms))
            .collect();
        let timing = |name: &str| {
            (env.host.iter())
                .find(|f| f.name == name)
                .and_then(|f| seconds(&f.value))
        };
        let median_check_ms = median(durations.iter().map(|(_, ms)| *ms));
        durations.sort_by(|a, b| b.1.total_cmp(&a.1));
        LaneSpeed {
            lane: env.lane,
            kernel: env.kernel_release.clone(),
            checks: durations.len(),
            proofs: here.len() - durations.len(),
            wall_s: timing("timing.lane_wall"),
            boot_s: timing("timing.qemu_start_to_runner"),
            first_verdict_s: timing("timing.qemu_start_to_first_verdict"),
            checks_s: timing("timing.checks_wall"),
            median_check_ms,
            slowest: durations.into_iter().take(SLOWEST_SHOWN).collect(),
        }
    }
}

/// Whether xtask recorded that the runner of `env` ran every check (and no proof).
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
                    Feature::new("timing.qemu_start_to_first_verdict", "4.52 s"),
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
    fn a_run_s_speed_is_set_against_the_targets() {
        let speed = SuiteSpeed::of(&summary(&[10.0, 30.0, 20.0, 5000.0], 2000.0)).unwrap();
        assert_eq!((speed.checks, speed.proofs), (4, 0));
        assert_eq!(speed.median_check_ms, 25.0);
        assert_eq!(speed.judged, Judged::Yes);
        let lane = &speed.lanes[0];
        assert_eq!((lane.wall_s, lane.boot_s), (Some(30.17), Some(4.39)));
        assert_eq!(lane.checks_s, Some(25.946));
        assert_eq!(lane.slowest[0], ("tags::c3".to_string(), 5000.0));
        assert_eq!(
            speed.line(),
            "suite speed: 4 checks in 2.0 s, 2.0 checks/s; median check 25.0 ms; first verdict \
             4.5 s after the machine started"
        );
        assert!(!speed.line().contains("kvm-unit-tests"));
        let [wall, first] = speed.targets();
        assert_eq!((wall.1, first.1), (Some(true), Some(false)));
        // A filtered run is measured, but the targets are not for it.
        let mut filtered = summary(&[10.0], 1000.0);
        filtered.environments[0].host[0].value = "tags::".into();
        let speed = SuiteSpeed::of(&filtered).unwrap();
        assert_eq!(speed.judged, Judged::NotTheirRun);
        assert_eq!(speed.targets()[0].1, None);
    }

    #[test]
    fn proofs_are_counted_apart_and_keep_the_targets_away() {
        let mut run = summary(&[10.0, 30.0, 20.0], 1000.0);
        run.verdicts[2].test = "fault_injection::corrupt_tag::tags::c0".into();
        run.verdicts[2].duration_ms = 500.0;
        run.environments[0].host[0].value = "every check with their fault-injection proofs".into();
        let speed = SuiteSpeed::of(&run).unwrap();
        assert_eq!((speed.checks, speed.proofs), (2, 1));
        assert_eq!(speed.median_check_ms, 20.0);
        assert_eq!((speed.lanes[0].checks, speed.lanes[0].proofs), (2, 1));
        assert!(speed.line().starts_with(
            "suite speed: 2 checks and 1 fault-injection proofs in 1.0 s; the checks took 0.0 s"
        ));
        assert!(speed.line().contains("the proofs 0.5 s (median 500.0 ms)"));
        assert_eq!(speed.judged, Judged::NotTheirRun);
    }

    #[test]
    fn an_incomplete_or_failing_run_never_meets_a_target() {
        // Killed midway: the run's error says so, and the fast wall proves nothing.
        let mut killed = summary(&[10.0; 40], 2000.0);
        killed.error = Some("truncated stream: after 40 of 201 verdicts".into());
        let speed = SuiteSpeed::of(&killed).unwrap();
        assert!(matches!(&speed.judged, Judged::Incomplete(why) if why.contains("40 of 201")));
        assert!(speed.targets().iter().all(|(_, met)| met.is_none()));
        // Every check failed, fast.
        let mut failed = summary(&[1.0; 3], 500.0);
        for verdict in &mut failed.verdicts {
            verdict.outcome = Outcome::Fail;
        }
        let speed = SuiteSpeed::of(&failed).unwrap();
        assert!(
            matches!(&speed.judged, Judged::Incomplete(why) if why.starts_with("3 checks failed"))
        );
        assert!(speed.targets().iter().all(|(_, met)| met.is_none()));
    }

    #[test]
    fn skipped_checks_do_not_count() {
        let mut run = summary(&[10.0, 30.0, 20.0], 1000.0);
        run.verdicts[0].outcome = Outcome::Skip;
        let speed = SuiteSpeed::of(&run).unwrap();
        assert_eq!((speed.checks, speed.skipped), (2, 1));
        assert!(speed
            .line()
            .starts_with("suite speed: 2 checks (1 skipped, not counted) in 1.0 s, 2.0 checks/s"));
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
