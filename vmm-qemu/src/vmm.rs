//! QEMU as the VMM under test, one process per guest: under TCG (the qemu lane), or under the
//! host's KVM (the qemu-kvm lane, inside the emulated machine).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use mte_results::Lane;
use mte_suites::expectations::{KernelVersion, MAP_SHARED_CHANGE};
use mte_suites::host_mm::Backing;
use mte_suites::vmm::{AbiVm, BootOptions, Guest, Vmm, VmmError};
use mte_vmm::{MailboxGuest, PayloadDir};

use crate::binary::{QemuBinary, Version};
use crate::machine::{Accel, Ram, Setup};
use crate::pool::Pool;
use crate::transport::GdbTransport;

/// The first kernel that takes a shared memslot for an MTE VM.
const SHARED_MEMSLOTS: KernelVersion = KernelVersion::new(6, 2);

/// QEMU as the VMM under test, one process per guest.
pub struct QemuVmm {
    lane: Lane,
    binary: QemuBinary,
    accel: Accel,
    /// Under TCG `qemu-x.y.z` (the lane has no guest kernel, so QEMU's version stands in for
    /// it); under KVM the host kernel's release.
    release: String,
    payloads: PayloadDir,
    /// How long the guest may take to reach its next doorbell.
    deadline: Duration,
    /// What the first guest's gdbstub answered to `qSupported`.
    stub_features: OnceLock<Vec<String>>,
    /// Under KVM, whether the host kernel took QEMU's shared memfd as RAM of an MTE guest:
    /// learnt from the first guest on the lane's usual RAM; its refusal otherwise.
    shared_ram: OnceLock<Result<(), VmmError>>,
    /// QEMUs kept between guests (those on a shared memfd).
    pool: Arc<Pool>,
    /// What getting a guest's QEMU ready has cost.
    costs: Mutex<Costs>,
}

/// How long QEMUs took to get ready for a guest: started afresh, or reset from the pool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Costs {
    /// Fresh QEMUs, and the time from their start to a connected gdbstub.
    pub starts: (u32, Duration),
    /// QEMUs reset for another guest, and the time the resets took.
    pub resets: (u32, Duration),
    /// Resets that failed (the guest then got a fresh QEMU), and why the last one did.
    pub failed_resets: (u32, String),
}

impl Costs {
    /// In words, with the mean of each.
    pub fn describe(&self) -> String {
        let mean = |(n, total): (u32, Duration)| match n {
            0 => "none".to_string(),
            n => format!(
                "{n}, {:.0} ms each",
                total.as_secs_f64() * 1e3 / f64::from(n)
            ),
        };
        let mut words = format!(
            "QEMU started afresh: {}; reset for another guest: {}",
            mean(self.starts),
            mean(self.resets)
        );
        if self.failed_resets.0 > 0 {
            words.push_str(&format!(
                "; {} resets failed, the last with: {}",
                self.failed_resets.0, self.failed_resets.1
            ));
        }
        words
    }
}

impl QemuVmm {
    /// Check the QEMU at `qemu` (a bare name is looked up on PATH): it must run and be 9.2 or
    /// newer, else [`VmmError::Unsupported`] says what to install. Under KVM, `kernel_release`
    /// is the release of the kernel whose KVM QEMU runs on.
    pub fn open(
        lane: Lane,
        qemu: PathBuf,
        accel: Accel,
        kernel_release: &str,
        payload_dir: PathBuf,
        deadline: Duration,
    ) -> Result<Self, VmmError> {
        let binary = QemuBinary::probe(&qemu)?;
        let release = match accel {
            Accel::Tcg => format!("qemu-{}", binary.version),
            Accel::Kvm => kernel_release.to_string(),
        };
        Ok(QemuVmm {
            lane,
            release,
            binary,
            accel,
            payloads: PayloadDir::new(payload_dir),
            deadline,
            stub_features: OnceLock::new(),
            shared_ram: OnceLock::new(),
            pool: Arc::default(),
            costs: Mutex::default(),
        })
    }

    /// What getting QEMUs ready for guests has cost so far.
    pub fn costs(&self) -> Costs {
        self.costs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn path(&self) -> &Path {
        &self.binary.path
    }

    pub fn version(&self) -> Version {
        self.binary.version
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// QEMU's own words for its version: the first line of `--version`.
    pub fn banner(&self) -> &str {
        &self.binary.banner
    }

    /// The features the gdbstub announced (`qSupported`), once a guest has booted.
    pub fn stub_features(&self) -> Option<&[String]> {
        self.stub_features.get().map(Vec::as_slice)
    }

    /// Under KVM, what backs the lane's guests' RAM and how the host sees their tags, once the
    /// first guest has booted.
    pub fn ram_in_words(&self) -> Option<String> {
        Some(match self.shared_ram.get()? {
            Ok(()) => "a shared memfd (-object memory-backend-memfd,share=on), whose tags the \
                       runner reads through its own PROT_MTE mapping"
                .into(),
            Err(why) => format!("QEMU's private RAM, without a host view of its tags: {why}"),
        })
    }

    /// A guest's QEMU on `ram`, stopped at the payload's entry: one kept from an earlier guest
    /// and reset, where the pool takes this setup and has one, else a new one. Says why the
    /// host cannot see the guest's tags where it cannot.
    fn start(
        &self,
        payload: Arc<mte_vmm::Payload>,
        mte: bool,
        ram: Ram,
        no_tag_view: Option<VmmError>,
    ) -> Result<GdbTransport, VmmError> {
        let setup = Setup {
            accel: self.accel,
            mte,
            ram,
        };
        let pooled = Pool::takes(setup);
        let started = Instant::now();
        let reset = pooled
            .then(|| self.pool.take(setup, &payload))
            .flatten()
            .map(|idle| GdbTransport::reset(&self.binary, idle));
        let costs = |f: &dyn Fn(&mut Costs)| {
            f(&mut self.costs.lock().unwrap_or_else(PoisonError::into_inner))
        };
        let mut transport = match reset {
            Some(Ok(transport)) => {
                let took = started.elapsed();
                costs(&|c| c.resets = (c.resets.0 + 1, c.resets.1 + took));
                transport
            }
            failed => {
                if let Some(Err(e)) = failed {
                    costs(&|c| c.failed_resets = (c.failed_resets.0 + 1, e.to_string()));
                }
                let started = Instant::now();
                let transport = GdbTransport::start(&self.binary, payload, setup, None)?;
                let took = started.elapsed();
                costs(&|c| c.starts = (c.starts.0 + 1, c.starts.1 + took));
                transport
            }
        };
        if pooled {
            transport.pool = Some(Arc::clone(&self.pool));
        }
        transport.no_tag_view = no_tag_view;
        Ok(transport)
    }

    /// Under KVM, a guest on the RAM `options` ask for: the lane's usual RAM is a shared memfd
    /// (so that the runner can see its tags), private RAM where the kernel refuses that.
    fn start_under_kvm(
        &self,
        payload: Arc<mte_vmm::Payload>,
        options: &BootOptions,
    ) -> Result<GdbTransport, VmmError> {
        let private = |why: &str| {
            Some(VmmError::Unsupported(format!(
                "the guest runs on QEMU's private RAM ({why}), which QEMU maps without \
                 PROT_MTE: the host has no view of its tags"
            )))
        };
        match options.backing {
            Some(Backing::PrivateAnonymous) => {
                self.start(payload, options.mte, Ram::Private, private("asked for"))
            }
            Some(Backing::Memfd) => self
                .start(payload, options.mte, Ram::SharedMemfd, None)
                .map_err(|e| self.classify_shared_refusal(e)),
            Some(other) => Err(VmmError::Unsupported(format!(
                "guest RAM backed by {}: the lane's QEMU takes QEMU's private RAM or a shared \
                 memfd",
                other.describe()
            ))),
            None if !options.mte => {
                self.start(payload, false, Ram::Private, private("a guest without MTE"))
            }
            None => self.start_on_usual_ram(payload),
        }
    }

    /// A guest with MTE on the lane's usual RAM: a shared memfd, unless the kernel has refused
    /// one (then private RAM, and the refusal is why the host cannot see its tags).
    fn start_on_usual_ram(&self, payload: Arc<mte_vmm::Payload>) -> Result<GdbTransport, VmmError> {
        if let Some(Err(refused)) = self.shared_ram.get() {
            return self.start(payload, true, Ram::Private, Some(refused.clone()));
        }
        match self.start(Arc::clone(&payload), true, Ram::SharedMemfd, None) {
            Ok(transport) => {
                let _ = self.shared_ram.set(Ok(()));
                Ok(transport)
            }
            Err(e) => match self.classify_shared_refusal(e) {
                refused @ (VmmError::Documented(_) | VmmError::Sys { .. }) => {
                    let why = match refused {
                        VmmError::Sys { .. } => VmmError::Host(format!(
                            "{refused}: on kernel {} KVM must take a shared memslot with MTE \
                             ({MAP_SHARED_CHANGE})",
                            self.release
                        )),
                        documented => documented,
                    };
                    let _ = self.shared_ram.set(Err(why.clone()));
                    self.start(payload, true, Ram::Private, Some(why))
                }
                other => Err(other),
            },
        }
    }

    /// QEMU's failure to start on a shared memfd: KVM's refusal of the memslot (documented
    /// before 6.2, an errno after), or whatever else it was.
    fn classify_shared_refusal(&self, error: VmmError) -> VmmError {
        let VmmError::Host(message) = &error else {
            return error;
        };
        if !message.contains("error registering slot") {
            return error;
        }
        let before_6_2 = KernelVersion::parse(&self.release).is_some_and(|v| v < SHARED_MEMSLOTS);
        if before_6_2 {
            VmmError::Documented(format!(
                "QEMU's shared memfd RAM was refused by KVM on kernel {} ({message}); \
                 documented for kernels before 6.2: {MAP_SHARED_CHANGE}. QEMU maps its private \
                 RAM without PROT_MTE and its gdbstub's tag packets do not work under KVM, so \
                 the host has no view of the tags here",
                self.release
            ))
        } else {
            VmmError::Sys {
                call: format!("KVM_SET_USER_MEMORY_REGION of QEMU's shared memfd RAM ({message})"),
                errno: libc::EINVAL,
            }
        }
    }
}

impl Vmm for QemuVmm {
    fn lane(&self) -> Lane {
        self.lane
    }

    fn kernel_release(&self) -> &str {
        &self.release
    }
    fn without_injection(&self) -> &dyn Vmm {
        self
    }

    fn boot(&self, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
        let payload = self.payloads.get(options.payload)?;
        let transport = match self.accel {
            Accel::Tcg => self.start(payload, options.mte, Ram::Private, None)?,
            Accel::Kvm => self.start_under_kvm(payload, options)?,
        };
        let _ = self.stub_features.set(transport.stub_features().to_vec());
        let mte_on = match self.accel {
            Accel::Tcg => "QEMU runs the guest with mte=on",
            Accel::Kvm => "QEMU runs the guest with -accel kvm and mte=on",
        };
        let guest = MailboxGuest::boot(transport, options, self.deadline, mte_on)?;
        Ok(Box::new(guest))
    }

    fn abi_vm(&self, _mte: bool) -> Result<Box<dyn AbiVm>, VmmError> {
        Err(VmmError::Unsupported(
            "QEMU is the VMM in the qemu lanes; KVM_ARM_MTE_COPY_TAGS is a KVM ioctl the \
             runner issues only as the VMM"
                .into(),
        ))
    }

    fn mte_capable(&self) -> Result<(), VmmError> {
        Ok(())
    }
}
