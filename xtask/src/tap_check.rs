//! The step of `cargo xtask test` that shows labs' TAP readers take a run with failures: the
//! failures of the run's fault-injection proofs, as TAP, read by perl's `prove`.
//!
//! A proof that passed watched its check fail under an injected fault: that failure is a real
//! verdict of a fault-injected run, with its real reason and evidence. Those failures, written
//! by the run's own TAP writer, are what `prove` must parse without a parse error, with each
//! failure counted as one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mte_results::summary::RunSummary;
use mte_results::{tap, Outcome, Verdict, FAULT_INJECTION_PROOFS};

use crate::apt::{self, Apt};
use crate::ui;

/// The verdicts of the fault-injected runs the proofs watched: each passing proof's check,
/// failed, under the proof's reason and evidence, in the proof's lane, boot and kernel.
pub fn injected_failures(verdicts: &[Verdict]) -> Vec<Verdict> {
    verdicts
        .iter()
        .filter(|v| v.outcome == Outcome::Pass)
        .filter_map(|proof| {
            let rest = proof.test.strip_prefix(FAULT_INJECTION_PROOFS)?;
            let (_injection, check) = rest.split_once("::")?;
            Some(Verdict {
                test: check.to_string(),
                outcome: Outcome::Fail,
                ..proof.clone()
            })
        })
        .collect()
}

/// Write the TAP of the run's injected failures into the run directory and have `prove` read
/// it. `Ok(false)` when `prove` found a parse error or counted otherwise; `Err` when it could
/// not run (the message says why and what to do).
pub fn check(run_dir: &Path, summary: &RunSummary, apt: &mut Apt) -> Result<bool> {
    let failures = injected_failures(&summary.verdicts);
    if failures.is_empty() {
        bail!("the run has no passing fault-injection proof, so no failure to feed to prove");
    }
    let injected = RunSummary {
        verdicts: failures,
        not_run: Vec::new(),
        benchmarks: Vec::new(),
        error: None,
        ..summary.clone()
    };
    let file = run_dir.join("injected-failures.tap");
    std::fs::write(&file, tap::render(&injected))
        .with_context(|| format!("writing {}", file.display()))?;
    let prove = ensure_prove(apt)?;
    let output = std::process::Command::new(&prove)
        .arg("--exec")
        .arg("cat")
        .arg(&file)
        .output()
        .with_context(|| format!("running {}", prove.display()))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = injected.verdicts.len();
    match judge(&said, expected) {
        Ok(()) => {
            ui::note(&format!(
                "prove read {expected} failures of the fault-injected runs without a parse \
                 error ({})",
                crate::build::relative(&file).display()
            ));
            Ok(true)
        }
        Err(why) => {
            ui::error(&format!(
                "prove --exec cat {}: {why}\n{said}",
                file.display()
            ));
            Ok(false)
        }
    }
}

/// Whether `prove`'s summary shows no parse error and exactly `failures` failed tests.
fn judge(said: &str, failures: usize) -> std::result::Result<(), String> {
    if said.contains("Parse errors") || said.contains("Bad plan") {
        return Err("it could not parse the TAP".into());
    }
    let counted = format!("Tests: {failures} Failed: {failures})");
    if !said.contains(&counted) {
        return Err(format!("its summary does not say \"{counted}\""));
    }
    Ok(())
}

/// `prove`, from Debian's `perl` package (perl-base, always there, lacks it).
fn ensure_prove(apt: &mut Apt) -> Result<PathBuf> {
    if let Some(path) = apt::on_path("prove") {
        return Ok(path);
    }
    if !apt.can_install() {
        bail!(
            "prove is not installed, and xtask cannot install it without root and apt-get (as \
             root: apt-get install -y perl)"
        );
    }
    apt.install(&["perl"], None)?;
    apt::on_path("prove").context("prove is still not on PATH after installing perl")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::verdict;

    #[test]
    fn a_passing_proof_stands_for_its_check_failed_under_injection() {
        let mut proof = verdict("fault_injection::corrupt_tag::tags::a", Outcome::Pass);
        proof.reason = "with corrupt-tag injected, tags::a failed as it must: differ".into();
        let failures = injected_failures(&[
            verdict("tags::a", Outcome::Pass),
            proof,
            verdict("fault_injection::corrupt_tag::tags::b", Outcome::Skip),
        ]);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].test, "tags::a");
        assert_eq!(failures[0].outcome, Outcome::Fail);
        assert!(failures[0].reason.starts_with("with corrupt-tag injected"));
    }

    #[test]
    fn prove_must_count_every_failure_and_parse_all() {
        let clean = "Test Summary Report\n/x.tap (Wstat: 0 Tests: 2 Failed: 2)\n";
        assert_eq!(judge(clean, 2), Ok(()));
        assert!(judge(clean, 3).is_err());
        let bad = "(Wstat: 0 Tests: 1 Failed: 1)\n  Parse errors: Bad plan.";
        assert!(judge(bad, 1).is_err());
    }
}
