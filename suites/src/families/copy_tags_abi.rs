//! The KVM_ARM_MTE_COPY_TAGS ABI, as Documentation/virt/kvm/api.rst states it.
//!
//! Every probe first makes a valid call on the same VM (the control), so that an error is
//! known to come from the one argument that was made wrong.

use mte_protocol::{GRANULE, RAM_IPA, RAM_SIZE, TEST_RAM_IPA};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::vmm::{AbiVm, CopyTagsArgs, Guest, Vmm, VmmError, TAGS_FROM_GUEST, TAGS_TO_GUEST};

const EINVAL: i32 = libc_errno::EINVAL;
const EFAULT: i32 = libc_errno::EFAULT;

/// errno values (identical on every Linux architecture for these two).
mod libc_errno {
    pub const EFAULT: i32 = 14;
    pub const EINVAL: i32 = 22;
}

const API: &str = "Documentation/virt/kvm/api.rst, KVM_ARM_MTE_COPY_TAGS";

const API_PARTIAL: &str = "Documentation/virt/kvm/api.rst, KVM_ARM_MTE_COPY_TAGS: 'If an error \
    occurs before any data is copied then a negative error code is returned. If some tags have \
    been copied before an error occurs then the number of bytes successfully copied is \
    returned.' A VMM that saves or restores tags in large ranges relies on the count to know \
    which pages' tags moved (kvm_vm_ioctl_mte_copy_tags copies page by page and returns the \
    pages done)";

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "copy_tags_abi::returns_bytes_copied",
        summary: "KVM_ARM_MTE_COPY_TAGS returns the number of bytes of guest memory whose tags it \
                  copied, in both directions",
        why: API,
        proven_by: &[Injection::TamperAbi],
        run: returns_bytes_copied,
    },
    Scenario {
        name: "copy_tags_abi::range_past_memslot_end_copies_the_prefix",
        summary: "A range that runs one page past the end of the RAM memslot returns the bytes \
                  up to the end, in both directions; the guest's LDG reads the tags TO_GUEST set on \
                  exactly those pages, and FROM_GUEST fills exactly their part of the buffer",
        why: API_PARTIAL,
        proven_by: &[Injection::TamperAbi, Injection::MisreadReport],
        run: range_past_memslot_end_copies_the_prefix,
    },
    Scenario {
        name: "copy_tags_abi::buffer_inaccessible_midway_copies_the_prefix",
        summary: "A user buffer whose second page is PROT_NONE returns the bytes of guest \
                  memory whose tags lie in its first page, in both directions; the guest's LDG \
                  reads the new tags on exactly those pages and the old ones on the rest",
        why: API_PARTIAL,
        proven_by: &[Injection::TamperAbi, Injection::MisreadReport],
        run: buffer_inaccessible_midway_copies_the_prefix,
    },
    Scenario {
        name: "copy_tags_abi::unaligned_ipa_is_einval",
        summary: "A guest_ipa that is not page aligned fails with EINVAL",
        why: API,
        proven_by: &[Injection::TamperAbi],
        run: unaligned_ipa_is_einval,
    },
    Scenario {
        name: "copy_tags_abi::unaligned_length_is_einval",
        summary: "A length that is not page aligned fails with EINVAL",
        why: API,
        proven_by: &[Injection::TamperAbi],
        run: unaligned_length_is_einval,
    },
    Scenario {
        name: "copy_tags_abi::ipa_without_memslot_is_efault",
        summary: "A guest_ipa that no memslot covers fails with EFAULT",
        why: API,
        proven_by: &[Injection::TamperAbi],
        run: ipa_without_memslot_is_efault,
    },
    Scenario {
        name: "copy_tags_abi::unknown_flags_are_einval",
        summary:
            "Flags other than KVM_ARM_TAGS_TO_GUEST / KVM_ARM_TAGS_FROM_GUEST fail with EINVAL",
        why: API,
        proven_by: &[Injection::TamperAbi],
        run: unknown_flags_are_einval,
    },
    Scenario {
        name: "copy_tags_abi::nonzero_reserved_is_einval",
        summary: "A non-zero reserved field fails with EINVAL",
        why: API,
        proven_by: &[Injection::TamperAbi],
        run: nonzero_reserved_is_einval,
    },
    Scenario {
        name: "copy_tags_abi::vm_without_mte_is_einval",
        summary: "On a VM that did not enable KVM_CAP_ARM_MTE, the ioctl fails with EINVAL",
        why: API,
        proven_by: &[Injection::TamperAbi],
        run: vm_without_mte_is_einval,
    },
    Scenario {
        name: "copy_tags_abi::mte_cap_after_vcpu_is_einval",
        summary: "Enabling KVM_CAP_ARM_MTE after a vCPU exists fails with EINVAL",
        why: "Documentation/virt/kvm/api.rst, KVM_CAP_ARM_MTE: the capability must be enabled \
              before creating any vCPUs",
        proven_by: &[Injection::TamperAbi],
        run: mte_cap_after_vcpu_is_einval,
    },
];

/// A call over the first `pages` pages of RAM, and a buffer big enough for it.
fn valid_call(vm: &dyn AbiVm, pages: u64, flags: u64) -> (CopyTagsArgs, Vec<u8>) {
    let (ram, _) = vm.ram();
    let length = pages * vm.page_size();
    let args = CopyTagsArgs {
        guest_ipa: ram,
        length,
        flags,
        reserved: [0; 2],
    };
    (args, vec![0u8; (length / GRANULE) as usize])
}

fn describe(args: &CopyTagsArgs) -> String {
    format!(
        "KVM_ARM_MTE_COPY_TAGS(guest_ipa={:#x}, length={:#x}, flags={}, reserved={:?})",
        args.guest_ipa, args.length, args.flags, args.reserved
    )
}

/// The control call must succeed, then the broken one must fail with `errno`.
fn probe(
    vmm: &dyn Vmm,
    errno: i32,
    mut broken: impl FnMut(&mut CopyTagsArgs, u64),
) -> Result<Finding, VmmError> {
    let mut vm = vmm.abi_vm(true)?;
    let mut checks = Checks::new();
    let (mut args, mut buffer) = valid_call(vm.as_ref(), 1, TAGS_FROM_GUEST);
    let control = vm.copy_tags_raw(args, &mut buffer);
    checks.syscall(
        &format!("control: {}", describe(&args)),
        Ok(args.length as i64),
        control,
    );
    broken(&mut args, vm.page_size());
    buffer.resize(buffer.len() + 1024, 0);
    let observed = vm.copy_tags_raw(args, &mut buffer);
    checks.syscall(&describe(&args), Err(errno), observed);
    Ok(checks.finish())
}

fn returns_bytes_copied(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut vm = vmm.abi_vm(true)?;
    let mut checks = Checks::new();
    for flags in [TAGS_FROM_GUEST, TAGS_TO_GUEST] {
        for pages in [1, 3] {
            let (args, mut buffer) = valid_call(vm.as_ref(), pages, flags);
            let observed = vm.copy_tags_raw(args, &mut buffer);
            checks.syscall(&describe(&args), Ok(args.length as i64), observed);
        }
    }
    Ok(checks.finish())
}

/// Tags for `n` granules: every value but 0, so that a granule never set reads otherwise.
fn nonzero_pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 15 + 1) as u8).collect()
}

/// What a buffer byte the kernel must not write holds before the call.
const UNTOUCHED: u8 = 0xee;

/// A copy over `[ipa, ipa + length)` of the guest's VM, each direction: TO_GUEST of a
/// pattern, then FROM_GUEST into a buffer of [`UNTOUCHED`], the buffer PROT_NONE from byte
/// `guard` on where there is one. Both must return `prefix`; the guest's LDG must read the
/// pattern over the prefix and zero after it (where there is memory), and FROM_GUEST must have
/// filled exactly the prefix's part of the buffer.
fn partial_copies(
    guest: &mut dyn Guest,
    (ipa, length): (u64, u64),
    prefix: u64,
    why_short: &str,
    guard: Option<usize>,
) -> Result<Finding, VmmError> {
    let mut checks = Checks::new();
    let granules_in = |len: u64| (len / GRANULE) as usize;
    let pattern = nonzero_pattern(granules_in(length));
    let done = granules_in(prefix);
    let args = |flags| CopyTagsArgs {
        guest_ipa: ipa,
        length,
        flags,
        reserved: [0; 2],
    };

    let mut buffer = pattern.clone();
    let observed = guest.copy_tags_raw(args(TAGS_TO_GUEST), &mut buffer, guard)?;
    checks.syscall(
        &format!("{} ({why_short})", describe(&args(TAGS_TO_GUEST))),
        Ok(prefix as i64),
        observed,
    );
    // What TO_GUEST left, as the guest reads it, where the memslot has memory.
    let inside = length.min(RAM_IPA + RAM_SIZE - ipa);
    let mut expected = pattern[..done].to_vec();
    expected.resize(granules_in(inside), 0);
    checks.expect_guest_tags(
        guest,
        (ipa, inside),
        ("the copied prefix's tags, zero after it", &expected),
        "guest LDG after the partial TO_GUEST",
    )?;

    let mut buffer = vec![UNTOUCHED; pattern.len()];
    let observed = guest.copy_tags_raw(args(TAGS_FROM_GUEST), &mut buffer, guard)?;
    checks.syscall(
        &format!("{} ({why_short})", describe(&args(TAGS_FROM_GUEST))),
        Ok(prefix as i64),
        observed,
    );
    let filled = buffer
        .iter()
        .position(|&b| b == UNTOUCHED)
        .unwrap_or(buffer.len());
    checks.equal(
        "FROM_GUEST: buffer bytes the kernel wrote (one a granule), up to the first it left",
        done,
        filled,
    );
    checks.tags_equal(
        ipa,
        ("the prefix's tags", &pattern[..done]),
        ("FROM_GUEST's buffer", &buffer[..done]),
    );
    Ok(checks.finish())
}

/// The host's page size, which KVM_ARM_MTE_COPY_TAGS aligns to (asked of a bare VM).
fn host_page(vmm: &dyn Vmm) -> Result<u64, VmmError> {
    Ok(vmm.abi_vm(true)?.page_size())
}

fn range_past_memslot_end_copies_the_prefix(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let page = host_page(vmm)?;
    let mut guest = boot(vmm)?;
    // Three pages inside, one past: halving the length (tamper-abi) copies two, all inside.
    partial_copies(
        guest.as_mut(),
        (RAM_IPA + RAM_SIZE - 3 * page, 4 * page),
        3 * page,
        "the last page lies past the memslot",
        None,
    )
}

fn buffer_inaccessible_midway_copies_the_prefix(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let page = host_page(vmm)?;
    let mut guest = boot(vmm)?;
    // One byte a granule: the buffer's first page holds the tags of 16 pages of guest memory.
    // A range of 24 pages has its last 8 pages' tags behind the guard; halving the length
    // (tamper-abi) stays before it.
    partial_copies(
        guest.as_mut(),
        (TEST_RAM_IPA + 64 * page, 24 * page),
        16 * page,
        "the buffer's second page is PROT_NONE",
        Some(page as usize),
    )
}

fn unaligned_ipa_is_einval(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    probe(vmm, EINVAL, |args, _| args.guest_ipa += GRANULE)
}

fn unaligned_length_is_einval(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    probe(vmm, EINVAL, |args, _| args.length += GRANULE)
}

fn ipa_without_memslot_is_efault(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    // Below RAM, page aligned, and no memslot there.
    probe(vmm, EFAULT, |args, page| {
        args.guest_ipa = 0x1000_0000 - 16 * page
    })
}

fn unknown_flags_are_einval(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    probe(vmm, EINVAL, |args, _| args.flags = 2)
}

fn nonzero_reserved_is_einval(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    probe(vmm, EINVAL, |args, _| args.reserved[1] = 1)
}

fn vm_without_mte_is_einval(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    vmm.mte_capable()?;
    let mut vm = vmm.abi_vm(false)?;
    let mut checks = Checks::new();
    let (args, mut buffer) = valid_call(vm.as_ref(), 1, TAGS_FROM_GUEST);
    let observed = vm.copy_tags_raw(args, &mut buffer);
    checks.syscall(
        &format!("{} without KVM_CAP_ARM_MTE", describe(&args)),
        Err(EINVAL),
        observed,
    );
    // The control: the same VM accepts the capability while it has no vCPU, and the same call
    // then succeeds.
    checks.syscall(
        "control: KVM_ENABLE_CAP(KVM_CAP_ARM_MTE)",
        Ok(0),
        vm.enable_mte().map(|()| 0),
    );
    let observed = vm.copy_tags_raw(args, &mut buffer);
    checks.syscall(
        &format!("control: {} with MTE", describe(&args)),
        Ok(args.length as i64),
        observed,
    );
    Ok(checks.finish())
}

fn mte_cap_after_vcpu_is_einval(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    // Without the capability at all, EINVAL would prove nothing.
    vmm.mte_capable()?;
    let mut vm = vmm.abi_vm(false)?;
    let mut checks = Checks::new();
    checks.syscall(
        "control: KVM_CREATE_VCPU",
        Ok(0),
        vm.create_vcpu().map(|()| 0),
    );
    let observed = vm.enable_mte().map(|()| 0);
    checks.syscall(
        "KVM_ENABLE_CAP(KVM_CAP_ARM_MTE) after KVM_CREATE_VCPU",
        Err(EINVAL),
        observed,
    );
    Ok(checks.finish())
}
