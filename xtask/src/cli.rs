//! The command line, declared once with clap: the parser, its errors and `--help` all come from
//! the declarations below.

use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};
use mte_results::compare::Thresholds;
use mte_results::shard::Shard;
use mte_suites::race_plan::RUN_RACE_BUDGET;

use crate::lanes;

pub use mte_results::Lane;

/// The kernel used when neither `--kernel` nor `MTE_KERNEL` names one: one kernel keeps CI fast.
pub const DEFAULT_KERNEL: &str = "6.12";
/// The whole run's deadline when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// The lanes `all` means on a machine that is arm64 or not (the host lane only on arm64).
pub fn lanes_here(arm64: bool) -> Vec<Lane> {
    Lane::ALL
        .into_iter()
        .filter(|&lane| lanes::driver(lane).in_all(arm64))
        .collect()
}

/// Whether xtask runs on an arm64 machine.
pub const ARM64_HOST: bool = cfg!(target_arch = "aarch64");

/// The lanes `run` takes without `--lane`: the emulated lane, the suite's main job.
pub const DEFAULT_RUN_LANES: &[Lane] = &[Lane::Emulated];

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The lanes to run, in order; each gets its part of the one run directory.
    pub lanes: Vec<Lane>,
    /// Each a series like `6.12`, `newest`, or a path to a kernel image; see
    /// `kernels::KernelSpec`. The emulated lane runs once per kernel, in this order.
    pub kernels: Vec<String>,
    pub timeout: Duration,
    /// Only this shard of the checks.
    pub shard: Option<Shard>,
    /// Compare the run with this baseline at its end.
    pub baseline: Option<String>,
    pub thresholds: Thresholds,
    /// Run the performance suite instead of the checks.
    pub bench: bool,
    /// The race checks' seed and time budget, for the runner.
    pub races: RaceFlags,
    /// Run each check's fault-injection proofs after the checks.
    pub prove: bool,
    /// Passed untouched to the in-guest harness.
    pub harness_args: Vec<String>,
    /// Whether this is `test`'s run, where a lane may take a share of its checks.
    pub for_test: bool,
}

impl Options {
    /// What the runner is given after its lane's own options: `--bench` for the performance
    /// suite, `--prove` for the proofs, the shard, the races' seed and budget, then the harness
    /// arguments untouched.
    pub fn runner_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.bench {
            args.push("--bench".to_string());
        }
        if self.prove {
            args.push("--prove".to_string());
        }
        if let Some(shard) = self.shard {
            args.push("--shard".to_string());
            args.push(shard.to_string());
        }
        if let Some(seed) = self.races.seed {
            args.push("--seed".to_string());
            args.push(format!("{seed:#x}"));
        }
        if let Some(budget) = self.races.budget {
            args.push("--race-budget".to_string());
            args.push(budget.as_secs_f64().to_string());
        }
        args.extend(self.harness_args.iter().cloned());
        args
    }
}

/// `compare BASELINE [RUN]`.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareOptions {
    /// A run directory, or a name kept under `results/baselines/`.
    pub baseline: String,
    /// The run compared; the latest when not given.
    pub run: Option<PathBuf>,
    pub thresholds: Thresholds,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Run(Options),
    Bench(Options),
    Test(Options),
    Setup(Options),
    Build(Options),
    Compare(CompareOptions),
    /// Keep a run as a named baseline.
    KeepBaseline {
        name: String,
        run: Option<PathBuf>,
    },
    ReportMerge {
        runs: Vec<PathBuf>,
        out: PathBuf,
    },
    ReportCheck {
        run: Option<PathBuf>,
    },
    LavaResults {
        run: Option<PathBuf>,
    },
    /// Write a run's KCIDB submission.
    Kcidb {
        run: Option<PathBuf>,
        origin: String,
    },
    /// rustfmt and clippy, warnings denied, as `test` runs them.
    Lint,
    /// The suite for a device without Rust, as one tarball.
    Bundle {
        out: Option<PathBuf>,
    },
    /// The bundle on the emulated machine booted as a device, against a run's emulated lane.
    Device {
        kernel: String,
        against: Option<PathBuf>,
    },
    /// A device's run of the bundle, made a run directory.
    Import {
        device_run: PathBuf,
        out: Option<PathBuf>,
    },
    /// The fuzz targets: one (or each) for this many seconds.
    Fuzz {
        target: Option<String>,
        seconds: u64,
    },
}

/// Parse the arguments after `cargo xtask`. `env_kernel` is `MTE_KERNEL`, if set. `--help`
/// comes back as an error of kind [`ErrorKind::DisplayHelp`], whose exit code is 0.
pub fn parse(args: &[String], env_kernel: Option<String>) -> Result<Command, clap::Error> {
    parse_on(args, env_kernel, ARM64_HOST)
}

/// As [`parse`], on a machine that is arm64 or not.
fn parse_on(
    args: &[String],
    env_kernel: Option<String>,
    arm64: bool,
) -> Result<Command, clap::Error> {
    let words = std::iter::once("cargo xtask").chain(args.iter().map(String::as_str));
    let line = CommandLine::try_parse_from(words).map_err(|e| with_harness_tip(e, args))?;
    let defaults = Defaults::new(env_kernel, arm64)?;
    let options = |lanes, bench, flags: &[&dyn Flag]| defaults.options(lanes, bench, flags);
    let run_lanes = DEFAULT_RUN_LANES.to_vec();
    Ok(match line.command {
        Cmd::Run {
            lane,
            kernel,
            timeout,
            shard,
            prove,
            baseline,
            threshold,
            races,
            harness,
        } => Command::Run(Options {
            // The default run gives each race check less time than CI and the lab (the
            // runner's own default).
            races: RaceFlags {
                budget: races.budget.or(Some(RUN_RACE_BUDGET)),
                ..races
            },
            ..options(
                run_lanes,
                false,
                &[
                    &lane, &kernel, &timeout, &shard, &prove, &baseline, &threshold, &races,
                    &harness,
                ],
            )
        }),
        // CI proves every check it runs.
        Cmd::Test {
            lane,
            kernel,
            timeout,
            shard,
            races,
            harness,
        } => Command::Test(Options {
            prove: true,
            for_test: true,
            ..options(
                lanes_here(arm64),
                false,
                &[&lane, &kernel, &timeout, &shard, &races, &harness],
            )
        }),
        Cmd::Bench {
            lane,
            kernel,
            timeout,
            harness,
        } => {
            let options = options(run_lanes, true, &[&lane, &kernel, &timeout, &harness]);
            Command::Bench(only_kvm_lanes(options)?)
        }
        Cmd::Setup { kernel } => Command::Setup(options(run_lanes, false, &[&kernel])),
        Cmd::Build {
            kernel,
            shard,
            harness,
        } => Command::Build(options(run_lanes, false, &[&kernel, &shard, &harness])),
        Cmd::Compare {
            threshold,
            baseline,
            run,
        } => Command::Compare(CompareOptions {
            baseline,
            run,
            thresholds: options(run_lanes, false, &[&threshold]).thresholds,
        }),
        Cmd::Baseline { name, run } => Command::KeepBaseline { name, run },
        Cmd::Report(ReportCmd::Merge { runs, out }) => Command::ReportMerge { runs, out },
        Cmd::Report(ReportCmd::Check { run }) => Command::ReportCheck { run },
        Cmd::LavaResults { run } => Command::LavaResults { run },
        Cmd::Kcidb { run, origin } => Command::Kcidb { run, origin },
        Cmd::Lint => Command::Lint,
        Cmd::Bundle { out } => Command::Bundle { out },
        Cmd::Device { kernel, against } => Command::Device {
            kernel: kernel.unwrap_or_else(|| DEFAULT_KERNEL.to_string()),
            against,
        },
        Cmd::Import { device_run, out } => Command::Import { device_run, out },
        Cmd::Fuzz { target, seconds } => Command::Fuzz {
            target,
            seconds: seconds.unwrap_or(crate::fuzz::DEFAULT_SECONDS),
        },
    })
}

/// What a command takes when its flags do not say.
struct Defaults {
    /// `MTE_KERNEL`'s kernels, else the default one.
    kernels: Vec<String>,
    /// Whether this machine is arm64, for what `--lane all` means.
    arm64: bool,
}

impl Defaults {
    fn new(env_kernel: Option<String>, arm64: bool) -> Result<Defaults, clap::Error> {
        let env_kernel = env_kernel.filter(|k| !k.is_empty());
        let kernels = parse_kernels(env_kernel.as_deref().unwrap_or(DEFAULT_KERNEL));
        let kernels = kernels.map_err(|e| {
            CommandLine::command().error(ErrorKind::ValueValidation, format!("MTE_KERNEL {e}"))
        })?;
        Ok(Defaults {
            kernels: kernels.0,
            arm64,
        })
    }

    /// A command's options: its defaults, then its flags.
    fn options(&self, lanes: Vec<Lane>, bench: bool, flags: &[&dyn Flag]) -> Options {
        let mut options = Options {
            lanes,
            kernels: self.kernels.clone(),
            timeout: DEFAULT_TIMEOUT,
            shard: None,
            baseline: None,
            thresholds: Thresholds::default(),
            bench,
            races: RaceFlags::default(),
            prove: false,
            harness_args: Vec::new(),
            for_test: false,
        };
        for flag in flags {
            flag.apply(&mut options, self.arm64);
        }
        options
    }
}

/// `bench` options whose lanes all have the runner as the VMM on a KVM.
fn only_kvm_lanes(options: Options) -> Result<Options, clap::Error> {
    let Some(lane) = options.lanes.iter().find(|l| !l.runner_is_vmm()) else {
        return Ok(options);
    };
    let why = format!(
        "`bench` drives KVM, in the emulated machine or on this host: lanes emulated and \
         host, not {lane}"
    );
    let mut line = CommandLine::command();
    line.build();
    let bench = line.find_subcommand_mut("bench").expect("declared below");
    Err(bench.error(ErrorKind::ValueValidation, why))
}

/// clap's error for a stray word, with where it belongs: harness arguments (a name filter, say)
/// go after `--`, and a command without a harness takes none.
fn with_harness_tip(mut e: clap::Error, args: &[String]) -> clap::Error {
    let (ErrorKind::UnknownArgument, Some(ContextValue::String(stray)), Some(name)) =
        (e.kind(), e.get(ContextKind::InvalidArg), args.first())
    else {
        return e;
    };
    let takes_harness = CommandLine::command()
        .find_subcommand(name)
        .is_some_and(|c| c.get_arguments().any(|a| a.is_last_set()));
    let tip = if !takes_harness && args.iter().any(|a| a == "--") {
        format!("`{name}` takes no harness arguments")
    } else if takes_harness && !stray.starts_with('-') {
        format!("harness arguments go after `--`: cargo xtask {name} -- {stray}")
    } else {
        return e;
    };
    let tip = ContextValue::StyledStrs(vec![tip.into()]);
    e.insert(ContextKind::Suggested, tip);
    e
}

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build and run the MTE KVM conformance suite.",
    after_help = AFTER_HELP
)]
struct CommandLine {
    #[command(subcommand)]
    command: Cmd,
}

const AFTER_HELP: &str = "\
Harness arguments (after `--`) reach the in-guest runner untouched: name filters (a
check runs when any matches), --exact, --list, --ignored, --include-ignored,
--skip FILTER, --inject MODE; -q and --format json change what xtask prints.
`-- --list`, `-- --help`, argument errors and filters that match nothing are
answered on the host, without a boot.

Examples: cargo xtask run --kernel 6.1,6.12,newest -- tags::
          cargo xtask run --lane host --shard 1/4 --baseline nightly

Environment: MTE_KERNEL (as --kernel), MTE_QEMU (a qemu-system-aarch64 to use),
MTE_CACHE_DIR (kernel cache; default ~/.cache/mte-suite).

Exit status: 0 all checks passed or were skipped/xfailed, 1 a check failed,
2 a setup or run error (the message says what to do). With a baseline (`compare`,
`run --baseline`): 0 no regression, 1 regressed, 2 bad input or a run error.";

/// The commands, each with its flags: a flag is declared once, below, and flattened into the
/// commands that take it.
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Install what is missing, build, boot the machine once per kernel, run the checks
    #[command(after_help = AFTER_HELP)]
    Run {
        #[command(flatten)]
        lane: LaneFlag,
        #[command(flatten)]
        kernel: KernelFlag,
        #[command(flatten)]
        timeout: TimeoutFlag,
        #[command(flatten)]
        shard: ShardFlag,
        #[command(flatten)]
        prove: ProveFlag,
        #[command(flatten)]
        baseline: BaselineFlag,
        #[command(flatten)]
        threshold: ThresholdFlag,
        #[command(flatten)]
        races: RaceFlags,
        #[command(flatten)]
        harness: HarnessArgs,
    },
    /// What CI runs: the lints, the host unit tests, `run --prove`, then the report in a
    /// headless browser
    ///
    /// Fails on any fail, error, unproven check or no pass.
    #[command(after_help = AFTER_HELP)]
    Test {
        #[command(flatten)]
        lane: LaneFlag,
        #[command(flatten)]
        kernel: KernelFlag,
        #[command(flatten)]
        timeout: TimeoutFlag,
        #[command(flatten)]
        shard: ShardFlag,
        #[command(flatten)]
        races: RaceFlags,
        #[command(flatten)]
        harness: HarnessArgs,
    },
    /// The performance suite: criterion benchmarks of what MTE costs a KVM guest
    ///
    /// Tag copies, a VM's life, first touch, copy-on-write, swap, migration, tag
    /// instructions; bench.json, criterion's files and the report in the run
    /// directory; harness arguments select benchmarks by name.
    #[command(verbatim_doc_comment, after_help = AFTER_HELP)]
    Bench {
        #[command(flatten)]
        lane: LaneFlag,
        #[command(flatten)]
        kernel: KernelFlag,
        #[command(flatten)]
        timeout: TimeoutFlag,
        #[command(flatten)]
        harness: HarnessArgs,
    },
    /// Only check and install the tools and fetch the kernels
    Setup {
        #[command(flatten)]
        kernel: KernelFlag,
    },
    /// Only build the payload, the aarch64 runner and an initramfs per kernel
    Build {
        #[command(flatten)]
        kernel: KernelFlag,
        #[command(flatten)]
        shard: ShardFlag,
        #[command(flatten)]
        harness: HarnessArgs,
    },
    /// Compare RUN (default: the latest) with BASELINE; exit 1 when it regressed
    Compare {
        #[command(flatten)]
        threshold: ThresholdFlag,
        /// A run directory, or a name kept under results/baselines/
        baseline: String,
        /// The run compared (default: the latest)
        run: Option<PathBuf>,
    },
    /// Keep RUN (default: the latest) as results/baselines/NAME, for `compare NAME`
    Baseline {
        /// The baseline's name: letters, digits, `.`, `_`, `-` and `+`
        name: String,
        /// The run kept (default: the latest)
        run: Option<PathBuf>,
    },
    /// Merge runs (shards) into one run and report, or check a report in a headless browser
    #[command(subcommand)]
    Report(ReportCmd),
    /// Print RUN's verdicts (default: the latest) as `lava-test-case` lines
    LavaResults {
        /// The run (default: the latest)
        run: Option<PathBuf>,
    },
    /// Write RUN's results (default: the latest) as a KCIDB submission, RUN/kcidb.json
    ///
    /// Schema 4.0 of kcidb-io: a checkout and a build per kernel, a test per check
    /// (PASS, FAIL, SKIP, an xfail as a waived FAIL, MISS, ERROR), ids prefixed by the origin.
    #[command(verbatim_doc_comment)]
    Kcidb {
        /// The CI system's name in KCIDB: lowercase letters, digits, `_`
        #[arg(long, default_value = mte_results::kcidb::DEFAULT_ORIGIN)]
        origin: String,
        /// The run (default: the latest)
        run: Option<PathBuf>,
    },
    /// rustfmt and clippy with warnings denied: the host workspace, the runner for aarch64 and
    /// the guest payload for bare metal (as `test` runs them)
    Lint,
    /// Build the tarball for an arm64 device without Rust: the static runner, the payload and
    /// run.sh, the POSIX sh driver of the host lane
    Bundle {
        /// Where the tarball goes (default: target/mte-bundle/mte-suite-arm64.tar.gz)
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Boot the emulated machine as a device (busybox and the bundle), run the bundle's driver
    /// as a LAVA test shell would, and compare its verdicts with a run's emulated lane (as
    /// `test` does)
    Device {
        /// The kernel the device boots (default 6.12)
        #[arg(long, value_name = "SERIES")]
        kernel: Option<String>,
        /// The run whose emulated lane it is compared with (default: the latest)
        #[arg(long, value_name = "RUN")]
        against: Option<PathBuf>,
    },
    /// Make a run directory (results.jsonl, run.json, kernel log, TAP, JUnit, report) of what
    /// the bundle's run.sh saved on a device
    Import {
        /// The directory run.sh wrote (its records, exit status and device facts)
        device_run: PathBuf,
        /// The directory the run directory is made in (default: target/mte-results, whose
        /// `latest` then names it)
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Fuzz what the suite reads from other programs (libFuzzer through cargo-fuzz)
    ///
    /// The console's records, run directories, the migration stream, gdbstub replies, QMP
    /// messages and kernel modules' .modinfo; `test` runs each target for a few seconds.
    Fuzz {
        /// One target (default: each): console_records, run_dir, migration_stream,
        /// gdb_replies, qmp_messages, modinfo
        target: Option<String>,
        /// Seconds each target runs (default: 60)
        #[arg(long, value_name = "N")]
        seconds: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum ReportCmd {
    /// Several runs (shards) as one run, with one report
    Merge {
        /// The run directories, in the order their verdicts are taken
        #[arg(required = true, value_name = "DIR")]
        runs: Vec<PathBuf>,
        /// Where the merged run goes
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Open the report in a headless browser and keep a screenshot
    Check {
        /// The run (default: the latest)
        run: Option<PathBuf>,
    },
}

/// A flag's part in [`Options`]; `arm64` says what `--lane all` means here.
trait Flag {
    fn apply(&self, options: &mut Options, arm64: bool);
}

#[derive(Args, Debug)]
struct LaneFlag {
    /// Where the VMM under test runs: emulated (KVM in the emulated machine),
    /// qemu (QEMU as the VMM), qemu-kvm (QEMU -accel kvm in the emulated
    /// machine), host (this machine's KVM: an arm64 host with /dev/kvm and
    /// MTE), all (host only on arm64), or a comma list (default: run
    /// emulated; test all, qemu-kvm a share; bench takes emulated or host)
    #[arg(verbatim_doc_comment, long = "lane", value_name = "LANES", value_parser = parse_lane_words)]
    words: Option<LaneWords>,
}

impl Flag for LaneFlag {
    fn apply(&self, options: &mut Options, arm64: bool) {
        if let Some(words) = &self.words {
            options.lanes = words.lanes(arm64);
        }
    }
}

#[derive(Args, Debug)]
struct KernelFlag {
    /// Kernels under test, a comma list (6.1,6.12,newest): a Debian arm64
    /// series, `newest` (the newest any Debian suite has), or a vmlinuz
    /// file; the emulated lane boots once per kernel (default 6.12, or
    /// MTE_KERNEL)
    #[arg(verbatim_doc_comment, long = "kernel", value_name = "KERNELS", value_parser = parse_kernels)]
    kernels: Option<Kernels>,
}

impl Flag for KernelFlag {
    fn apply(&self, options: &mut Options, _: bool) {
        if let Some(kernels) = &self.kernels {
            options.kernels.clone_from(&kernels.0);
        }
    }
}

#[derive(Args, Debug)]
struct TimeoutFlag {
    /// Deadline of the whole run, boot included (default 1800)
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_negative_numbers = true)]
    timeout: Option<Duration>,
}

impl Flag for TimeoutFlag {
    fn apply(&self, options: &mut Options, _: bool) {
        options.timeout = self.timeout.unwrap_or(options.timeout);
    }
}

#[derive(Args, Debug)]
struct ShardFlag {
    /// Run shard K of N: a fixed part of the checks (by a stable hash of
    /// their names), each check in exactly one shard; merge the shards'
    /// runs with `report merge`
    #[arg(verbatim_doc_comment, long, value_name = "K/N", value_parser = Shard::parse)]
    shard: Option<Shard>,
}

impl Flag for ShardFlag {
    fn apply(&self, options: &mut Options, _: bool) {
        options.shard = self.shard;
    }
}

#[derive(Args, Debug)]
struct ProveFlag {
    /// After the checks, run their fault-injection proofs: each check run
    /// again with a fault injected that must turn it red (`test` always
    /// does)
    #[arg(verbatim_doc_comment, long)]
    prove: bool,
}

impl Flag for ProveFlag {
    fn apply(&self, options: &mut Options, _: bool) {
        options.prove |= self.prove;
    }
}

#[derive(Args, Debug)]
struct BaselineFlag {
    /// After the run, compare it with BASELINE as `compare` does; the exit
    /// status then says whether it regressed
    #[arg(verbatim_doc_comment, long, value_name = "BASELINE")]
    baseline: Option<String>,
}

impl Flag for BaselineFlag {
    fn apply(&self, options: &mut Options, _: bool) {
        options.baseline.clone_from(&self.baseline);
    }
}

#[derive(Args, Debug)]
struct ThresholdFlag {
    /// How far a figure may move before it counts, in percent (default 25;
    /// and always more than 1 µs for a timing, 0.05 for a ratio)
    #[arg(verbatim_doc_comment, long = "threshold", value_name = "PCT", value_parser = parse_percent, allow_negative_numbers = true)]
    fraction: Option<f64>,
}

impl Flag for ThresholdFlag {
    fn apply(&self, options: &mut Options, _: bool) {
        let relative = &mut options.thresholds.relative;
        *relative = self.fraction.unwrap_or(*relative);
    }
}

/// The race checks' schedule and time budget.
#[derive(Args, Clone, Copy, Debug, Default, PartialEq)]
pub struct RaceFlags {
    /// The seed of the race checks' schedules (decimal or 0x-hex): a race
    /// verdict's evidence names its seed, and this replays its rounds
    /// (default: each check draws one from the clock)
    #[arg(verbatim_doc_comment, long, value_name = "N", value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// How long each race check plays rounds (default 0.3 for `run`, 1
    /// for `test` and the lab's bundle; more on hardware, where rarer
    /// races show)
    #[arg(verbatim_doc_comment, long = "race-budget", value_name = "SECS", value_parser = parse_fractional_seconds)]
    pub budget: Option<Duration>,
}

impl Flag for RaceFlags {
    fn apply(&self, options: &mut Options, _: bool) {
        options.races = *self;
    }
}

fn parse_seed(text: &str) -> Result<u64, String> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|_| format!("{text:?} is not a number (decimal or 0x-hex)"))
}

#[derive(Args, Debug)]
struct HarnessArgs {
    /// Arguments for the in-guest harness, untouched: a name filter,
    /// --exact, --list, --ignored, --include-ignored, --skip FILTER,
    /// --inject MODE
    #[arg(verbatim_doc_comment, last = true, value_name = "HARNESS-ARGS")]
    args: Vec<String>,
}

impl Flag for HarnessArgs {
    fn apply(&self, options: &mut Options, _: bool) {
        options.harness_args.clone_from(&self.args);
    }
}

/// A word of `--lane`: a lane, or `all`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum LaneWord {
    All,
    One(Lane),
}

#[derive(Clone, Debug, PartialEq)]
struct LaneWords(Vec<LaneWord>);

/// `emulated`, `qemu`, `qemu-kvm`, `host`, `all`, or a comma-separated list.
fn parse_lane_words(text: &str) -> Result<LaneWords, String> {
    text.split(',')
        .map(str::trim)
        .map(|word| match word {
            "all" => Ok(LaneWord::All),
            _ => word
                .parse()
                .map(LaneWord::One)
                .map_err(|e| format!("{e} (or all)")),
        })
        .collect::<Result<_, _>>()
        .map(LaneWords)
}

impl LaneWords {
    /// The lanes named, in the order given, each once.
    fn lanes(&self, arm64: bool) -> Vec<Lane> {
        let mut lanes = Vec::new();
        for word in &self.0 {
            let named = match *word {
                LaneWord::All => lanes_here(arm64),
                LaneWord::One(lane) => vec![lane],
            };
            for lane in named {
                if !lanes.contains(&lane) {
                    lanes.push(lane);
                }
            }
        }
        lanes
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Kernels(Vec<String>);

/// The kernels of `--kernel 6.1,6.12,newest`, in the order given: each word is a boot, so a
/// kernel named twice boots twice (`6.12,6.12`: a same-kernel migration round trip).
fn parse_kernels(text: &str) -> Result<Kernels, String> {
    let mut kernels: Vec<String> = Vec::new();
    for word in text.split(',').map(str::trim) {
        if word.is_empty() {
            return Err("names an empty kernel; give a comma list such as 6.1,6.12,newest".into());
        }
        kernels.push(word.to_string());
    }
    Ok(Kernels(kernels))
}

/// A percentage above 0, as a fraction.
fn parse_percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(percent) if percent > 0.0 && percent.is_finite() => Ok(percent / 100.0),
        _ => Err("wants a percentage above 0, such as 25".into()),
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err("wants a whole number of seconds above 0".into()),
    }
}

/// A positive number of seconds, fractions allowed (`0.5`).
fn parse_fractional_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|secs| *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| "wants a number of seconds above 0 (fractions allowed: 0.5)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn run_options(cmd: Command) -> Options {
        match cmd {
            Command::Run(o)
            | Command::Bench(o)
            | Command::Test(o)
            | Command::Setup(o)
            | Command::Build(o) => o,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The message a person sees for a mistake on the command line.
    fn error(line: &str) -> String {
        let e = parse(&args(line), None).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{line}: {e}");
        e.to_string()
    }

    #[test]
    fn defaults_apply_without_flags() {
        let o = run_options(parse(&args("run"), None).unwrap());
        assert_eq!(o.kernels, ["6.12"]);
        assert_eq!(o.timeout, Duration::from_secs(1800));
        assert!(o.harness_args.is_empty());
    }

    #[test]
    fn environment_sets_the_kernel_and_the_flag_overrides_it() {
        let o = run_options(parse(&args("run"), Some("6.1".into())).unwrap());
        assert_eq!(o.kernels, ["6.1"]);
        let o =
            run_options(parse(&args("run --kernel /boot/vmlinuz"), Some("6.1".into())).unwrap());
        assert_eq!(o.kernels, ["/boot/vmlinuz"]);
    }

    #[test]
    fn kernels_parse_as_a_list_in_order_each_word_a_boot() {
        let o = run_options(parse(&args("run --kernel 6.1,6.1,6.12,newest,6.1"), None).unwrap());
        assert_eq!(o.kernels, ["6.1", "6.1", "6.12", "newest", "6.1"]);
        let o = run_options(parse(&args("build"), Some("6.12, 6.1".into())).unwrap());
        assert_eq!(o.kernels, ["6.12", "6.1"]);
        assert!(error("run --kernel 6.1,,6.12").contains("empty kernel"));
    }

    #[test]
    fn lanes_default_per_command_and_parse_as_a_list() {
        assert_eq!(
            run_options(parse(&args("run"), None).unwrap()).lanes,
            [Lane::Emulated]
        );
        assert_eq!(
            run_options(parse(&args("test"), None).unwrap()).lanes,
            [Lane::Emulated, Lane::Qemu, Lane::QemuKvm]
        );
        assert!(run_options(parse(&args("test"), None).unwrap()).for_test);
        assert!(!run_options(parse(&args("run --lane qemu-kvm"), None).unwrap()).for_test);
        let o = run_options(parse(&args("run --lane qemu,emulated,qemu"), None).unwrap());
        assert_eq!(o.lanes, [Lane::Qemu, Lane::Emulated]);
        let o = run_options(parse(&args("test --lane=qemu"), None).unwrap());
        assert_eq!(o.lanes, [Lane::Qemu]);
        assert!(error("run --lane kvm").contains("unknown lane `kvm`"));
    }

    #[test]
    fn the_host_lane_is_in_all_only_on_arm64() {
        let lanes =
            |line: &str, arm64| run_options(parse_on(&args(line), None, arm64).unwrap()).lanes;
        let here = [Lane::Emulated, Lane::Qemu, Lane::QemuKvm];
        assert_eq!(lanes("test", false), here);
        assert_eq!(
            lanes("test", true),
            [Lane::Emulated, Lane::Qemu, Lane::QemuKvm, Lane::Host]
        );
        assert_eq!(lanes("run --lane all", false), here);
        // Asked for by name, it runs anywhere (and says why its checks skip).
        assert_eq!(lanes("run --lane host", false), [Lane::Host]);
    }

    #[test]
    fn shards_reach_the_runner_before_the_harness_arguments() {
        let o = run_options(parse(&args("run --shard 2/4 -- tags::"), None).unwrap());
        assert_eq!(
            o.runner_args(),
            args("--shard 2/4 --race-budget 0.3 tags::")
        );
        assert!(error("run --shard 5/4").contains("K/N"));
        let o = run_options(parse(&args("build --shard 1/2"), None).unwrap());
        assert_eq!(o.runner_args(), args("--shard 1/2"));
    }

    #[test]
    fn the_race_seed_and_budget_reach_the_runner() {
        let o =
            run_options(parse(&args("run --seed 0x2a --race-budget 20 -- races::"), None).unwrap());
        assert_eq!(o.races.seed, Some(42));
        assert_eq!(
            o.runner_args(),
            args("--seed 0x2a --race-budget 20 races::")
        );
        // The default run gives the races 0.3 s each unless told otherwise; CI leaves the
        // runner's default (a second).
        let o = run_options(parse(&args("test --seed 7"), None).unwrap());
        assert_eq!(o.runner_args(), args("--prove --seed 0x7"));
        let o = run_options(parse(&args("test --race-budget 0.5"), None).unwrap());
        assert_eq!(o.runner_args(), args("--prove --race-budget 0.5"));
        let o = run_options(parse(&args("run"), None).unwrap());
        assert_eq!(o.runner_args(), args("--race-budget 0.3"));
        assert!(error("run --seed nope").contains("0x-hex"));
        assert!(error("run --race-budget 0").contains("seconds"));
        let o = run_options(parse(&args("run --race-budget 0.5"), None).unwrap());
        assert_eq!(o.runner_args(), args("--race-budget 0.5"));
    }

    #[test]
    fn run_proves_when_asked_and_test_always() {
        let o = run_options(parse(&args("run"), None).unwrap());
        assert!(!o.prove);
        assert!(!o.runner_args().contains(&"--prove".to_string()));
        let o = run_options(parse(&args("run --prove --shard 1/2 -- tags::"), None).unwrap());
        assert_eq!(
            o.runner_args(),
            args("--prove --shard 1/2 --race-budget 0.3 tags::")
        );
        assert!(run_options(parse(&args("test"), None).unwrap()).prove);
        assert!(error("bench --prove").contains("--prove"));
    }

    #[test]
    fn bench_asks_the_runner_for_the_benchmarks_in_a_kvm_lane() {
        let o = run_options(parse(&args("bench -- copy_tags"), None).unwrap());
        assert!(o.bench);
        assert_eq!(o.lanes, [Lane::Emulated]);
        assert_eq!(o.runner_args(), args("--bench copy_tags"));
        let o = run_options(parse(&args("bench --lane host --kernel 6.1"), None).unwrap());
        assert_eq!(o.lanes, [Lane::Host]);
        assert_eq!(o.kernels, ["6.1"]);
        assert!(error("bench --lane qemu").contains("not qemu"));
        assert!(error("bench --shard 1/2").contains("--shard"));
        assert!(!run_options(parse(&args("run"), None).unwrap()).bench);
        assert!(!run_options(parse(&args("test"), None).unwrap()).bench);
    }

    #[test]
    fn compare_takes_a_baseline_a_run_and_a_threshold() {
        let Command::Compare(c) = parse(&args("compare nightly"), None).unwrap() else {
            panic!()
        };
        assert_eq!((c.baseline.as_str(), c.run), ("nightly", None));
        assert_eq!(c.thresholds, Thresholds::default());
        let Command::Compare(c) =
            parse(&args("compare --threshold 10 old target/x"), None).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.run, Some(PathBuf::from("target/x")));
        assert!((c.thresholds.relative - 0.10).abs() < 1e-12);
        assert!(error("compare").contains("<BASELINE>"));
        assert!(error("compare a b c").contains("'c'"));
        assert!(error("compare a --threshold -3").contains("percentage"));
        let o = run_options(parse(&args("run --baseline nightly --threshold 50"), None).unwrap());
        assert_eq!(o.baseline.as_deref(), Some("nightly"));
        assert!((o.thresholds.relative - 0.5).abs() < 1e-12);
    }

    #[test]
    fn report_merges_and_checks() {
        assert_eq!(
            parse(&args("report merge a b --out m"), None).unwrap(),
            Command::ReportMerge {
                runs: vec!["a".into(), "b".into()],
                out: "m".into()
            }
        );
        assert!(error("report merge a b").contains("--out <DIR>"));
        assert!(error("report merge --out m").contains("<DIR>"));
        assert_eq!(
            parse(&args("report check"), None).unwrap(),
            Command::ReportCheck { run: None }
        );
        assert!(error("report frobnicate").contains("'frobnicate'"));
        assert_eq!(
            parse(&args("kcidb --origin lab_7 target/r"), None).unwrap(),
            Command::Kcidb {
                run: Some("target/r".into()),
                origin: "lab_7".into(),
            }
        );
        assert_eq!(
            parse(&args("kcidb"), None).unwrap(),
            Command::Kcidb {
                run: None,
                origin: "mte_suite".into(),
            }
        );
        assert_eq!(
            parse(&args("lava-results target/r"), None).unwrap(),
            Command::LavaResults {
                run: Some("target/r".into())
            }
        );
        assert_eq!(
            parse(&args("baseline nightly"), None).unwrap(),
            Command::KeepBaseline {
                name: "nightly".into(),
                run: None
            }
        );
    }

    #[test]
    fn flags_take_values_separately_or_inline() {
        let o = run_options(parse(&args("test --kernel=6.1 --timeout 60"), None).unwrap());
        assert_eq!(
            (o.kernels.as_slice(), o.timeout),
            (&["6.1".to_string()][..], Duration::from_secs(60))
        );
    }

    #[test]
    fn everything_after_the_separator_goes_to_the_harness_untouched() {
        let o = run_options(
            parse(
                &args("run --timeout 5 -- tags:: --exact --kernel x --"),
                None,
            )
            .unwrap(),
        );
        assert_eq!(o.harness_args, args("tags:: --exact --kernel x --"));
        assert_eq!(o.kernels, ["6.12"]);
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(error("frobnicate").contains("unrecognized subcommand 'frobnicate'"));
        // No command: the list of commands, as a mistake.
        let none = parse(&[], None).unwrap_err();
        assert_eq!(
            (none.kind(), none.exit_code()),
            (ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand, 2)
        );
        assert!(error("run --timeout").contains("a value is required"));
        assert!(error("run --timeout soon").contains("whole number"));
        assert!(error("run tags::")
            .contains("harness arguments go after `--`: cargo xtask run -- tags::"));
        assert!(error("build --timeout 3").contains("unexpected argument '--timeout'"));
        assert!(error("setup -- x").contains("`setup` takes no harness arguments"));
        assert!(!error("compare a b c").contains("harness"));
        assert!(error("run --help=yes").contains("--help"));
    }

    #[test]
    fn help_lists_every_command_and_its_flags() {
        let help = |line: &str| {
            let e = parse(&args(line), None).unwrap_err();
            assert_eq!(
                (e.kind(), e.exit_code()),
                (ErrorKind::DisplayHelp, 0),
                "{line}"
            );
            e.to_string()
        };
        let top = help("--help");
        for command in [
            "run",
            "test",
            "bench",
            "setup",
            "build",
            "compare",
            "baseline",
            "report",
            "lava-results",
        ] {
            assert!(top.contains(command), "{command}");
        }
        assert!(top.contains("Exit status"));
        let run = help("run -h");
        for flag in [
            "--lane",
            "--kernel",
            "--timeout",
            "--shard",
            "--prove",
            "--baseline",
            "--threshold",
            "HARNESS-ARGS",
        ] {
            assert!(run.contains(flag), "{flag}");
        }
        assert!(help("report merge --help").contains("--out"));
        assert!(matches!(
            parse(&args("help"), None).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        ));
    }
}
