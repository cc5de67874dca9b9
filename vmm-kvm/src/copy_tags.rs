//! KVM_ARM_MTE_COPY_TAGS, which kvm-ioctls does not wrap: the struct and the flags are
//! kvm-bindings', the ioctl number is declared with vmm-sys-util's macro. Both exist for arm64
//! only; elsewhere there is no arm64 KVM to ask, and every copy fails with ENOSYS.
//!
//! The calls take a raw VM descriptor so that threads and forked children that hold no `VmFd`
//! can make them; [`from_guest`] and [`to_guest`] neither allocate nor lock.

use std::io;
use std::os::fd::RawFd;

use mte_protocol::{granules, GRANULE};
use mte_suites::vmm::VmmError;

pub use arch::copy_raw;

/// Read the tags of `[guest_ipa, guest_ipa + 16 * tags.len())` into `tags`, one byte per
/// granule. Returns what the kernel returned: the bytes of guest memory covered.
pub fn from_guest(vm: RawFd, guest_ipa: u64, tags: &mut [u8]) -> io::Result<usize> {
    let args = arch::args(guest_ipa, tags.len(), arch::FROM_GUEST);
    // SAFETY: `tags` holds exactly length / 16 writable bytes.
    unsafe { copy_raw(vm, args, tags.as_mut_ptr()) }
}

/// Set the tags of `[guest_ipa, guest_ipa + 16 * tags.len())` from `tags`.
pub fn to_guest(vm: RawFd, guest_ipa: u64, tags: &[u8]) -> io::Result<usize> {
    let args = arch::args(guest_ipa, tags.len(), arch::TO_GUEST);
    // SAFETY: `tags` holds exactly length / 16 bytes; with TO_GUEST the kernel only reads them.
    unsafe { copy_raw(vm, args, tags.as_ptr().cast_mut()) }
}

/// Set the tags of `granules` granules from `guest_ipa` on from the user buffer at `tags`,
/// which may lie partly on memory that is not there yet (a held copy: the kernel's read of it
/// faults, and waits, mid-way). Returns what the kernel returned.
///
/// # Safety
/// `tags` must point to `granules` bytes of this process's address space, mapped (the kernel
/// only reads them).
pub unsafe fn to_guest_from(
    vm: RawFd,
    guest_ipa: u64,
    tags: *const u8,
    granules: usize,
) -> io::Result<usize> {
    let args = arch::args(guest_ipa, granules, arch::TO_GUEST);
    // SAFETY: the caller vouches for `granules` mapped bytes at `tags`; with TO_GUEST the
    // kernel only reads them.
    unsafe { copy_raw(vm, args, tags.cast_mut()) }
}

/// [`to_guest_from`], all of it, or the error that says why not.
///
/// # Safety
/// As [`to_guest_from`].
pub unsafe fn write_from(
    vm: RawFd,
    ipa: u64,
    tags: *const u8,
    granules: usize,
) -> Result<(), VmmError> {
    // SAFETY: as the caller vouches.
    let copied = unsafe { to_guest_from(vm, ipa, tags, granules) };
    whole(copied, "TO_GUEST", ipa, granules)
}

/// The tags of `[ipa, ipa + len)` (page aligned), all of them, or the error that says why not.
///
/// ```no_run
/// # use std::os::fd::AsRawFd;
/// # let kvm = kvm_ioctls::Kvm::new().unwrap();
/// # let vm = mte_vmm_kvm::ipa::create_vm(&kvm, mte_vmm_kvm::ipa::SUITE_IPA_BITS).unwrap();
/// let tags = mte_vmm_kvm::copy_tags::read(vm.as_raw_fd(), 0x4000_0000, 4096)?;
/// assert_eq!(tags.len(), 4096 / 16);
/// # Ok::<(), mte_suites::vmm::VmmError>(())
/// ```
pub fn read(vm: RawFd, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
    let mut tags = vec![0u8; granules(len)];
    read_into(vm, ipa, &mut tags)?;
    Ok(tags)
}

/// [`read`] into `tags`, which says how many granules.
pub fn read_into(vm: RawFd, ipa: u64, tags: &mut [u8]) -> Result<(), VmmError> {
    let copied = from_guest(vm, ipa, tags);
    whole(copied, "FROM_GUEST", ipa, tags.len())
}

/// Set the tags of the granules from `ipa` on, all of them, or the error that says why not.
pub fn write(vm: RawFd, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
    whole(to_guest(vm, ipa, tags), "TO_GUEST", ipa, tags.len())
}

/// A copy that covered every granule asked for, or the error naming the call.
fn whole(
    copied: io::Result<usize>,
    direction: &str,
    ipa: u64,
    granules: usize,
) -> Result<(), VmmError> {
    let asked = granules as u64 * GRANULE;
    match copied {
        Ok(n) if n as u64 == asked => Ok(()),
        Ok(n) => Err(VmmError::Host(format!(
            "KVM_ARM_MTE_COPY_TAGS({direction}) at {ipa:#x} covered {n} of {asked} bytes"
        ))),
        Err(e) => Err(VmmError::Sys {
            call: format!("KVM_ARM_MTE_COPY_TAGS({direction}) at {ipa:#x}"),
            errno: e.raw_os_error().unwrap_or(0),
        }),
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use std::io;
    use std::os::fd::RawFd;

    use kvm_bindings::{
        kvm_arm_copy_mte_tags, KVMIO, KVM_ARM_TAGS_FROM_GUEST, KVM_ARM_TAGS_TO_GUEST,
    };
    use mte_suites::vmm::CopyTagsArgs;
    use vmm_sys_util::ioctl::ioctl_with_ref;
    use vmm_sys_util::ioctl_ior_nr;

    ioctl_ior_nr!(KVM_ARM_MTE_COPY_TAGS, KVMIO, 0xb4, kvm_arm_copy_mte_tags);

    pub const FROM_GUEST: u64 = KVM_ARM_TAGS_FROM_GUEST as u64;
    pub const TO_GUEST: u64 = KVM_ARM_TAGS_TO_GUEST as u64;

    pub fn args(guest_ipa: u64, granules: usize, flags: u64) -> CopyTagsArgs {
        CopyTagsArgs {
            guest_ipa,
            length: granules as u64 * mte_protocol::GRANULE,
            flags,
            reserved: [0; 2],
        }
    }

    /// Issue the ioctl as given, with `buffer` as its user buffer. Returns what the kernel
    /// returned: the bytes of guest memory covered, or errno.
    ///
    /// # Safety
    /// `buffer` must point to at least `args.length / 16` writable bytes (or the kernel must be
    /// expected to reject `args` before touching it).
    pub unsafe fn copy_raw(vm: RawFd, args: CopyTagsArgs, buffer: *mut u8) -> io::Result<usize> {
        let raw = kvm_arm_copy_mte_tags {
            guest_ipa: args.guest_ipa,
            length: args.length,
            addr: buffer.cast(),
            flags: args.flags,
            reserved: args.reserved,
        };
        // SAFETY: the kernel reads `raw` (a live kvm_arm_copy_mte_tags) and accesses user
        // memory only at `buffer`, which the caller vouches for.
        let ret = unsafe { ioctl_with_ref(&vm, KVM_ARM_MTE_COPY_TAGS(), &raw) };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as usize)
        }
    }

    #[cfg(test)]
    #[test]
    fn ioctl_number_matches_the_uapi() {
        // _IOR(0xAE, 0xb4, 48 bytes)
        assert_eq!(KVM_ARM_MTE_COPY_TAGS(), 0x8030_aeb4);
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod arch {
    use std::io;
    use std::os::fd::RawFd;

    use mte_suites::vmm::CopyTagsArgs;

    // Any values: no copy is ever issued here.
    pub const FROM_GUEST: u64 = 0;
    pub const TO_GUEST: u64 = 0;

    pub fn args(guest_ipa: u64, _granules: usize, flags: u64) -> CopyTagsArgs {
        CopyTagsArgs {
            guest_ipa,
            flags,
            ..CopyTagsArgs::default()
        }
    }

    /// ENOSYS: there is no arm64 KVM on this architecture.
    ///
    /// # Safety
    /// None needed; the signature is the arm64 one's.
    pub unsafe fn copy_raw(_vm: RawFd, _args: CopyTagsArgs, _buffer: *mut u8) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}
