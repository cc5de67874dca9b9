//! The mailbox protocol's transport on KVM: guest memory is the VMM's mapping of the RAM
//! memslot, the doorbell is an MMIO write that no memslot covers (KVM_EXIT_MMIO), the console
//! is the PL011 data register, and SYSTEM_OFF is a system event. Each vCPU of a VM has its own
//! transport, which shares the VM with the others and may run on a thread of its own.

use std::sync::Arc;
use std::time::Duration;

use kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN;
use kvm_ioctls::{VcpuExit, VcpuFd};
use mte_protocol::{ABORTING_DEVICE_IPA, DOORBELL_IPA, RAM_IPA, RAM_SIZE, UART_IPA};
use mte_suites::vmm::VmmError;
use mte_vmm::{Stop, Transport};

use crate::aborting_device;
use crate::vm::Vm;
use crate::watchdog::Watchdog;

/// How much of a guest's console is kept: enough for any message, bounded for a guest that
/// prints in a loop.
const CONSOLE_LIMIT: usize = 64 << 10;

/// The PL011's registers: writes to any but the data register, and reads of all, are accepted
/// (they read as zero: transmitter ready).
const UART_REGISTERS: std::ops::Range<u64> = UART_IPA..UART_IPA + 0x1000;

/// A vCPU of a VM and the VM with its RAM. Field order is drop order: the vCPUs before their
/// VM.
pub struct KvmTransport {
    pub(crate) vcpu: VcpuFd,
    /// vCPUs 1 and up of vCPU 0's VM, created powered off, until [`Transport::other_vcpu`]
    /// hands each its own transport.
    others: Vec<Option<VcpuFd>>,
    pub(crate) vm: Arc<Vm>,
    /// Kicks the vCPU out of KVM_RUN at a step's deadline, on whichever thread runs it.
    pub(crate) watchdog: Watchdog,
    pub(crate) console: Vec<u8>,
}

impl KvmTransport {
    /// The transport of a vCPU not yet run (or restored).
    pub(crate) fn new(vcpu: VcpuFd, vm: Vm, console: Vec<u8>) -> Self {
        Self::with_others(vcpu, Vec::new(), Arc::new(vm), console)
    }

    /// vCPU 0's transport, holding `others` (vCPUs 1 and up, powered off) for the guest.
    pub(crate) fn with_others(
        vcpu: VcpuFd,
        others: Vec<VcpuFd>,
        vm: Arc<Vm>,
        console: Vec<u8>,
    ) -> Self {
        KvmTransport {
            vcpu,
            others: others.into_iter().map(Some).collect(),
            vm,
            watchdog: Watchdog::new(),
            console,
        }
    }

    /// The offset into RAM of `[ipa, ipa + len)`, which must lie inside it.
    fn ram_offset(ipa: u64, len: usize) -> Result<usize, VmmError> {
        if ipa < RAM_IPA || ipa - RAM_IPA + len as u64 > RAM_SIZE {
            return Err(VmmError::Host(format!(
                "{ipa:#x}+{len:#x} is outside guest RAM"
            )));
        }
        Ok((ipa - RAM_IPA) as usize)
    }

    fn run_loop(&mut self, what: &str, deadline: Duration) -> Result<Stop, VmmError> {
        loop {
            // Checked on every exit, not only on EINTR: a guest that exits all the time (a
            // console loop) must not outlive its deadline either.
            if self.watchdog.fired() {
                return Err(VmmError::Timeout {
                    what: what.into(),
                    seconds: deadline.as_secs_f64(),
                });
            }
            let mut abort_the_read = false;
            match self.vcpu.run() {
                Ok(VcpuExit::MmioWrite(DOORBELL_IPA, _)) => return Ok(Stop::Doorbell),
                Ok(VcpuExit::MmioWrite(UART_IPA, data)) => {
                    if self.console.len() < CONSOLE_LIMIT {
                        self.console.extend_from_slice(&data[..1])
                    }
                }
                Ok(VcpuExit::MmioWrite(addr, _)) if UART_REGISTERS.contains(&addr) => {}
                Ok(VcpuExit::MmioWrite(other, _)) => {
                    return Err(VmmError::Guest(format!(
                        "write to {other:#x}, where the VM has no device"
                    )))
                }
                Ok(VcpuExit::MmioRead(addr, data)) if UART_REGISTERS.contains(&addr) => {
                    data.fill(0)
                }
                Ok(VcpuExit::MmioRead(ABORTING_DEVICE_IPA, _)) => abort_the_read = true,
                Ok(VcpuExit::MmioRead(addr, _)) => {
                    return Err(VmmError::Guest(format!(
                        "read of {addr:#x}, where the VM has no device"
                    )))
                }
                Ok(VcpuExit::SystemEvent(kind, _)) if kind == KVM_SYSTEM_EVENT_SHUTDOWN => {
                    return Ok(Stop::PoweredOff)
                }
                Ok(other) => {
                    return Err(VmmError::Guest(format!(
                        "unexpected exit during {what}: {other:?}"
                    )))
                }
                // The watchdog's kick, or another signal: the loop's head decides.
                Err(e) if e.errno() == libc::EINTR => {}
                Err(e) => {
                    return Err(VmmError::Sys {
                        call: format!("KVM_RUN during {what}"),
                        errno: e.errno(),
                    })
                }
            }
            if abort_the_read {
                aborting_device::inject_external_abort(&self.vcpu)?;
            }
        }
    }
}

impl Transport for KvmTransport {
    fn read(&mut self, ipa: u64, len: usize) -> Result<Vec<u8>, VmmError> {
        let mut out = vec![0u8; len];
        self.vm.ram.read(Self::ram_offset(ipa, len)?, &mut out);
        Ok(out)
    }

    fn write(&mut self, ipa: u64, bytes: &[u8]) -> Result<(), VmmError> {
        let offset = Self::ram_offset(ipa, bytes.len())?;
        self.vm.ram.write(offset, bytes);
        Ok(())
    }

    fn run_to_doorbell(&mut self, what: &str, deadline: Duration) -> Result<Stop, VmmError> {
        self.watchdog.arm(deadline);
        let stop = self.run_loop(what, deadline);
        self.watchdog.disarm();
        stop
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&self.console).into_owned()
    }

    fn other_vcpu(&mut self, index: usize) -> Result<Self, VmmError> {
        let vcpu = index
            .checked_sub(1)
            .and_then(|i| self.others.get_mut(i))
            .and_then(Option::take)
            .ok_or_else(|| {
                VmmError::Host(format!(
                    "the VM has no vCPU {index} to hand out (it was made with {} more, or \
                     handed out already)",
                    self.others.len()
                ))
            })?;
        Ok(Self::with_others(
            vcpu,
            Vec::new(),
            Arc::clone(&self.vm),
            Vec::new(),
        ))
    }
}
