//! One module a family of scenarios, and the table of them all.

use crate::scenario::Scenario;

pub mod access;
pub mod copy_tags_abi;
pub mod cost;
pub mod cow;
pub mod el0;
pub mod exception_entry;
pub mod fault_priority;
pub mod faults;
pub mod features;
pub mod harness;
pub mod migration;
pub mod mm;
pub mod mte_state;
pub mod qemu;
pub mod races;
pub mod shared;
pub mod sve;
pub mod swap;
pub mod tag_instructions;
pub mod tags;

/// Every family's table, in report order.
pub const ALL: &[&[Scenario]] = &[
    tags::SCENARIOS,
    features::SCENARIOS,
    faults::SCENARIOS,
    fault_priority::SCENARIOS,
    access::SCENARIOS,
    el0::SCENARIOS,
    tag_instructions::SCENARIOS,
    cow::SCENARIOS,
    swap::SCENARIOS,
    shared::SCENARIOS,
    mm::SCENARIOS,
    races::SCENARIOS,
    migration::SCENARIOS,
    mte_state::SCENARIOS,
    mte_state::EL0_SCENARIOS,
    exception_entry::SCENARIOS,
    qemu::SCENARIOS,
    cost::SCENARIOS,
    copy_tags_abi::SCENARIOS,
    sve::SCENARIOS,
    harness::SCENARIOS,
];

/// Every scenario, in the order reports list them.
pub fn all() -> Vec<&'static Scenario> {
    ALL.iter().flat_map(|family| family.iter()).collect()
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
