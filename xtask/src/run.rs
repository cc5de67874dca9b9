//! `run` and `bench`, in order: the lanes announced, what they need set up, their runs
//! prepared, then each run into one run directory, and the summary.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use mte_results::rundir::RunDir;
use mte_results::summary::RunSummary;
use mte_results::{Feature, Lane};

use crate::artifacts::{Incoming, Kept};
use crate::build::{relative, repo_root};
use crate::cli::Options;
use crate::compare;
use crate::console::Deadlines;
use crate::facts;
use crate::groundwork::{self, Groundwork};
use crate::lanes::{self, LaneDriver, LaneRun};
use crate::session::{Selection, Session};
use crate::ui;
use crate::Status;

/// Where run directories go.
pub const RESULTS_ROOT: &str = "target/mte-results";

/// A finished run.
pub struct Finished {
    /// The run's directory.
    pub dir: PathBuf,
    pub summary: RunSummary,
    pub selection: Selection,
    pub status: Status,
}

/// `run`: every lane asked for, one after the other (the emulated lane once per kernel), into
/// one run directory; then the summary. Errors before the run directory exists come back as
/// `Err`; after that, they are the run's error, recorded with whatever verdicts arrived, and
/// the other lanes and kernels still run.
pub fn run(options: &Options) -> Result<Finished> {
    let started = Instant::now();
    // A baseline that cannot be found stops the run before it starts, not after.
    if let Some(baseline) = &options.baseline {
        compare::resolve_baseline(baseline)?;
    }
    let drivers: Vec<&dyn LaneDriver> = options.lanes.iter().map(|&l| lanes::driver(l)).collect();
    drivers.iter().for_each(|driver| driver.announce());
    let needs = drivers
        .iter()
        .fold(Default::default(), |needs, d| needs | d.needs());
    let ground = groundwork::lay(options, needs)?;
    let mut runs = Vec::new();
    for driver in &drivers {
        runs.extend(driver.prepare(&ground)?);
    }
    let run_dir = create_run_dir(options, &ground)?;
    let parts = run_each(&mut runs, &ground, options, &run_dir, started);
    let (summary, selection) = merge(parts, started.elapsed().as_secs_f64() * 1000.0);
    Ok(finish(options, &run_dir, summary, selection))
}

/// The run directory, named by the lanes and by what they run on.
fn create_run_dir(options: &Options, ground: &Groundwork) -> Result<RunDir> {
    let names: Vec<&str> = options.lanes.iter().map(|l| l.name()).collect();
    // What the lanes run on: the kernels, QEMU, this host (the order of `Lane::ALL`).
    let mut hint: Vec<String> = Vec::new();
    let hints = (Lane::ALL.into_iter())
        .filter(|lane| options.lanes.contains(lane))
        .flat_map(|lane| lanes::driver(lane).run_hint(ground));
    for word in hints {
        // Lanes on the same kernels name them once.
        if !hint.contains(&word) {
            hint.push(word);
        }
    }
    let run_dir = RunDir::create(
        repo_root().join(RESULTS_ROOT),
        &names.join("+"),
        &hint.join("+"),
    )
    .context("creating the run directory")?;
    ui::step(&format!("run: {}", relative(run_dir.path()).display()));
    Ok(run_dir)
}

/// A lane's run as it ended, under the name its errors go by.
struct Part {
    label: String,
    summary: RunSummary,
    selection: Selection,
    /// The run's machine stopped (silent, or panicked) while checks ran.
    stopped_mid_run: bool,
    /// What the kernel under test said as it stopped the machine then.
    kernel_stopped: Option<String>,
}

/// How often one kernel's run is resumed on a fresh boot after its kernel stopped the machine:
/// a kernel that stops every boot is reported, not booted without end.
const MAX_RESUMES: usize = 3;

/// The host fact of a boot that a later boot resumed.
const RESUMED_BY: &str = "boot.resumed_by";

/// Each run in turn, under what is left of the whole run's deadline; what a run hands on (the
/// artifacts of one kernel) goes to the next. A run whose kernel stopped its machine while
/// checks ran goes on in a fresh boot of the same kernel with the checks that had not run.
fn run_each(
    runs: &mut [Box<dyn LaneRun>],
    ground: &Groundwork,
    options: &Options,
    run_dir: &RunDir,
    started: Instant,
) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut handed_on: Option<Incoming> = None;
    let mut boots_of_lane: HashMap<Lane, u32> = HashMap::new();
    for run in runs.iter() {
        *boots_of_lane.entry(run.lane()).or_default() += 1;
    }
    for run in runs {
        if let Some(incoming) = handed_on.take() {
            run.receive(&incoming);
        }
        let mut resumed: Option<Box<dyn LaneRun>> = None;
        let mut judged: Vec<String> = Vec::new();
        let mut kept_by_kernel: Vec<Kept> = Vec::new();
        for attempt in 0..=MAX_RESUMES {
            let this = resumed.as_deref().unwrap_or(run.as_ref());
            let deadlines =
                Deadlines::with_overall(options.timeout.saturating_sub(started.elapsed()));
            let facts = facts::common(&ground.tools, options);
            let (mut part, kept) = run_one(this, facts, run_dir, deadlines);
            kept_by_kernel.extend(kept);
            // What ran, to its verdict or into the stop, is not run again.
            judged.extend(part.summary.verdicts.iter().map(|v| v.test.clone()));
            judged.extend(
                (part.summary.not_run.iter())
                    .filter(|n| n.was_running)
                    .map(|n| n.test.clone()),
            );
            let next = match attempt < MAX_RESUMES {
                true => fresh_boot(&mut part, this, &judged, &mut boots_of_lane),
                false => None,
            };
            parts.push(part);
            match next {
                Some(next) => resumed = Some(next),
                None => break,
            }
        }
        if run.hands_on_artifacts() && !kept_by_kernel.is_empty() {
            handed_on = (parts.last())
                .and_then(|part| part.summary.environments.first())
                .map(|e| Incoming {
                    saved_on: e.kernel_release.clone(),
                    artifacts: kept_by_kernel,
                });
        }
    }
    parts
}

/// A fresh boot of `run`'s kernel for what `part`, the run's last boot, left when its machine
/// stopped while checks ran and some had not run yet; `None` when there is nothing to resume
/// or the lane cannot boot again.
fn fresh_boot(
    part: &mut Part,
    run: &dyn LaneRun,
    judged: &[String],
    boots_of_lane: &mut HashMap<Lane, u32>,
) -> Option<Box<dyn LaneRun>> {
    let never_ran = part.summary.not_run.iter().any(|n| !n.was_running);
    if !(part.stopped_mid_run && never_ran) {
        return None;
    }
    let boots = boots_of_lane.entry(run.lane()).or_default();
    let boot = *boots + 1;
    match run.resume(judged, boot) {
        Ok(Some(next)) => {
            *boots = boot;
            part.resumed_by(boot);
            Some(next)
        }
        Ok(None) => None,
        Err(e) => {
            ui::error(&format!("{}: no fresh boot: {e:#}", part.label));
            None
        }
    }
}

impl Part {
    /// A later boot runs what this one left: its checks that never ran are that boot's. When
    /// the kernel under test said what stopped the machine, the stop is its failure (the
    /// verdicts of the checks it stopped), not an error of the run; otherwise the error stays,
    /// saying where the rest went.
    fn resumed_by(&mut self, boot: u32) {
        self.summary.not_run.retain(|n| n.was_running);
        let resumed = format!("the checks that had not run went to boot {boot}");
        let why = match &self.kernel_stopped {
            Some(said) => {
                self.summary.error = None;
                format!("the kernel stopped this boot's machine while checks ran ({said})")
            }
            None => {
                let error = self.summary.error.take().unwrap_or_default();
                self.summary.error = Some(format!("{error}; {resumed}"));
                "this boot's machine stopped while checks ran".to_string()
            }
        };
        for environment in &mut self.summary.environments {
            environment
                .host
                .push(Feature::new(RESUMED_BY, format!("boot {boot}: {why}")));
        }
    }
}

/// One run as a session of the run directory, recorded with `facts` and what the lane adds;
/// with the artifacts its runner sent.
fn run_one(
    run: &dyn LaneRun,
    mut facts: Vec<Feature>,
    run_dir: &RunDir,
    deadlines: Deadlines,
) -> (Part, Vec<Kept>) {
    let recorded = run.record();
    facts.extend(recorded.facts);
    let mut session = Session::new(
        run_dir,
        run.lane(),
        recorded.boot,
        &recorded.kernel,
        recorded.source,
        facts,
        Instant::now(),
    );
    ui::step(&run.heading());
    let ended = run.execute(deadlines, &mut |line| session.on_line(line));
    let kept = session.take_kept_artifacts();
    let (summary, selection, stopped_mid_run, kernel_stopped) = match ended {
        Ok(ending) => {
            let mid_run = session.stopped_mid_run(&ending);
            let said = session.kernel_stopped_the_machine(&ending);
            let (summary, selection) = session.conclude(&ending);
            (summary, selection, mid_run, said)
        }
        Err(e) => {
            let (summary, selection) = session.conclude_with_error(format!("{e:#}"));
            (summary, selection, false, None)
        }
    };
    let label = run.label();
    (
        Part {
            label,
            summary,
            selection,
            stopped_mid_run,
            kernel_stopped,
        },
        kept,
    )
}

/// The lanes' summaries as one run: environments, verdicts and the checks that did not run in
/// lane order, and each lane's error named by its label (a lane, or a lane and its boot) when
/// there are several.
fn merge(parts: Vec<Part>, wall_ms: f64) -> (RunSummary, Selection) {
    let several = parts.len() > 1;
    let mut summary = RunSummary {
        wall_ms,
        ..RunSummary::default()
    };
    let mut selection: Option<Selection> = None;
    let mut errors = Vec::new();
    for Part {
        label,
        summary: part,
        selection: part_selection,
        ..
    } in parts
    {
        summary.environments.extend(part.environments);
        summary.verdicts.extend(part.verdicts);
        summary.benchmarks.extend(part.benchmarks);
        summary.not_run.extend(part.not_run);
        if let Some(error) = part.error {
            errors.push(if several {
                format!("{label}: {error}")
            } else {
                error
            });
        }
        selection = Some(match selection {
            None => part_selection,
            Some(so_far) => Selection {
                list: so_far.list || part_selection.list,
                words: so_far.words,
                all: so_far.all && part_selection.all,
                bench: so_far.bench || part_selection.bench,
            },
        });
    }
    if !errors.is_empty() {
        summary.error = Some(errors.join("; "));
    }
    (summary, selection.unwrap_or_default())
}

/// Write the reports, print the summary, and say how xtask ends: by the verdicts, or, with a
/// baseline, by whether the run regressed.
fn finish(
    options: &Options,
    run_dir: &RunDir,
    summary: RunSummary,
    selection: Selection,
) -> Finished {
    let dir = run_dir.path().to_path_buf();
    if let Err(e) = run_dir.finish(&summary) {
        ui::error(&format!("writing the reports: {e}"));
        return Finished {
            dir,
            summary,
            selection,
            status: Status::Error,
        };
    }
    ui::closing::run(&summary, &selection, &dir);
    let mut status = Status::of(&summary);
    if let (Some(baseline), false) = (&options.baseline, selection.list) {
        // Against a baseline, what counts is whether the run regressed: failures the baseline
        // had already are known ones.
        match compare::compare(baseline, &dir, options.thresholds) {
            Ok(regressed_or_not) if status != Status::Error => status = regressed_or_not,
            Ok(_) => {}
            Err(e) => {
                ui::error(&format!("comparing with {baseline}: {e:#}"));
                status = Status::Error;
            }
        }
    }
    Finished {
        dir,
        summary,
        selection,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{Ending, Flow};
    use crate::lanes::Recorded;
    use crate::testing::verdict;
    use mte_results::{NotRun, Outcome};
    use std::cell::RefCell;

    /// A lane run that only says how it would resume: with which trials judged, as which boot.
    struct Resumable {
        resumed: RefCell<Vec<(Vec<String>, u32)>>,
    }

    impl LaneRun for Resumable {
        fn lane(&self) -> Lane {
            Lane::Emulated
        }
        fn label(&self) -> String {
            "emulated lane, boot 2 (7.3)".into()
        }
        fn heading(&self) -> String {
            String::new()
        }
        fn record(&self) -> Recorded {
            unreachable!("not run")
        }
        fn resume(&self, judged: &[String], boot: u32) -> Result<Option<Box<dyn LaneRun>>> {
            self.resumed.borrow_mut().push((judged.to_vec(), boot));
            Ok(Some(Box::new(Resumable {
                resumed: RefCell::default(),
            })))
        }
        fn execute(&self, _: Deadlines, _: &mut dyn FnMut(&str) -> Flow) -> Result<Ending> {
            unreachable!("not run")
        }
    }

    fn stopped_part(kernel_said: Option<&str>) -> Part {
        let not_run = |test: &str, was_running: bool| NotRun {
            test: test.into(),
            lane: Lane::Emulated,
            boot: 2,
            kernel: "7.3".into(),
            was_running,
        };
        Part {
            label: "emulated lane, boot 2 (7.3)".into(),
            summary: RunSummary {
                environments: vec![mte_results::Environment::default()],
                verdicts: vec![verdict("tags::a", Outcome::Pass)],
                error: Some("the machine's runner said nothing for 60 s".into()),
                not_run: vec![not_run("races::b", true), not_run("tags::c", false)],
                ..RunSummary::default()
            },
            selection: Selection::default(),
            stopped_mid_run: true,
            kernel_stopped: kernel_said.map(String::from),
        }
    }

    #[test]
    fn a_boot_stopped_mid_run_resumes_with_what_never_started() {
        let run = Resumable {
            resumed: RefCell::default(),
        };
        let mut boots = HashMap::from([(Lane::Emulated, 2)]);
        let judged = vec!["tags::a".to_string(), "races::b".to_string()];
        // The kernel said nothing: the error stays and says where the rest went.
        let mut part = stopped_part(None);
        assert!(fresh_boot(&mut part, &run, &judged, &mut boots).is_some());
        assert_eq!(run.resumed.borrow()[0], (judged.clone(), 3));
        let error = part.summary.error.as_deref().unwrap();
        assert!(
            error.ends_with("; the checks that had not run went to boot 3"),
            "{error}"
        );
        let left: Vec<&str> = part
            .summary
            .not_run
            .iter()
            .map(|n| n.test.as_str())
            .collect();
        assert_eq!(left, ["races::b"]);
        let fact = &part.summary.environments[0].host[0];
        assert_eq!(fact.name, RESUMED_BY);
        assert!(fact
            .value
            .starts_with("boot 3: this boot's machine stopped"));
        // The kernel said what stopped it: its failure is in the verdicts, not the run's error.
        let mut part = stopped_part(Some("watchdog: BUG: soft lockup - CPU#0 stuck for 23s!"));
        assert!(fresh_boot(&mut part, &run, &judged, &mut boots).is_some());
        assert_eq!(run.resumed.borrow()[1].1, 4);
        assert_eq!(part.summary.error, None);
        // Nothing left that never started: no fresh boot.
        let mut part = stopped_part(None);
        part.summary.not_run.retain(|n| n.was_running);
        assert!(fresh_boot(&mut part, &run, &judged, &mut boots).is_none());
        assert_eq!(run.resumed.borrow().len(), 2);
    }

    #[test]
    fn lanes_merge_in_order_and_name_their_errors() {
        let part = |lane: Lane, error: Option<&str>, all: bool| {
            let mut v = verdict("tags::a", Outcome::Pass);
            v.lane = lane;
            let summary = RunSummary {
                environments: vec![mte_results::Environment {
                    lane,
                    ..Default::default()
                }],
                verdicts: vec![v],
                wall_ms: 1.0,
                error: error.map(String::from),
                ..RunSummary::default()
            };
            let selection = Selection {
                all,
                ..Selection::default()
            };
            Part {
                label: format!("{} lane", lane.name()),
                summary,
                selection,
                stopped_mid_run: false,
                kernel_stopped: None,
            }
        };
        let (summary, selection) = merge(
            vec![
                part(Lane::Emulated, None, true),
                part(Lane::Qemu, Some("the runner gave up"), false),
            ],
            5.0,
        );
        let lanes: Vec<Lane> = summary.verdicts.iter().map(|v| v.lane).collect();
        assert_eq!(lanes, [Lane::Emulated, Lane::Qemu]);
        assert_eq!(summary.environments.len(), 2);
        assert_eq!(
            summary.error.as_deref(),
            Some("qemu lane: the runner gave up")
        );
        assert!(!selection.all);
        // One lane keeps its error as it was.
        let (summary, _) = merge(vec![part(Lane::Qemu, Some("x"), true)], 1.0);
        assert_eq!(summary.error.as_deref(), Some("x"));
    }
}
