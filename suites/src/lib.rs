//! The scenarios of the MTE suite: what must hold for a guest's tags, on which steps, and why.
//!
//! A scenario is written once against the [`vmm::Vmm`] traits and runs in every lane that can
//! take its steps; a lane that cannot says so and the scenario becomes a skip. Each family of
//! scenarios lives in its own module under [`families`]; [`all`] is the table the runner reads.

pub mod check;
pub mod expectations;
pub mod families;
pub mod host_mm;
pub mod inject;
pub mod migrate;
pub mod peers;
pub mod pseudocode;
pub mod scenario;
pub mod vmm;

pub use check::{Checks, Finding};
pub use scenario::{all, Scenario};
pub use vmm::{BootOptions, Guest, Vmm, VmmError};
