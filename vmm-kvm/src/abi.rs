//! A bare VM for the ABI probes: its RAM memslot, MTE if asked, vCPUs only when a probe adds
//! them, and the copy-tags ioctl with whatever arguments a probe passes.

use std::os::fd::RawFd;

use kvm_bindings::{kvm_enable_cap, KVM_CAP_ARM_MTE};
use kvm_ioctls::VcpuFd;
use mte_protocol::{GRANULE, RAM_IPA, RAM_SIZE};
use mte_suites::vmm::{AbiVm, CopyTagsArgs};

use crate::copy_tags;
use crate::memory::{page_size, GuestRam};
use crate::vm::Vm;

/// Field order is drop order: vCPUs first.
pub struct KvmAbiVm {
    vcpus: Vec<VcpuFd>,
    vm: Vm,
}

impl KvmAbiVm {
    pub fn new(vm: Vm) -> Self {
        KvmAbiVm {
            vcpus: Vec::new(),
            vm,
        }
    }
}

impl AbiVm for KvmAbiVm {
    fn copy_tags_raw(&mut self, args: CopyTagsArgs, buffer: &mut [u8]) -> Result<i64, i32> {
        copy_tags_checked(self.vm.raw_fd(), args, buffer, None)
    }

    fn enable_mte(&mut self) -> Result<(), i32> {
        let cap = kvm_enable_cap {
            cap: KVM_CAP_ARM_MTE,
            ..Default::default()
        };
        self.vm.fd.enable_cap(&cap).map_err(|e| e.errno())
    }

    fn create_vcpu(&mut self) -> Result<(), i32> {
        let vcpu = self
            .vm
            .fd
            .create_vcpu(self.vcpus.len() as u64)
            .map_err(|e| e.errno())?;
        self.vcpus.push(vcpu);
        Ok(())
    }

    fn ram(&self) -> (u64, u64) {
        (RAM_IPA, RAM_SIZE)
    }

    fn page_size(&self) -> u64 {
        page_size() as u64
    }
}

/// KVM_ARM_MTE_COPY_TAGS on the VM `vm` with the user buffer in a mapping of its own, PROT_NONE
/// from byte `readable` on ([`mte_suites::vmm::Guest::copy_tags_raw`]).
fn copy_tags_guarded(
    vm: RawFd,
    args: CopyTagsArgs,
    buffer: &mut [u8],
    readable: usize,
) -> Result<i64, i32> {
    let page = page_size();
    let mapped = buffer.len().div_ceil(page) * page;
    assert!(
        readable % page == 0 && readable < buffer.len(),
        "the guard starts on a page boundary inside the buffer"
    );
    assert!(buffer.len() as u64 >= args.length / GRANULE);
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(0);
    let memory = GuestRam::new(mapped).map_err(errno)?;
    memory.write(0, buffer);
    memory
        .mprotect(readable, mapped - readable, libc::PROT_NONE)
        .map_err(errno)?;
    let user = memory.host_address() as *mut u8;
    // SAFETY: the mapping covers length / 16 bytes (asserted above) and lives until the end of
    // this function; the kernel finds the PROT_NONE part inaccessible and says so.
    let result = unsafe { copy_tags::copy_raw(vm, args, user) }
        .map(|n| n as i64)
        .map_err(errno);
    memory.read(0, &mut buffer[..readable]);
    result
}

/// KVM_ARM_MTE_COPY_TAGS on the VM `vm` with `buffer` as it is, or guarded from `readable` on.
pub fn copy_tags_checked(
    vm: RawFd,
    args: CopyTagsArgs,
    buffer: &mut [u8],
    readable: Option<usize>,
) -> Result<i64, i32> {
    if let Some(readable) = readable {
        return copy_tags_guarded(vm, args, buffer, readable);
    }
    assert!(
        buffer.len() as u64 >= args.length / GRANULE,
        "the buffer must cover what the kernel may write"
    );
    // SAFETY: the buffer covers length / 16 bytes (asserted above).
    unsafe { copy_tags::copy_raw(vm, args, buffer.as_mut_ptr()) }
        .map(|n| n as i64)
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}
