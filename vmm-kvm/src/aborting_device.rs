//! The device at [`mte_protocol::ABORTING_DEVICE_IPA`]: a read there exits to the VMM
//! (KVM_EXIT_MMIO, no memslot covers it), which answers it as a VMM answers an access no device
//! decodes: it asks KVM to inject an external data abort (KVM_SET_VCPU_EVENTS with
//! `ext_dabt_pending`, KVM_CAP_ARM_INJECT_EXT_DABT), and KVM enters the guest's exception
//! vector itself (`kvm_inject_dabt`, then `enter_exception64` on the next KVM_RUN).

use kvm_ioctls::VcpuFd;
use mte_suites::vmm::VmmError;

/// Ask KVM to inject an external data abort for the MMIO access `vcpu` just exited on.
#[cfg(target_arch = "aarch64")]
pub fn inject_external_abort(vcpu: &VcpuFd) -> Result<(), VmmError> {
    let mut events = kvm_bindings::kvm_vcpu_events::default();
    events.exception.ext_dabt_pending = 1;
    vcpu.set_vcpu_events(&events).map_err(|e| VmmError::Sys {
        call: "KVM_SET_VCPU_EVENTS (ext_dabt_pending) after a read of the aborting device".into(),
        errno: e.errno(),
    })
}

#[cfg(not(target_arch = "aarch64"))]
pub fn inject_external_abort(_vcpu: &VcpuFd) -> Result<(), VmmError> {
    Err(VmmError::Unsupported(
        "external data aborts are injected on arm64 KVM only".into(),
    ))
}
