//! One module a family of scenarios.

use crate::scenario::Scenario;

pub mod copy_tags_abi;
pub mod faults;
pub mod harness;
pub mod tags;

/// Every family's table, in report order.
pub const ALL: &[&[Scenario]] = &[
    tags::SCENARIOS,
    faults::SCENARIOS,
    copy_tags_abi::SCENARIOS,
    harness::SCENARIOS,
];
