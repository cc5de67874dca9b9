//! Several run directories as one run: the shards of a fleet, or lanes run on different
//! machines, merged into one set of verdicts and environments with one report.
//!
//! Verdicts keep the order of the runs given, then their own. Where a verdict ran is its
//! column: its lane, its boot of the lane and that boot's kernel; the shards of one boot merge
//! into it, and two boots of one kernel (`--kernel 6.1,6.12,6.1`) stay two. A check that more
//! than one run reported in the same column (overlapping shards, or one run given twice) keeps
//! its first verdict, with a warning. Environments of the same column are kept once: the first,
//! with the ids of every run they came from added as a host fact, and a fact that differs
//! between them (the shard, the lane's timings) holding each run's value in turn, `; ` between
//! them.

use crate::boot::BootKey;
use crate::model::{Environment, Feature, Verdict};
use std::collections::HashSet;

use crate::rundir::{LoadedRun, RunInfo};
use crate::SCHEMA_VERSION;

/// The host fact that names the runs a merged environment came from.
pub const MERGED_FROM: &str = "merged.from";

/// Runs merged into one.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    pub info: RunInfo,
    pub verdicts: Vec<Verdict>,
    /// What a person should know: duplicates dropped, runs that ended early.
    pub warnings: Vec<String>,
}

/// Merge `runs` into a run called `run_id`.
pub fn merge(runs: &[LoadedRun], run_id: &str) -> Merged {
    let (verdicts, duplicates) = merge_verdicts(runs);
    let mut warnings: Vec<String> = runs.iter().flat_map(|r| r.warnings.clone()).collect();
    if duplicates > 0 {
        warnings.push(format!(
            "{duplicates} verdict{} reported by more than one run (the same check, lane, boot and \
             kernel) kept the first run's: do the shards overlap, or was a run given twice?",
            if duplicates == 1 { " was" } else { "s were" }
        ));
    }
    let errors: Vec<String> = (runs.iter())
        .filter_map(|run| Some(format!("{}: {}", run.info.run_id, run.summary().error?)))
        .collect();
    // RFC 3339 UTC times sort as text.
    let started = runs.iter().map(|r| r.info.started.clone()).min();
    let finished = runs
        .iter()
        .map(|r| r.info.finished.clone())
        .collect::<Option<Vec<String>>>()
        .and_then(|all| all.into_iter().max());
    // Shards run side by side: the merged run took as long as its longest part.
    let wall_ms = (runs.iter().filter_map(|r| r.info.wall_ms)).reduce(f64::max);
    // A check one run did not get to may have run in another (a shard given again, say).
    let ran: HashSet<(BootKey, &str)> = (verdicts.iter())
        .map(|v| (BootKey::of(v), v.test.as_str()))
        .collect();
    let mut listed: HashSet<(BootKey, &str)> = HashSet::new();
    let not_run = (runs.iter().flat_map(|run| &run.info.not_run))
        .filter(|n| {
            let key = (n.key(), n.test.as_str());
            !ran.contains(&key) && listed.insert(key)
        })
        .cloned()
        .collect();
    let info = RunInfo {
        schema: SCHEMA_VERSION,
        run_id: run_id.to_string(),
        started: started.unwrap_or_default(),
        finished,
        wall_ms,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        environments: merge_environments(runs),
        not_run,
    };
    Merged {
        info,
        verdicts,
        warnings,
    }
}

/// The verdicts of every run, a check reported again in the same column left out; and how many
/// were.
fn merge_verdicts(runs: &[LoadedRun]) -> (Vec<Verdict>, usize) {
    let mut seen: HashSet<(BootKey, &str)> = HashSet::new();
    let mut verdicts: Vec<Verdict> = Vec::new();
    let mut duplicates = 0;
    for v in runs.iter().flat_map(|run| &run.verdicts) {
        if seen.insert((BootKey::of(v), v.test.as_str())) {
            verdicts.push(v.clone());
        } else {
            duplicates += 1;
        }
    }
    (verdicts, duplicates)
}

/// One environment a column: the first run's, with the facts of the others joined in and the
/// runs it came from named.
fn merge_environments(runs: &[LoadedRun]) -> Vec<Environment> {
    let mut environments: Vec<(Environment, Vec<&str>)> = Vec::new();
    for run in runs {
        for env in &run.info.environments {
            let same = |(e, _): &&mut (Environment, Vec<&str>)| {
                BootKey::of_environment(e) == BootKey::of_environment(env)
            };
            match environments.iter_mut().find(same) {
                Some((kept, from)) => {
                    from.push(&run.info.run_id);
                    join_facts(&mut kept.host, &env.host);
                    join_facts(&mut kept.features, &env.features);
                }
                None => environments.push((env.clone(), vec![&run.info.run_id])),
            }
        }
    }
    environments
        .into_iter()
        .map(|(mut env, from)| {
            env.host.push(Feature::new(MERGED_FROM, from.join(", ")));
            env
        })
        .collect()
}

/// Add `more` to `facts`: a new name as it is, another value of a known name after the values
/// already there.
fn join_facts(facts: &mut Vec<Feature>, more: &[Feature]) {
    for fact in more {
        match facts.iter_mut().find(|f| f.name == fact.name) {
            Some(known) if known.value.split("; ").any(|v| v == fact.value) => {}
            Some(known) => {
                known.value.push_str("; ");
                known.value.push_str(&fact.value);
            }
            None => facts.push(fact.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lane;
    use crate::model::Outcome;
    use std::path::PathBuf;

    fn loaded(id: &str, started: &str, verdicts: Vec<Verdict>, error: Option<&str>) -> LoadedRun {
        LoadedRun {
            benchmarks: Vec::new(),
            dir: PathBuf::from(id),
            info: RunInfo {
                schema: SCHEMA_VERSION,
                run_id: id.into(),
                started: started.into(),
                finished: Some(started.replace("T00", "T01")),
                wall_ms: Some(if id.ends_with('1') { 10.0 } else { 20.0 }),
                error: error.map(String::from),
                not_run: vec![],
                environments: vec![Environment {
                    lane: Lane::Host,
                    boot: 1,
                    kernel_release: "6.12.95".into(),
                    host: vec![
                        Feature::new("shard", format!("{}/2", &id[id.len() - 1..])),
                        Feature::new("host.machine", "lab-7"),
                    ],
                    ..Environment::default()
                }],
            },
            verdicts,
            warnings: vec![],
        }
    }

    fn v(test: &str) -> Verdict {
        Verdict {
            lane: Lane::Host,
            ..crate::fixtures::verdict(test, Outcome::Pass, "ok")
        }
    }

    #[test]
    fn shards_merge_into_one_run() {
        let merged = merge(
            &[
                loaded("shard1", "2026-11-22T00:00:05Z", vec![v("a"), v("c")], None),
                loaded("shard2", "2026-11-22T00:00:01Z", vec![v("b")], None),
            ],
            "merged",
        );
        let tests: Vec<&str> = merged.verdicts.iter().map(|v| v.test.as_str()).collect();
        assert_eq!(tests, ["a", "c", "b"]);
        assert_eq!(merged.info.run_id, "merged");
        assert_eq!(merged.info.started, "2026-11-22T00:00:01Z");
        assert_eq!(
            merged.info.finished.as_deref(),
            Some("2026-11-22T01:00:05Z")
        );
        assert_eq!(merged.info.wall_ms, Some(20.0));
        assert_eq!(merged.info.error, None);
        assert_eq!(merged.info.environments.len(), 1);
        let from = merged.info.environments[0].host.last().unwrap();
        assert_eq!(
            (from.name.as_str(), from.value.as_str()),
            (MERGED_FROM, "shard1, shard2")
        );
        assert!(merged.warnings.is_empty());
    }

    #[test]
    fn a_kernel_booted_twice_keeps_both_boots() {
        let at = |boot: u32, kernel: &str, test: &str| Verdict {
            boot,
            kernel: kernel.into(),
            ..v(test)
        };
        let run = loaded(
            "run1",
            "2026-11-22T00:00:00Z",
            vec![at(1, "6.1", "a"), at(2, "6.12", "a"), at(3, "6.1", "a")],
            None,
        );
        let merged = merge(std::slice::from_ref(&run), "m");
        assert_eq!(merged.verdicts.len(), 3);
        assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
        // Shards of the same boots merge into them.
        let shard = loaded(
            "run2",
            "2026-11-22T00:00:00Z",
            vec![at(1, "6.1", "b"), at(3, "6.1", "b")],
            None,
        );
        let merged = merge(&[run.clone(), shard], "m");
        assert_eq!(merged.verdicts.len(), 5);
        assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
        // The same run twice is a duplicate of every verdict.
        let merged = merge(&[run.clone(), run], "m");
        assert_eq!(merged.verdicts.len(), 3);
        assert!(merged.warnings[0].starts_with("3 verdicts were reported by more than one run"));
    }

    #[test]
    fn a_check_that_did_not_run_is_listed_once_unless_another_run_has_it() {
        let missing = |test: &str| crate::model::NotRun {
            test: test.into(),
            lane: Lane::Host,
            boot: 1,
            kernel: "6.12.95".into(),
            was_running: false,
        };
        let mut stopped = loaded("shard1", "2026-11-22T00:00:00Z", vec![v("a")], Some("hung"));
        stopped.info.not_run = vec![missing("b"), missing("c")];
        let other = loaded("shard2", "2026-11-22T00:00:00Z", vec![v("c")], None);
        let merged = merge(&[stopped.clone(), stopped, other], "m");
        let not_run: Vec<&str> = merged
            .info
            .not_run
            .iter()
            .map(|n| n.test.as_str())
            .collect();
        assert_eq!(not_run, ["b"]);
    }

    #[test]
    fn overlaps_and_errors_are_told() {
        let merged = merge(
            &[
                loaded("shard1", "2026-11-22T00:00:00Z", vec![v("a")], None),
                loaded(
                    "shard2",
                    "2026-11-22T00:00:00Z",
                    vec![v("a")],
                    Some("panic"),
                ),
            ],
            "m",
        );
        assert_eq!(merged.verdicts.len(), 1);
        assert_eq!(merged.info.error.as_deref(), Some("shard2: panic"));
        assert!(merged.warnings[0].starts_with("1 verdict was reported by more than one run"));
    }
}
