//! The steps the families of checks share, one concern a module: running a guest command
//! ([`command`]) and reading its bulk report ([`bulk`]), booting ([`boot`]), tag maps
//! ([`tags`]) and data ([`data`]) of a range, tag-checked accesses and their faults
//! ([`tag_checks`]) and those made as EL0 ([`el0`]), the host's view of guest RAM ([`host_memory`]), swap ([`swap`]) and seeded
//! choices ([`random`]). A family module keeps its checks, its table and what only it needs.

pub mod boot;
pub mod bulk;
pub mod command;
pub mod data;
pub mod el0;
pub mod host_memory;
pub mod random;
pub mod swap;
pub mod tag_checks;
pub mod tags;
pub mod vcpu_thread;
