//! The declarative table of scenarios.

use crate::check::Finding;
use crate::families;
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

/// Every scenario, in the order reports list them.
pub fn all() -> Vec<&'static Scenario> {
    families::ALL
        .iter()
        .flat_map(|family| family.iter())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_namespaced() {
        let mut seen = HashSet::new();
        for s in all() {
            assert!(seen.insert(s.name), "duplicate scenario {}", s.name);
            assert!(s.name.contains("::"), "{} has no family prefix", s.name);
            assert!(
                !s.summary.is_empty() && !s.why.is_empty(),
                "{} lacks its reasons",
                s.name
            );
        }
    }

    #[test]
    fn every_check_is_proven_by_an_injection() {
        for s in all() {
            assert!(
                !s.proven_by.is_empty(),
                "{} has no fault-injection proof",
                s.name
            );
        }
    }
}
