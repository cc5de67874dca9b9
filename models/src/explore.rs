//! Running a model under loom over every interleaving, and keeping what broke.
//!
//! A model records each step it takes in a [`Trace`] (who did what, and what it read), and
//! records a broken rule there instead of panicking, so that loom goes on through every
//! interleaving. [`explore`] counts the interleavings, how many broke each rule, and keeps the
//! simplest trace of each: the counterexample a test prints.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A rule a model checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Broken {
    /// Tags one path wrote were wiped by another path's initialisation of the page.
    LostTags,
    /// A path found the page tagged, yet read tags that no path wrote (what the page held
    /// before).
    StaleTags,
    /// The guest touched a post-copied page before its data and its tags were both in place.
    TouchedTooEarly,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Broken::LostTags => "lost tags",
            Broken::StaleTags => "stale tags read as initialised",
            Broken::TouchedTooEarly => "page touched before its data and tags were in place",
        })
    }
}

/// One step of one thread, in the order loom ran them.
#[derive(Clone, Debug)]
pub struct Step {
    pub actor: &'static str,
    pub what: String,
    /// The step read an older value than the last one written before it in this order:
    /// allowed because nothing ordered that write before the read.
    pub read_older: bool,
}

#[derive(Default)]
struct Record {
    steps: Vec<Step>,
    broken: Vec<(Broken, String)>,
    /// The last value written to each named location, in the order of the steps.
    last_written: BTreeMap<&'static str, u64>,
}

/// The steps of one execution, shared by its threads. Loom runs one thread at a time and
/// switches only at its own operations, so a step recorded right after an atomic operation
/// takes its place in the interleaving. The lock is the standard library's, invisible to
/// loom: it adds no interleavings and no ordering.
///
/// Loom also explores weak-memory executions, where a load returns a value older than the
/// last one stored before it in that order. Steps that read a named location say so, so that
/// such reads are marked in a printed trace and the most sequential counterexample is the one
/// kept.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<Record>>);

impl Trace {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, actor: &'static str, what: String, read_older: bool) {
        self.record().steps.push(Step {
            actor,
            what,
            read_older,
        });
    }

    /// A step that neither reads nor writes a location the models name.
    pub fn step(&self, actor: &'static str, what: impl Into<String>) {
        self.push(actor, what.into(), false);
    }

    /// The value a location holds before any thread runs.
    pub fn initially(&self, location: &'static str, value: u64) {
        self.record().last_written.insert(location, value);
    }

    /// A step that wrote `value` to `location`.
    pub fn wrote(&self, actor: &'static str, location: &'static str, value: u64, what: String) {
        self.record().last_written.insert(location, value);
        self.push(actor, what, false);
    }

    /// A step that read `value` from `location`.
    pub fn read(&self, actor: &'static str, location: &'static str, value: u64, what: String) {
        let last = self.record().last_written.get(location).copied();
        self.push(actor, what, last.is_some_and(|last| last != value));
    }

    /// A step that read `read` from `location` and wrote `written` there in one atomic
    /// operation.
    pub fn read_and_wrote(
        &self,
        actor: &'static str,
        location: &'static str,
        read: u64,
        written: u64,
        what: String,
    ) {
        let mut record = self.record();
        let last = record.last_written.insert(location, written);
        record.steps.push(Step {
            actor,
            what,
            read_older: last.is_some_and(|last| last != read),
        });
    }

    /// Note that this execution broke `rule`, and how.
    pub fn broken(&self, rule: Broken, how: impl Into<String>) {
        self.record().broken.push((rule, how.into()));
    }
}

/// An execution that broke a rule: its steps and how the rule broke.
#[derive(Clone, Debug)]
pub struct Counterexample {
    pub steps: Vec<Step>,
    pub how: String,
}

impl Counterexample {
    /// How many of its steps read an older value than the last one written.
    pub fn older_reads(&self) -> usize {
        self.steps.iter().filter(|step| step.read_older).count()
    }

    /// Fewer older reads first (the easiest to follow), then fewer steps.
    fn simpler_than(&self, other: &Counterexample) -> bool {
        (self.older_reads(), self.steps.len()) < (other.older_reads(), other.steps.len())
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, step) in self.steps.iter().enumerate() {
            let older = if step.read_older {
                "  (an older value: nothing ordered the newer write before this read)"
            } else {
                ""
            };
            writeln!(
                f,
                "    {:>2}. {:<7} {}{older}",
                n + 1,
                step.actor,
                step.what
            )?;
        }
        write!(f, "    => {}", self.how)
    }
}

/// How often a rule broke, and the simplest execution that broke it.
#[derive(Clone, Debug)]
pub struct Found {
    pub executions: usize,
    pub simplest: Counterexample,
}

/// What loom explored for one model.
#[derive(Clone, Debug)]
pub struct Exploration {
    pub model: String,
    pub interleavings: usize,
    pub preemption_bound: Option<usize>,
    pub elapsed: Duration,
    pub broken: BTreeMap<Broken, Found>,
}

impl Exploration {
    /// The simplest execution that broke `rule`, if one did.
    pub fn counterexample(&self, rule: Broken) -> Option<&Counterexample> {
        self.broken.get(&rule).map(|found| &found.simplest)
    }

    /// Whether every interleaving kept every rule.
    pub fn holds(&self) -> bool {
        self.broken.is_empty()
    }
}

impl fmt::Display for Exploration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bound = match self.preemption_bound {
            Some(n) => format!("at most {n} preemptions"),
            None => "no preemption bound".into(),
        };
        write!(
            f,
            "{}: {} interleavings ({bound}) in {:.2?}",
            self.model, self.interleavings, self.elapsed
        )?;
        if self.broken.is_empty() {
            return write!(f, "; every one kept every rule");
        }
        for (rule, found) in &self.broken {
            write!(
                f,
                "\n  {rule}: in {} of them; the simplest:\n{}",
                found.executions, found.simplest
            )?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Tally {
    interleavings: usize,
    broken: BTreeMap<Broken, Found>,
}

impl Tally {
    fn add(&mut self, record: &Record) {
        self.interleavings += 1;
        for (rule, how) in &record.broken {
            let candidate = Counterexample {
                steps: record.steps.clone(),
                how: how.clone(),
            };
            self.broken
                .entry(*rule)
                .and_modify(|found| {
                    found.executions += 1;
                    if candidate.simpler_than(&found.simplest) {
                        found.simplest = candidate.clone();
                    }
                })
                .or_insert(Found {
                    executions: 1,
                    simplest: candidate,
                });
        }
    }
}

/// Run `model` under loom for every interleaving (with at most `preemption_bound` preemptions
/// of a runnable thread per execution, if given) and gather what broke.
///
/// The exploration is always exhaustive within the bound: loom's environment variables that
/// would cut it short (LOOM_MAX_PERMUTATIONS, LOOM_MAX_DURATION, LOOM_MAX_PREEMPTIONS,
/// LOOM_CHECKPOINT_FILE) are overridden; LOOM_LOG and LOOM_LOCATION still work.
pub fn explore<F>(model: &str, preemption_bound: Option<usize>, run: F) -> Exploration
where
    F: Fn(&Trace) + Send + Sync + 'static,
{
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = preemption_bound;
    builder.max_permutations = None;
    builder.max_duration = None;
    builder.checkpoint_file = None;
    let started = Instant::now();
    {
        let tally = Arc::clone(&tally);
        builder.check(move || {
            let trace = Trace::default();
            run(&trace);
            let record = trace.record();
            tally
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(&record);
        });
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    Exploration {
        model: model.into(),
        interleavings: tally.interleavings,
        preemption_bound,
        elapsed: started.elapsed(),
        broken: tally.broken,
    }
}
