//! What the unit tests of several modules build their cases from.

use mte_results::{Lane, Outcome, Verdict};

/// A verdict of `test` in the emulated lane's first boot, on 6.12, with a reason and no evidence.
pub fn verdict(test: &str, outcome: Outcome) -> Verdict {
    Verdict {
        schema: mte_results::SCHEMA_VERSION,
        test: test.into(),
        lane: Lane::Emulated,
        kernel: "6.12".into(),
        boot: 1,
        outcome,
        reason: "why".into(),
        detail: vec![],
        duration_ms: 1.0,
    }
}
