//! The size of a VM's IPA (guest physical address) space, which the VMM chooses at
//! KVM_CREATE_VM (`KVM_VM_TYPE_ARM_IPA_SIZE`, api.rst). Every VM the suite makes has
//! [`SUITE_IPA_BITS`]: KVM's default, VM type 0. kvm-ioctls' `create_vm()` would ask for the
//! host's limit instead (52 bits on a CPU with LPA2), and a kernel whose stage-2 teardown walks
//! the whole IPA space then pays for all of it at every VM's end (7.3 under TCG: seconds per
//! VM). The other sizes are for the cost check and the benchmark that measure exactly that.

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_userspace_memory_region, KVM_CAP_ARM_VM_IPA_SIZE};
use kvm_ioctls::{Kvm, VmFd};
use mte_suites::vmm::{IpaProbe, VmmError};

use crate::memory::{page_size, GuestRam};
use crate::vm::{io_error, sys};

/// The IPA size of KVM's default VM type 0 (KVM_PHYS_SHIFT).
pub const KVM_DEFAULT_IPA_BITS: u32 = 40;
/// The IPA size of every VM the suite makes: KVM's default.
pub const SUITE_IPA_BITS: u32 = KVM_DEFAULT_IPA_BITS;

/// The KVM_CREATE_VM type for an IPA space of `bits`: 0 for KVM's default.
pub fn vm_type(bits: u32) -> u64 {
    if bits == KVM_DEFAULT_IPA_BITS {
        0
    } else {
        u64::from(bits & 0xff)
    }
}

/// A VM with an IPA space of `bits`.
pub fn create_vm(kvm: &Kvm, bits: u32) -> Result<VmFd, VmmError> {
    let call = format!("KVM_CREATE_VM (type {}: {bits}-bit IPA)", vm_type(bits));
    kvm.create_vm_with_type(vm_type(bits)).map_err(sys(&call))
}

/// The largest IPA size this host's KVM gives a VM (KVM_CAP_ARM_VM_IPA_SIZE), or `None`
/// where the capability is missing and every VM has KVM's default.
pub fn host_limit(kvm: &Kvm) -> Option<u32> {
    let limit = kvm.check_extension_raw(KVM_CAP_ARM_VM_IPA_SIZE.into());
    u32::try_from(limit).ok().filter(|&bits| bits > 0)
}

/// The IPA size as run.json records it: the suite's and the host's limit.
pub fn describe(kvm: &Kvm) -> String {
    let limit = match host_limit(kvm) {
        Some(bits) => format!("{bits} bits"),
        None => "none reported (no KVM_CAP_ARM_VM_IPA_SIZE)".into(),
    };
    format!(
        "{SUITE_IPA_BITS} bits for every VM (KVM_CREATE_VM type {}, KVM's default); \
         host limit (KVM_CAP_ARM_VM_IPA_SIZE): {limit}",
        vm_type(SUITE_IPA_BITS)
    )
}

/// Create a VM with an IPA space of `bits`, offer it a one-page memslot on the last page below
/// `top` and one at `top`, and close it: what KVM said, and how long creating and closing
/// took.
pub fn probe(kvm: &Kvm, bits: u32, top: u64) -> Result<IpaProbe, VmmError> {
    let page = page_size();
    let ram = GuestRam::new(page).map_err(|e| io_error("mmap of one page", e))?;
    let started = Instant::now();
    let vm = create_vm(kvm, bits)?;
    let create = started.elapsed();
    let below = add_memslot(&vm, 0, top.saturating_sub(page as u64), &ram);
    let at = add_memslot(&vm, 1, top, &ram);
    let started = Instant::now();
    drop(vm);
    let teardown: Duration = started.elapsed();
    Ok(IpaProbe {
        create,
        below,
        at,
        teardown,
    })
}

/// KVM_SET_USER_MEMORY_REGION of `ram` as memslot `slot` at `ipa`: Ok, or errno.
fn add_memslot(vm: &VmFd, slot: u32, ipa: u64, ram: &GuestRam) -> Result<(), i32> {
    let region = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: ipa,
        memory_size: ram.size() as u64,
        userspace_addr: ram.host_address(),
    };
    // SAFETY: `ram` is a live mapping of memory_size bytes, and it outlives the VM: the
    // caller drops the VM first.
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| e.errno())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_s_default_size_is_type_zero_and_others_say_their_bits() {
        assert_eq!(vm_type(SUITE_IPA_BITS), 0);
        assert_eq!(vm_type(48), 48);
        assert_eq!(vm_type(52), 52);
    }
}
