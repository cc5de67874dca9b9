//! The command line: every command and flag is declared once, in [`COMMANDS`] and [`FLAGS`],
//! and both the parser and `--help` read them from there.

use std::path::PathBuf;
use std::time::Duration;

use mte_results::compare::Thresholds;
use mte_results::shard::Shard;

/// The kernel used when neither `--kernel` nor `MTE_KERNEL` names one: one kernel keeps CI fast.
pub const DEFAULT_KERNEL: &str = "6.12";
/// The whole run's deadline when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct CommandSpec {
    name: &'static str,
    summary: &'static str,
    /// Whether arguments after `--` are accepted (they go to the in-guest harness).
    harness_args: bool,
    /// The positional arguments as `--help` shows them; empty when there are none.
    positionals: &'static str,
}

const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "run",
        summary: "install what is missing, build, boot the machine once per kernel, run the checks",
        harness_args: true,
        positionals: "",
    },
    CommandSpec {
        name: "test",
        summary: "what CI runs: the host unit tests, then `run`, then the report in a headless\n\
                  browser; fails on any fail, error or no pass",
        harness_args: true,
        positionals: "",
    },
    CommandSpec {
        name: "bench",
        summary: "the performance suite: criterion benchmarks of what MTE costs a KVM guest\n\
                  (tag copies, a VM's life, first touch, copy-on-write, swap, migration, tag\n\
                  instructions); bench.json, criterion's files and the report in the run\n\
                  directory; harness arguments select benchmarks by name",
        harness_args: true,
        positionals: "",
    },
    CommandSpec {
        name: "setup",
        summary: "only check and install the tools and fetch the kernels",
        harness_args: false,
        positionals: "",
    },
    CommandSpec {
        name: "build",
        summary: "only build the payload, the aarch64 runner and an initramfs per kernel",
        harness_args: true,
        positionals: "",
    },
    CommandSpec {
        name: "compare",
        summary: "compare RUN (default: the latest) with BASELINE (a run directory, or a name\n\
                  kept under results/baselines/); exit 1 when it regressed",
        harness_args: false,
        positionals: "BASELINE [RUN]",
    },
    CommandSpec {
        name: "baseline",
        summary: "keep RUN (default: the latest) as results/baselines/NAME, for `compare NAME`",
        harness_args: false,
        positionals: "NAME [RUN]",
    },
    CommandSpec {
        name: "report",
        summary: "`report merge DIR... --out DIR`: several runs (shards) as one run and report;\n\
                  `report check [RUN]`: open the report in a headless browser and keep a\n\
                  screenshot",
        harness_args: false,
        positionals: "merge DIR... | check [RUN]",
    },
    CommandSpec {
        name: "lava-results",
        summary: "print RUN's verdicts (default: the latest) as `lava-test-case` lines",
        harness_args: false,
        positionals: "[RUN]",
    },
];

pub use mte_results::Lane;

/// The lanes `all` means here: the host lane only on an arm64 machine, the only kind whose KVM
/// can run an arm64 guest.
pub fn lanes_here(arm64: bool) -> Vec<Lane> {
    Lane::ALL
        .into_iter()
        .filter(|&lane| lane != Lane::Host || arm64)
        .collect()
}

/// Whether xtask runs on an arm64 machine.
pub const ARM64_HOST: bool = cfg!(target_arch = "aarch64");

/// The lanes `run` takes without `--lane`: the emulated lane, the suite's main job.
pub const DEFAULT_RUN_LANES: &[Lane] = &[Lane::Emulated];

/// The lanes `bench` takes: those where the runner is the VMM on a KVM.
pub const BENCH_LANES: &[Lane] = &[Lane::Emulated, Lane::Host];

/// `emulated`, `qemu`, `host`, `all`, or a comma-separated list, in the order given.
fn parse_lanes(text: &str, arm64: bool) -> Result<Vec<Lane>, String> {
    let mut lanes = Vec::new();
    for word in text.split(',').map(str::trim) {
        let named: Vec<Lane> = match word {
            "all" => lanes_here(arm64),
            _ => match Lane::ALL.into_iter().find(|l| l.name() == word) {
                Some(lane) => vec![lane],
                None => {
                    return Err(format!(
                        "unknown lane `{word}`; lanes: emulated, qemu, host (or all)"
                    ))
                }
            },
        };
        for lane in named {
            if !lanes.contains(&lane) {
                lanes.push(lane);
            }
        }
    }
    Ok(lanes)
}

/// The kernels of `--kernel 6.1,6.12,newest`, in the order given; a word repeated right after
/// itself once, while a kernel named again after another boots again (`6.1,6.12,6.1`: a
/// migration round trip).
fn parse_kernels(text: &str) -> Result<Vec<String>, String> {
    let mut kernels: Vec<String> = Vec::new();
    for word in text.split(',').map(str::trim) {
        if word.is_empty() {
            return Err(format!(
                "`--kernel {text}` names an empty kernel; give a comma list such as 6.1,6.12,newest"
            ));
        }
        if kernels.last().map(String::as_str) != Some(word) {
            kernels.push(word.to_string());
        }
    }
    Ok(kernels)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FlagId {
    Lane,
    Kernel,
    Timeout,
    Shard,
    Baseline,
    Threshold,
    Out,
    Help,
}

struct FlagSpec {
    id: FlagId,
    long: &'static str,
    short: Option<&'static str>,
    value: Option<&'static str>,
    help: &'static str,
    commands: &'static [&'static str],
}

const FLAGS: &[FlagSpec] = &[
    FlagSpec {
        id: FlagId::Lane,
        long: "--lane",
        short: None,
        value: Some("LANES"),
        help: "where the VMM under test runs: emulated (KVM in the emulated machine),\n\
               qemu (QEMU as the VMM), host (this machine's KVM: an arm64 host with\n\
               /dev/kvm and MTE), all (host only on arm64), or a comma list\n\
               (default: run emulated; test all; bench takes emulated or host)",
        commands: &["run", "test", "bench"],
    },
    FlagSpec {
        id: FlagId::Kernel,
        long: "--kernel",
        short: None,
        value: Some("KERNELS"),
        help: "kernels under test, a comma list (6.1,6.12,newest): a Debian arm64\n\
               series, `newest` (the newest any Debian suite has), or a vmlinuz\n\
               file; the emulated lane boots once per kernel (default 6.12, or\n\
               MTE_KERNEL)",
        commands: &["run", "test", "bench", "setup", "build"],
    },
    FlagSpec {
        id: FlagId::Timeout,
        long: "--timeout",
        short: None,
        value: Some("SECS"),
        help: "deadline of the whole run, boot included (default 1800)",
        commands: &["run", "test", "bench"],
    },
    FlagSpec {
        id: FlagId::Shard,
        long: "--shard",
        short: None,
        value: Some("K/N"),
        help: "run shard K of N: a fixed part of the checks (by a stable hash of\n\
               their names), each check in exactly one shard; merge the shards'\n\
               runs with `report merge`",
        commands: &["run", "test", "build"],
    },
    FlagSpec {
        id: FlagId::Baseline,
        long: "--baseline",
        short: None,
        value: Some("BASELINE"),
        help: "after the run, compare it with BASELINE as `compare` does; the exit\n\
               status then says whether it regressed",
        commands: &["run"],
    },
    FlagSpec {
        id: FlagId::Threshold,
        long: "--threshold",
        short: None,
        value: Some("PCT"),
        help: "how far a figure may move before it counts, in percent (default 25;\n\
               and always more than 1 µs for a timing, 0.05 for a ratio)",
        commands: &["compare", "run"],
    },
    FlagSpec {
        id: FlagId::Out,
        long: "--out",
        short: None,
        value: Some("DIR"),
        help: "where `report merge` writes the merged run",
        commands: &["report"],
    },
    FlagSpec {
        id: FlagId::Help,
        long: "--help",
        short: Some("-h"),
        value: None,
        help: "print this help",
        commands: &[
            "run",
            "test",
            "bench",
            "setup",
            "build",
            "compare",
            "baseline",
            "report",
            "lava-results",
        ],
    },
];

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
    /// Passed untouched to the in-guest harness.
    pub harness_args: Vec<String>,
}

impl Options {
    /// What the runner is given after its lane's own options: `--bench` for the performance
    /// suite, the shard, then the harness arguments untouched.
    pub fn runner_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.bench {
            args.push("--bench".to_string());
        }
        if let Some(shard) = self.shard {
            args.push("--shard".to_string());
            args.push(shard.to_string());
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
    /// Print this text and exit successfully.
    Help(String),
}

/// Parse the arguments after `cargo xtask`. `env_kernel` is `MTE_KERNEL`, if set.
pub fn parse(args: &[String], env_kernel: Option<String>) -> Result<Command, String> {
    parse_on(args, env_kernel, ARM64_HOST)
}

/// As [`parse`], on a machine that is arm64 or not.
fn parse_on(args: &[String], env_kernel: Option<String>, arm64: bool) -> Result<Command, String> {
    let Some((name, rest)) = args.split_first() else {
        return Err(format!("no command given\n\n{}", usage()));
    };
    if matches!(name.as_str(), "help" | "--help" | "-h") {
        return Ok(Command::Help(usage()));
    }
    let Some(spec) = COMMANDS.iter().find(|c| c.name == name) else {
        return Err(format!("unknown command `{name}`\n\n{}", usage()));
    };

    let mut options = Options {
        lanes: if spec.name == "test" {
            lanes_here(arm64)
        } else {
            DEFAULT_RUN_LANES.to_vec()
        },
        kernels: parse_kernels(
            &env_kernel
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| DEFAULT_KERNEL.to_string()),
        )?,
        timeout: DEFAULT_TIMEOUT,
        shard: None,
        baseline: None,
        thresholds: Thresholds::default(),
        bench: spec.name == "bench",
        harness_args: Vec::new(),
    };
    let mut positionals: Vec<String> = Vec::new();
    let mut out: Option<PathBuf> = None;
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            if !spec.harness_args {
                return Err(format!("`{name}` takes no harness arguments"));
            }
            options.harness_args = rest.cloned().collect();
            break;
        }
        if !spec.positionals.is_empty() && !arg.starts_with('-') {
            positionals.push(arg.clone());
            continue;
        }
        let (flag_name, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let Some(flag) = FLAGS.iter().find(|f| {
            (f.long == flag_name || f.short == Some(flag_name)) && f.commands.contains(&spec.name)
        }) else {
            let hint = if spec.harness_args && !arg.starts_with('-') {
                format!("; harness arguments go after `--`: cargo xtask {name} -- {arg}")
            } else {
                String::new()
            };
            return Err(format!(
                "`{name}` does not take `{arg}`{hint}\n\n{}",
                usage()
            ));
        };
        let value = match (flag.value, inline_value) {
            (None, None) => None,
            (None, Some(_)) => return Err(format!("`{}` takes no value", flag.long)),
            (Some(_), Some(value)) => Some(value),
            (Some(metavar), None) => match rest.next() {
                Some(value) => Some(value.clone()),
                None => {
                    return Err(format!(
                        "`{}` needs a value: {} {metavar}",
                        flag.long, flag.long
                    ))
                }
            },
        };
        let value = value.unwrap_or_default();
        match flag.id {
            FlagId::Help => return Ok(Command::Help(usage())),
            FlagId::Lane => options.lanes = parse_lanes(&value, arm64)?,
            FlagId::Kernel => options.kernels = parse_kernels(&value)?,
            FlagId::Timeout => options.timeout = parse_seconds(&value)?,
            FlagId::Shard => options.shard = Some(Shard::parse(&value)?),
            FlagId::Baseline => options.baseline = Some(value),
            FlagId::Threshold => options.thresholds.relative = parse_percent(&value)?,
            FlagId::Out => out = Some(PathBuf::from(value)),
        }
    }

    let count = |range: std::ops::RangeInclusive<usize>| {
        if range.contains(&positionals.len()) {
            Ok(())
        } else {
            Err(format!(
                "`{name}` takes {}, not `{}`\n\n{}",
                spec.positionals,
                positionals.join(" "),
                usage()
            ))
        }
    };
    let optional_run = |at: usize| positionals.get(at).map(PathBuf::from);
    Ok(match spec.name {
        "run" => Command::Run(options),
        "bench" => {
            if let Some(lane) = options.lanes.iter().find(|l| !BENCH_LANES.contains(l)) {
                return Err(format!(
                    "`bench` drives KVM, in the emulated machine or on this host: lanes \
                     emulated and host, not {}",
                    lane.name()
                ));
            }
            Command::Bench(options)
        }
        "test" => Command::Test(options),
        "setup" => Command::Setup(options),
        "build" => Command::Build(options),
        "compare" => {
            count(1..=2)?;
            Command::Compare(CompareOptions {
                baseline: positionals[0].clone(),
                run: optional_run(1),
                thresholds: options.thresholds,
            })
        }
        "baseline" => {
            count(1..=2)?;
            Command::KeepBaseline {
                name: positionals[0].clone(),
                run: optional_run(1),
            }
        }
        "report" => match positionals.first().map(String::as_str) {
            Some("merge") => {
                count(2..=usize::MAX)?;
                let out =
                    out.ok_or("`report merge` needs `--out DIR`: where the merged run goes")?;
                Command::ReportMerge {
                    runs: positionals[1..].iter().map(PathBuf::from).collect(),
                    out,
                }
            }
            Some("check") => {
                count(1..=2)?;
                Command::ReportCheck {
                    run: optional_run(1),
                }
            }
            _ => {
                return Err(format!(
                    "`report` takes `merge DIR... --out DIR` or `check [RUN]`\n\n{}",
                    usage()
                ))
            }
        },
        "lava-results" => {
            count(0..=1)?;
            Command::LavaResults {
                run: optional_run(0),
            }
        }
        other => unreachable!("command `{other}` is declared but not dispatched"),
    })
}

/// A percentage above 0, as a fraction.
fn parse_percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(percent) if percent > 0.0 && percent.is_finite() => Ok(percent / 100.0),
        _ => Err(format!(
            "`--threshold` wants a percentage above 0, such as 25, not `{text}`"
        )),
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "`--timeout` wants a whole number of seconds above 0, not `{text}`"
        )),
    }
}

/// The help text, built from the declarations above.
pub fn usage() -> String {
    let mut out = String::from(
        "Build and run the MTE KVM conformance suite.\n\n\
         Usage: cargo xtask COMMAND [FLAGS] [ARGS] [-- HARNESS-ARGS...]\n\nCommands:\n",
    );
    for c in COMMANDS {
        let summary = c.summary.replace('\n', &format!("\n{:15}", ""));
        out.push_str(&format!("  {:<12} {summary}\n", c.name));
        if !c.positionals.is_empty() {
            out.push_str(&format!("{:15}args: {}\n", "", c.positionals));
        }
    }
    out.push_str("\nFlags:\n");
    for f in FLAGS {
        let name = match (f.short, f.value) {
            (Some(short), _) => format!("{short}, {}", f.long),
            (None, Some(value)) => format!("{} {value}", f.long),
            (None, None) => f.long.to_string(),
        };
        // Continuation lines of the help line up under its first line.
        let help = f.help.replace('\n', &format!("\n{:25}", ""));
        out.push_str(&format!(
            "  {name:<22} {help}\n{:25}for: {}\n",
            "",
            f.commands.join(", ")
        ));
    }
    out.push_str(
        "\nHarness arguments (after `--`) reach the in-guest runner untouched: a name filter,\n\
         --exact, --list, --ignored, --include-ignored, --skip FILTER, --inject MODE.\n\
         \nExamples: cargo xtask run --kernel 6.1,6.12,newest -- tags::\n\
         \x20         cargo xtask run --lane host --shard 1/4 --baseline nightly\n\
         \nEnvironment: MTE_KERNEL (as --kernel), MTE_QEMU (a qemu-system-aarch64 to use),\n\
         MTE_CACHE_DIR (kernel cache; default ~/.cache/mte-suite).\n\
         \nExit status: 0 all checks passed or were skipped/xfailed, 1 a check failed,\n\
         2 a setup or run error (the message says what to do). With a baseline (`compare`,\n\
         `run --baseline`): 0 no regression, 1 regressed, 2 bad input or a run error.\n",
    );
    out
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
    fn kernels_parse_as_a_list_in_order_repeating_only_after_another() {
        let o = run_options(parse(&args("run --kernel 6.1,6.1,6.12,newest,6.1"), None).unwrap());
        assert_eq!(o.kernels, ["6.1", "6.12", "newest", "6.1"]);
        let o = run_options(parse(&args("build"), Some("6.12, 6.1".into())).unwrap());
        assert_eq!(o.kernels, ["6.12", "6.1"]);
        assert!(parse(&args("run --kernel 6.1,,6.12"), None)
            .unwrap_err()
            .contains("empty kernel"));
    }

    #[test]
    fn lanes_default_per_command_and_parse_as_a_list() {
        assert_eq!(
            run_options(parse(&args("run"), None).unwrap()).lanes,
            [Lane::Emulated]
        );
        assert_eq!(
            run_options(parse(&args("test"), None).unwrap()).lanes,
            [Lane::Emulated, Lane::Qemu]
        );
        let o = run_options(parse(&args("run --lane qemu,emulated,qemu"), None).unwrap());
        assert_eq!(o.lanes, [Lane::Qemu, Lane::Emulated]);
        let o = run_options(parse(&args("test --lane=qemu"), None).unwrap());
        assert_eq!(o.lanes, [Lane::Qemu]);
        assert!(parse(&args("run --lane kvm"), None)
            .unwrap_err()
            .contains("unknown lane `kvm`"));
    }

    #[test]
    fn the_host_lane_is_in_all_only_on_arm64() {
        let lanes =
            |line: &str, arm64| run_options(parse_on(&args(line), None, arm64).unwrap()).lanes;
        assert_eq!(lanes("test", false), [Lane::Emulated, Lane::Qemu]);
        assert_eq!(
            lanes("test", true),
            [Lane::Emulated, Lane::Qemu, Lane::Host]
        );
        assert_eq!(lanes("run --lane all", false), [Lane::Emulated, Lane::Qemu]);
        // Asked for by name, it runs anywhere (and says why its checks skip).
        assert_eq!(lanes("run --lane host", false), [Lane::Host]);
    }

    #[test]
    fn shards_reach_the_runner_before_the_harness_arguments() {
        let o = run_options(parse(&args("run --shard 2/4 -- tags::"), None).unwrap());
        assert_eq!(o.runner_args(), args("--shard 2/4 tags::"));
        assert!(parse(&args("run --shard 5/4"), None)
            .unwrap_err()
            .contains("K/N"));
        let o = run_options(parse(&args("build --shard 1/2"), None).unwrap());
        assert_eq!(o.runner_args(), args("--shard 1/2"));
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
        assert!(parse(&args("bench --lane qemu"), None)
            .unwrap_err()
            .contains("not qemu"));
        assert!(parse(&args("bench --shard 1/2"), None).is_err());
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
        assert!(parse(&args("compare"), None)
            .unwrap_err()
            .contains("BASELINE [RUN]"));
        assert!(parse(&args("compare a b c"), None).is_err());
        assert!(parse(&args("compare a --threshold -3"), None)
            .unwrap_err()
            .contains("percentage"));
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
        assert!(parse(&args("report merge a b"), None)
            .unwrap_err()
            .contains("--out DIR"));
        assert!(parse(&args("report merge --out m"), None).is_err());
        assert_eq!(
            parse(&args("report check"), None).unwrap(),
            Command::ReportCheck { run: None }
        );
        assert!(parse(&args("report frobnicate"), None)
            .unwrap_err()
            .contains("merge DIR..."));
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
        assert!(parse(&args("frobnicate"), None)
            .unwrap_err()
            .contains("unknown command"));
        assert!(parse(&[], None).unwrap_err().contains("no command"));
        assert!(parse(&args("run --timeout"), None)
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&args("run --timeout soon"), None)
            .unwrap_err()
            .contains("whole number"));
        assert!(parse(&args("run tags::"), None)
            .unwrap_err()
            .contains("cargo xtask run -- tags::"));
        assert!(parse(&args("build --timeout 3"), None)
            .unwrap_err()
            .contains("does not take"));
        assert!(parse(&args("setup -- x"), None)
            .unwrap_err()
            .contains("no harness arguments"));
        assert!(parse(&args("run --help=yes"), None)
            .unwrap_err()
            .contains("takes no value"));
    }

    #[test]
    fn help_lists_every_command_and_flag() {
        let Command::Help(text) = parse(&args("run -h"), None).unwrap() else {
            panic!()
        };
        for c in COMMANDS {
            assert!(text.contains(c.name));
        }
        for f in FLAGS {
            assert!(text.contains(f.long));
        }
        assert!(matches!(parse(&args("help"), None), Ok(Command::Help(_))));
    }
}
