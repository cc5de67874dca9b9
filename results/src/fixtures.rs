//! Verdicts for the unit tests of the report modules.

use crate::model::{Lane, Outcome, Verdict};

/// A verdict of the emulated lane on 6.12.95 without evidence, taking 12 ms.
pub fn verdict(test: &str, outcome: Outcome, reason: &str) -> Verdict {
    Verdict {
        schema: crate::SCHEMA_VERSION,
        test: test.into(),
        lane: Lane::Emulated,
        kernel: "6.12.95".into(),
        outcome,
        reason: reason.into(),
        detail: vec![],
        duration_ms: 12.0,
    }
}
