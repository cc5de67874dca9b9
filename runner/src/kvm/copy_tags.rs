//! KVM_ARM_MTE_COPY_TAGS, which kvm-ioctls does not wrap.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use kvm_ioctls::VmFd;

/// `struct kvm_arm_copy_mte_tags` from the KVM UAPI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmArmCopyMteTags {
    pub guest_ipa: u64,
    pub length: u64,
    pub addr: u64,
    pub flags: u64,
    pub reserved: [u64; 2],
}

/// `_IOR(KVMIO, 0xb4, struct kvm_arm_copy_mte_tags)`; the generic ioctl encoding, which arm64
/// uses.
pub const KVM_ARM_MTE_COPY_TAGS: libc::c_ulong = {
    const IOC_READ: libc::c_ulong = 2;
    const KVMIO: libc::c_ulong = 0xae;
    let size = std::mem::size_of::<KvmArmCopyMteTags>() as libc::c_ulong;
    (IOC_READ << 30) | (size << 16) | (KVMIO << 8) | 0xb4
};

pub const KVM_ARM_TAGS_TO_GUEST: u64 = 0;
pub const KVM_ARM_TAGS_FROM_GUEST: u64 = 1;

/// Issue the ioctl as given; the buffer at `args.addr` is the caller's business.
///
/// Returns what the kernel returned: the number of bytes of guest memory covered, or errno.
///
/// # Safety
/// `args.addr` must point to at least `args.length / 16` writable bytes (or the kernel must be
/// expected to reject `args` before touching it).
pub unsafe fn copy_mte_tags_raw(vm: &VmFd, args: &KvmArmCopyMteTags) -> io::Result<usize> {
    // SAFETY: as the caller vouches.
    unsafe { copy_mte_tags_fd(vm.as_raw_fd(), args) }
}

/// [`copy_mte_tags_raw`] on a raw VM descriptor (for threads and processes that hold no
/// `VmFd`). It neither allocates nor locks.
///
/// # Safety
/// As [`copy_mte_tags_raw`]; `vm` must be a VM descriptor.
pub unsafe fn copy_mte_tags_fd(vm: RawFd, args: &KvmArmCopyMteTags) -> io::Result<usize> {
    // SAFETY: the kernel reads `args` (a live, correctly laid out struct) and accesses user memory
    // only at `args.addr`, which the caller vouches for.
    let ret = unsafe { libc::ioctl(vm, KVM_ARM_MTE_COPY_TAGS as _, args as *const _) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Read the tags of `[guest_ipa, guest_ipa + 16 * tags.len())` into `tags`, one byte per granule.
/// Both `guest_ipa` and the length must be page aligned.
///
/// ```no_run
/// # let kvm = kvm_ioctls::Kvm::new().unwrap();
/// # let vm = kvm.create_vm().unwrap();
/// let mut tags = vec![0u8; 4096 / 16];
/// let copied = mte_runner::kvm::copy_tags::copy_tags_from_guest(&vm, 0x4000_0000, &mut tags)?;
/// assert_eq!(copied, 4096);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn copy_tags_from_guest(vm: &VmFd, guest_ipa: u64, tags: &mut [u8]) -> io::Result<usize> {
    let args = KvmArmCopyMteTags {
        guest_ipa,
        length: tags.len() as u64 * 16,
        addr: tags.as_mut_ptr() as u64,
        flags: KVM_ARM_TAGS_FROM_GUEST,
        reserved: [0; 2],
    };
    // SAFETY: `tags` holds exactly length / 16 bytes.
    unsafe { copy_mte_tags_raw(vm, &args) }
}

/// Set the tags of `[guest_ipa, guest_ipa + 16 * tags.len())` from `tags`.
pub fn copy_tags_to_guest(vm: &VmFd, guest_ipa: u64, tags: &[u8]) -> io::Result<usize> {
    let args = KvmArmCopyMteTags {
        guest_ipa,
        length: tags.len() as u64 * 16,
        addr: tags.as_ptr() as u64,
        flags: KVM_ARM_TAGS_TO_GUEST,
        reserved: [0; 2],
    };
    // SAFETY: `tags` holds exactly length / 16 bytes; the kernel only reads them.
    unsafe { copy_mte_tags_raw(vm, &args) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_the_uapi() {
        // _IOR(0xAE, 0xb4, 48 bytes)
        assert_eq!(std::mem::size_of::<KvmArmCopyMteTags>(), 48);
        assert_eq!(KVM_ARM_MTE_COPY_TAGS, 0x8030_aeb4);
    }
}
