//! KVM ioctl numbers for calls kvm-ioctls cannot make for us (it keeps its own numbers
//! private): the forked child's, which may only make raw system calls, the dirty log of a raw
//! descriptor that copying threads share, and the register list of any length. Declared with
//! vmm-sys-util's macros and kvm-bindings' structs, as kvm-ioctls declares its own.

use kvm_bindings::{
    kvm_dirty_log, kvm_enable_cap, kvm_reg_list, kvm_userspace_memory_region, KVMIO,
};
use vmm_sys_util::{ioctl_io_nr, ioctl_iow_nr, ioctl_iowr_nr};

ioctl_io_nr!(KVM_CREATE_VM, KVMIO, 0x01);
ioctl_iow_nr!(KVM_ENABLE_CAP, KVMIO, 0xa3, kvm_enable_cap);
ioctl_iow_nr!(
    KVM_SET_USER_MEMORY_REGION,
    KVMIO,
    0x46,
    kvm_userspace_memory_region
);
ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);
ioctl_iowr_nr!(KVM_GET_REG_LIST, KVMIO, 0xb0, kvm_reg_list);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_uapi() {
        assert_eq!(KVM_CREATE_VM(), 0xae01);
        assert_eq!(KVM_ENABLE_CAP(), 0x4068_aea3);
        assert_eq!(KVM_SET_USER_MEMORY_REGION(), 0x4020_ae46);
        assert_eq!(KVM_GET_DIRTY_LOG(), 0x4010_ae42);
        assert_eq!(KVM_GET_REG_LIST(), 0xc008_aeb0);
    }
}
