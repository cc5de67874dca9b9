use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::compare::Comparison;
use crate::fixtures::environment;
use crate::model::{Environment, Evidence, Lane, Outcome, Verdict};
use crate::summary::RunSummary;
use crate::SCHEMA_VERSION;

/// A scratch root removed when the test ends.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// 2026-11-21T23:55:01Z
const START: u64 = 1_795_305_301;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn verdict(test: &str, outcome: Outcome) -> Verdict {
    Verdict {
        schema: SCHEMA_VERSION,
        test: test.into(),
        lane: Lane::Emulated,
        kernel: "6.12.95".into(),
        boot: 1,
        outcome,
        reason: format!("{test} {outcome}"),
        detail: vec![Evidence::TagMaps {
            expected_from: "guest".into(),
            observed_from: "host".into(),
            ipa: 0x4000_0000,
            expected: "0123".into(),
            observed: "0123".into(),
            mismatches: vec![],
        }],
        duration_ms: 3.5,
    }
}

#[test]
fn run_ids_name_the_time_lane_and_kernel() {
    let scratch = scratch();
    let run = RunDir::create_at(scratch.path(), "emulated", "6.12.95", at(START)).unwrap();
    assert_eq!(run.run_id(), "20261121-235501-emulated-6.12.95");
    assert_eq!(
        run.path(),
        scratch.path().join("20261121-235501-emulated-6.12.95")
    );
    let odd = RunDir::create_at(scratch.path(), "", "6.1/../x y", at(START)).unwrap();
    assert_eq!(odd.run_id(), "20261121-235501-unknown-6.1_.._x_y");
}

#[test]
fn latest_points_at_the_newest_run() {
    let scratch = scratch();
    let first = RunDir::create_at(scratch.path(), "emulated", "6.12.95", at(START)).unwrap();
    let same_second = RunDir::create_at(scratch.path(), "emulated", "6.12.95", at(START)).unwrap();
    assert_eq!(same_second.run_id(), format!("{}-2", first.run_id()));
    let latest = scratch.path().join(LATEST);
    assert_eq!(
        fs::read_link(&latest).unwrap(),
        PathBuf::from(same_second.run_id())
    );

    let next = RunDir::create_at(scratch.path(), "host", "6.13.0", at(START + 1)).unwrap();
    assert_eq!(
        fs::read_link(&latest).unwrap(),
        PathBuf::from(next.run_id())
    );
    assert_eq!(
        fs::canonicalize(&latest).unwrap(),
        fs::canonicalize(next.path()).unwrap()
    );
    let leftovers: Vec<_> = fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn results_round_trip_through_load() {
    let scratch = scratch();
    let run = RunDir::create_at(scratch.path(), "emulated", "6.12.95", at(START)).unwrap();
    run.write_environment(&environment()).unwrap();
    let verdicts = vec![
        verdict("tags::a", Outcome::Pass),
        verdict("cow::b", Outcome::Fail),
        verdict("swap::c", Outcome::Skip),
    ];
    for v in &verdicts {
        run.append_verdict(v).unwrap();
    }
    run.append_log("[    0.000] Booting Linux").unwrap();
    run.append_log("runner: done\n").unwrap();

    // Readable before the run finishes: what was written is already there.
    let during = load(scratch.path().join(LATEST)).unwrap();
    assert_eq!(during.verdicts, verdicts);
    assert!(during.summary().error.unwrap().contains("did not finish"));

    let summary = RunSummary {
        benchmarks: Vec::new(),
        environments: vec![environment()],
        verdicts: verdicts.clone(),
        wall_ms: 1234.0,
        error: None,
        not_run: Vec::new(),
    };
    run.finish(&summary).unwrap();
    let loaded = load(run.path()).unwrap();
    assert_eq!(loaded.verdicts, verdicts);
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.info.run_id, run.run_id());
    assert_eq!(loaded.info.started, "2026-11-21T23:55:01Z");
    assert!(loaded.info.finished.is_some());
    assert_eq!(loaded.summary(), summary);

    let console = fs::read_to_string(run.path().join(CONSOLE_LOG)).unwrap();
    assert_eq!(console, "[    0.000] Booting Linux\nrunner: done\n");
    let junit = fs::read_to_string(run.path().join(JUNIT_XML)).unwrap();
    assert!(
        junit.contains(r#"tests="3" skipped="1" failures="1" errors="0""#),
        "{junit}"
    );
    let html = fs::read_to_string(run.path().join(REPORT_HTML)).unwrap();
    assert!(html.contains("cow::b"));
}

#[test]
fn a_merged_run_is_written_whole_and_a_comparison_tops_its_report() {
    let scratch = scratch();
    let dir = scratch.path().join("merged");
    let info = RunInfo {
        schema: SCHEMA_VERSION,
        run_id: "merged".into(),
        started: "2026-11-21T23:55:01Z".into(),
        finished: Some("2026-11-21T23:59:01Z".into()),
        wall_ms: Some(10.0),
        error: None,
        environments: vec![environment()],
        not_run: Vec::new(),
    };
    let verdicts = vec![
        verdict("tags::a", Outcome::Pass),
        verdict("cow::b", Outcome::Fail),
    ];
    write_run(&dir, &info, &verdicts).unwrap();
    let loaded = load(&dir).unwrap();
    assert_eq!(loaded.info, info);
    assert_eq!(loaded.verdicts, verdicts);
    let tap = fs::read_to_string(dir.join(RESULTS_TAP)).unwrap();
    assert!(
        tap.starts_with("TAP version 13\n1..2\nok 1 - tags::a\nnot ok 2 - cow::b\n"),
        "{tap}"
    );
    assert!(!fs::read_to_string(dir.join(REPORT_HTML))
        .unwrap()
        .contains("id=\"comparison\""));

    let mut baseline = loaded.summary();
    baseline.verdicts[1].outcome = Outcome::Pass;
    let comparison = Comparison::of(&baseline, &loaded.summary(), Default::default())
        .named("nightly", "old-run", "merged");
    write_comparison(&loaded, &comparison).unwrap();
    let html = fs::read_to_string(dir.join(REPORT_HTML)).unwrap();
    let top = html.find("id=\"comparison\"").expect("comparison section");
    assert!(top < html.find("id=\"matrix\"").unwrap());
    assert!(html.contains("Compared with nightly"), "{html}");
    let kept: Comparison =
        serde_json::from_str(&fs::read_to_string(dir.join(COMPARISON_JSON)).unwrap()).unwrap();
    assert_eq!(kept, comparison);
}

#[test]
fn environments_are_kept_per_lane_and_boot() {
    let scratch = scratch();
    let run = RunDir::create_at(scratch.path(), "emulated", "6.1+6.12", at(START)).unwrap();
    let on = |lane: &str, boot: u32, kernel: &str, version: &str| Environment {
        lane: lane.parse().unwrap(),
        boot,
        kernel_release: kernel.into(),
        kernel_version: version.into(),
        ..Environment::default()
    };
    let recorded = || load(run.path()).unwrap().info.environments;
    // The host's name for the kernel gives way to the runner's report of the same boot.
    run.write_environment(&on("emulated", 1, "vmlinuz-custom", "booting"))
        .unwrap();
    run.write_environment(&on("emulated", 1, "6.1.0-56-arm64", "#1 SMP"))
        .unwrap();
    run.write_environment(&on("emulated", 2, "6.12.95", "#1 SMP"))
        .unwrap();
    run.write_environment(&on("emulated", 3, "6.1.0-56-arm64", "#1 SMP"))
        .unwrap();
    run.write_environment(&on("qemu", 1, "6.12.95", "#2"))
        .unwrap();
    let boots: Vec<(String, u32, String, String)> = recorded()
        .into_iter()
        .map(|e| {
            (
                e.lane.to_string(),
                e.boot,
                e.kernel_release,
                e.kernel_version,
            )
        })
        .collect();
    assert_eq!(
        boots,
        [
            (
                "emulated".into(),
                1,
                "6.1.0-56-arm64".into(),
                "#1 SMP".into()
            ),
            ("emulated".into(), 2, "6.12.95".into(), "#1 SMP".into()),
            (
                "emulated".into(),
                3,
                "6.1.0-56-arm64".into(),
                "#1 SMP".into()
            ),
            ("qemu".into(), 1, "6.12.95".into(), "#2".into()),
        ]
    );
}

#[test]
fn files_from_before_boots_were_recorded_still_load_with_boots() {
    let scratch = scratch();
    let run = RunDir::create_at(scratch.path(), "emulated", "6.1+6.12", at(START)).unwrap();
    let old = |kernel: &str| {
        let mut v = serde_json::to_value(Verdict {
            kernel: kernel.into(),
            ..verdict("a", Outcome::Pass)
        })
        .unwrap();
        v.as_object_mut().unwrap().remove("boot");
        serde_json::to_string(&v).unwrap() + "\n"
    };
    let lines = [old("6.1"), old("6.12"), old("6.1")].concat();
    fs::write(run.path().join(RESULTS_JSONL), lines).unwrap();
    let info = r#"{"schema": 2, "run_id": "r", "started": "2026-01-01T00:00:00Z", "environments": [
        {"lane": "emulated", "kernel_release": "6.1", "kernel_version": "", "machine": "",
         "runner_version": "", "features": [], "host": []},
        {"lane": "emulated", "kernel_release": "6.12", "kernel_version": "", "machine": "",
         "runner_version": "", "features": [], "host": []}]}"#;
    fs::write(run.path().join(RUN_JSON), info).unwrap();
    let loaded = load(run.path()).unwrap();
    let boots: Vec<u32> = loaded.verdicts.iter().map(|v| v.boot).collect();
    assert_eq!(boots, [1, 2, 1]);
    let boots: Vec<u32> = loaded.info.environments.iter().map(|e| e.boot).collect();
    assert_eq!(boots, [1, 2]);
}

#[test]
fn reports_of_a_run_that_died_at_boot_still_say_what_ran() {
    let scratch = scratch();
    let run = RunDir::create_at(scratch.path(), "emulated", "6.12.95", at(START)).unwrap();
    run.finish(&RunSummary {
        benchmarks: Vec::new(),
        error: Some("QEMU exited early: status 1".into()),
        ..RunSummary::default()
    })
    .unwrap();
    let junit = fs::read_to_string(run.path().join(JUNIT_XML)).unwrap();
    assert!(
        junit.contains(
            r#"<testsuite name="emulated.6.12.95" tests="1" skipped="0" errors="1" failures="0""#
        ),
        "{junit}"
    );
    let loaded = load(run.path()).unwrap();
    assert_eq!(loaded.info.environments[0].lane, Lane::Emulated);
    assert_eq!(
        loaded.summary().error.as_deref(),
        Some("QEMU exited early: status 1")
    );
}

fn run_with_results(scratch: &tempfile::TempDir, results: &[u8]) -> PathBuf {
    let run = RunDir::create_at(scratch.path(), "emulated", "6.12.95", at(START)).unwrap();
    fs::write(run.path().join(RESULTS_JSONL), results).unwrap();
    run.path().to_path_buf()
}

fn line(v: &Verdict) -> String {
    serde_json::to_string(v).unwrap() + "\n"
}

#[test]
fn an_unfinished_last_line_is_a_warning_not_an_error() {
    let scratch = scratch();
    let (a, b) = (verdict("a", Outcome::Pass), verdict("b", Outcome::Fail));
    let cut = &line(&b)[..40];
    let dir = run_with_results(
        &scratch,
        format!("{}{}{cut}", line(&a), line(&b)).as_bytes(),
    );
    let loaded = load(&dir).unwrap();
    assert_eq!(loaded.verdicts, vec![a.clone(), b.clone()]);
    assert_eq!(loaded.warnings.len(), 1);
    let warning = &loaded.warnings[0];
    assert!(
        warning.contains("results.jsonl:3: skipped an unfinished last line"),
        "{warning}"
    );

    // A last line cut just before its newline is whole: kept, without a warning.
    let whole = line(&b);
    let dir = run_with_results(
        &scratch,
        format!("{}{}", line(&a), whole.trim_end()).as_bytes(),
    );
    let loaded = load(&dir).unwrap();
    assert_eq!(loaded.verdicts, vec![a, b]);
    assert!(loaded.warnings.is_empty());
}

#[test]
fn a_damaged_line_names_file_line_and_remedy() {
    let scratch = scratch();
    let a = verdict("a", Outcome::Pass);
    let damaged = format!("{}{{\"schema\":1,\"test\":\n{}", line(&a), line(&a));
    let dir = run_with_results(&scratch, damaged.as_bytes());
    let error = load(&dir).unwrap_err();
    assert!(
        matches!(error, LoadError::BadVerdict { line: 2, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    let file = dir.join(RESULTS_JSONL).display().to_string();
    assert!(
        message.starts_with(&format!("{file}:2: not a valid verdict")),
        "{message}"
    );
    assert!(message.contains("rerun, or delete line 2"), "{message}");

    let binary = [line(&a).as_bytes(), b"\xff\xfe\n"].concat();
    let error = load(run_with_results(&scratch, &binary)).unwrap_err();
    assert!(
        matches!(error, LoadError::BadVerdict { line: 2, .. }),
        "{error:?}"
    );
}

#[test]
fn another_schema_is_named_as_such() {
    let scratch = scratch();
    let mut future = verdict("a", Outcome::Pass);
    future.schema = SCHEMA_VERSION + 1;
    let dir = run_with_results(&scratch, line(&future).as_bytes());
    let error = load(&dir).unwrap_err();
    assert!(
        matches!(error, LoadError::Schema { line: Some(1), .. }),
        "{error:?}"
    );
    assert!(error
        .to_string()
        .contains(&format!("results schema {}", SCHEMA_VERSION + 1)));

    let info = dir.join(RUN_JSON);
    fs::write(&info, r#"{"schema": 99, "renamed": true}"#).unwrap();
    let error = load(&dir).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::Schema {
                line: None,
                found: 99,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn missing_or_damaged_run_records_are_explained() {
    let scratch = scratch();
    let error = load(scratch.path().join("nowhere")).unwrap_err();
    assert!(
        error.to_string().contains("run.json: not found; is"),
        "{error}"
    );

    let dir = run_with_results(&scratch, b"");
    fs::write(dir.join(RUN_JSON), "{\"schema\": 1, \"run_id\": ").unwrap();
    let error = load(&dir).unwrap_err();
    assert!(matches!(error, LoadError::BadRunInfo { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("run.json: not a valid run record"),
        "{error}"
    );
}

#[test]
fn appends_from_two_threads_keep_lines_whole() {
    let scratch = scratch();
    let run = RunDir::create_at(scratch.path(), "emulated", "6.12.95", at(START)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| (0..50).for_each(|i| run.append_log(&format!("console {i}")).unwrap()));
        s.spawn(|| {
            (0..50).for_each(|i| {
                run.append_verdict(&verdict(&format!("t{i}"), Outcome::Pass))
                    .unwrap()
            })
        });
    });
    let loaded = load(run.path()).unwrap();
    assert_eq!(loaded.verdicts.len(), 50);
    assert_eq!(
        fs::read_to_string(run.path().join(CONSOLE_LOG))
            .unwrap()
            .lines()
            .count(),
        50
    );
}

#[test]
fn criterion_paths_stay_inside_the_run() {
    assert_eq!(
        criterion_path(Lane::Emulated, "6.12", "copy_tags/from_guest/4 KiB"),
        PathBuf::from("emulated-6.12/copy_tags/from_guest/4 KiB")
    );
    let escaped = criterion_path(Lane::Host, "k", "../../etc//passwd");
    assert_eq!(escaped, PathBuf::from("host-k/_/_/etc/_/passwd"));
    assert!(!criterion_path(Lane::Host, "..", "/abs").is_absolute());
}
