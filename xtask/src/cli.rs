//! The command line: every command and flag is declared once, in [`COMMANDS`] and [`FLAGS`],
//! and both the parser and `--help` read them from there.

use std::time::Duration;

/// The kernel used when neither `--kernel` nor `MTE_KERNEL` names one: one kernel keeps CI fast.
pub const DEFAULT_KERNEL: &str = "6.12";
/// The whole run's deadline when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct CommandSpec {
    name: &'static str,
    summary: &'static str,
    /// Whether arguments after `--` are accepted (they go to the in-guest harness).
    harness_args: bool,
}

const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "run",
        summary: "install what is missing, build, boot the machine once per kernel, run the checks",
        harness_args: true,
    },
    CommandSpec {
        name: "test",
        summary:
            "what CI runs: the host unit tests, then `run`; fails on any fail, error or no pass",
        harness_args: true,
    },
    CommandSpec {
        name: "setup",
        summary: "only check and install the tools and fetch the kernels",
        harness_args: false,
    },
    CommandSpec {
        name: "build",
        summary: "only build the payload, the aarch64 runner and an initramfs per kernel",
        harness_args: true,
    },
];

/// Where the VMM under test runs; see README.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// KVM inside an emulated arm64 machine (QEMU TCG with EL2 and MTE) running the kernel
    /// under test.
    Emulated,
    /// QEMU itself as the VMM: the payloads boot directly in qemu-system-aarch64.
    Qemu,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Emulated, Lane::Qemu];

    pub fn name(self) -> &'static str {
        match self {
            Lane::Emulated => "emulated",
            Lane::Qemu => "qemu",
        }
    }
}

/// The lanes `run` takes without `--lane`: the emulated lane, the suite's main job.
pub const DEFAULT_RUN_LANES: &[Lane] = &[Lane::Emulated];
/// The lanes `test` takes without `--lane`: every lane this kind of machine has.
pub const DEFAULT_TEST_LANES: &[Lane] = &Lane::ALL;

/// `emulated`, `qemu`, `all`, or a comma-separated list, in the order given.
fn parse_lanes(text: &str) -> Result<Vec<Lane>, String> {
    let mut lanes = Vec::new();
    for word in text.split(',').map(str::trim) {
        let named: Vec<Lane> = match word {
            "all" => Lane::ALL.to_vec(),
            _ => match Lane::ALL.into_iter().find(|l| l.name() == word) {
                Some(lane) => vec![lane],
                None => {
                    return Err(format!(
                        "unknown lane `{word}`; lanes here: emulated, qemu (or all)"
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

/// The kernels of `--kernel 6.1,6.12,newest`, in the order given, each once.
fn parse_kernels(text: &str) -> Result<Vec<String>, String> {
    let mut kernels: Vec<String> = Vec::new();
    for word in text.split(',').map(str::trim) {
        if word.is_empty() {
            return Err(format!(
                "`--kernel {text}` names an empty kernel; give a comma list such as 6.1,6.12,newest"
            ));
        }
        if !kernels.iter().any(|k| k == word) {
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
               qemu (QEMU as the VMM), all, or a comma list\n\
               (default: run emulated; test all)",
        commands: &["run", "test"],
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
        commands: &["run", "test", "setup", "build"],
    },
    FlagSpec {
        id: FlagId::Timeout,
        long: "--timeout",
        short: None,
        value: Some("SECS"),
        help: "deadline of the whole run, boot included (default 1800)",
        commands: &["run", "test"],
    },
    FlagSpec {
        id: FlagId::Help,
        long: "--help",
        short: Some("-h"),
        value: None,
        help: "print this help",
        commands: &["run", "test", "setup", "build"],
    },
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The lanes to run, in order; each gets its part of the one run directory.
    pub lanes: Vec<Lane>,
    /// Each a series like `6.12`, `newest`, or a path to a kernel image; see
    /// `kernels::KernelSpec`. The emulated lane runs once per kernel, in this order.
    pub kernels: Vec<String>,
    pub timeout: Duration,
    /// Passed untouched to the in-guest harness.
    pub harness_args: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Test(Options),
    Setup(Options),
    Build(Options),
    /// Print this text and exit successfully.
    Help(String),
}

/// Parse the arguments after `cargo xtask`. `env_kernel` is `MTE_KERNEL`, if set.
pub fn parse(args: &[String], env_kernel: Option<String>) -> Result<Command, String> {
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
            DEFAULT_TEST_LANES.to_vec()
        } else {
            DEFAULT_RUN_LANES.to_vec()
        },
        kernels: parse_kernels(
            &env_kernel
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| DEFAULT_KERNEL.to_string()),
        )?,
        timeout: DEFAULT_TIMEOUT,
        harness_args: Vec::new(),
    };
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            if !spec.harness_args {
                return Err(format!("`{name}` takes no harness arguments"));
            }
            options.harness_args = rest.cloned().collect();
            break;
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
        match flag.id {
            FlagId::Help => return Ok(Command::Help(usage())),
            FlagId::Lane => options.lanes = parse_lanes(&value.unwrap_or_default())?,
            FlagId::Kernel => options.kernels = parse_kernels(&value.unwrap_or_default())?,
            FlagId::Timeout => options.timeout = parse_seconds(&value.unwrap_or_default())?,
        }
    }

    Ok(match spec.name {
        "run" => Command::Run(options),
        "test" => Command::Test(options),
        "setup" => Command::Setup(options),
        "build" => Command::Build(options),
        other => unreachable!("command `{other}` is declared but not dispatched"),
    })
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
         Usage: cargo xtask COMMAND [FLAGS] [-- HARNESS-ARGS...]\n\nCommands:\n",
    );
    for c in COMMANDS {
        out.push_str(&format!("  {:<8} {}\n", c.name, c.summary));
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
         \nExample: cargo xtask run --kernel 6.1,6.12,newest -- tags::\n\
         \nEnvironment: MTE_KERNEL (as --kernel), MTE_QEMU (a qemu-system-aarch64 to use),\n\
         MTE_CACHE_DIR (kernel cache; default ~/.cache/mte-suite).\n\
         \nExit status: 0 all checks passed or were skipped/xfailed, 1 a check failed,\n\
         2 a setup or run error (the message says what to do).\n",
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
            Command::Run(o) | Command::Test(o) | Command::Setup(o) | Command::Build(o) => o,
            Command::Help(_) => panic!("unexpected help"),
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
    fn kernels_parse_as_a_list_in_order_each_once() {
        let o = run_options(parse(&args("run --kernel 6.1,6.12,newest,6.1"), None).unwrap());
        assert_eq!(o.kernels, ["6.1", "6.12", "newest"]);
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
        assert!(parse(&args("run --lane host"), None)
            .unwrap_err()
            .contains("unknown lane `host`"));
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
