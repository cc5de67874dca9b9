//! SVE for a vCPU: the KVM_ARM_VCPU_SVE feature at KVM_ARM_VCPU_INIT, KVM_ARM_VCPU_FINALIZE
//! after it, and the vector lengths KVM offers (the pseudo-register KVM_REG_ARM64_SVE_VLS,
//! readable between the two), which [`offer`] reports from a VM of its own.

use kvm_ioctls::Kvm;
use mte_suites::vmm::{SveOffer, VmmError};

#[cfg(target_arch = "aarch64")]
pub use kvm_bindings::KVM_ARM_VCPU_SVE;

/// KVM_REG_ARM64_SVE_VLS: a 512-bit register whose bit `vq - 1` says that vectors of `vq`
/// quadwords are offered (uapi/asm/kvm.h: KVM_REG_ARM64 | KVM_REG_ARM64_SVE |
/// KVM_REG_SIZE_U512 | 0xffff).
#[cfg(target_arch = "aarch64")]
const SVE_VLS: u64 = kvm_bindings::KVM_REG_ARM64
    | kvm_bindings::KVM_REG_ARM64_SVE as u64
    | kvm_bindings::KVM_REG_SIZE_U512
    | 0xffff;

/// KVM_ARM_VCPU_FINALIZE(KVM_ARM_VCPU_SVE): the vector lengths are fixed from here on.
#[cfg(target_arch = "aarch64")]
pub fn finalize(vcpu: &kvm_ioctls::VcpuFd) -> Result<(), (&'static str, i32)> {
    vcpu.vcpu_finalize(&(KVM_ARM_VCPU_SVE as i32))
        .map_err(|e| ("KVM_ARM_VCPU_FINALIZE(KVM_ARM_VCPU_SVE)", e.errno()))
}

/// Whether KVM can give vCPUs SVE (KVM_CAP_ARM_SVE).
pub fn capable(kvm: &Kvm) -> Result<(), VmmError> {
    if kvm.check_extension_raw(kvm_bindings::KVM_CAP_ARM_SVE.into()) > 0 {
        Ok(())
    } else {
        Err(VmmError::Unsupported(
            "KVM has no KVM_CAP_ARM_SVE (a CPU without SVE, or a kernel before 5.2): its vCPUs \
             cannot have SVE"
                .into(),
        ))
    }
}

/// The vector lengths in bytes that bits of KVM_REG_ARM64_SVE_VLS offer, shortest first.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub fn vector_lengths(vls: &[u8]) -> Vec<u32> {
    vls.iter()
        .enumerate()
        .flat_map(|(byte, bits)| {
            (0..8)
                .filter(move |bit| bits & (1 << bit) != 0)
                .map(move |bit| (byte * 8 + bit + 1) as u32 * 16)
        })
        .collect()
}

/// What SVE a vCPU of this KVM gets: a VM and vCPU of their own, initialised with SVE, its
/// KVM_REG_ARM64_SVE_VLS read before finalizing.
#[cfg(target_arch = "aarch64")]
pub fn offer(kvm: &Kvm) -> Result<SveOffer, VmmError> {
    use crate::vm::sys;
    capable(kvm)?;
    let vm = crate::ipa::create_vm(kvm, crate::ipa::SUITE_IPA_BITS)?;
    let vcpu = vm.create_vcpu(0).map_err(sys("KVM_CREATE_VCPU"))?;
    let mut init = kvm_bindings::kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init)
        .map_err(sys("KVM_ARM_PREFERRED_TARGET"))?;
    init.features[0] |= 1 << KVM_ARM_VCPU_SVE;
    vcpu.vcpu_init(&init)
        .map_err(sys("KVM_ARM_VCPU_INIT with KVM_ARM_VCPU_SVE"))?;
    let mut vls = [0u8; 64];
    vcpu.get_one_reg(SVE_VLS, &mut vls)
        .map_err(sys("KVM_GET_ONE_REG(KVM_REG_ARM64_SVE_VLS)"))?;
    finalize(&vcpu).map_err(|(call, errno)| VmmError::Sys {
        call: call.into(),
        errno,
    })?;
    Ok(SveOffer {
        vector_lengths: vector_lengths(&vls),
        source: format!(
            "KVM_REG_ARM64_SVE_VLS of a vCPU made with KVM_ARM_VCPU_SVE: {}",
            vls.iter()
                .rev()
                .skip_while(|b| **b == 0)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    })
}

#[cfg(not(target_arch = "aarch64"))]
pub fn offer(_kvm: &Kvm) -> Result<SveOffer, VmmError> {
    Err(VmmError::Unsupported(
        "SVE vCPUs: only arm64 KVM has them".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vls_bits_are_quadword_counts() {
        // 128, 256 and 512 bits: vq 1, 2 and 4.
        let mut vls = [0u8; 64];
        vls[0] = 0b1011;
        assert_eq!(vector_lengths(&vls), vec![16, 32, 64]);
        // vq 16 (2048 bits) is bit 15.
        let mut vls = [0u8; 64];
        vls[1] = 0x80;
        assert_eq!(vector_lengths(&vls), vec![256]);
    }
}
