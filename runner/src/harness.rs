//! The test harness: every scenario (and every fault-injection proof) becomes a libtest-mimic
//! trial, so filters, --list, --exact, --ignored and --test-threads behave as in `cargo test`;
//! each trial also sends its verdict as a record the moment it is known.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use mte_results::shard::Shard;
use mte_results::stream::Record;
use mte_results::{
    Environment, Evidence, Feature, Lane, Outcome, Tally, Verdict, FAULT_INJECTION_PROOFS,
    SCHEMA_VERSION,
};
use mte_suites::inject::{Injecting, Injection};
use mte_suites::vmm::{AbiVm, BootOptions, Guest, Vmm, VmmError};
use mte_suites::{Finding, Scenario};

use crate::artifacts::KeepsArtifacts;
use crate::emit;
use crate::environment;
use mte_vmm_kvm::KvmVmm;
use mte_vmm_qemu::{Accel, QemuVmm};

/// The runner's own options; everything else goes to libtest-mimic.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub lane: Lane,
    pub inject: Option<Injection>,
    pub payload_dir: PathBuf,
    pub deadline: Duration,
    /// The `qemu-system-aarch64` of the qemu lanes; a bare name is looked up on PATH.
    pub qemu: PathBuf,
    /// Run only this shard's checks (and their fault-injection proofs).
    pub shard: Option<Shard>,
    /// Run only these checks (and their fault-injection proofs), by exact name; all if empty.
    pub select: Vec<String>,
    /// Run the performance suite (`crate::bench`) instead of the checks.
    pub bench: bool,
    pub harness_args: Vec<String>,
}

impl Options {
    pub const USAGE: &'static str = "mte-runner [--lane NAME] [--inject MODE] [--payload-dir DIR] \
        [--deadline SECS] [--qemu PATH] [--shard K/N] [--select CHECK]... [--bench] \
        [LIBTEST-ARGS...]";

    /// Split the runner's options from libtest's. `args` excludes the program name.
    pub fn parse(args: Vec<String>, default_payload_dir: PathBuf) -> Result<Self, String> {
        let mut options = Options {
            lane: Lane::Host,
            inject: None,
            payload_dir: default_payload_dir,
            deadline: Duration::from_secs(30),
            qemu: "qemu-system-aarch64".into(),
            shard: None,
            select: Vec::new(),
            bench: false,
            harness_args: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| format!("{name} needs a value ({})", Self::USAGE))
            };
            match arg.as_str() {
                "--lane" => options.lane = value("--lane")?.parse()?,
                "--inject" => {
                    let mode = value("--inject")?;
                    let names: Vec<_> = Injection::ALL.iter().map(|i| i.name()).collect();
                    options.inject = Some(Injection::parse(&mode).ok_or_else(|| {
                        format!(
                            "unknown --inject mode {mode:?}; known: {}",
                            names.join(", ")
                        )
                    })?);
                }
                "--payload-dir" => options.payload_dir = value("--payload-dir")?.into(),
                "--qemu" => options.qemu = value("--qemu")?.into(),
                "--shard" => options.shard = Some(Shard::parse(&value("--shard")?)?),
                "--select" => options.select.push(value("--select")?),
                "--bench" => options.bench = true,
                "--deadline" => {
                    let secs = value("--deadline")?;
                    options.deadline = secs
                        .parse()
                        .ok()
                        .filter(|&s: &f64| s > 0.0)
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .ok_or_else(|| {
                            format!("--deadline {secs:?} is not a positive number of seconds")
                        })?;
                }
                _ => options.harness_args.push(arg),
            }
        }
        options.libtest_arguments()?;
        Ok(options)
    }
}

impl Options {
    /// The libtest arguments, parsed without exiting the process on an error or on --help.
    pub fn libtest_arguments(&self) -> Result<Arguments, String> {
        let argv =
            std::iter::once("mte-runner".to_string()).chain(self.harness_args.iter().cloned());
        <Arguments as clap::Parser>::try_parse_from(argv).map_err(|e| e.to_string())
    }
}

/// Lanes that promise a VMM with MTE, and what they promise: the emulated machine is started
/// with virtualization=on,mte=on, the qemu lane's guests with mte=on. There a VMM or MTE that
/// is missing is a failure of what is under test, never a reason to skip.
const LANES_PROMISING_MTE: &[(Lane, &str)] = &[
    (Lane::Emulated, "machine is built with KVM and MTE"),
    (Lane::Qemu, "QEMU runs its guests with mte=on"),
    (
        Lane::QemuKvm,
        "machine is built with KVM and MTE, and its QEMU runs its guests on that KVM with \
         mte=on",
    ),
];

/// A VMM that is not there: every step fails for the same reason, as a skip where the lane may
/// lack it, as a fail where the lane promised it.
struct Unavailable {
    lane: Lane,
    kernel_release: String,
    reason: String,
    promised: bool,
}

impl Unavailable {
    fn error(&self) -> VmmError {
        if self.promised {
            VmmError::Host(self.reason.clone())
        } else {
            VmmError::Unsupported(self.reason.clone())
        }
    }
}

impl Vmm for Unavailable {
    fn lane(&self) -> Lane {
        self.lane
    }
    fn kernel_release(&self) -> &str {
        &self.kernel_release
    }
    fn boot(&self, _: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
        Err(self.error())
    }
    fn abi_vm(&self, _: bool) -> Result<Box<dyn AbiVm>, VmmError> {
        Err(self.error())
    }
    fn mte_capable(&self) -> Result<(), VmmError> {
        Err(self.error())
    }
}

type SharedVmm = Arc<dyn Vmm + Send + Sync>;

/// Open the lane's VMM and describe what was found.
fn open_vmm(options: &Options, kernel_release: &str) -> (SharedVmm, Vec<Feature>) {
    let mut facts = crate::machine_setup::features();
    let promise = LANES_PROMISING_MTE
        .iter()
        .find(|(lane, _)| *lane == options.lane)
        .map(|&(_, promise)| promise);
    let promised = promise.is_some();
    let missing = if !options.lane.runner_is_vmm() {
        match open_qemu(options, kernel_release, &mut facts) {
            Ok(qemu) => return (qemu, facts),
            Err(e) => e,
        }
    } else {
        let opened = KvmVmm::open(
            options.lane,
            kernel_release,
            options.payload_dir.clone(),
            options.deadline,
        );
        match opened {
            Ok(kvm) => {
                facts.push(Feature::new("KVM API version", kvm.api_version()));
                facts.push(Feature::new("KVM_CAP_ARM_MTE", kvm.has_mte_cap()));
                match kvm.mte_capable().and_then(|()| guest_view(&kvm)) {
                    Ok(view) => {
                        facts.extend(view);
                        return (Arc::new(KeepsArtifacts(kvm)), facts);
                    }
                    Err(e) => {
                        facts.push(Feature::new("guest probe boot", &e));
                        if !promised {
                            // The checks that need MTE skip one by one; the others still run.
                            return (Arc::new(KeepsArtifacts(kvm)), facts);
                        }
                        e
                    }
                }
            }
            Err(e) => {
                facts.push(Feature::new("KVM", format!("unavailable: {e}")));
                e
            }
        }
    };
    // No check can run (or, where the lane promised KVM with MTE, be trusted): each one ends
    // with this reason.
    let why = match missing {
        VmmError::Unsupported(why) => why,
        other => other.to_string(),
    };
    let reason = match promise {
        Some(promise) => format!("the {} lane's {promise}, yet {why}", options.lane),
        None => why,
    };
    let vmm = Unavailable {
        lane: options.lane,
        kernel_release: kernel_release.into(),
        reason,
        promised,
    };
    (Arc::new(vmm), facts)
}

/// QEMU as the VMM (under TCG in the qemu lane, on the machine's KVM in the qemu-kvm lane),
/// after one probe boot: the lanes promise MTE, so any error is the lane's.
fn open_qemu(
    options: &Options,
    kernel_release: &str,
    facts: &mut Vec<Feature>,
) -> Result<SharedVmm, VmmError> {
    let accel = match options.lane {
        Lane::QemuKvm => Accel::Kvm,
        _ => Accel::Tcg,
    };
    let qemu = QemuVmm::open(
        options.lane,
        options.qemu.clone(),
        accel,
        kernel_release,
        options.payload_dir.clone(),
        options.deadline,
    )
    .inspect_err(|e| facts.push(Feature::new("QEMU", format!("unavailable: {e}"))))?;
    facts.push(Feature::new(
        "QEMU",
        format!("{} ({})", qemu.banner(), qemu.path().display()),
    ));
    facts.push(Feature::new("QEMU accelerator", accel.name()));
    let started = Instant::now();
    let view = guest_view(&qemu);
    facts.push(Feature::new(
        "QEMU probe boot",
        format!(
            "{:.0} ms from QEMU's start to the guest's first doorbell",
            started.elapsed().as_secs_f64() * 1e3
        ),
    ));
    if view.is_ok() && accel == Accel::Kvm {
        // The probe's QEMU went back to the pool: what the next guest's costs.
        let started = Instant::now();
        if qemu.boot(&BootOptions::default()).is_ok() {
            facts.push(Feature::new(
                "QEMU reused boot",
                format!(
                    "{:.0} ms from a kept QEMU's reset to its new guest's first doorbell",
                    started.elapsed().as_secs_f64() * 1e3
                ),
            ));
        }
        facts.push(Feature::new("QEMU start-up", qemu.costs().describe()));
    }
    if let Some(features) = qemu.stub_features() {
        facts.push(Feature::new("QEMU gdbstub features", features.join(";")));
    }
    if let Some(ram) = qemu.ram_in_words() {
        facts.push(Feature::new("QEMU guest RAM", ram));
    }
    let view = view.inspect_err(|e| facts.push(Feature::new("guest probe boot", e)))?;
    facts.extend(view);
    Ok(Arc::new(qemu))
}

/// What a guest with MTE sees of its CPU: one probe boot before the checks.
fn guest_view(vmm: &dyn Vmm) -> Result<Vec<Feature>, VmmError> {
    let ids = vmm.boot(&BootOptions::default())?.ids();
    Ok(vec![
        Feature::new("guest MIDR_EL1", format!("{:#x}", ids.midr_el1)),
        Feature::new(
            "guest ID_AA64PFR1_EL1",
            format!("{:#x}", ids.id_aa64pfr1_el1),
        ),
        Feature::new("guest MTE level (ID_AA64PFR1_EL1.MTE)", ids.mte_level()),
        Feature::new("guest GMID_EL1", format!("{:#x}", ids.gmid_el1)),
        Feature::new("guest DCZID_EL0", format!("{:#x}", ids.dczid_el0)),
        Feature::new(
            "guest GCR_EL1 / RGSR_EL1",
            format!("{:#x} / {:#x}", ids.gcr_el1, ids.rgsr_el1),
        ),
    ])
}

/// A verdict record from a finding.
fn verdict(test: &str, vmm: &dyn Vmm, finding: Finding, started: Instant) -> Verdict {
    Verdict {
        schema: SCHEMA_VERSION,
        test: test.into(),
        lane: vmm.lane(),
        kernel: vmm.kernel_release().into(),
        outcome: finding.outcome,
        reason: finding.reason,
        detail: finding.detail,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

/// Counts of the verdicts sent, for the closing record.
type SharedTally = Arc<Mutex<Tally>>;

/// Report a verdict and tell libtest-mimic what to print.
fn conclude(verdict: Verdict, tally: &SharedTally) -> Result<Completion, Failed> {
    let outcome = verdict.outcome;
    let reason = verdict.reason.clone();
    emit::record(&Record::Verdict(verdict));
    tally.lock().unwrap().add(outcome);
    match outcome {
        Outcome::Pass => Ok(Completion::Completed),
        Outcome::Skip => Ok(Completion::ignored_with(format!("skip: {reason}"))),
        Outcome::Xfail => Ok(Completion::ignored_with(format!("xfail: {reason}"))),
        Outcome::Fail => Err(reason.into()),
    }
}

/// A scenario as it runs: catching panics, so that a bug in one check is that check's fail.
fn execute(scenario: &Scenario, vmm: &dyn Vmm) -> Finding {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario.execute(vmm))).unwrap_or_else(
        |panic| {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Finding::fail(format!("the check panicked: {text}"))
        },
    )
}

fn scenario_trial(
    scenario: &'static Scenario,
    vmm: SharedVmm,
    inject: Option<Injection>,
    tally: SharedTally,
) -> Trial {
    Trial::ignorable_test(scenario.name, move || {
        let started = Instant::now();
        let finding = match inject {
            Some(injection) => execute(
                scenario,
                &Injecting {
                    inner: vmm.as_ref(),
                    injection,
                },
            ),
            None => execute(scenario, vmm.as_ref()),
        };
        conclude(
            verdict(scenario.name, vmm.as_ref(), finding, started),
            &tally,
        )
    })
}

/// The proof that `injection` turns `scenario` red: a pass when the injected run fails.
fn injection_trial(
    scenario: &'static Scenario,
    vmm: SharedVmm,
    injection: Injection,
    tally: SharedTally,
) -> Trial {
    let name = injection_trial_name(scenario, injection);
    Trial::ignorable_test(name.clone(), move || {
        let started = Instant::now();
        let inner = execute(
            scenario,
            &Injecting {
                inner: vmm.as_ref(),
                injection,
            },
        );
        let finding = judge_injected(scenario.name, injection, inner);
        conclude(verdict(&name, vmm.as_ref(), finding, started), &tally)
    })
}

/// The checks the libtest arguments, the shard and the selection select, in words; empty for
/// all of them.
fn describe_selection(args: &Arguments, shard: Option<Shard>, select: &[String]) -> String {
    let mut words = Vec::new();
    if let Some(shard) = shard {
        words.push(format!("shard {shard}"));
    }
    if !select.is_empty() {
        words.push(format!("{} checks selected", select.len()));
    }
    if let Some(filter) = &args.filter {
        words.push(if args.exact {
            format!("exactly {filter}")
        } else {
            filter.clone()
        });
    }
    words.extend(args.skip.iter().map(|skip| format!("--skip {skip}")));
    if args.ignored {
        words.push("--ignored".into());
    }
    words.join(" ")
}

/// The proof's finding from the injected run's: a pass only when the injection is what
/// turned the check red.
fn judge_injected(scenario: &str, injection: Injection, inner: Finding) -> Finding {
    let (outcome, reason) = match inner.outcome {
        Outcome::Fail if injection.caught_by(&inner) => (
            Outcome::Pass,
            format!(
                "with {} injected, {scenario} failed as it must: {}",
                injection.name(),
                inner.reason
            ),
        ),
        Outcome::Fail => (
            Outcome::Fail,
            format!(
                "with {} injected, {scenario} failed, but not on what was injected: {}",
                injection.name(),
                inner.reason
            ),
        ),
        Outcome::Pass => (
            Outcome::Fail,
            format!(
                "with {} injected, {scenario} still passed: it cannot see this fault",
                injection.name()
            ),
        ),
        Outcome::Skip | Outcome::Xfail => (
            inner.outcome,
            format!("{scenario} was {}: {}", inner.outcome, inner.reason),
        ),
    };
    let mut detail = vec![Evidence::Values {
        what: format!("outcome of {scenario} with {} injected", injection.name()),
        expected: "fail, on what was injected".into(),
        observed: inner.outcome.to_string(),
    }];
    // A proof that caught its injection keeps the injected failure's long tag maps in brief:
    // that they differ, and where, is all they prove; a proof that failed keeps them whole.
    detail.extend(inner.detail.into_iter().map(|evidence| {
        if outcome == Outcome::Pass {
            evidence.with_long_tag_maps_in_brief()
        } else {
            evidence
        }
    }));
    Finding {
        outcome,
        reason,
        detail,
        refuted: false,
    }
}

pub fn injection_trial_name(scenario: &Scenario, injection: Injection) -> String {
    format!(
        "{FAULT_INJECTION_PROOFS}{}::{}",
        injection.name().replace('-', "_"),
        scenario.name
    )
}

/// Families whose checks take long or wait (deadlines, swap, whole-RAM migrations, cost
/// measurements): they start first, so that the many short checks fill the test threads
/// around them instead of a long one trailing alone at the end of the run.
const LONG_FAMILIES: &[&str] = &["harness::", "migration::", "swap::", "cost::"];

/// The check a trial runs: its own name, or the name of the check a proof injects into.
fn check_of(name: &str) -> &str {
    name.strip_prefix(FAULT_INJECTION_PROOFS)
        .and_then(|rest| rest.split_once("::"))
        .map_or(name, |(_injection, check)| check)
}

/// Whether the trial `name` (a check, or a proof of one) is of a long family.
fn is_long(name: &str) -> bool {
    let check = check_of(name);
    LONG_FAMILIES.iter().any(|family| check.starts_with(family))
}

/// Every trial: the scenarios, then (unless the whole run is injected) the injection proofs;
/// those of long families first.
fn trials(vmm: &SharedVmm, inject: Option<Injection>, tally: &SharedTally) -> Vec<Trial> {
    let scenarios = mte_suites::all();
    let mut trials: Vec<Trial> = scenarios
        .iter()
        .map(|&s| scenario_trial(s, Arc::clone(vmm), inject, Arc::clone(tally)))
        .collect();
    if inject.is_none() {
        for injection in Injection::ALL {
            for &s in scenarios
                .iter()
                .filter(|s| s.proven_by.contains(&injection))
            {
                trials.push(injection_trial(
                    s,
                    Arc::clone(vmm),
                    injection,
                    Arc::clone(tally),
                ));
            }
        }
    }
    trials.sort_by_key(|trial| !is_long(trial.name()));
    trials
}

/// Run the harness; returns whether every check that ran avoided fail.
pub fn run(options: &Options) -> bool {
    let started = Instant::now();
    let args = options
        .libtest_arguments()
        .expect("validated by Options::parse");
    let (kernel_release, _, _) = environment::uname();
    let (vmm, mut facts) = open_vmm(options, &kernel_release);
    if let Some(injection) = options.inject {
        facts.push(Feature::new("fault injection", injection.name()));
    }
    let tally = SharedTally::default();
    let mut trials = trials(&vmm, options.inject, &tally);
    let available = trials.len();
    if let Some(shard) = options.shard {
        trials.retain(|t| shard.contains(t.name()));
    }
    if !options.select.is_empty() {
        trials.retain(|t| options.select.iter().any(|name| name == check_of(t.name())));
    }
    let planned = if args.list {
        0
    } else {
        trials
            .iter()
            .filter(|t| !args.is_filtered_out(t) && !args.is_ignored(t))
            .count()
    };
    emit::record(&Record::Hello {
        schema: SCHEMA_VERSION,
        environment: Environment {
            // What the lane's verdicts name as their kernel: the kernel under KVM, or the QEMU
            // that is the VMM in the qemu lane (where uname says only where the runner runs).
            kernel_release: vmm.kernel_release().to_string(),
            ..environment::probe(options.lane, facts)
        },
        planned,
        available,
        list: args.list,
        selection: describe_selection(&args, options.shard, &options.select),
        bench: false,
    });
    if args.list {
        for trial in trials.iter().filter(|t| !args.is_filtered_out(t)) {
            emit::log(format!("{}: test", trial.name()));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let tally = *tally.lock().unwrap();
    emit::record(&Record::Done {
        tally,
        wall_ms: started.elapsed().as_secs_f64() * 1e3,
    });
    !conclusion.has_failed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|s| s.to_string()).collect(), "/p".into())
    }

    #[test]
    fn runner_options_are_split_from_libtest_ones() {
        let o = parse(&[
            "--lane",
            "emulated",
            "tags::",
            "--exact",
            "--inject",
            "corrupt-tag",
        ])
        .unwrap();
        assert_eq!(o.lane, Lane::Emulated);
        assert_eq!(o.inject, Some(Injection::CorruptTag));
        assert_eq!(o.harness_args, vec!["tags::", "--exact"]);
        assert_eq!(o.payload_dir, PathBuf::from("/p"));
        assert_eq!(o.shard, None);
        let o = parse(&["--select", "tags::a", "--select", "faults::b", "x"]).unwrap();
        assert_eq!(o.select, ["tags::a", "faults::b"]);
        assert_eq!(o.harness_args, vec!["x"]);
        assert_eq!(check_of("fault_injection::corrupt_tag::tags::a"), "tags::a");
        assert_eq!(check_of("tags::a"), "tags::a");
        let o = parse(&["--shard", "2/3", "tags::"]).unwrap();
        assert_eq!(o.shard.map(|s| s.to_string()).as_deref(), Some("2/3"));
        assert_eq!(o.harness_args, vec!["tags::"]);
        assert!(parse(&["--shard", "4/3"]).unwrap_err().contains("K/N"));
    }

    #[test]
    fn the_qemu_lane_takes_its_qemu_from_path_unless_told() {
        assert_eq!(
            parse(&[]).unwrap().qemu,
            PathBuf::from("qemu-system-aarch64")
        );
        let o = parse(&["--lane", "qemu", "--qemu", "/opt/q/bin/qemu-system-aarch64"]).unwrap();
        assert_eq!(o.qemu, PathBuf::from("/opt/q/bin/qemu-system-aarch64"));
        assert!(o.harness_args.is_empty());
    }

    #[test]
    fn bad_runner_options_say_what_is_wrong() {
        assert!(parse(&["--inject", "bogus"])
            .unwrap_err()
            .contains("corrupt-tag"));
        for bad in ["soon", "-1", "NaN", "0", "1e300"] {
            assert!(
                parse(&["--deadline", bad]).unwrap_err().contains("seconds"),
                "{bad}"
            );
        }
        assert_eq!(
            parse(&["--deadline", "2.5"]).unwrap().deadline,
            Duration::from_millis(2500)
        );
        assert!(parse(&["--lane"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--kernel-package", "x"])
            .unwrap_err()
            .contains("--kernel-package"));
    }

    #[test]
    fn long_families_start_first_with_their_proofs() {
        assert!(is_long("migration::stop_and_copy_keeps_random_tags"));
        assert!(is_long(
            "fault_injection::late_deadline::harness::stuck_guest"
        ));
        assert!(!is_long("tags::guest_tags_seen_by_host"));
        assert!(!is_long("fault_injection::corrupt_tag::tags::x"));
        let vmm: SharedVmm = Arc::new(Unavailable {
            lane: Lane::Host,
            kernel_release: "k".into(),
            reason: "r".into(),
            promised: false,
        });
        let names: Vec<bool> = trials(&vmm, None, &SharedTally::default())
            .iter()
            .map(|t| is_long(t.name()))
            .collect();
        let first_short = names.iter().position(|long| !long).unwrap();
        assert!(names[first_short..].iter().all(|long| !long));
    }

    #[test]
    fn every_injectable_scenario_has_a_proof_trial() {
        let vmm: SharedVmm = Arc::new(Unavailable {
            lane: Lane::Host,
            kernel_release: "k".into(),
            reason: "r".into(),
            promised: false,
        });
        let tally = SharedTally::default();
        let names: Vec<String> = trials(&vmm, None, &tally)
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        for s in mte_suites::all() {
            for &injection in s.proven_by {
                assert!(names.contains(&injection_trial_name(s, injection)));
            }
        }
        let injected: Vec<Trial> = trials(&vmm, Some(Injection::CorruptTag), &tally);
        assert_eq!(injected.len(), mte_suites::all().len());
    }

    #[test]
    fn an_injection_proof_passes_only_when_the_injection_turned_the_check_red() {
        let differing = Evidence::TagMaps {
            expected_from: "guest".into(),
            observed_from: "host".into(),
            ipa: 0,
            expected: "1".into(),
            observed: "9".into(),
            mismatches: vec![0],
        };
        let judge = |inner| judge_injected("tags::x", Injection::CorruptTag, inner).outcome;
        let refuted = Finding {
            refuted: true,
            ..Finding::fail("differs").with(differing)
        };
        assert_eq!(judge(refuted), Outcome::Pass);
        assert_eq!(judge(Finding::fail("no KVM")), Outcome::Fail);
        let passed = Finding {
            outcome: Outcome::Pass,
            reason: "agree".into(),
            detail: vec![],
            refuted: false,
        };
        assert_eq!(judge(passed), Outcome::Fail);
        assert_eq!(judge(Finding::skip("no MTE")), Outcome::Skip);
        let long = Evidence::TagMaps {
            expected_from: "guest".into(),
            observed_from: "host".into(),
            ipa: 0,
            expected: "1".repeat(mte_results::TAG_MAP_KEPT_WHOLE + 1),
            observed: "0".repeat(mte_results::TAG_MAP_KEPT_WHOLE + 1),
            mismatches: (0..=mte_results::TAG_MAP_KEPT_WHOLE).collect(),
        };
        let caught = Finding {
            refuted: true,
            ..Finding::fail("differs").with(long)
        };
        let proof = judge_injected("tags::x", Injection::CorruptTag, caught);
        assert_eq!(proof.outcome, Outcome::Pass);
        assert!(
            matches!(&proof.detail[1], Evidence::Values { what, .. } if what.contains("in brief"))
        );
    }

    fn unavailable(promised: bool) -> Unavailable {
        Unavailable {
            lane: Lane::Host,
            kernel_release: "k".into(),
            reason: "no arm64 KVM".into(),
            promised,
        }
    }

    #[test]
    fn without_kvm_every_check_is_a_skip_never_a_pass() {
        for s in mte_suites::all() {
            let finding = execute(s, &unavailable(false));
            assert_eq!(finding.outcome, Outcome::Skip, "{}", s.name);
            assert_eq!(finding.reason, "no arm64 KVM");
        }
    }

    #[test]
    fn where_the_lane_promised_kvm_its_absence_fails_every_check() {
        for s in mte_suites::all() {
            let finding = execute(s, &unavailable(true));
            assert_eq!(finding.outcome, Outcome::Fail, "{}", s.name);
            assert!(
                finding.reason.contains("no arm64 KVM"),
                "{}",
                finding.reason
            );
        }
    }
}
