//! What MTE a guest is shown: with KVM_CAP_ARM_MTE, the host's level, no less.
//!
//! The rest of what the guest's ID registers promise is checked where the instructions are:
//! GMID_EL1.BS against what STGM and LDGM cover (`tag_instructions::stgm_*`, `ldgm_*`),
//! DCZID_EL0.BS against DC GVA and DC GZVA (`tag_instructions::dc_g*va_*`), and a VM without
//! the capability (`tags::vm_without_mte_has_no_tag_storage`).

use mte_protocol::GuestIds;

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::vmm::{BootOptions, Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "features::guest_sees_the_hosts_mte_level",
    summary: "A guest of a VM with KVM_CAP_ARM_MTE reads in ID_AA64PFR1_EL1.MTE the level of \
              MTE its host's kernel offers its own processes (hwcaps mte: 2, mte3: 3): a kernel \
              that shows its guests less (MTE3 hidden) fails",
    why: "api.rst (KVM_CAP_ARM_MTE): with the capability the guest is given MTE; KVM builds the \
          guest's ID_AA64PFR1_EL1 from the host's sanitised value and clears only the MTE field \
          without it (arch/arm64/kvm/sys_regs.c), so the guest sees MTE3 where the host has it. \
          A guest shown MTE2 on an MTE3 host loses asymmetric tag checking (SCTLR_EL1.TCF = 3) \
          and the checks that need it would skip rather than fail",
    proven_by: &[Injection::LowerMteLevel],
    run: guest_sees_the_hosts_mte_level,
}];

/// The ID register fields a guest reads MTE from, in words.
fn described(ids: &GuestIds) -> String {
    format!(
        "ID_AA64PFR1_EL1 = {:#x} (MTE = {}), GMID_EL1 = {:#x} (BS = {}), DCZID_EL0 = {:#x} (BS = {})",
        ids.id_aa64pfr1_el1,
        ids.mte_level(),
        ids.gmid_el1,
        ids.gmid_el1 & 0xf,
        ids.dczid_el0,
        ids.dczid_el0 & 0xf
    )
}

fn guest_sees_the_hosts_mte_level(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    vmm.mte_capable()?;
    let host = vmm.host_mte()?;
    // Not the boot step, which skips a guest without tag storage: less MTE than the host's
    // is what this check fails.
    let guest = vmm.boot(&BootOptions::default())?;
    let ids = guest.ids();
    let mut checks = Checks::new();
    checks.value("the host's MTE", "", host.source.clone());
    checks.equal(
        "ID_AA64PFR1_EL1.MTE of the guest of a VM with KVM_CAP_ARM_MTE, against the host's \
         level (2 MTE2, 3 MTE3)",
        host.level,
        ids.mte_level(),
    );
    checks.value("the guest's ID registers", "", described(&ids));
    Ok(checks.finish())
}
