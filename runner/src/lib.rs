//! The runner: the harness that runs the scenarios against the VMM backends (`mte-vmm-kvm`,
//! `mte-vmm-qemu`), the emulated machine's init and set-up, and the performance suite
//! (`--bench`).
//!
//! In the emulated lane it is the machine's /init; in the host and qemu lanes a plain program.

pub mod artifacts;
pub mod bench;
pub mod emit;
pub mod environment;
pub mod harness;
pub mod init;
pub mod kernel_config;
pub mod machine_setup;
pub mod mte_layers;
