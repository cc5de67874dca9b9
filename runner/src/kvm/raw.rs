//! KVM ioctl numbers for callers that cannot go through kvm-ioctls: a forked child that may
//! only make raw system calls (kvm-ioctls keeps these numbers to itself).

use kvm_bindings::{kvm_enable_cap, kvm_userspace_memory_region};

const KVMIO: libc::c_ulong = 0xae;
const IOC_WRITE: libc::c_ulong = 1;

/// The generic ioctl encoding (arm64's): direction, size, type, number.
const fn ioc(dir: libc::c_ulong, nr: libc::c_ulong, size: usize) -> libc::c_ulong {
    (dir << 30) | ((size as libc::c_ulong) << 16) | (KVMIO << 8) | nr
}

/// `_IO(KVMIO, 0x01)`.
pub const KVM_CREATE_VM: libc::c_ulong = ioc(0, 0x01, 0);
/// `_IOW(KVMIO, 0xa3, struct kvm_enable_cap)`.
pub const KVM_ENABLE_CAP: libc::c_ulong =
    ioc(IOC_WRITE, 0xa3, std::mem::size_of::<kvm_enable_cap>());
/// `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`.
pub const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = ioc(
    IOC_WRITE,
    0x46,
    std::mem::size_of::<kvm_userspace_memory_region>(),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_uapi() {
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_ENABLE_CAP, 0x4068_aea3);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
    }
}
