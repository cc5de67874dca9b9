//! The KVM backend: a minimal VMM on kvm-ioctls that boots one payload per VM and talks to it
//! through the mailbox and the doorbell.

mod backing;
pub mod copy_tags;
pub mod elf;
mod fork;
mod host;
pub mod memory;
mod migrate;
mod peer;
mod race;
mod raw;
pub mod timing;
mod vcpu;
pub mod watchdog;

pub use migrate::incoming_if_asked;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_bindings::{
    kvm_enable_cap, kvm_userspace_memory_region, KVM_CAP_ARM_MTE, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use mte_protocol::{
    offsets, Command, GuestIds, Mailbox, Status, BULK_IPA, BULK_SIZE, DOORBELL_IPA, MAILBOX_IPA,
    RAM_IPA, RAM_SIZE, UART_IPA,
};
use mte_results::Lane;
use mte_suites::host_mm::{
    Advice, Backing, ForkPlan, ForkedChild, KsmKnob, KsmState, PageState, Protection, RaceLog,
    RacePlan, SwapDevice, TagPeer,
};
use mte_suites::vmm::{AbiVm, BootOptions, CopyTagsArgs, Guest, Reply, Vmm, VmmError};

use copy_tags::KvmArmCopyMteTags;
use elf::Payload;
use memory::GuestRam;
use watchdog::Watchdog;

fn sys(call: &str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError + '_ {
    move |e| VmmError::Sys {
        call: call.into(),
        errno: e.errno(),
    }
}

/// KVM as the VMM under test, on this machine.
pub struct KvmVmm {
    kvm: Kvm,
    lane: Lane,
    kernel_release: String,
    payload_dir: PathBuf,
    payloads: Mutex<HashMap<&'static str, Arc<Payload>>>,
    /// How long the guest may take to reach its next doorbell.
    deadline: Duration,
}

impl KvmVmm {
    /// Open /dev/kvm. Fails with [`VmmError::Unsupported`] where no arm64 KVM exists.
    pub fn open(
        lane: Lane,
        kernel_release: &str,
        payload_dir: PathBuf,
        deadline: Duration,
    ) -> Result<Self, VmmError> {
        if !cfg!(target_arch = "aarch64") {
            return Err(VmmError::Unsupported(format!(
                "this machine is {}, and only arm64 KVM runs arm64 guests; the emulated lane \
                 (`cargo xtask run`) brings an arm64 machine",
                std::env::consts::ARCH
            )));
        }
        let kvm = Kvm::new().map_err(|e| {
            VmmError::Unsupported(format!(
                "/dev/kvm cannot be opened ({e}): no KVM on this kernel or machine"
            ))
        })?;
        Ok(KvmVmm {
            kvm,
            lane,
            kernel_release: kernel_release.into(),
            payload_dir,
            payloads: Mutex::new(HashMap::new()),
            deadline,
        })
    }

    /// KVM_CHECK_EXTENSION(KVM_CAP_ARM_MTE).
    pub fn has_mte_cap(&self) -> bool {
        self.kvm.check_extension_raw(KVM_CAP_ARM_MTE.into()) > 0
    }

    pub fn api_version(&self) -> i32 {
        self.kvm.get_api_version()
    }

    /// The payload `name`, parsed once and shared by every VM.
    fn payload(&self, name: &'static str) -> Result<Arc<Payload>, VmmError> {
        let mut cache = self.payloads.lock().unwrap();
        if let Some(payload) = cache.get(name) {
            return Ok(Arc::clone(payload));
        }
        let path = self.payload_dir.join(name);
        let (_, payload) = crate::payload::read(&path, |elf| Ok(Payload::from_elf(elf)))?;
        let payload = Arc::new(payload);
        cache.insert(name, Arc::clone(&payload));
        Ok(payload)
    }

    /// Copy the payload `name` into the VM's RAM; returns its entry point.
    fn load_payload(&self, vm: &mut Vm, name: &'static str) -> Result<u64, VmmError> {
        let payload = self.payload(name)?;
        for segment in &payload.segments {
            vm.ram
                .write((segment.ipa - RAM_IPA) as usize, &segment.data);
        }
        Ok(payload.entry)
    }

    /// A VM with its RAM memslot on `backing`, and MTE enabled if asked (before any vCPU, as
    /// KVM requires).
    fn create_vm(&self, mte: bool, backing: Backing) -> Result<Vm, VmmError> {
        if mte {
            self.mte_capable()?;
        }
        let ram = GuestRam::with_backing(RAM_SIZE as usize, backing)?;
        new_vm(&self.kvm, mte, ram)
    }
}

/// A VM whose RAM memslot is `ram`, with MTE if asked.
fn new_vm(kvm: &Kvm, mte: bool, ram: GuestRam) -> Result<Vm, VmmError> {
    let vm = kvm.create_vm().map_err(sys("KVM_CREATE_VM"))?;
    if mte {
        enable_mte(&vm)?;
    }
    add_ram_memslot(vm, ram)
}

/// KVM_ENABLE_CAP(KVM_CAP_ARM_MTE): before any vCPU exists, as KVM requires.
fn enable_mte(vm: &VmFd) -> Result<(), VmmError> {
    let cap = kvm_enable_cap {
        cap: KVM_CAP_ARM_MTE,
        ..Default::default()
    };
    vm.enable_cap(&cap)
        .map_err(sys("KVM_ENABLE_CAP(KVM_CAP_ARM_MTE)"))
}

/// Hand `ram` to the VM as its RAM memslot.
fn add_ram_memslot(vm: VmFd, ram: GuestRam) -> Result<Vm, VmmError> {
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
fn add_vcpu(vm: &Vm, entry: u64) -> Result<VcpuFd, VmmError> {
    let vcpu = vm.fd.create_vcpu(0).map_err(sys("KVM_CREATE_VCPU"))?;
    vcpu::init(&vm.fd, &vcpu, entry).map_err(|(call, errno)| VmmError::Sys {
        call: call.into(),
        errno,
    })?;
    Ok(vcpu)
}

/// A VM and the RAM of its memslot. Field order is drop order: the VM fd goes before the
/// mapping it points into.
struct Vm {
    fd: VmFd,
    ram: GuestRam,
}

impl Vmm for KvmVmm {
    fn lane(&self) -> Lane {
        self.lane
    }

    fn kernel_release(&self) -> &str {
        &self.kernel_release
    }

    fn boot(&self, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
        let mut vm = self.create_vm(options.mte, options.backing)?;
        let entry = self.load_payload(&mut vm, options.payload)?;
        let vcpu = add_vcpu(&vm, entry)?;
        let mut guest = KvmGuest::new(vcpu, vm, options.deadline.unwrap_or(self.deadline));
        guest.run_to_doorbell("boot")?;
        guest.ids = crate::boot_check::booted_ids(&guest.mailbox(), options.payload)?;
        if options.mte && guest.ids.mte_level() < 2 {
            return Err(VmmError::Guest(format!(
                "KVM_CAP_ARM_MTE is enabled, yet the guest sees ID_AA64PFR1_EL1 = {:#x} (MTE field {})",
                guest.ids.id_aa64pfr1_el1,
                guest.ids.mte_level()
            )));
        }
        Ok(Box::new(guest))
    }

    fn mte_capable(&self) -> Result<(), VmmError> {
        if self.has_mte_cap() {
            Ok(())
        } else {
            Err(VmmError::Unsupported(
                "KVM has no KVM_CAP_ARM_MTE (a CPU without MTE, or a kernel before 5.13)".into(),
            ))
        }
    }

    fn restore(
        &self,
        stream: &[u8],
        fault: Option<mte_suites::migrate::StreamFault>,
    ) -> Result<Box<dyn Guest>, VmmError> {
        migrate::restore(stream, fault, self.deadline)
    }

    fn keep_artifact(&self, name: &str, bytes: &[u8]) -> Result<bool, VmmError> {
        crate::artifacts::keep(name, bytes).map(|()| true)
    }

    fn incoming_stream(
        &self,
        name: &str,
    ) -> Result<Option<mte_suites::migrate::IncomingStream>, VmmError> {
        crate::artifacts::incoming(name)
    }

    fn abi_vm(&self, mte: bool) -> Result<Box<dyn AbiVm>, VmmError> {
        let vm = self.create_vm(mte, Backing::PrivateAnonymous)?;
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        Ok(Box::new(KvmAbiVm {
            vcpus: Vec::new(),
            vm,
            page_size,
        }))
    }
}

/// How much of a guest's console is kept: enough for any message, bounded for a guest that
/// prints in a loop.
const CONSOLE_LIMIT: usize = 64 << 10;

/// Why the vCPU stopped.
enum Stop {
    Doorbell,
    PoweredOff,
}

/// A booted payload in its own VM. Field order is drop order: the vCPU before its VM.
struct KvmGuest {
    vcpu: VcpuFd,
    vm: Vm,
    watchdog: Watchdog,
    deadline: Duration,
    console: Vec<u8>,
    ids: GuestIds,
    powered_off: bool,
}

impl KvmGuest {
    /// A guest not yet run, whose every step may take up to `deadline`.
    fn new(vcpu: VcpuFd, vm: Vm, deadline: Duration) -> Self {
        KvmGuest {
            vcpu,
            vm,
            watchdog: Watchdog::for_current_thread(),
            deadline,
            console: Vec::new(),
            ids: GuestIds::default(),
            powered_off: false,
        }
    }

    fn mailbox(&self) -> Mailbox {
        let mut bytes = [0u8; std::mem::size_of::<Mailbox>()];
        self.vm
            .ram
            .read((MAILBOX_IPA - RAM_IPA) as usize, &mut bytes);
        Mailbox::from_bytes(&bytes).expect("sized to fit")
    }

    fn write_mailbox_u32(&mut self, offset: usize, value: u32) {
        self.vm.ram.write(
            (MAILBOX_IPA - RAM_IPA) as usize + offset,
            &value.to_le_bytes(),
        );
    }

    /// Run the vCPU until the guest rings the doorbell, powers off, or the deadline passes.
    fn run_to_doorbell(&mut self, what: &str) -> Result<Stop, VmmError> {
        self.watchdog.arm(self.deadline);
        let stop = self.run_loop(what);
        self.watchdog.disarm();
        stop
    }

    fn run_loop(&mut self, what: &str) -> Result<Stop, VmmError> {
        loop {
            // Checked on every exit, not only on EINTR: a guest that exits all the time (a
            // console loop) must not outlive its deadline either.
            if self.watchdog.fired() {
                return Err(VmmError::Timeout {
                    what: what.into(),
                    seconds: self.deadline.as_secs_f64(),
                });
            }
            match self.vcpu.run() {
                Ok(VcpuExit::MmioWrite(addr, data)) => match addr {
                    DOORBELL_IPA => return Ok(Stop::Doorbell),
                    UART_IPA if self.console.len() < CONSOLE_LIMIT => {
                        self.console.extend_from_slice(&data[..1])
                    }
                    UART_IPA => {}
                    // Other UART registers (control) are accepted and ignored.
                    a if (UART_IPA..UART_IPA + 0x1000).contains(&a) => {}
                    other => {
                        return Err(VmmError::Guest(format!(
                            "write to {other:#x}, where the VM has no device"
                        )))
                    }
                },
                // The UART's flag register and friends read as zero: transmitter ready.
                Ok(VcpuExit::MmioRead(addr, data))
                    if (UART_IPA..UART_IPA + 0x1000).contains(&addr) =>
                {
                    data.fill(0)
                }
                Ok(VcpuExit::MmioRead(addr, _)) => {
                    return Err(VmmError::Guest(format!(
                        "read of {addr:#x}, where the VM has no device"
                    )))
                }
                Ok(VcpuExit::SystemEvent(kind, _)) if kind == KVM_SYSTEM_EVENT_SHUTDOWN => {
                    self.powered_off = true;
                    return Ok(Stop::PoweredOff);
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
        }
    }
}

impl Guest for KvmGuest {
    fn ids(&self) -> GuestIds {
        self.ids
    }

    fn exec(&mut self, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        if self.powered_off {
            return Err(VmmError::Guest(format!(
                "{command:?} after the guest powered off"
            )));
        }
        assert!(args.len() <= 8, "at most 8 command arguments");
        let mut words = [0u64; 8];
        words[..args.len()].copy_from_slice(args);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.vm
            .ram
            .write((MAILBOX_IPA - RAM_IPA) as usize + offsets::ARGS, &bytes);
        self.write_mailbox_u32(offsets::COMMAND, command as u32);
        self.write_mailbox_u32(offsets::STATUS, Status::Empty as u32);
        let stop = self.run_to_doorbell(&format!("{command:?}"))?;
        let mailbox = self.mailbox();
        let status = match stop {
            Stop::PoweredOff if command == Command::PowerOff => Status::Done,
            Stop::PoweredOff => {
                return Err(VmmError::Guest(format!(
                    "the guest powered off during {command:?}"
                )))
            }
            Stop::Doorbell => Status::from_u32(mailbox.status).ok_or_else(|| {
                VmmError::Guest(format!(
                    "status {} is not a protocol status",
                    mailbox.status
                ))
            })?,
        };
        Ok(Reply {
            status,
            result: mailbox.result,
            fault: mailbox.fault,
        })
    }

    fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError> {
        assert!(
            len as u64 <= BULK_SIZE,
            "bulk reads stay inside the bulk buffer"
        );
        let mut out = vec![0u8; len];
        self.vm.ram.read((BULK_IPA - RAM_IPA) as usize, &mut out);
        Ok(out)
    }

    fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError> {
        assert!(
            bytes.len() as u64 <= BULK_SIZE,
            "bulk writes stay inside the bulk buffer"
        );
        self.vm.ram.write((BULK_IPA - RAM_IPA) as usize, bytes);
        Ok(())
    }

    fn host_read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        let mut tags = vec![0u8; mte_protocol::granules(len)];
        let copied = copy_tags::copy_tags_from_guest(&self.vm.fd, ipa, &mut tags)
            .map_err(|e| io_error("KVM_ARM_MTE_COPY_TAGS(FROM_GUEST)", e))?;
        short_copy(copied, len)?;
        Ok(tags)
    }

    fn host_write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        let copied = copy_tags::copy_tags_to_guest(&self.vm.fd, ipa, tags)
            .map_err(|e| io_error("KVM_ARM_MTE_COPY_TAGS(TO_GUEST)", e))?;
        short_copy(copied, tags.len() as u64 * mte_protocol::GRANULE)
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&self.console).into_owned()
    }

    fn ram_backing(&self) -> Result<Backing, VmmError> {
        Ok(self.vm.ram.backing())
    }

    fn madvise(&mut self, ipa: u64, len: u64, advice: Advice) -> Result<(), VmmError> {
        let offset = ram_range(ipa, len)?;
        self.vm
            .ram
            .madvise(offset, len as usize, advice.value())
            .map_err(|e| io_error(&format!("madvise({})", advice.name()), e))
    }

    fn protect(&mut self, ipa: u64, len: u64, prot: Protection) -> Result<(), VmmError> {
        let offset = ram_range(ipa, len)?;
        let (bits, name) = match prot {
            Protection::ReadOnly => (libc::PROT_READ, "PROT_READ"),
            Protection::ReadWrite => (libc::PROT_READ | libc::PROT_WRITE, "PROT_READ|PROT_WRITE"),
        };
        self.vm
            .ram
            .mprotect(offset, len as usize, bits)
            .map_err(|e| io_error(&format!("mprotect({name})"), e))
    }

    fn page_states(&mut self, ipa: u64, len: u64) -> Result<Vec<PageState>, VmmError> {
        let offset = ram_range(ipa, len)?;
        self.vm
            .ram
            .page_states(offset, len as usize)
            .map_err(|e| io_error("mincore and /proc/self/pagemap", e))
    }

    fn swap_devices(&self) -> Result<Vec<SwapDevice>, VmmError> {
        host::swap_devices()
    }

    fn vmstat(&self) -> Result<Vec<(String, u64)>, VmmError> {
        host::vmstat()
    }

    fn ksm_state(&self) -> Result<KsmState, VmmError> {
        host::ksm_state()
    }

    fn ksm_set(&mut self, knob: KsmKnob, value: u64) -> Result<(), VmmError> {
        host::ksm_set(knob, value)
    }

    fn fork(&mut self, plan: &ForkPlan) -> Result<Box<dyn ForkedChild>, VmmError> {
        Ok(Box::new(fork::spawn(&self.vm.ram, plan, self.deadline)?))
    }

    fn tag_peer(&mut self) -> Result<Box<dyn TagPeer>, VmmError> {
        Ok(Box::new(peer::KvmPeer::open(&self.vm.ram)?))
    }

    fn race(
        &mut self,
        plan: &RacePlan,
        command: Command,
        args: &[u64],
    ) -> Result<(Reply, RaceLog), VmmError> {
        let vm = self.vm.fd.as_raw_fd();
        race::race(vm, plan, || self.exec(command, args))
    }

    fn migrate(
        self: Box<Self>,
        plan: &mte_suites::migrate::MigrationPlan,
    ) -> Result<Box<dyn Guest>, VmmError> {
        migrate::migrate(*self, plan)
    }

    fn save(
        self: Box<Self>,
        fault: Option<mte_suites::migrate::StreamFault>,
    ) -> Result<mte_suites::migrate::SavedStream, VmmError> {
        migrate::save(*self, fault)
    }
}

/// The offset into guest RAM of a page-aligned range inside it.
fn ram_range(ipa: u64, len: u64) -> Result<usize, VmmError> {
    let page = memory::page_size() as u64;
    if ipa < RAM_IPA || ipa % page != 0 || len % page != 0 || ipa - RAM_IPA + len > RAM_SIZE {
        return Err(VmmError::Host(format!(
            "{ipa:#x}+{len:#x} is not a page-aligned range of guest RAM"
        )));
    }
    Ok((ipa - RAM_IPA) as usize)
}

fn io_error(call: &str, e: std::io::Error) -> VmmError {
    VmmError::Sys {
        call: call.into(),
        errno: e.raw_os_error().unwrap_or(0),
    }
}

fn short_copy(copied: usize, asked: u64) -> Result<(), VmmError> {
    if copied as u64 == asked {
        Ok(())
    } else {
        Err(VmmError::Host(format!(
            "KVM_ARM_MTE_COPY_TAGS covered {copied} of {asked} bytes"
        )))
    }
}

/// A VM without a running guest, for ABI probes. Field order is drop order: vCPUs first.
struct KvmAbiVm {
    vcpus: Vec<VcpuFd>,
    vm: Vm,
    page_size: u64,
}

impl AbiVm for KvmAbiVm {
    fn copy_tags_raw(&mut self, args: CopyTagsArgs, buffer: &mut [u8]) -> Result<i64, i32> {
        assert!(
            buffer.len() as u64 >= args.length / mte_protocol::GRANULE,
            "the buffer must cover what the kernel may write"
        );
        let raw = KvmArmCopyMteTags {
            guest_ipa: args.guest_ipa,
            length: args.length,
            addr: buffer.as_mut_ptr() as u64,
            flags: args.flags,
            reserved: args.reserved,
        };
        // SAFETY: the buffer covers length / 16 bytes (asserted above).
        unsafe { copy_tags::copy_mte_tags_raw(&self.vm.fd, &raw) }
            .map(|n| n as i64)
            .map_err(|e| e.raw_os_error().unwrap_or(0))
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
        self.page_size
    }
}
