//! What a scenario is: a check's name, what must hold, why, its proofs and the code that compares.
//! The table of every scenario is [`crate::families::all`].

use crate::check::Finding;
use crate::inject::Injection;
use crate::vmm::{Vmm, VmmError};

/// One check: its name, what must hold, why, and the code that compares.
pub struct Scenario {
    /// `family::what_must_hold`; the name filters match.
    pub name: &'static str,
    /// What must hold, in a sentence.
    pub summary: &'static str,
    /// Why it must hold: the ABI text or the historical fix it guards.
    pub why: &'static str,
    /// The fault injections that must turn this check red; each gets a proof trial (at least
    /// one: a check that cannot be shown to fail proves nothing when it passes).
    pub proven_by: &'static [Injection],
    pub run: fn(&dyn Vmm) -> Result<Finding, VmmError>,
}

impl Scenario {
    /// Run to a finding: errors become a skip (the lane lacks a step) or a fail.
    pub fn execute(&self, vmm: &dyn Vmm) -> Finding {
        (self.run)(vmm).unwrap_or_else(|e| Finding::from_error(&e))
    }
}
