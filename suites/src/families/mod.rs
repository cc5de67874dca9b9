//! One module a family of scenarios.

use crate::scenario::Scenario;

pub mod access;
pub mod copy_tags_abi;
pub mod cost;
pub mod cow;
pub mod faults;
pub mod harness;
pub mod migration;
pub mod mm;
mod mm_common;
pub mod races;
pub mod shared;
pub mod swap;
pub mod tag_instructions;
pub mod tags;

/// Every family's table, in report order.
pub const ALL: &[&[Scenario]] = &[
    tags::SCENARIOS,
    faults::SCENARIOS,
    access::SCENARIOS,
    tag_instructions::SCENARIOS,
    cow::SCENARIOS,
    swap::SCENARIOS,
    shared::SCENARIOS,
    mm::SCENARIOS,
    races::SCENARIOS,
    migration::SCENARIOS,
    cost::SCENARIOS,
    copy_tags_abi::SCENARIOS,
    harness::SCENARIOS,
];
