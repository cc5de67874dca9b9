//! One run's record stream, as it arrives from the console: every line into `console.log`,
//! every verdict onto disk and the terminal at once, and at the end the run's summary and
//! what it means for the exit status.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mte_results::bench::Benchmark;
use mte_results::kernel_log;
use mte_results::rundir::RunDir;
use mte_results::shard::check_of;
use mte_results::stream::{parse_line, Line, Record, ALIVE_EVERY};
use mte_results::summary::RunSummary;
use mte_results::text::one_line;
use mte_results::{
    Environment, Evidence, Feature, KernelLine, Lane, NotRun, Outcome, Tally, Verdict,
    FAULT_INJECTION_PROOFS, SCHEMA_VERSION,
};

use crate::artifacts::{self, Kept};
use crate::console::{End, Ending, Flow};
use crate::host_load::{self, PressureClock};
use crate::ui::progress;

/// Which checks the runner selected, as its Hello record says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// `--list`: the runner lists check names instead of running checks.
    pub list: bool,
    /// The selection in words; empty when every check was selected.
    pub words: String,
    /// Every check the runner knows was selected to run.
    pub all: bool,
    /// The runner runs the performance suite: benchmarks instead of checks.
    pub bench: bool,
}

/// What carries a lane's records to xtask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The emulated machine's console: QEMU exits 0 once the runner powers the machine off.
    Machine,
    /// The runner as a process on this machine: it exits 0, or 101 when a check failed.
    RunnerProcess,
}

/// The features of run.json that say how busy the host was when the lane started and ended.
const LOAD_AT_START: &str = "host.load_at_start";
const LOAD_AT_END: &str = "host.load_at_end";

/// How many lines of the kernel's report of a stuck machine or a panic the checks it stopped
/// keep as evidence: the report and its backtrace.
const KERNEL_REPORT_LINES: usize = 60;

/// What the kernel prints first when it panics.
const KERNEL_PANIC: &str = "Kernel panic";

/// The runner's exit status when it ran to its end and a check failed (as libtest's).
const RUNNER_EXIT_CHECK_FAILED: i32 = 101;

impl Source {
    fn process(self) -> &'static str {
        match self {
            Source::Machine => "QEMU",
            Source::RunnerProcess => "the runner",
        }
    }

    /// Whether `status` is how this source ends a run that reported all it had.
    fn clean_exit(self, status: &std::process::ExitStatus) -> bool {
        status.success()
            || (self == Source::RunnerProcess && status.code() == Some(RUNNER_EXIT_CHECK_FAILED))
    }
}

/// A lane's run in progress.
pub struct Session<'a> {
    run: &'a RunDir,
    source: Source,
    selection: Selection,
    started: Instant,
    environment: Environment,
    planned: Option<usize>,
    first_record_after: Option<Duration>,
    first_verdict_after: Option<Duration>,
    verdicts: Vec<Verdict>,
    benchmarks: Vec<Benchmark>,
    done: Option<Tally>,
    /// The runner's own wall time for the checks, from its Done record.
    checks_wall_ms: Option<f64>,
    /// Why the runner gave up, from its Abort record.
    aborted: Option<String>,
    /// What the lane's machine or VMM lacks, from the Hello record: a run error.
    setup_error: Option<String>,
    /// The planned checks by name, from the Hello record.
    planned_checks: Vec<String>,
    /// Checks started and not yet reported, in the order they started.
    running: Vec<String>,
    /// When each check started.
    started_at: HashMap<String, Instant>,
    /// The kernel's first report of a stuck CPU or task on the console (a soft lockup, an RCU
    /// stall, a hung task): what a machine that went silent was doing.
    kernel_stuck: Option<String>,
    /// The console's text from that report (or from a panic) on, for the evidence of the
    /// checks the kernel stopped.
    kernel_report: Vec<String>,
    /// Failures so far, for the progress lines.
    failed: usize,
    corrupt: Vec<String>,
    write_error: Option<String>,
    /// Artifacts the runner sent, kept in the run directory, for the run's next kernel.
    kept: Vec<Kept>,
    /// The host's CPU pressure from one benchmark's record to the next.
    pressure: PressureClock,
}

impl<'a> Session<'a> {
    /// `host` holds what xtask knows of the machine and the emulator; it is kept in every
    /// environment this run writes. `boot` is which boot of its lane this is (from 1), stamped
    /// on the environment and on every verdict, which the runner sends without it. Until the
    /// runner says hello, the run's record holds these facts under `kernel`, xtask's name for
    /// the kernel.
    pub fn new(
        run: &'a RunDir,
        lane: Lane,
        boot: u32,
        kernel: &str,
        source: Source,
        mut host: Vec<Feature>,
        started: Instant,
    ) -> Self {
        host.push(Feature::new(LOAD_AT_START, host_load::describe_now()));
        let environment = Environment {
            lane,
            boot,
            kernel_release: kernel.into(),
            host,
            ..Environment::default()
        };
        let mut write_error = None;
        if let Err(e) = run.write_environment(&environment) {
            write_error = Some(e.to_string());
        }
        Session {
            run,
            source,
            selection: Selection::default(),
            started,
            environment,
            planned: None,
            first_record_after: None,
            first_verdict_after: None,
            verdicts: Vec::new(),
            benchmarks: Vec::new(),
            done: None,
            checks_wall_ms: None,
            aborted: None,
            setup_error: None,
            planned_checks: Vec::new(),
            running: Vec::new(),
            started_at: HashMap::new(),
            kernel_stuck: None,
            kernel_report: Vec::new(),
            failed: 0,
            corrupt: Vec::new(),
            write_error,
            kept: Vec::new(),
            pressure: PressureClock::start(),
        }
    }

    /// The artifacts kept so far (the next kernel's incoming files), taken out of the session.
    pub fn take_kept_artifacts(&mut self) -> Vec<Kept> {
        std::mem::take(&mut self.kept)
    }

    /// Take one console line.
    pub fn on_line(&mut self, line: &str) -> Flow {
        if let Err(e) = self.run.append_log(line) {
            self.note_write_error(e);
        }
        match parse_line(line) {
            Line::Text => {
                self.on_text(line);
                Flow::Continue
            }
            Line::Corrupt(reason) => {
                progress::corrupt_record(&reason);
                self.corrupt.push(reason);
                Flow::Continue
            }
            Line::Record(record) => {
                self.first_record_after
                    .get_or_insert_with(|| self.started.elapsed());
                self.on_record(*record)
            }
        }
    }

    /// Console text: the kernel's report of a stuck CPU or task, or of a panic, is kept from
    /// its first line on.
    fn on_text(&mut self, line: &str) {
        if self.kernel_stuck.is_none() && kernel_log::reports_stuck(line) {
            self.kernel_stuck = Some(one_line(without_timestamp(line)));
        }
        let reporting = !self.kernel_report.is_empty()
            || self.kernel_stuck.is_some()
            || line.contains(KERNEL_PANIC);
        if reporting && self.kernel_report.len() < KERNEL_REPORT_LINES {
            self.kernel_report.push(one_line(line));
        }
    }

    fn on_record(&mut self, record: Record) -> Flow {
        match record {
            Record::Hello {
                environment,
                planned,
                available,
                list,
                selection,
                bench,
                setup_error,
                checks,
                ..
            } => {
                let selection = Selection {
                    list,
                    all: !list && planned == available,
                    words: selection,
                    bench,
                };
                self.setup_error = setup_error;
                self.planned_checks = checks;
                self.on_hello(environment, selection, planned);
            }
            // Checks start only while the runner says it is alive: the beat is promised from
            // the first start on, even if the machine stops before the first alive record.
            Record::Started { test } => {
                self.started_at.insert(test.clone(), Instant::now());
                self.running.push(test);
                return Flow::AliveEvery(ALIVE_EVERY);
            }
            Record::Alive => return Flow::AliveEvery(ALIVE_EVERY),
            Record::Verdict(verdict) => self.on_verdict(verdict),
            Record::Artifact { name, bytes_base64 } => self.on_artifact(&name, &bytes_base64),
            Record::KernelLog { lines } => self.on_kernel_log(&lines),
            Record::Benchmark(benchmark) => self.on_benchmark(*benchmark),
            // Asked for a list, the runner sends it as log records.
            Record::Log { text } => progress::runner_log(&text, self.selection.list),
            Record::Abort { reason } => {
                self.aborted = Some(reason);
                return Flow::Finished;
            }
            Record::Done { tally, wall_ms } => {
                self.done = Some(tally);
                self.checks_wall_ms = Some(wall_ms);
                return Flow::Finished;
            }
        }
        Flow::Continue
    }

    /// The runner's environment replaces what xtask recorded for the lane, keeping xtask's
    /// facts and the selection (so that a merge of shards says which each was).
    fn on_hello(&mut self, environment: Environment, selection: Selection, planned: usize) {
        let mut host = std::mem::take(&mut self.environment.host);
        // "with their fault-injection proofs" alone qualifies every check.
        let selected = match selection.words.as_str() {
            "" => "every check".to_string(),
            words if words.starts_with("with ") => format!("every check {words}"),
            words => words.to_string(),
        };
        host.push(Feature::new("runner.selection", selected));
        let boot = self.environment.boot;
        self.environment = Environment {
            boot,
            host,
            ..environment
        };
        self.planned = Some(planned);
        self.selection = selection;
        // The first benchmark's interval starts when the runner is up, after the boot.
        self.pressure = PressureClock::start();
        if let Err(e) = self.run.write_environment(&self.environment) {
            self.note_write_error(e);
        }
        let after = self.first_record_after.unwrap_or_default();
        progress::runner_up(after, &self.environment, &self.selection, planned);
        if let Some(lacks) = &self.setup_error {
            progress::lane_lacks(lacks);
        }
    }

    fn on_verdict(&mut self, mut verdict: Verdict) {
        verdict.boot = self.environment.boot;
        self.running.retain(|test| *test != verdict.test);
        self.started_at.remove(&verdict.test);
        self.first_verdict_after
            .get_or_insert_with(|| self.started.elapsed());
        if let Err(e) = self.run.append_verdict(&verdict) {
            self.note_write_error(e);
        }
        if verdict.outcome == Outcome::Fail {
            self.failed += 1;
        }
        let at = progress::Position {
            done: self.verdicts.len() + 1,
            planned: self.planned,
            environment: &self.environment,
            failed: self.failed,
        };
        progress::verdict(&at, &verdict);
        self.verdicts.push(verdict);
    }

    fn on_artifact(&mut self, name: &str, bytes_base64: &str) {
        let (boot, release) = (self.environment.boot, &self.environment.kernel_release);
        match artifacts::keep(self.run.path(), boot, release, name, bytes_base64) {
            Ok(kept) => {
                progress::artifact_kept(&kept);
                self.kept.push(kept);
            }
            Err(e) => {
                progress::artifact_not_kept(&e);
                self.corrupt.push(e);
            }
        }
    }

    /// The boot's kernel log goes to its own file, which the environment names (the report
    /// links it).
    fn on_kernel_log(&mut self, lines: &[String]) {
        let (boot, release) = (self.environment.boot, &self.environment.kernel_release);
        let file = kernel_log::file_name(boot, release);
        if let Err(e) = self.run.append_kernel_log(&file, lines) {
            self.note_write_error(e);
            return;
        }
        let host = &mut self.environment.host;
        if !host.iter().any(|f| f.name == kernel_log::KERNEL_LOG_FACT) {
            host.push(Feature::new(kernel_log::KERNEL_LOG_FACT, file));
            if let Err(e) = self.run.write_environment(&self.environment) {
                self.note_write_error(e);
            }
        }
    }

    fn on_benchmark(&mut self, mut benchmark: Benchmark) {
        benchmark.host_cpu_pressure = self.pressure.share_since_last();
        if let Err(e) = self.run.append_benchmark(&benchmark) {
            self.note_write_error(e);
        }
        let at = progress::Position {
            done: self.benchmarks.len() + 1,
            planned: self.planned,
            environment: &self.environment,
            failed: 0,
        };
        progress::benchmark(&at, &benchmark);
        self.benchmarks.push(benchmark);
    }

    /// Where the lane's time went, from the start of its machine or runner: the suite's own
    /// speed, kept with the run.
    fn record_timings(&mut self) {
        let seconds = |d: Option<Duration>| d.map(|d| format!("{:.2} s", d.as_secs_f64()));
        let timings = [
            (
                "timing.qemu_start_to_runner",
                seconds(self.first_record_after),
            ),
            (
                "timing.qemu_start_to_first_verdict",
                seconds(self.first_verdict_after),
            ),
            (
                "timing.checks_wall",
                self.checks_wall_ms.map(|ms| format!("{ms:.0} ms")),
            ),
            ("timing.lane_wall", seconds(Some(self.started.elapsed()))),
            (LOAD_AT_END, Some(host_load::describe_now())),
        ];
        for (name, value) in timings {
            if let Some(value) = value {
                self.environment.host.push(Feature::new(name, value));
            }
        }
    }

    fn note_write_error(&mut self, error: std::io::Error) {
        if self.write_error.is_none() {
            progress::cannot_write(&error);
            self.write_error = Some(error.to_string());
        }
    }

    /// What the kernel under test said as it stopped its machine while checks ran: it panicked,
    /// or it reported a stuck CPU or task and then the runner went silent. `None` when the
    /// machine stopped otherwise, or with no check running.
    pub fn kernel_stopped_the_machine(&self, ending: &Ending) -> Option<String> {
        if !self.stopped_mid_run(ending) {
            return None;
        }
        match &ending.end {
            End::Panic(line) => Some(one_line(without_timestamp(line))),
            End::Silent(_) => self.kernel_stuck.clone(),
            _ => None,
        }
    }

    /// Whether the machine stopped (went silent, or panicked) while checks ran: what it had
    /// not run yet may run on a fresh boot.
    pub fn stopped_mid_run(&self, ending: &Ending) -> bool {
        !self.running.is_empty() && matches!(ending.end, End::Silent(_) | End::Panic(_))
    }

    /// The checks that were running when the kernel under test stopped the machine fail: the
    /// code under test stopped them. The kernel's report is their evidence, shared by all that
    /// ran at once.
    fn fail_the_checks_the_kernel_stopped(&mut self, said: &str, ending: &Ending) {
        let running = std::mem::take(&mut self.running);
        // Whether a fresh boot takes the checks that never started is the lane's to say
        // (run.json's `boot.resumed_by`), not this boot's.
        let how = match &ending.end {
            End::Silent(silent) => format!(
                "the machine's runner then said nothing for {} s and the machine was stopped",
                silent.as_secs()
            ),
            _ => "the machine stopped".to_string(),
        };
        for test in &running {
            let others: Vec<String> = running.iter().filter(|t| *t != test).cloned().collect();
            let lines = (self.kernel_report.iter())
                .map(|text| KernelLine {
                    text: text.clone(),
                    also_running: others.clone(),
                })
                .collect();
            let started = self.started_at.get(test).copied();
            let verdict = self.verdict_of_this_boot(
                test.clone(),
                Outcome::Fail,
                format!("the kernel under test stopped while this check ran: {said}"),
                vec![
                    Evidence::KernelLog { lines },
                    Evidence::Note { text: how.clone() },
                ],
                started.map_or(0.0, |s| s.elapsed().as_secs_f64() * 1000.0),
            );
            self.on_verdict(verdict);
        }
        self.skip_the_proofs_of(&running);
    }

    /// A verdict xtask makes itself, of this boot's lane, kernel and boot.
    fn verdict_of_this_boot(
        &self,
        test: String,
        outcome: Outcome,
        reason: String,
        detail: Vec<Evidence>,
        duration_ms: f64,
    ) -> Verdict {
        Verdict {
            schema: SCHEMA_VERSION,
            test,
            lane: self.environment.lane,
            kernel: self.environment.kernel_release.clone(),
            boot: self.environment.boot,
            outcome,
            reason,
            detail,
            duration_ms,
        }
    }

    /// The fault-injection proofs of checks the kernel stopped, not run yet, are skipped: a
    /// check that did not run to its verdict cannot show that an injection turns it red.
    fn skip_the_proofs_of(&mut self, stopped: &[String]) {
        let reported: HashSet<String> = self.verdicts.iter().map(|v| v.test.clone()).collect();
        let proofs: Vec<String> = (self.planned_checks.iter())
            .filter(|test| test.starts_with(FAULT_INJECTION_PROOFS) && !reported.contains(*test))
            .filter(|test| stopped.iter().any(|check| check == check_of(test)))
            .cloned()
            .collect();
        for test in proofs {
            let reason = format!(
                "{} did not reach its verdict (the kernel under test stopped while it ran), so \
                 no injection can be shown to turn it red",
                check_of(&test)
            );
            let verdict = self.verdict_of_this_boot(test, Outcome::Skip, reason, Vec::new(), 0.0);
            self.on_verdict(verdict);
        }
    }

    /// Close the run: what went wrong, if anything, becomes the summary's error. Checks the
    /// kernel under test stopped fail (see [`Self::kernel_stopped_the_machine`]).
    pub fn conclude(mut self, ending: &Ending) -> (RunSummary, Selection) {
        let error = self.run_error(ending);
        if let Some(said) = self.kernel_stopped_the_machine(ending) {
            self.fail_the_checks_the_kernel_stopped(&said, ending);
        }
        self.record_timings();
        let not_run = self.not_run();
        let summary = RunSummary {
            benchmarks: self.benchmarks,
            environments: vec![self.environment],
            verdicts: self.verdicts,
            wall_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            error,
            not_run,
        };
        (summary, self.selection)
    }

    /// The planned checks that never reported, in the order they were planned.
    fn not_run(&self) -> Vec<NotRun> {
        let reported: HashSet<&str> = self.verdicts.iter().map(|v| v.test.as_str()).collect();
        (self.planned_checks.iter())
            .filter(|test| !reported.contains(test.as_str()))
            .map(|test| NotRun {
                test: test.clone(),
                lane: self.environment.lane,
                boot: self.environment.boot,
                kernel: self.environment.kernel_release.clone(),
                was_running: self.running.contains(test),
            })
            .collect()
    }

    /// Close a run whose machine could not be started.
    pub fn conclude_with_error(self, error: String) -> (RunSummary, Selection) {
        let (mut summary, selection) = self.conclude(&Ending {
            end: End::Exited(Default::default()),
            qemu_stderr: vec![],
        });
        summary.error = Some(error);
        (summary, selection)
    }

    /// What went wrong with the lane's run, if anything, in the order it matters: the runner
    /// gave up, the process ended badly, the stream was damaged, the selection was empty,
    /// records went missing.
    fn run_error(&self, ending: &Ending) -> Option<String> {
        let how_it_ended = self.end_error(ending);
        // What the lane lacks comes first: it is what to fix; how the run then ended follows.
        match (&self.setup_error, how_it_ended) {
            (Some(lacks), Some(error)) => Some(format!("{lacks}; and {error}")),
            (Some(lacks), None) => Some(lacks.clone()),
            (None, error) => error,
        }
    }

    /// How the run ended, when that was not how a complete run ends.
    fn end_error(&self, ending: &Ending) -> Option<String> {
        if let Some(reason) = &self.aborted {
            return Some(format!("the runner gave up: {reason}"));
        }
        if let Some(error) = self.ending_error(ending).or_else(|| self.stream_error()) {
            return Some(error);
        }
        // A listing has no verdicts to count.
        if self.selection.list {
            return None;
        }
        self.nothing_planned().or_else(|| self.records_lost())
    }

    /// What was running when the run stopped, and how many checks never ran: `while swap::a
    /// was running; 69 checks never ran`.
    fn at_the_stop(&self) -> String {
        let mut text = String::new();
        match self.running.as_slice() {
            [] => {}
            [one] => text.push_str(&format!(" while {} was running", one_line(one))),
            several => {
                let names: Vec<String> = several.iter().map(|t| one_line(t)).collect();
                text.push_str(&format!(" while {} were running", names.join(", ")))
            }
        }
        let never = self.not_run().iter().filter(|n| !n.was_running).count();
        if never > 0 {
            let plural = if never == 1 {
                " never ran"
            } else {
                "s never ran"
            };
            text.push_str(&format!("; {never} check{plural}"));
        }
        text
    }

    /// How the process ended, when that was not how a complete run ends.
    fn ending_error(&self, ending: &Ending) -> Option<String> {
        let console = self.run.path().join(mte_results::rundir::CONSOLE_LOG);
        let console = console.display();
        let stderr = ending
            .qemu_stderr
            .last()
            .map(|l| format!(" (QEMU said: {l})"))
            .unwrap_or_default();
        match &ending.end {
            End::Exited(status) if self.done.is_some() && self.source.clean_exit(status) => None,
            End::KilledAfterFinish => None,
            End::Exited(status) if self.done.is_some() => Some(format!(
                "{} exited with {status} after the run{stderr}",
                self.source.process()
            )),
            End::Exited(status) if self.planned.is_none() => Some(format!(
                "truncated stream: the machine stopped ({status}) before the runner started\
                 {stderr}; see {console}"
            )),
            End::Exited(status) => Some(format!(
                "truncated stream: the machine stopped ({status}) after {} of {} verdicts, \
                 before the runner's last record{}{stderr}; see {console}",
                self.verdicts.len(),
                self.planned.unwrap_or_default(),
                self.at_the_stop(),
            )),
            End::Deadline(limit) => Some(format!(
                "the run passed its deadline of {} s and was stopped{}; raise it with --timeout \
                 SECS",
                limit.as_secs(),
                self.at_the_stop(),
            )),
            End::Silent(limit) => Some(format!(
                "the machine's runner said nothing for {} s{} and was stopped{} ({}); see \
                 {console}",
                limit.as_secs(),
                match self.planned {
                    // The runner says it is alive while checks run: its silence is the machine's.
                    Some(_) => format!(
                        " (its runner says it is alive every {} s)",
                        ALIVE_EVERY.as_secs()
                    ),
                    None => String::new(),
                },
                self.at_the_stop(),
                match &self.kernel_stuck {
                    Some(line) => format!("the kernel said: {line}"),
                    None => "a hung kernel?".to_string(),
                },
            )),
            End::Panic(line) => Some(format!(
                "the kernel panicked: {}{}; see {console}",
                one_line(without_timestamp(line)),
                self.at_the_stop(),
            )),
        }
    }

    /// The run directory could not be written, or records arrived damaged.
    fn stream_error(&self) -> Option<String> {
        if let Some(e) = &self.write_error {
            return Some(format!("the run directory could not be written: {e}"));
        }
        let first = self.corrupt.first()?;
        Some(format!(
            "corrupt stream: {} damaged record{} (verdicts may be missing); first: {first}",
            self.corrupt.len(),
            if self.corrupt.len() == 1 { "" } else { "s" },
        ))
    }

    /// The runner selected nothing to run.
    fn nothing_planned(&self) -> Option<String> {
        if self.planned != Some(0) {
            return None;
        }
        let (things, command) = match self.selection.bench {
            true => ("benchmark", "bench"),
            false => ("check", "run"),
        };
        Some(match self.selection.words.as_str() {
            "" => format!("the runner planned no {things}s"),
            words => {
                format!("no {things} matches {words}; `cargo xtask {command} -- --list` lists them")
            }
        })
    }

    /// Fewer (or other) results arrived than the runner planned or reported.
    fn records_lost(&self) -> Option<String> {
        let (arrived, results) = match self.selection.bench {
            true => {
                let mut tally = Tally::default();
                for b in &self.benchmarks {
                    tally.add(b.outcome);
                }
                (tally, self.benchmarks.len())
            }
            false => (Tally::of(&self.verdicts), self.verdicts.len()),
        };
        if let Some(reported) = self.done.filter(|reported| *reported != arrived) {
            return Some(format!(
                "the runner reported {reported} but {arrived} arrived: records were lost"
            ));
        }
        match self.planned {
            Some(planned) if planned != results && self.selection.bench => Some(format!(
                "the runner planned {planned} benchmarks but reported {results}"
            )),
            Some(planned) if planned != results => Some(format!(
                "the runner planned {planned} checks but reported {results} verdicts"
            )),
            _ => None,
        }
    }
}

/// Kernel log lines on the console start with a timestamp, `[    1.234567] `: the timestamp
/// and the rest of the line.
fn kernel_timestamp(line: &str) -> Option<(&str, &str)> {
    let (stamp, rest) = line.strip_prefix('[')?.split_once(']')?;
    let stamp = stamp.trim();
    (!stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .then_some((stamp, rest))
}

fn without_timestamp(line: &str) -> &str {
    kernel_timestamp(line).map_or(line, |(_, rest)| rest.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mte_results::stream::frame;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn kernel_timestamps_are_dropped_from_quoted_lines() {
        assert_eq!(
            without_timestamp("[    1.234567] Kernel panic - x"),
            "Kernel panic - x"
        );
        assert_eq!(
            without_timestamp("tags::first_touch: test"),
            "tags::first_touch: test"
        );
        assert_eq!(without_timestamp("[] x"), "[] x");
    }

    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("mte-session-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn verdict(test: &str, outcome: Outcome) -> Record {
        Record::Verdict(Verdict {
            kernel: "6.12.95+deb12-arm64".into(),
            ..crate::testing::verdict(test, outcome)
        })
    }

    fn hello(planned: usize) -> Record {
        let names = ["a", "b", "c", "d"];
        hello_with(&names[..planned], None)
    }

    fn hello_with(checks: &[&str], setup_error: Option<&str>) -> Record {
        Record::Hello {
            schema: mte_results::SCHEMA_VERSION,
            environment: Environment {
                lane: Lane::Emulated,
                kernel_release: "6.12.95+deb12-arm64".into(),
                ..Environment::default()
            },
            planned: checks.len(),
            available: checks.len(),
            list: false,
            selection: String::new(),
            bench: false,
            setup_error: setup_error.map(String::from),
            checks: checks.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn hello_selecting(selection: &str, list: bool) -> Record {
        Record::Hello {
            schema: mte_results::SCHEMA_VERSION,
            environment: Environment::default(),
            planned: 0,
            available: 18,
            list,
            selection: selection.into(),
            bench: false,
            setup_error: None,
            checks: Vec::new(),
        }
    }

    fn done(tally: Tally) -> Record {
        Record::Done {
            tally,
            wall_ms: 10.0,
        }
    }

    fn exited(code: i32) -> Ending {
        Ending {
            end: End::Exited(ExitStatus::from_raw(code << 8)),
            qemu_stderr: vec![],
        }
    }

    /// Feed console lines to a session over a fresh run directory.
    fn feed(name: &str, lines: &[String], ending: Ending) -> (RunSummary, Scratch) {
        let scratch = Scratch::new(name);
        let run = RunDir::create(&scratch.0, "emulated", "6.12").unwrap();
        let host = vec![Feature::new("qemu.version", "10.0.2")];
        let mut session = Session::new(
            &run,
            Lane::Emulated,
            1,
            "6.12.95+deb12-arm64",
            Source::Machine,
            host,
            Instant::now(),
        );
        for line in lines {
            session.on_line(line);
        }
        (session.conclude(&ending).0, scratch)
    }

    #[test]
    fn a_complete_run_has_no_error_and_keeps_host_facts() {
        let lines = vec![
            "[    0.000000] Booting Linux".to_string(),
            frame(&hello(2)),
            format!("noise {}", frame(&verdict("a", Outcome::Pass))),
            frame(&verdict("b", Outcome::Fail)),
            frame(&done(Tally {
                pass: 1,
                fail: 1,
                ..Tally::default()
            })),
        ];
        let (c, scratch) = feed("complete", &lines, exited(0));
        assert_eq!(c.error, None);
        assert_eq!(c.verdicts.len(), 2);
        assert_eq!(c.environments[0].kernel_release, "6.12.95+deb12-arm64");
        assert_eq!(c.environments[0].host[0].name, "qemu.version");
        let run_dir = std::fs::read_dir(&scratch.0)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_type().unwrap().is_dir())
            .unwrap();
        let results = std::fs::read_to_string(run_dir.path().join("results.jsonl")).unwrap();
        assert_eq!(results.lines().count(), 2);
        let console = std::fs::read_to_string(run_dir.path().join("console.log")).unwrap();
        assert_eq!(console.lines().count(), 5);
    }

    #[test]
    fn the_kernel_log_of_a_boot_is_kept_in_its_own_file() {
        let kernel = |lines: &[&str]| {
            frame(&Record::KernelLog {
                lines: lines.iter().map(|l| l.to_string()).collect(),
            })
        };
        let lines = vec![
            frame(&hello(1)),
            kernel(&["[    0.000000] Booting Linux", "[    1.0] kvm: ready"]),
            frame(&verdict("a", Outcome::Pass)),
            kernel(&["[    5.0] WARNING: at x"]),
            frame(&done(Tally {
                pass: 1,
                ..Tally::default()
            })),
        ];
        let (c, scratch) = feed("kernel-log", &lines, exited(0));
        assert_eq!(c.error, None);
        let facts = &c.environments[0].host;
        let named: Vec<_> = facts.iter().filter(|f| f.name == "kernel.log").collect();
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].value, "kernel-1-6.12.95+deb12-arm64.log");
        let run_dir = std::fs::read_dir(&scratch.0)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_type().unwrap().is_dir())
            .unwrap();
        let log = std::fs::read_to_string(run_dir.path().join(&named[0].value)).unwrap();
        assert_eq!(
            log,
            "[    0.000000] Booting Linux\n[    1.0] kvm: ready\n[    5.0] WARNING: at x\n"
        );
    }

    #[test]
    fn the_runner_s_kernel_release_replaces_the_host_s_name_for_it() {
        let scratch = Scratch::new("release");
        let run = RunDir::create(&scratch.0, "emulated", "vmlinuz-custom").unwrap();
        let recorded = || {
            let info = std::fs::read_to_string(run.path().join("run.json")).unwrap();
            let info: mte_results::rundir::RunInfo = serde_json::from_str(&info).unwrap();
            info.environments
                .into_iter()
                .map(|e| e.kernel_release)
                .collect::<Vec<_>>()
        };
        let mut session = Session::new(
            &run,
            Lane::Emulated,
            1,
            "vmlinuz-custom",
            Source::Machine,
            vec![],
            Instant::now(),
        );
        assert_eq!(recorded(), ["vmlinuz-custom"]);
        session.on_line(&frame(&hello(1)));
        assert_eq!(recorded(), ["6.12.95+deb12-arm64"]);
    }

    #[test]
    fn a_stream_cut_short_is_an_error_that_keeps_the_verdicts() {
        let lines = vec![frame(&hello(3)), frame(&verdict("a", Outcome::Pass))];
        let (c, _scratch) = feed("cut", &lines, exited(0));
        let error = c.error.unwrap();
        assert!(error.starts_with("truncated stream"), "{error}");
        assert!(error.contains("after 1 of 3 verdicts"), "{error}");
        assert_eq!(c.verdicts.len(), 1);
    }

    #[test]
    fn a_machine_that_stops_names_what_ran_and_what_never_did() {
        let lines = vec![
            frame(&hello_with(&["a", "b", "c", "d"], None)),
            frame(&Record::Started { test: "a".into() }),
            frame(&Record::Started { test: "b".into() }),
            frame(&verdict("a", Outcome::Pass)),
            frame(&Record::Started { test: "c".into() }),
            frame(&Record::Alive),
        ];
        let silent = Ending {
            end: End::Silent(Duration::from_secs(30)),
            qemu_stderr: vec![],
        };
        let (c, _scratch) = feed("silent", &lines, silent);
        let error = c.error.unwrap();
        assert!(
            error.starts_with(
                "the machine's runner said nothing for 30 s (its runner says it is alive every 5 s) \
                 and was stopped while b, c were running; 1 check never ran (a hung kernel?)"
            ),
            "{error}"
        );
        let not_run: Vec<(&str, bool)> = (c.not_run.iter())
            .map(|n| (n.test.as_str(), n.was_running))
            .collect();
        assert_eq!(not_run, [("b", true), ("c", true), ("d", false)]);
        assert_eq!(c.not_run[0].boot, 1);
    }

    #[test]
    fn a_silent_machine_whose_kernel_reported_a_lockup_says_so() {
        let lines = vec![
            frame(&hello_with(&["a"], None)),
            frame(&Record::Started { test: "a".into() }),
            frame(&Record::Alive),
            "[   28.215166] watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [kdamond.0:50]"
                .into(),
            "[   52.238975] watchdog: BUG: soft lockup - CPU#1 stuck for 45s! [init:228]".into(),
        ];
        let silent = Ending {
            end: End::Silent(Duration::from_secs(30)),
            qemu_stderr: vec![],
        };
        let (c, _scratch) = feed("lockup", &lines, silent);
        let error = c.error.unwrap();
        assert!(
            error.contains(
                "while a was running (the kernel said: watchdog: BUG: soft lockup - CPU#0 stuck \
                 for 23s! [kdamond.0:50])"
            ),
            "{error}"
        );
    }

    #[test]
    fn checks_the_kernel_stopped_fail_with_its_report_and_their_proofs_skip() {
        let proof = format!("{FAULT_INJECTION_PROOFS}corrupt_tag::a");
        let other_proof = format!("{FAULT_INJECTION_PROOFS}corrupt_tag::b");
        let lines = vec![
            frame(&hello_with(&["a", "b", &proof, &other_proof], None)),
            frame(&Record::Started { test: "a".into() }),
            "[   28.2] watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [kdamond.0:50]".into(),
            "[   28.3] Call trace:".into(),
        ];
        let silent = Ending {
            end: End::Silent(Duration::from_secs(30)),
            qemu_stderr: vec![],
        };
        let scratch = Scratch::new("stopped");
        let run = RunDir::create(&scratch.0, "emulated", "6.12").unwrap();
        let mut session = Session::new(
            &run,
            Lane::Emulated,
            2,
            "7.3",
            Source::Machine,
            vec![],
            Instant::now(),
        );
        for line in &lines {
            session.on_line(line);
        }
        let said = session.kernel_stopped_the_machine(&silent).unwrap();
        assert!(
            said.starts_with("watchdog: BUG: soft lockup - CPU#0"),
            "{said}"
        );
        let (c, _) = session.conclude(&silent);
        let stopped = &c.verdicts[0];
        assert_eq!(
            (stopped.test.as_str(), stopped.outcome),
            ("a", Outcome::Fail)
        );
        assert_eq!(stopped.boot, 2);
        assert!(stopped
            .reason
            .contains("stopped while this check ran: watchdog"));
        let Evidence::KernelLog { lines } = &stopped.detail[0] else {
            panic!("{:?}", stopped.detail)
        };
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (c.verdicts[1].test.as_str(), c.verdicts[1].outcome),
            (proof.as_str(), Outcome::Skip)
        );
        assert_eq!(c.verdicts.len(), 2);
        // What never started is left for a fresh boot; nothing is counted as running.
        let never: Vec<&str> = c.not_run.iter().map(|n| n.test.as_str()).collect();
        assert_eq!(never, ["b", other_proof.as_str()]);
        assert!(c.not_run.iter().all(|n| !n.was_running));
    }

    #[test]
    fn a_machine_silent_without_a_kernel_report_is_not_the_kernel_s_failure() {
        let lines = vec![
            frame(&hello_with(&["a"], None)),
            frame(&Record::Started { test: "a".into() }),
        ];
        let silent = Ending {
            end: End::Silent(Duration::from_secs(30)),
            qemu_stderr: vec![],
        };
        let (c, _scratch) = feed("silent-only", &lines, silent);
        assert!(c.verdicts.is_empty());
        assert!(c.not_run[0].was_running);
        assert!(c.error.is_some());
    }

    #[test]
    fn what_the_lane_lacks_is_the_run_s_error_whatever_its_checks_say() {
        let lacks = "the emulated lane's machine lacks what the lane needs: QEMU gives the \
                     machine no MTE";
        let lines = vec![
            frame(&hello_with(&["a", "b"], Some(lacks))),
            frame(&verdict("a", Outcome::Pass)),
            frame(&verdict("b", Outcome::Skip)),
            frame(&done(Tally {
                pass: 1,
                skip: 1,
                ..Tally::default()
            })),
        ];
        let (c, _scratch) = feed("lacks", &lines, exited(0));
        assert_eq!(c.error.as_deref(), Some(lacks));
        assert!(c.not_run.is_empty());
        assert_eq!(crate::Status::of(&c), crate::Status::Error);
    }

    #[test]
    fn corrupt_records_fail_the_run_at_the_end() {
        let good = frame(&verdict("b", Outcome::Pass));
        let lines = vec![
            frame(&hello(2)),
            frame(&verdict("a", Outcome::Pass)).replace("\"a\"", "\"z\""),
            good,
            frame(&done(Tally {
                pass: 1,
                ..Tally::default()
            })),
        ];
        let (c, _scratch) = feed("corrupt", &lines, exited(0));
        let error = c.error.unwrap();
        assert!(
            error.starts_with("corrupt stream: 1 damaged record"),
            "{error}"
        );
        assert_eq!(c.verdicts.len(), 1);
    }

    #[test]
    fn a_filter_that_matches_nothing_is_named() {
        let done = frame(&done(Tally::default()));
        let lines = vec![
            frame(&hello_selecting("nosuch::check", false)),
            done.clone(),
        ];
        let (c, _scratch) = feed("nomatch", &lines, exited(0));
        assert_eq!(
            c.error.as_deref(),
            Some("no check matches nosuch::check; `cargo xtask run -- --list` lists them")
        );
        let lines = vec![frame(&hello_selecting("", true)), done];
        let (c, _scratch) = feed("list", &lines, exited(0));
        assert_eq!(c.error, None);
    }

    #[test]
    fn panics_deadlines_and_lost_records_are_errors() {
        let lines = vec![frame(&hello(1))];
        let panic = Ending {
            end: End::Panic(
                "[    2.05] Kernel panic - not syncing: Attempted to kill init!".into(),
            ),
            qemu_stderr: vec![],
        };
        let (c, _scratch) = feed("panic", &lines, panic);
        assert!(c
            .error
            .unwrap()
            .starts_with("the kernel panicked: Kernel panic - not syncing"));

        let deadline = Ending {
            end: End::Deadline(Duration::from_secs(5)),
            qemu_stderr: vec![],
        };
        let (c, _scratch) = feed("deadline", &lines, deadline);
        assert!(c.error.unwrap().contains("--timeout"));

        let lines = vec![
            frame(&hello(1)),
            frame(&verdict("a", Outcome::Pass)),
            frame(&done(Tally {
                pass: 2,
                ..Tally::default()
            })),
        ];
        let (c, _scratch) = feed("lost", &lines, exited(0));
        assert!(c.error.unwrap().contains("records were lost"));
    }

    #[test]
    fn a_runner_that_gives_up_says_why() {
        let lines = vec![frame(&Record::Abort {
            reason: "bad arguments: unexpected argument '--bogus' found".into(),
        })];
        let (c, _scratch) = feed("abort", &lines, exited(0));
        assert_eq!(
            c.error.unwrap(),
            "the runner gave up: bad arguments: unexpected argument '--bogus' found"
        );
    }

    #[test]
    fn qemu_failing_before_boot_is_reported_with_its_message() {
        let ending = Ending {
            end: End::Exited(ExitStatus::from_raw(1 << 8)),
            qemu_stderr: vec!["qemu-system-aarch64: -M virt: bad".into()],
        };
        let (c, _scratch) = feed("qemu", &[], ending);
        let error = c.error.unwrap();
        assert!(
            error.starts_with(
                "truncated stream: the machine stopped (exit status: 1) before the runner started"
            ),
            "{error}"
        );
        assert!(
            error.contains("QEMU said: qemu-system-aarch64: -M virt: bad"),
            "{error}"
        );
    }
}
