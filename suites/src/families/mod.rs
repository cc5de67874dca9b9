//! One module a family of scenarios.

use crate::scenario::Scenario;

pub mod access;
pub mod copy_tags_abi;
pub mod faults;
pub mod harness;
pub mod tag_instructions;
pub mod tags;

/// Every family's table, in report order.
pub const ALL: &[&[Scenario]] = &[
    tags::SCENARIOS,
    faults::SCENARIOS,
    access::SCENARIOS,
    tag_instructions::SCENARIOS,
    copy_tags_abi::SCENARIOS,
    harness::SCENARIOS,
];
