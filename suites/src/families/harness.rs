//! Checks of the suite's own machinery that a verdict depends on.

use std::time::{Duration, Instant};

use mte_protocol::Command;

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::vmm::{BootOptions, Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "harness::stuck_guest_is_stopped_by_its_deadline",
    summary: "A guest that never rings the doorbell again is kicked out of the VMM by its \
              deadline, and the step ends as a timeout instead of hanging the run",
    why: "Every guest run has a deadline: a vCPU can spin in KVM_RUN forever (seen on 6.1 with \
          no memory at its PC), and one stuck check must not stop the others",
    proven_by: &[Injection::LateDeadline],
    run: stuck_guest_is_stopped_by_its_deadline,
}];

/// Short, so that the check and its proof (which runs the guest under five times this) wait
/// little; four times this is room enough for a busy host to stop the guest.
const DEADLINE: Duration = Duration::from_millis(200);

fn stuck_guest_is_stopped_by_its_deadline(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    // No MTE needed: the deadline is the VMM's, whatever the guest can do.
    let options = BootOptions {
        mte: false,
        deadline: Some(DEADLINE),
        ..BootOptions::default()
    };
    let mut guest = vmm.boot(&options)?;
    let started = Instant::now();
    let outcome = guest.exec(Command::Spin, &[]);
    let waited = started.elapsed();

    let mut checks = Checks::new();
    let timed_out = matches!(outcome, Err(VmmError::Timeout { .. }));
    checks.holds(
        "the stuck guest's step ended as a timeout",
        timed_out,
        "a timeout error",
        match &outcome {
            Ok(reply) => format!("a reply with status {:?}", reply.status),
            Err(e) => e.to_string(),
        },
    );
    checks.holds(
        "the deadline was kept",
        waited >= DEADLINE && waited < DEADLINE * 4,
        format!("between {DEADLINE:?} and {:?}", DEADLINE * 4),
        format!("{waited:?}"),
    );
    Ok(checks.finish())
}
