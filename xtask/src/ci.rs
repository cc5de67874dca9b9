//! `cargo xtask test`, what CI runs: the host unit tests, the lints, a few seconds of each fuzz
//! target, a run of the suite, its report in a browser, and what the run must show besides no
//! failure: a pass, and checks proven able to fail.

use std::path::Path;

use mte_results::text::one_line;
use mte_results::{Lane, Outcome, Tally, Verdict, FAULT_INJECTION_PROOFS};

use crate::apt::Apt;
use crate::build::repo_root;
use crate::cli::Options;
use crate::fuzz;
use crate::harness_args;
use crate::kcidb;
use crate::lints;
use crate::reports;
use crate::run;
use crate::tap_check;
use crate::ui;
use crate::Status;

/// `test`: the host unit tests, then a run; ends with the totals line.
pub fn test(options: &Options) -> Status {
    // `--list`, `--help`, a mistake: answered before anything is built or run.
    if let Some(answered) = harness_args::answer(options) {
        return answered;
    }
    ui::step("host unit tests: cargo test --workspace");
    let unit_tests_passed = host_unit_tests();
    if !unit_tests_passed {
        ui::error("the host unit tests failed; the emulated run goes on");
    }
    let lints_held = Apt::new().is_ok_and(|mut apt| lints::check(&mut apt));
    let fuzzing_clean = fuzz::fuzz(None, fuzz::SMOKE_SECONDS).unwrap_or_else(|e| {
        ui::error(&format!("fuzzing: {e:#}"));
        false
    });
    let (tally, unproven, mut status, rendered, labs_read) = match run::run(options) {
        Ok(finished) => {
            let unproven = unproven_checks(&finished.summary.verdicts, finished.selection.all);
            let rendered = finished.selection.list || report_renders(&finished.dir);
            let labs_read = finished.selection.list
                || (labs_read_it(&finished) && device_agrees(options, &finished));
            (
                finished.summary.tally(),
                unproven,
                finished.status,
                rendered,
                labs_read,
            )
        }
        Err(e) => {
            eprintln!("{} {e:#}", ui::red("error:"));
            (Tally::default(), Vec::new(), Status::Error, true, true)
        }
    };
    if status == Status::Clean && !(rendered && labs_read) {
        status = Status::Failed;
    }
    if status == Status::Clean && tally.pass == 0 {
        ui::error("the run recorded no pass verdict");
        status = Status::Failed;
    }
    if status == Status::Clean && !unproven.is_empty() {
        for problem in &unproven {
            ui::error(problem);
        }
        status = Status::Failed;
    }
    if !lints_held && status == Status::Clean {
        ui::error("the lints did not hold (see above)");
        status = Status::Failed;
    }
    if !fuzzing_clean && status == Status::Clean {
        ui::error("a fuzz target found an input its parser fails on, or could not run (see above)");
        status = Status::Failed;
    }
    if !unit_tests_passed && status == Status::Clean {
        status = Status::Failed;
    }
    // The closing line in the form CI reads ("N passed, N failed, N skipped"); an expected
    // failure is neither a pass nor a fail, so it counts with the skips there.
    println!(
        "suite: {} passed, {} failed, {} skipped",
        tally.pass,
        tally.fail,
        tally.skip + tally.xfail
    );
    status
}

/// Whether the run's report renders in a headless browser as the run says (or no browser could
/// be had, which the step reports as a skip).
fn report_renders(dir: &Path) -> bool {
    let checked = reports::load(dir).and_then(|run| Ok((run, Apt::new()?)));
    match checked {
        Ok((run, mut apt)) => reports::browser_step(&run, &mut apt),
        Err(e) => {
            ui::error(&format!("browser check: {e:#}"));
            false
        }
    }
}

/// Whether labs' readers take the run: kcidb-io its KCIDB submission, `prove` the TAP of its
/// fault-injected failures (a run without proofs, a filtered one, has none: the step says so).
fn labs_read_it(finished: &run::Finished) -> bool {
    ui::step("lab formats: KCIDB validated by kcidb-io, TAP with failures read by prove");
    let kcidb_valid = kcidb::validate_step(&finished.dir).unwrap_or_else(|e| {
        ui::error(&format!("KCIDB check: {e:#}"));
        false
    });
    kcidb_valid && prove_reads_failures(finished)
}

/// The bundle on the emulated device gives the verdicts the emulated lane gave (a run of the
/// emulated lane without filters or shards: the device's share is then in it).
fn device_agrees(options: &Options, finished: &run::Finished) -> bool {
    let every_check = options.shard.is_none() && options.harness_args.is_empty();
    let (Some(kernel), true) = (
        options.kernels.first(),
        options.lanes.contains(&Lane::Emulated) && every_check && !finished.selection.list,
    ) else {
        ui::note("skipped: the device test needs a run of every check in the emulated lane");
        return true;
    };
    crate::device::step(kernel, &finished.dir).unwrap_or_else(|e| {
        ui::error(&format!("device test: {e:#}"));
        false
    })
}

/// `prove` reads the TAP of the run's fault-injected failures.
fn prove_reads_failures(finished: &run::Finished) -> bool {
    if !finished
        .summary
        .verdicts
        .iter()
        .any(|v| v.test.starts_with(FAULT_INJECTION_PROOFS))
    {
        ui::note("skipped: the run has no fault-injection proof, so no failure to feed to prove");
        return true;
    }
    let checked =
        Apt::new().and_then(|mut apt| tap_check::check(&finished.dir, &finished.summary, &mut apt));
    checked.unwrap_or_else(|e| {
        ui::error(&format!("TAP check: {e:#}"));
        false
    })
}

/// Why the run does not show that its checks can fail: a fault-injection proof that did not
/// pass (a skip proves nothing either), or, in a run of every check, no proof at all.
fn unproven_checks(verdicts: &[Verdict], all_selected: bool) -> Vec<String> {
    let proofs: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.test.starts_with(FAULT_INJECTION_PROOFS))
        .collect();
    // A proof that could not be made (skipped or xfailed) only matters where its check passed:
    // a check that skipped or xfailed in that lane claims nothing that needs proving.
    let check_passed = |proof: &Verdict| {
        let check = proof.test[FAULT_INJECTION_PROOFS.len()..]
            .split_once("::")
            .map(|(_injection, check)| check);
        verdicts.iter().any(|v| {
            Some(v.test.as_str()) == check
                && v.lane == proof.lane
                && v.boot == proof.boot
                && v.outcome == Outcome::Pass
        })
    };
    let mut problems: Vec<String> = proofs
        .iter()
        .filter(|v| match v.counted_outcome() {
            Outcome::Pass => false,
            Outcome::Fail => true,
            Outcome::Skip | Outcome::Xfail => check_passed(v),
        })
        .map(|v| {
            format!(
                "fault-injection proof {} was {} in the {} lane, boot {} ({}): {}",
                v.test,
                v.counted_outcome(),
                v.lane,
                v.boot,
                v.kernel,
                one_line(&v.reason)
            )
        })
        .collect();
    if proofs.is_empty() && all_selected {
        problems.push("no fault-injection proof ran, so no check was shown able to fail".into());
    }
    problems
}

fn host_unit_tests() -> bool {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    std::process::Command::new(cargo)
        .args(["test", "--workspace"])
        .current_dir(repo_root())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::verdict;

    #[test]
    fn a_run_must_show_its_checks_can_fail() {
        let check = verdict("tags::a", Outcome::Pass);
        let proof = |outcome| verdict("fault_injection::corrupt_tag::tags::a", outcome);
        assert!(unproven_checks(&[check.clone(), proof(Outcome::Pass)], true).is_empty());
        let skipped = unproven_checks(&[check.clone(), proof(Outcome::Skip)], true);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("was skip"), "{skipped:?}");
        assert_eq!(unproven_checks(std::slice::from_ref(&check), true).len(), 1);
        // A filtered run may leave the proofs out.
        assert!(unproven_checks(std::slice::from_ref(&check), false).is_empty());
        // A check that skipped (or xfailed) has nothing to prove; one that failed fails anyway.
        let skipped_check = verdict("tags::a", Outcome::Skip);
        assert!(unproven_checks(&[skipped_check, proof(Outcome::Skip)], true).is_empty());
        let failed_proof = unproven_checks(&[check.clone(), proof(Outcome::Fail)], true);
        assert_eq!(failed_proof.len(), 1);
        // The proof answers for its check in its own lane only: a pass elsewhere claims
        // nothing here.
        let mut elsewhere = check;
        elsewhere.lane = Lane::Qemu;
        assert!(unproven_checks(&[elsewhere, proof(Outcome::Skip)], true).is_empty());
    }
}
