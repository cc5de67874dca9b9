//! A run as a KCIDB submission (the KernelCI common results database), schema version 4.0 as
//! the kcidb-io package defines it: the objects KCIDB knows, filled from what a run recorded.
//!
//! - a checkout per kernel, and a build of it: the kernels are distribution packages (or an
//!   image given by path), so the checkout names the package and the build the release and
//!   image checksum xtask recorded; in the qemu lane the "kernel" is the QEMU under test;
//! - a test per verdict, at the path `mte.` and the check's name with `::` as `.`
//!   (`mte.tags.guest_stg_matches_host_fetch`), in the lane's environment;
//! - statuses: pass PASS, fail FAIL, skip SKIP; an xfail is FAIL, `waived` (KCIDB's word for a
//!   status that must not alert anyone: the documented behaviour of an older kernel), a proof
//!   of an xfail check SKIP; a planned check that never reported MISS; a run that ended early
//!   an ERROR at the path `mte` of the boot it names;
//! - every id starts with the origin and a colon, then the run's id, so that two runs never
//!   share one.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::model::{Environment, Lane, Outcome, Verdict};
use crate::rundir::LoadedRun;

/// The schema version the submission follows.
pub const VERSION: (u32, u32) = (4, 0);
/// The origin when none is given: KCIDB allows `[a-z0-9_]+`.
pub const DEFAULT_ORIGIN: &str = "mte_suite";
/// KCIDB's limit on a log excerpt, in characters.
const LOG_EXCERPT_MAX: usize = 16384;

/// Whether `origin` is one KCIDB takes.
pub fn valid_origin(origin: &str) -> bool {
    !origin.is_empty()
        && (origin.bytes()).all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The submission of `run`, its ids prefixed by `origin` (see [`valid_origin`]).
pub fn submission(run: &LoadedRun, origin: &str) -> Value {
    let run_id = &run.info.run_id;
    let summary = run.summary();
    let id = |kind: &str, rest: &str| format!("{origin}:{run_id}:{kind}:{rest}");
    // A build per kernel a boot ran, in the order the boots ran.
    let mut builds: BTreeMap<String, &Environment> = BTreeMap::new();
    for env in &summary.environments {
        builds
            .entry(build_key(env.lane, &env.kernel_release))
            .or_insert(env);
    }
    let checkouts: Vec<Value> = (builds.iter())
        .map(|(key, env)| checkout(id("checkout", key), origin, env))
        .collect();
    let builds_json: Vec<Value> = (builds.iter())
        .map(|(key, env)| build(id("build", key), id("checkout", key), origin, env))
        .collect();
    let env_of = |lane: Lane, boot: u32| {
        (summary.environments.iter()).find(|e| e.lane == lane && e.boot == boot)
    };
    let build_id = |lane: Lane, kernel: &str| id("build", &build_key(lane, kernel));
    let boot_id = |lane: Lane, boot: u32, test: &str| format!("{}.{boot}:{test}", lane.name());
    let mut tests: Vec<Value> = Vec::new();
    for v in &summary.verdicts {
        let (status, waived) = status_of(v);
        let mut test = test_object(
            id("test", &boot_id(v.lane, v.boot, &v.test)),
            build_id(v.lane, &v.kernel),
            origin,
            &v.test,
            env_of(v.lane, v.boot),
        );
        test.insert("status".into(), status.into());
        if waived {
            test.insert("waived".into(), true.into());
        }
        test.insert("duration".into(), json!(seconds(v.duration_ms)));
        test.insert("log_excerpt".into(), excerpt(&log_text(v)).into());
        tests.push(Value::Object(test));
    }
    for missing in &summary.not_run {
        let mut test = test_object(
            id("test", &boot_id(missing.lane, missing.boot, &missing.test)),
            build_id(missing.lane, &missing.kernel),
            origin,
            &missing.test,
            env_of(missing.lane, missing.boot),
        );
        test.insert("status".into(), "MISS".into());
        test.insert("log_excerpt".into(), missing.reason().into());
        tests.push(Value::Object(test));
    }
    if let Some(error) = &summary.error {
        // The boot whose label starts the error, else the run's first.
        let env = (summary.environments.iter())
            .find(|e| {
                error.starts_with(&format!("{} lane: ", e.lane))
                    || error.starts_with(&format!("{} lane, boot {} ", e.lane, e.boot))
            })
            .or(summary.environments.first());
        if let Some(env) = env {
            let mut test = test_object(
                id("test", &boot_id(env.lane, env.boot, "run")),
                build_id(env.lane, &env.kernel_release),
                origin,
                "",
                Some(env),
            );
            test.insert("status".into(), "ERROR".into());
            test.insert("log_excerpt".into(), excerpt(error).into());
            tests.push(Value::Object(test));
        }
    }
    json!({
        "version": {"major": VERSION.0, "minor": VERSION.1},
        "checkouts": checkouts,
        "builds": builds_json,
        "tests": tests,
    })
}

/// What tells builds apart: the lane's kind of kernel and its release.
fn build_key(lane: Lane, kernel: &str) -> String {
    match lane {
        // The qemu lane's "kernel" is the QEMU that is its VMM.
        Lane::Qemu => format!("qemu:{kernel}"),
        _ => format!("kernel:{kernel}"),
    }
}

fn host_fact<'a>(env: &'a Environment, name: &str) -> Option<&'a str> {
    (env.host.iter())
        .find(|f| f.name == name)
        .map(|f| f.value.as_str())
        .filter(|v| !v.is_empty())
}

fn checkout(id: String, origin: &str, env: &Environment) -> Value {
    let mut misc = Map::new();
    for name in ["kernel.package", "kernel.package_version", "kernel.tree"] {
        if let Some(value) = host_fact(env, name) {
            misc.insert(name.into(), value.into());
        }
    }
    let comment = match (host_fact(env, "kernel.package"), env.lane) {
        (_, Lane::Qemu) => format!("QEMU {}", env.kernel_release),
        (Some(package), _) => format!(
            "{package} {}",
            host_fact(env, "kernel.package_version").unwrap_or_default()
        ),
        (None, _) => format!("kernel {}", env.kernel_release),
    };
    json!({
        "id": id,
        "origin": origin,
        "comment": comment.trim(),
        "valid": true,
        "misc": misc,
    })
}

fn build(id: String, checkout_id: String, origin: &str, env: &Environment) -> Value {
    let mut misc = Map::new();
    misc.insert("kernel_release".into(), env.kernel_release.clone().into());
    misc.insert("kernel_version".into(), env.kernel_version.clone().into());
    for name in ["kernel.image", "kernel.image_sha256"] {
        if let Some(value) = host_fact(env, name) {
            misc.insert(name.into(), value.into());
        }
    }
    json!({
        "id": id,
        "checkout_id": checkout_id,
        "origin": origin,
        "architecture": "arm64",
        "comment": env.kernel_release,
        "valid": true,
        "misc": misc,
    })
}

/// A test without its status: ids, path and environment.
fn test_object(
    id: String,
    build_id: String,
    origin: &str,
    test: &str,
    env: Option<&Environment>,
) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("id".into(), id.into());
    object.insert("build_id".into(), build_id.into());
    object.insert("origin".into(), origin.into());
    object.insert("path".into(), path(test).into());
    object.insert("comment".into(), test.into());
    if let Some(env) = env {
        object.insert("environment".into(), environment(env));
    }
    object
}

/// A check's KCIDB path: `mte.` and its name, `::` as `.`, and what KCIDB does not allow in a
/// path (`[.a-zA-Z0-9_-]`) as `_`; `mte` alone for the run.
fn path(test: &str) -> String {
    if test.is_empty() {
        return "mte".into();
    }
    let dotted: String = (test.replace("::", ".").chars())
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    format!("mte.{dotted}")
}

/// The facts of a boot a test's environment carries: where and how it ran. Each test carries
/// its own environment in KCIDB, so the long ones (CPU features, timings) stay in run.json.
const ENVIRONMENT_FACTS: &[&str] = &["host.", "suite.", "xtask.command", "qemu.version"];

/// The lane, its boot and what it ran on, in words and as the facts.
fn environment(env: &Environment) -> Value {
    let mut misc = Map::new();
    misc.insert("lane".into(), env.lane.name().into());
    misc.insert("boot".into(), env.boot.into());
    misc.insert("machine".into(), env.machine.clone().into());
    misc.insert("runner_version".into(), env.runner_version.clone().into());
    let kept = |name: &str| ENVIRONMENT_FACTS.iter().any(|p| name.starts_with(p));
    for fact in env.host.iter().filter(|f| kept(&f.name)) {
        misc.insert(fact.name.clone(), fact.value.clone().into());
    }
    let mut comment = format!(
        "{} lane, boot {}: {}",
        env.lane, env.boot, env.kernel_release
    );
    if let Some(host) = host_fact(env, "host.name") {
        comment.push_str(&format!(" on {host}"));
    }
    json!({ "comment": comment, "misc": misc })
}

/// KCIDB's status of a verdict, and whether it is waived.
fn status_of(v: &Verdict) -> (&'static str, bool) {
    match v.counted_outcome() {
        Outcome::Pass => ("PASS", false),
        Outcome::Fail => ("FAIL", false),
        Outcome::Skip => ("SKIP", false),
        Outcome::Xfail => ("FAIL", true),
    }
}

/// The reason, then the evidence, as the other reports show a verdict.
fn log_text(v: &Verdict) -> String {
    let mut text = format!("{}: {}", v.counted_outcome(), v.reason);
    for evidence in &v.detail {
        text.push_str(&format!("\n\n{evidence}"));
    }
    text
}

/// `text` within KCIDB's limit, cut at a character boundary with the cut said.
fn excerpt(text: &str) -> String {
    if text.chars().count() <= LOG_EXCERPT_MAX {
        return text.to_string();
    }
    const CUT: &str = "\n[cut]";
    let kept: String = text.chars().take(LOG_EXCERPT_MAX - CUT.len()).collect();
    kept + CUT
}

fn seconds(ms: f64) -> f64 {
    if ms.is_finite() && ms > 0.0 {
        ms / 1000.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{summary, verdict};
    use crate::model::NotRun;
    use crate::rundir::RunInfo;

    fn loaded(verdicts: Vec<Verdict>, error: Option<&str>, not_run: Vec<NotRun>) -> LoadedRun {
        let summary = summary(verdicts);
        LoadedRun {
            dir: "/r".into(),
            info: RunInfo {
                schema: 2,
                run_id: "20261207-220613-emulated-6.12".into(),
                started: "2026-12-07T22:06:13Z".into(),
                finished: Some("2026-12-07T22:07:13Z".into()),
                wall_ms: Some(60000.0),
                error: error.map(String::from),
                environments: summary.environments.clone(),
                not_run,
            },
            verdicts: summary.verdicts,
            benchmarks: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn each_verdict_is_a_test_of_its_build() {
        let run = loaded(
            vec![
                verdict("tags::a", Outcome::Pass, "agree"),
                verdict("cow::b", Outcome::Fail, "lost"),
                verdict("swap::c", Outcome::Skip, "no swap"),
                verdict("shared::d", Outcome::Xfail, "refused before 6.2"),
            ],
            Some("the machine stopped"),
            vec![NotRun {
                test: "mm::e".into(),
                lane: Lane::Emulated,
                boot: 1,
                kernel: "6.12.95".into(),
                was_running: false,
            }],
        );
        let doc = submission(&run, "lab");
        assert_eq!(doc["version"], json!({"major": 4, "minor": 0}));
        assert_eq!(doc["builds"].as_array().unwrap().len(), 1);
        let build_id = doc["builds"][0]["id"].as_str().unwrap();
        assert_eq!(
            build_id,
            "lab:20261207-220613-emulated-6.12:build:kernel:6.12.95"
        );
        assert_eq!(doc["builds"][0]["checkout_id"], doc["checkouts"][0]["id"]);
        let tests = doc["tests"].as_array().unwrap();
        let seen: Vec<(&str, &str, bool)> = (tests.iter())
            .map(|t| {
                (
                    t["path"].as_str().unwrap(),
                    t["status"].as_str().unwrap(),
                    t["waived"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("mte.tags.a", "PASS", false),
                ("mte.cow.b", "FAIL", false),
                ("mte.swap.c", "SKIP", false),
                ("mte.shared.d", "FAIL", true),
                ("mte.mm.e", "MISS", false),
                ("mte", "ERROR", false),
            ]
        );
        assert!(tests.iter().all(|t| t["build_id"] == build_id));
        assert!(tests.iter().all(|t| t["id"]
            .as_str()
            .unwrap()
            .starts_with("lab:20261207-220613-emulated-6.12:test:emulated.1:")));
        assert_eq!(tests[1]["log_excerpt"], "fail: lost");
        assert_eq!(tests[0]["environment"]["misc"]["lane"], "emulated");
    }

    #[test]
    fn paths_and_excerpts_keep_to_kcidb_limits() {
        assert_eq!(path("a::b c/d"), "mte.a.b_c_d");
        assert_eq!(path(""), "mte");
        let long = "x".repeat(LOG_EXCERPT_MAX + 10);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), LOG_EXCERPT_MAX);
        assert!(cut.ends_with("[cut]"));
        assert!(valid_origin("mte_suite"));
        assert!(!valid_origin("MTE") && !valid_origin("") && !valid_origin("a:b"));
    }
}
