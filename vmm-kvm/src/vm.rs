//! A VM as the suite builds it: one RAM memslot at `RAM_IPA`, MTE enabled if asked (before any
//! vCPU, as KVM requires), vCPU 0 started at the payload's entry and any others created
//! powered off, for the guest to start.

use std::os::fd::{AsRawFd, RawFd};

use kvm_bindings::{kvm_enable_cap, kvm_userspace_memory_region, KVM_CAP_ARM_MTE};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use mte_protocol::RAM_IPA;
use mte_suites::vmm::VmmError;
use mte_vmm::Payload;

use crate::ipa;
use crate::memory::GuestRam;
use crate::vcpu;

/// A kvm-ioctls error as the failure of `call`.
pub fn sys(call: &str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError + '_ {
    move |e| VmmError::Sys {
        call: call.into(),
        errno: e.errno(),
    }
}

/// A std I/O error as the failure of `call`.
pub fn io_error(call: &str, e: std::io::Error) -> VmmError {
    VmmError::Sys {
        call: call.into(),
        errno: e.raw_os_error().unwrap_or(0),
    }
}

/// A VM and the RAM of its memslot. Field order is drop order: the VM fd goes before the
/// mapping it points into.
pub struct Vm {
    pub fd: VmFd,
    pub ram: GuestRam,
}

impl Vm {
    /// A VM of the suite's IPA size whose RAM memslot is `ram`, with MTE if asked.
    pub fn new(kvm: &Kvm, mte: bool, ram: GuestRam) -> Result<Vm, VmmError> {
        let vm = ipa::create_vm(kvm, ipa::SUITE_IPA_BITS)?;
        if mte {
            enable_mte(&vm)?;
        }
        add_ram_memslot(vm, ram)
    }

    /// The VM's descriptor, for threads and calls that hold no `VmFd`.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Copy `payload`'s segments into RAM; returns its entry point.
    pub fn load(&mut self, payload: &Payload) -> u64 {
        for segment in &payload.segments {
            self.ram
                .write((segment.ipa - RAM_IPA) as usize, &segment.data);
        }
        payload.entry
    }
}

/// KVM_ENABLE_CAP(KVM_CAP_ARM_MTE): before any vCPU exists, as KVM requires.
pub fn enable_mte(vm: &VmFd) -> Result<(), VmmError> {
    let cap = kvm_enable_cap {
        cap: KVM_CAP_ARM_MTE,
        ..Default::default()
    };
    vm.enable_cap(&cap)
        .map_err(sys("KVM_ENABLE_CAP(KVM_CAP_ARM_MTE)"))
}

/// Hand `ram` to the VM as its RAM memslot.
pub fn add_ram_memslot(vm: VmFd, ram: GuestRam) -> Result<Vm, VmmError> {
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: RAM_IPA,
        memory_size: ram.size() as u64,
        userspace_addr: ram.host_address(),
    };
    // SAFETY: `ram` is a live mapping of memory_size bytes; `Vm` keeps it until after the
    // VM fd is closed.
    unsafe { vm.set_user_memory_region(region) }.map_err(sys("KVM_SET_USER_MEMORY_REGION"))?;
    Ok(Vm { fd: vm, ram })
}

/// vCPU 0 of `vm`, initialised to start at `entry`.
pub fn add_vcpu(vm: &Vm, entry: u64) -> Result<VcpuFd, VmmError> {
    Ok(add_vcpus(vm, entry, 1, false)?.remove(0))
}

/// vCPUs 0 to `count - 1` of `vm`: vCPU 0 initialised to start at `entry`, the others powered
/// off until the guest starts them (PSCI CPU_ON); each with SVE if `sve`.
pub fn add_vcpus(vm: &Vm, entry: u64, count: usize, sve: bool) -> Result<Vec<VcpuFd>, VmmError> {
    (0..count)
        .map(|index| {
            let vcpu = vm
                .fd
                .create_vcpu(index as u64)
                .map_err(sys("KVM_CREATE_VCPU"))?;
            vcpu::init(&vm.fd, &vcpu, entry, index > 0, sve).map_err(|(call, errno)| {
                VmmError::Sys {
                    call: format!("{call} of vCPU {index}"),
                    errno,
                }
            })?;
            Ok(vcpu)
        })
        .collect()
}
