//! Architecture-specific vCPU set-up: only arm64 KVM can run the payloads.

use kvm_ioctls::{VcpuFd, VmFd};

/// Initialise a vCPU (PSCI 0.2, so that SYSTEM_OFF reaches the VMM and CPU_ON starts the other
/// vCPUs in KVM) and point it at `entry`; `powered_off` keeps it off until another vCPU starts
/// it with PSCI CPU_ON, at the entry point CPU_ON names. KVM resets PSTATE to EL1h with DAIF
/// masked, which is what the payload expects. With `sve` the vCPU also gets SVE
/// (KVM_ARM_VCPU_SVE, then KVM_ARM_VCPU_FINALIZE, before any other register is set, as KVM
/// requires), with every vector length KVM offers it.
#[cfg(target_arch = "aarch64")]
pub fn init(
    vm: &VmFd,
    vcpu: &VcpuFd,
    entry: u64,
    powered_off: bool,
    sve: bool,
) -> Result<(), (&'static str, i32)> {
    use kvm_bindings::{
        kvm_vcpu_init, KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2, KVM_REG_ARM64,
        KVM_REG_ARM_CORE, KVM_REG_SIZE_U64,
    };
    // The PC's offset in struct user_pt_regs (31 GPRs, then SP, then PC), in 32-bit words.
    const PC_OFFSET_WORDS: u64 = (31 + 1) * 8 / 4;
    const PC: u64 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | PC_OFFSET_WORDS;

    let mut init = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init)
        .map_err(|e| ("KVM_ARM_PREFERRED_TARGET", e.errno()))?;
    init.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
    if powered_off {
        init.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
    }
    if sve {
        init.features[0] |= 1 << crate::sve::KVM_ARM_VCPU_SVE;
    }
    vcpu.vcpu_init(&init)
        .map_err(|e| ("KVM_ARM_VCPU_INIT", e.errno()))?;
    if sve {
        crate::sve::finalize(vcpu)?;
    }
    vcpu.set_one_reg(PC, &entry.to_le_bytes())
        .map_err(|e| ("KVM_SET_ONE_REG(pc)", e.errno()))?;
    Ok(())
}

#[cfg(not(target_arch = "aarch64"))]
pub fn init(
    _vm: &VmFd,
    _vcpu: &VcpuFd,
    _entry: u64,
    _powered_off: bool,
    _sve: bool,
) -> Result<(), (&'static str, i32)> {
    Err(("KVM_ARM_VCPU_INIT", libc::ENOSYS))
}
