//! The test harness: every scenario (and every fault-injection proof) becomes a libtest-mimic
//! trial, so filters, --list, --exact, --ignored and --test-threads behave as in `cargo test`;
//! each trial also sends its verdict as a record the moment it is known.

use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use mte_results::shard::Shard;
use mte_results::stream::{Record, ALIVE_EVERY};
use mte_results::{Environment, Evidence, Feature, Lane, Outcome, Tally, Verdict, SCHEMA_VERSION};
use mte_suites::inject::{Injecting, Injection};
use mte_suites::race_plan::{configure, parse_seed, RaceSettings};
use mte_suites::vmm::{AbiVm, BootOptions, Guest, IpaSizes, Vmm, VmmError};
use mte_suites::{Finding, Scenario};

use crate::artifacts::KeepsArtifacts;
use crate::emit;
use crate::environment;
use crate::kernel_log;
use crate::mte_layers::{missing_in_emulated_machine, MteSigns};
use crate::selection;
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
    /// Trials an earlier boot of the same run already judged, by exact name: left out (a boot
    /// that resumes one whose kernel stopped).
    pub already_judged: Vec<String>,
    /// Run the performance suite (`crate::bench`) instead of the checks.
    pub bench: bool,
    /// The seed and time budget of the race checks.
    pub races: RaceSettings,
    /// Run each check's fault-injection proofs after the checks.
    pub prove: bool,
    pub harness_args: Vec<String>,
}

impl Options {
    pub const USAGE: &'static str = "mte-runner [--lane NAME] [--inject MODE] [--payload-dir DIR] \
        [--deadline SECS] [--qemu PATH] [--shard K/N] [--select CHECK]... [--already-judged TRIAL]... [--bench] [--prove] \
        [--seed N] [--race-budget SECS] [LIBTEST-ARGS...]";

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
            already_judged: Vec::new(),
            bench: false,
            races: RaceSettings::default(),
            prove: false,
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
                "--already-judged" => options.already_judged.push(value("--already-judged")?),
                "--bench" => options.bench = true,
                "--prove" => options.prove = true,
                "--deadline" => options.deadline = seconds("--deadline", &value("--deadline")?)?,
                "--seed" => {
                    let seed = value("--seed")?;
                    options.races.seed = Some(parse_seed(&seed).ok_or_else(|| {
                        format!("--seed {seed:?} is not a number (decimal or 0x-hex)")
                    })?);
                }
                "--race-budget" => {
                    options.races.budget = seconds("--race-budget", &value("--race-budget")?)?
                }
                _ => options.harness_args.push(arg),
            }
        }
        // The performance suite takes libtest's one filter; the checks take several.
        if options.bench {
            options.libtest_arguments()?;
        } else {
            selection::arguments(&options.harness_args)?;
        }
        Ok(options)
    }
}

/// A positive number of seconds given to `option`.
fn seconds(option: &str, secs: &str) -> Result<Duration, String> {
    secs.parse()
        .ok()
        .filter(|&s: &f64| s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{option} {secs:?} is not a positive number of seconds"))
}

impl Options {
    /// The libtest arguments, parsed without exiting the process on an error or on --help.
    pub fn libtest_arguments(&self) -> Result<Arguments, String> {
        let argv =
            std::iter::once("mte-runner".to_string()).chain(self.harness_args.iter().cloned());
        <Arguments as clap::Parser>::try_parse_from(argv).map_err(|e| e.to_string())
    }
}

/// A VMM that is not there: every step fails for the same reason, as a skip where the lane's
/// checks cannot be judged (the lane lacks what they need, which the run reports as its error),
/// as a fail where what the lane promised broke under the checks' feet.
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
    fn without_injection(&self) -> &dyn Vmm {
        self
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
    fn ipa_sizes(&self) -> Result<IpaSizes, VmmError> {
        Err(self.error())
    }
}

type SharedVmm = Arc<dyn Vmm + Send + Sync>;

/// The feature of run.json that says the IPA size of the lane's VMs.
pub const IPA_SIZE_FEATURE: &str = "KVM VM IPA size";

/// The lane's VMM as opened: what was found of it, and what the lane's machine or VMM lacks of
/// what the lane needs (a run error, which no verdict may stand in for).
struct Opened {
    vmm: SharedVmm,
    facts: Vec<Feature>,
    setup_error: Option<String>,
}

impl Opened {
    fn unavailable(options: &Options, kernel_release: &str, reason: String) -> SharedVmm {
        Arc::new(Unavailable {
            lane: options.lane,
            kernel_release: kernel_release.into(),
            reason,
            promised: false,
        })
    }
}

/// Open the lane's VMM and describe what was found.
fn open_vmm(options: &Options, kernel_release: &str) -> Opened {
    let facts = crate::kernel_config::features();
    match options.lane {
        Lane::Qemu | Lane::QemuKvm => open_qemu_lane(options, kernel_release, facts),
        Lane::Emulated | Lane::Host => open_kvm_lane(options, kernel_release, facts),
    }
}

/// The words of a VMM error a skip or a run error quotes.
fn reason_of(error: VmmError) -> String {
    match error {
        VmmError::Unsupported(why) => why,
        other => other.to_string(),
    }
}

/// KVM as the VMM. The emulated lane's machine is built to give KVM with MTE: where a layer of
/// it does not (QEMU's MTE, the kernel's, KVM's capability, KVM itself), that is the run's
/// error, naming the layer, and the checks that need what is missing skip while the others run.
/// The host lane promises nothing: there its checks skip one by one.
fn open_kvm_lane(options: &Options, kernel_release: &str, mut facts: Vec<Feature>) -> Opened {
    let promised = options.lane == Lane::Emulated;
    let opened = KvmVmm::open(
        options.lane,
        kernel_release,
        options.payload_dir.clone(),
        options.deadline,
    );
    let kvm = match opened {
        Ok(kvm) => kvm,
        Err(e) => return without_kvm(options, kernel_release, reason_of(e), facts),
    };
    facts.push(Feature::new("KVM API version", kvm.api_version()));
    facts.push(Feature::new("KVM_CAP_ARM_MTE", kvm.has_mte_cap()));
    facts.push(Feature::new(IPA_SIZE_FEATURE, kvm.describe_ipa_size()));
    if promised {
        let signs = MteSigns::of_this_machine(Ok(kvm.has_mte_cap()));
        facts.extend(signs.features());
        if let Some(lacks) = missing_in_emulated_machine(&signs) {
            // The checks that need MTE skip with this reason; the others still run.
            return Opened {
                vmm: Arc::new(KeepsArtifacts(kvm.without_mte_because(lacks.clone()))),
                facts,
                setup_error: Some(machine_lacks(options.lane, &lacks)),
            };
        }
    }
    match kvm.mte_capable().and_then(|()| guest_view(&kvm)) {
        Ok(view) => facts.extend(view),
        Err(e) => {
            facts.push(Feature::new("guest probe boot", &e));
            if promised {
                // KVM offers MTE, yet a guest with it does not boot: that is KVM's to answer
                // for, in every check.
                let reason = format!(
                    "the emulated lane's machine is built with KVM and MTE, yet {}",
                    reason_of(e)
                );
                return Opened {
                    vmm: Arc::new(Unavailable {
                        lane: options.lane,
                        kernel_release: kernel_release.into(),
                        reason,
                        promised: true,
                    }),
                    facts,
                    setup_error: None,
                };
            }
            // The checks that need MTE skip one by one; the others still run.
        }
    }
    Opened {
        vmm: Arc::new(KeepsArtifacts(kvm)),
        facts,
        setup_error: None,
    }
}

/// The run error of a lane whose machine lacks what the lane needs.
fn machine_lacks(lane: Lane, why: &str) -> String {
    format!("the {lane} lane's machine lacks what the lane needs: {why}")
}

/// A KVM lane where /dev/kvm cannot be opened (`why`): every check skips. In the emulated
/// lane, whose machine is built to have KVM, that is the run's error too, saying which layer.
fn without_kvm(
    options: &Options,
    kernel_release: &str,
    why: String,
    mut facts: Vec<Feature>,
) -> Opened {
    facts.push(Feature::new("KVM", format!("unavailable: {why}")));
    let (reason, setup_error) = match options.lane {
        Lane::Emulated => {
            let signs = MteSigns::of_this_machine(Err(why));
            let lacks = missing_in_emulated_machine(&signs).unwrap_or_default();
            let error = machine_lacks(options.lane, &lacks);
            (lacks, Some(error))
        }
        _ => (why, None),
    };
    Opened {
        vmm: Opened::unavailable(options, kernel_release, reason),
        facts,
        setup_error,
    }
}

/// QEMU as the VMM (under TCG in the qemu lane, on the machine's KVM in the qemu-kvm lane),
/// after one probe boot. A QEMU that cannot be run, or that lacks what the lane drives (a
/// version without the gdbstub's memory-tagging packets, a stub that does not know a packet,
/// no KVM with MTE beneath it), is the run's error, every check a skip with the reason; any
/// other failure of the probe is QEMU's, as the VMM under test, in every check.
fn open_qemu_lane(options: &Options, kernel_release: &str, mut facts: Vec<Feature>) -> Opened {
    let lane = options.lane;
    let lane_lacks =
        |why: &str| format!("the {lane} lane's QEMU lacks what the lane drives: {why}");
    let accel = match lane {
        Lane::QemuKvm => Accel::Kvm,
        _ => Accel::Tcg,
    };
    let opened = QemuVmm::open(
        options.lane,
        options.qemu.clone(),
        accel,
        kernel_release,
        options.payload_dir.clone(),
        options.deadline,
    );
    let qemu = match opened {
        Ok(qemu) => qemu,
        Err(e) => {
            let why = reason_of(e);
            facts.push(Feature::new("QEMU", format!("unavailable: {why}")));
            return Opened {
                vmm: Opened::unavailable(options, kernel_release, why.clone()),
                facts,
                setup_error: Some(lane_lacks(&why)),
            };
        }
    };
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
    let release = qemu.kernel_release().to_string();
    match view {
        Ok(view) => {
            facts.extend(view);
            Opened {
                vmm: Arc::new(qemu),
                facts,
                setup_error: None,
            }
        }
        Err(VmmError::Unsupported(why)) => {
            facts.push(Feature::new("guest probe boot", &why));
            Opened {
                vmm: Opened::unavailable(options, &release, why.clone()),
                facts,
                setup_error: Some(lane_lacks(&why)),
            }
        }
        Err(e) => {
            facts.push(Feature::new("guest probe boot", &e));
            let reason = format!(
                "the {lane} lane's QEMU runs its guests with mte=on, yet {}",
                reason_of(e)
            );
            Opened {
                vmm: Arc::new(Unavailable {
                    lane: options.lane,
                    kernel_release: release,
                    reason,
                    promised: true,
                }),
                facts,
                setup_error: None,
            }
        }
    }
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
        // xtask stamps the boot: the runner does not know which of the lane's boots it is in.
        boot: 0,
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
        emit::record(&Record::Started {
            test: scenario.name.into(),
        });
        let started = Instant::now();
        let warn = inject == Some(Injection::KernelWarn);
        let finding = kernel_log::during(scenario.name, warn, || match inject {
            Some(injection) => execute(
                scenario,
                &Injecting {
                    inner: vmm.as_ref(),
                    injection,
                },
            ),
            None => execute(scenario, vmm.as_ref()),
        });
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
    let name = selection::proof_name(scenario, injection);
    Trial::ignorable_test(name.clone(), move || {
        emit::record(&Record::Started { test: name.clone() });
        let started = Instant::now();
        let warn = injection == Injection::KernelWarn;
        let inner = kernel_log::during(&name, warn, || {
            execute(
                scenario,
                &Injecting {
                    inner: vmm.as_ref(),
                    injection,
                },
            )
        });
        let finding = judge_injected(scenario.name, injection, inner);
        conclude(verdict(&name, vmm.as_ref(), finding, started), &tally)
    })
}

/// The checks the libtest arguments, the filters, the shard and the selection select, in words;
/// empty for all of them without their proofs.
fn describe_selection(
    args: &Arguments,
    filters: &[String],
    shard: Option<Shard>,
    select: &[String],
    already_judged: usize,
    prove: bool,
) -> String {
    let mut words = Vec::new();
    if let Some(shard) = shard {
        words.push(format!("shard {shard}"));
    }
    if !select.is_empty() {
        words.push(format!("{} checks selected", select.len()));
    }
    if !filters.is_empty() {
        let filters = filters.join(" ");
        words.push(if args.exact {
            format!("exactly {filters}")
        } else {
            filters
        });
    }
    words.extend(args.skip.iter().map(|skip| format!("--skip {skip}")));
    if already_judged > 0 {
        words.push(format!(
            "resuming: {already_judged} judged by an earlier boot left out"
        ));
    }
    if args.ignored {
        words.push("--ignored".into());
    }
    if prove {
        words.push(WITH_PROOFS.into());
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
        // A check that skipped or xfailed was not shown able to fail: the proof proved nothing.
        Outcome::Skip | Outcome::Xfail => (
            Outcome::Skip,
            format!(
                "{scenario} was {}, so the injection proved nothing: {}",
                inner.outcome, inner.reason
            ),
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

/// How a selection says that the checks' fault-injection proofs run too.
pub const WITH_PROOFS: &str = "with their fault-injection proofs";

/// Every trial, as [`selection::plan`] orders them.
fn trials(
    vmm: &SharedVmm,
    inject: Option<Injection>,
    prove: bool,
    tally: &SharedTally,
) -> Vec<Trial> {
    // Where the kernel log is not heard, an injected kernel warning proves nothing.
    let heard = kernel_log::unavailable().is_none();
    (selection::plan(inject, prove).into_iter())
        .filter(|planned| heard || planned.proof != Some(Injection::KernelWarn))
        .map(|planned| match planned.proof {
            None => scenario_trial(planned.scenario, Arc::clone(vmm), inject, Arc::clone(tally)),
            Some(injection) => injection_trial(
                planned.scenario,
                Arc::clone(vmm),
                injection,
                Arc::clone(tally),
            ),
        })
        .collect()
}

/// Run `work`, saying every [`ALIVE_EVERY`] that the runner is alive: the host side tells a
/// machine that stopped from checks that take long by these records.
fn while_saying_alive<T>(work: impl FnOnce() -> T) -> T {
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let alive = std::thread::spawn(move || {
        while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(ALIVE_EVERY) {
            emit::record(&Record::Alive);
            if let Some(kernel) = kernel_log::open_already() {
                kernel.send();
            }
        }
    });
    let result = work();
    drop(done);
    let _ = alive.join();
    result
}

/// One test thread more than the machine has CPUs: checks leave a CPU idle while they wait
/// (a vCPU thread's sleep, a held copy, a deadline, a host call), and on the emulated machine
/// (2 CPUs) the default run took 7.4 s of checks with two threads, 6.9 s with three and 6.8 s
/// with four. The races and the cost checks take turns among themselves whatever the count.
fn default_test_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) + 1
}

/// Run the harness; returns whether every check that ran avoided fail.
pub fn run(options: &Options) -> bool {
    let started = Instant::now();
    let (mut args, filters) =
        selection::arguments(&options.harness_args).expect("validated by Options::parse");
    let threads = *args.test_threads.get_or_insert_with(default_test_threads);
    let (kernel_release, _, _) = environment::uname();
    configure(options.races);
    let Opened {
        vmm,
        mut facts,
        setup_error,
    } = open_vmm(options, &kernel_release);
    // Asked after the VMM is open: as init, the machine is set up meanwhile.
    facts.splice(0..0, crate::machine_setup::features());
    if let Some(injection) = options.inject {
        facts.push(Feature::new("fault injection", injection.name()));
    }
    if let Some(seed) = options.races.seed {
        facts.push(Feature::new("race seed", format!("{seed:#x}")));
    }
    facts.push(Feature::new("test threads", threads));
    facts.push(Feature::new(
        "race budget",
        format!("{:?} a race check", options.races.budget),
    ));
    let tally = SharedTally::default();
    let kernel = kernel_log::open(options.lane);
    facts.push(Feature::new(
        "kernel log",
        match kernel_log::unavailable() {
            Some(why) => format!("not read: {why}"),
            None => "read from /dev/kmsg while checks run".into(),
        },
    ));
    let mut trials = trials(&vmm, options.inject, options.prove, &tally);
    let available = trials.len();
    if let Some(shard) = options.shard {
        trials.retain(|t| shard.contains(t.name()));
    }
    trials.retain(|t| selection::passes_filters(&args, &filters, t.name()));
    if !options.select.is_empty() {
        let selected = |name: &str| {
            options
                .select
                .iter()
                .any(|s| s == selection::check_of(name))
        };
        trials.retain(|t| selected(t.name()));
    }
    trials.retain(|t| !options.already_judged.iter().any(|j| j == t.name()));
    let checks: Vec<String> = match args.list {
        true => Vec::new(),
        false => (trials.iter())
            .filter(|t| !args.is_filtered_out(t) && !args.is_ignored(t))
            .map(|t| t.name().to_string())
            .collect(),
    };
    emit::record(&Record::Hello {
        schema: SCHEMA_VERSION,
        environment: Environment {
            // What the lane's verdicts name as their kernel: the kernel under KVM, or the QEMU
            // that is the VMM in the qemu lane (where uname says only where the runner runs).
            kernel_release: vmm.kernel_release().to_string(),
            ..environment::probe(options.lane, facts)
        },
        planned: checks.len(),
        available,
        list: args.list,
        selection: describe_selection(
            &args,
            &filters,
            options.shard,
            &options.select,
            options.already_judged.len(),
            options.prove,
        ),
        bench: false,
        setup_error,
        checks,
    });
    if args.list {
        for trial in trials.iter().filter(|t| !args.is_filtered_out(t)) {
            emit::log(format!("{}: test", trial.name()));
        }
    }
    let kernel = (!args.list).then_some(kernel);
    if let Some(kernel) = kernel {
        kernel.send();
    }
    let conclusion = while_saying_alive(|| libtest_mimic::run(&args, trials));
    if let Some(kernel) = kernel {
        kernel.send();
        let (lines, attributed) = kernel.figures();
        emit::log(match kernel_log::unavailable() {
            Some(why) => format!("kernel log not read: {why}"),
            None => format!("kernel log: {lines} lines, {attributed} logged while checks ran"),
        });
    }
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
    use crate::selection::is_long;

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
        let o = parse(&["--already-judged", "tags::a", "tags::"]).unwrap();
        assert_eq!(o.already_judged, ["tags::a"]);
        assert_eq!(o.harness_args, vec!["tags::"]);
        assert_eq!(
            selection::check_of("fault_injection::corrupt_tag::tags::a"),
            "tags::a"
        );
        assert_eq!(selection::check_of("tags::a"), "tags::a");
        assert!(!o.prove);
        assert!(parse(&["--prove", "tags::"]).unwrap().prove);
        let o = parse(&["--shard", "2/3", "tags::"]).unwrap();
        assert_eq!(o.shard.map(|s| s.to_string()).as_deref(), Some("2/3"));
        assert_eq!(o.harness_args, vec!["tags::"]);
        assert!(parse(&["--shard", "4/3"]).unwrap_err().contains("K/N"));
    }

    #[test]
    fn the_race_seed_and_budget_are_the_runners() {
        let o = parse(&["--seed", "0x2a", "--race-budget", "10", "races::"]).unwrap();
        assert_eq!(o.races.seed, Some(42));
        assert_eq!(o.races.budget, Duration::from_secs(10));
        assert_eq!(o.harness_args, vec!["races::"]);
        assert_eq!(parse(&[]).unwrap().races, RaceSettings::default());
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
        assert!(parse(&["--seed", "x"]).unwrap_err().contains("--seed"));
        assert!(parse(&["--race-budget", "0"])
            .unwrap_err()
            .contains("--race-budget"));
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
        // The features check starts the run, and the race checks, which take turns, are
        // spread through the rest from the start.
        let names: Vec<bool> = trials(&vmm, None, true, &SharedTally::default())
            .iter()
            .filter(|t| !selection::takes_turns(t.name()) && !selection::is_first(t.name()))
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
        let names: Vec<String> = trials(&vmm, None, true, &tally)
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        for s in mte_suites::all() {
            // No kernel log is heard in unit tests: a kernel warning could not be.
            for &injection in s.proven_by.iter().filter(|&&i| i != Injection::KernelWarn) {
                assert!(names.contains(&selection::proof_name(s, injection)));
            }
        }
        let injected: Vec<Trial> = trials(&vmm, Some(Injection::CorruptTag), true, &tally);
        assert_eq!(injected.len(), mte_suites::all().len());
        // Not asked to prove, the checks run alone.
        let checks: Vec<Trial> = trials(&vmm, None, false, &tally);
        assert_eq!(checks.len(), mte_suites::all().len());
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
        assert_eq!(judge(Finding::xfail("refused before 6.2")), Outcome::Skip);
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

    fn options_for(lane: Lane) -> Options {
        Options {
            lane,
            qemu: "/nonexistent/qemu-system-aarch64".into(),
            ..parse(&[]).unwrap()
        }
    }

    #[test]
    fn an_emulated_machine_without_kvm_is_a_run_error_and_its_checks_skip() {
        // This host is not the emulated machine: there is no arm64 KVM here, which in the
        // emulated lane is what its machine lacks.
        if cfg!(target_arch = "aarch64") {
            return;
        }
        let opened = open_vmm(&options_for(Lane::Emulated), "6.12.95");
        let error = opened.setup_error.expect("a run error");
        assert!(
            error.starts_with("the emulated lane's machine lacks what the lane needs: the emulated machine has no KVM"),
            "{error}"
        );
        for s in mte_suites::all() {
            let finding = execute(s, opened.vmm.as_ref());
            assert_eq!(finding.outcome, Outcome::Skip, "{}", s.name);
        }
        // The host lane promises nothing: its checks skip, and that is no run error.
        assert_eq!(
            open_vmm(&options_for(Lane::Host), "6.12.95").setup_error,
            None
        );
    }

    #[test]
    fn a_qemu_lane_without_its_qemu_is_a_run_error_and_its_checks_skip() {
        let opened = open_vmm(&options_for(Lane::Qemu), "6.12.95");
        let error = opened.setup_error.expect("a run error");
        assert!(
            error.starts_with(
                "the qemu lane's QEMU lacks what the lane drives: no QEMU at /nonexistent"
            ),
            "{error}"
        );
        let finding = execute(mte_suites::all()[0], opened.vmm.as_ref());
        assert_eq!(finding.outcome, Outcome::Skip);
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
