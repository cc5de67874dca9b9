//! The scenarios of the MTE suite: what must hold for a guest's tags, on which steps, and why.
//!
//! A scenario is written once against the [`vmm::Vmm`] traits and runs in every lane that can
//! take its steps; a lane that cannot says so and the scenario becomes a skip. Each family of
//! scenarios lives in its own module under [`families`]; [`all`] is the table the runner reads.
//!
//! Modules depend one way, from the bottom up: [`error`] and [`reply`]; the types of the VMM's
//! steps ([`host_mm`], [`migration_plan`], [`race_plan`]), the kernel options they need
//! ([`kernel_options`]) and its traits ([`vmm`]); findings ([`check`], with
//! [`esr`] in words), fault injection ([`inject`]) and what a scenario is ([`scenario`]); the
//! steps the families share ([`steps`]); then the families.

pub mod check;
pub mod error;
pub mod esr;
pub mod expectations;
pub mod families;
pub mod host_mm;
pub mod inject;
pub mod kernel_options;
pub mod migration_plan;
pub mod peers;
pub mod pseudocode;
pub mod qemu_cpu;
pub mod race_plan;
pub mod reply;
pub mod scenario;
pub mod steps;
pub mod vmm;

pub use check::{Checks, Finding};
pub use families::all;
pub use scenario::Scenario;
pub use vmm::{BootOptions, Guest, Vmm, VmmError};
