//! The runner: the VMM backends, the harness that runs the scenarios against them, and the
//! performance suite (`--bench`).
//!
//! In the emulated lane it is the machine's /init; in the host and qemu lanes a plain program.

pub mod artifacts;
pub mod bench;
pub mod boot_check;
pub mod emit;
pub mod environment;
pub mod harness;
pub mod init;
pub mod kvm;
pub mod machine_setup;
pub mod payload;
pub mod qemu;
