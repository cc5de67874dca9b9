//! `mte-guest`: the bare-metal EL1 payload of the MTE suite.
//!
//! A small runtime (entry, exception vectors, identity MMU map with Normal-Tagged RAM, MTE set
//! up) and an interpreter of the host's commands (see `mte_protocol`). Boot order:
//!
//! 1. `entry`: leave EL2 if entered there, enable FP/SIMD, install the vectors, turn the MMU and
//!    the caches on (`mmu`), zero .bss, set up the stack, call [`main`].
//! 2. [`main`]: banner, MTE registers (`mte`), identity in the mailbox, `Booted`.
//! 3. `commands`: doorbell, run the host's command, doorbell, ... until `PowerOff`.
//!
//! The other vCPUs, started by vCPU 0 when the host asks (`smp`), go through the same steps
//! from `entry::secondary_start` to [`secondary_main`], each with its own stack and mailbox.
//!
//! With the `selftest` feature the payload runs a fixed script of commands instead and reports
//! on the console (`selftest`).
#![no_std]
#![no_main]

#[macro_use]
mod console;
mod access;
mod args;
mod bulk;
mod commands;
mod cpu;
mod data;
mod el0;
mod entry;
mod exception_entry;
mod instructions;
mod mailbox;
mod mmu;
mod mte;
mod no_mte;
mod power;
mod precopy_workload;
mod priority;
#[cfg(feature = "selftest")]
mod selftest;
mod smp;
mod sve;
mod sysreg;
mod tags;
mod timing;
mod vectors;

use mte_protocol::{GuestIds, PROTOCOL_VERSION};

/// First Rust code: MMU and caches on, .bss zeroed, on the boot stack.
extern "C" fn main(entered_at_el2: bool) -> ! {
    power::init(entered_at_el2);
    let level = mte::init();
    println!("mte-guest: protocol {PROTOCOL_VERSION}, ID_AA64PFR1_EL1.MTE = {level}");
    mailbox::boot(read_ids());

    #[cfg(feature = "selftest")]
    selftest::run();
    #[cfg(not(feature = "selftest"))]
    commands::serve();
}

/// First Rust code of vCPUs 1 and up: MMU and caches on, on the vCPU's own stack, its number
/// in TPIDR_EL1. Each vCPU has its own MTE registers to set.
extern "C" fn secondary_main(vcpu: u64) -> ! {
    mte::init();
    println!("mte-guest: vCPU {vcpu} up");
    mailbox::boot(read_ids());
    commands::serve();
}

/// The identity the host reads at boot; MTE registers only where they exist.
fn read_ids() -> GuestIds {
    let tags = mte::has_tag_storage();
    GuestIds {
        midr_el1: sysreg::read!("midr_el1"),
        id_aa64pfr1_el1: sysreg::read!("id_aa64pfr1_el1"),
        gmid_el1: if tags { sysreg::read!("gmid_el1") } else { 0 },
        dczid_el0: sysreg::read!("dczid_el0"),
        sctlr_el1: sysreg::read!("sctlr_el1"),
        tcr_el1: sysreg::read!("tcr_el1"),
        gcr_el1: if tags { sysreg::read!("gcr_el1") } else { 0 },
        rgsr_el1: if tags { sysreg::read!("rgsr_el1") } else { 0 },
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("mte-guest: panic: {info}");
    mailbox::stop_with_panic()
}
