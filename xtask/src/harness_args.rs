//! Harness arguments answered on the host, without a boot: `--help`, argument errors, `--list`
//! and filters that match nothing come from the runner's own check table and argument parser
//! (`mte_runner::selection`), in libtest's formats, before any run directory exists.

use std::path::PathBuf;

use libtest_mimic::{Arguments, FormatSetting};
use mte_runner::harness::Options as RunnerOptions;
use mte_runner::selection;

use crate::cli::Options;
use crate::ui::{self, Format};
use crate::Status;

/// What the harness arguments of `options` ask, when the host can answer it: `Some` status
/// when answered (nothing to boot), `None` when the run must boot. Sets how the run prints
/// (`-q`, `--format`) either way.
pub fn answer(options: &Options) -> Option<Status> {
    // The performance suite selects its benchmarks in the runner.
    if options.bench {
        return None;
    }
    if asks_help(&options.harness_args) {
        print!("{}", selection::help());
        return Some(Status::Clean);
    }
    let runner = match RunnerOptions::parse(options.runner_args(), PathBuf::new()) {
        Ok(runner) => runner,
        Err(message) => {
            eprintln!("{}", message.trim_end());
            return Some(Status::Error);
        }
    };
    let (args, filters) = selection::arguments(&runner.harness_args).ok()?;
    ui::set_format(format_of(&args));
    let names = selection::selected(&runner).ok()?;
    if args.list {
        print!("{}", listing(&names, &args));
        return Some(Status::Clean);
    }
    if names.is_empty() {
        let mut asked = filters.join(" ");
        for skip in &args.skip {
            asked.push_str(&format!(" --skip {skip}"));
        }
        if args.ignored {
            asked.push_str(" --ignored");
        }
        ui::error(&format!(
            "no check matches {}; `cargo xtask run -- --list` lists them",
            asked.trim()
        ));
        return Some(Status::Error);
    }
    None
}

/// `-h` or `--help` among the harness arguments, before a `--` that makes the rest filters.
fn asks_help(harness_args: &[String]) -> bool {
    (harness_args.iter())
        .take_while(|a| *a != "--")
        .any(|a| a == "--help" || a == "-h")
}

/// How xtask prints the run, as libtest would print it.
fn format_of(args: &Arguments) -> Format {
    match args.format {
        Some(FormatSetting::Json) => Format::Json,
        Some(FormatSetting::Terse) => Format::Quiet,
        _ if args.quiet => Format::Quiet,
        _ => Format::Pretty,
    }
}

/// The listing as libtest-mimic prints it (`name: test`; none with `--ignored`, as no check
/// is ignored), or as libtest's JSON discovery events with `--format json`.
fn listing(names: &[String], args: &Arguments) -> String {
    let names: &[String] = if args.ignored { &[] } else { names };
    if args.format == Some(FormatSetting::Json) {
        let mut out = String::from("{\"type\":\"suite\",\"event\":\"discovery\"}\n");
        for name in names {
            let event = serde_json::json!({
                "type": "test", "event": "discovered", "name": name, "ignore": false,
            });
            out.push_str(&format!("{event}\n"));
        }
        let done = serde_json::json!({
            "type": "suite", "event": "completed", "tests": names.len(), "benchmarks": 0,
            "total": names.len(), "ignored": 0,
        });
        return format!("{out}{done}\n");
    }
    names.iter().map(|name| format!("{name}: test\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Command};

    fn options(line: &str) -> Options {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        match parse(&args, None).unwrap() {
            Command::Run(options) | Command::Test(options) => options,
            other => panic!("{other:?}"),
        }
    }

    fn libtest(args: &str) -> Arguments {
        let words: Vec<String> = args.split_whitespace().map(String::from).collect();
        selection::arguments(&words).unwrap().0
    }

    #[test]
    fn help_errors_listings_and_empty_selections_need_no_boot() {
        assert_eq!(answer(&options("run -- --help")), Some(Status::Clean));
        assert_eq!(answer(&options("run -- --bogus")), Some(Status::Error));
        assert_eq!(
            answer(&options("run -- --list tags::")),
            Some(Status::Clean)
        );
        assert_eq!(
            answer(&options("run -- nosuch::check")),
            Some(Status::Error)
        );
        assert_eq!(answer(&options("run -- tags:: nosuch::")), None);
        assert_eq!(answer(&options("run")), None);
        // After `--`, `--help` is a filter.
        assert!(!asks_help(&["--".into(), "--help".into()]));
    }

    #[test]
    fn listings_are_libtests() {
        let names = vec!["tags::a".to_string(), "cow::b".to_string()];
        assert_eq!(
            listing(&names, &libtest("--list")),
            "tags::a: test\ncow::b: test\n"
        );
        assert_eq!(listing(&names, &libtest("--list --ignored")), "");
        let json = listing(&names, &libtest("--list --format json"));
        let events: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 4);
        assert_eq!(events[1]["name"], "tags::a");
        assert_eq!(events[3]["tests"], 2);
        assert_eq!(format_of(&libtest("-q")), Format::Quiet);
        assert_eq!(format_of(&libtest("--format json")), Format::Json);
        assert_eq!(format_of(&libtest("")), Format::Pretty);
    }
}
