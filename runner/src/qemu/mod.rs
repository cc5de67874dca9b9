//! QEMU as the VMM under test (the qemu lane): every guest is its own `qemu-system-aarch64`
//! (TCG, virt machine) booting the payload ELF directly, driven through QEMU's gdbstub.
//!
//! The doorbell is a breakpoint on the payload's `mte_doorbell_store`. That store never runs:
//! nothing answers at `DOORBELL_IPA` on virt, so it would be an external abort. The guest
//! resumes at the next instruction instead. The host's tag steps are the gdbstub's
//! memory-tagging packets (see [`memtags`]).

mod binary;
mod gdb;
mod machine;
mod memtags;
mod qmp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mte_protocol::{
    granules, offsets, Command, GuestIds, Mailbox, Status, BULK_IPA, BULK_SIZE, GRANULE,
    MAILBOX_IPA,
};
use mte_results::Lane;
use mte_suites::vmm::{AbiVm, BootOptions, Guest, Reply, Vmm, VmmError, VmmMigration};

use binary::QemuBinary;
pub use binary::Version;
use gdb::{Connection, RspError, StopReply};
use machine::Machine;

/// The payload's label on the doorbell's store.
const DOORBELL_SYMBOL: &str = "mte_doorbell_store";
/// An A64 instruction's length: the breakpoint's kind, and the step over the doorbell.
const INSTRUCTION: u64 = 4;
/// The PC's number in QEMU's aarch64 target description (x0..x30, sp, pc).
const PC: u32 = 32;
/// The signal of a stop at a breakpoint.
const SIGTRAP: u8 = 5;

/// How long QEMU may take to start and open its gdbstub (a busy machine starts slowly).
const STARTUP_LIMIT: Duration = Duration::from_secs(20);
/// How long the gdbstub of a halted guest may take to answer a request.
const REPLY_LIMIT: Duration = Duration::from_secs(10);
/// How long a migration of a guest's 64 MiB to or from a file may take.
const MIGRATION_LIMIT: Duration = Duration::from_secs(30);

/// A payload image and the address of its doorbell.
struct Payload {
    image: Vec<u8>,
    doorbell: u64,
}

/// QEMU as the VMM under test, one process per guest.
pub struct QemuVmm {
    lane: Lane,
    binary: QemuBinary,
    /// `qemu-x.y.z`: the lane has no guest kernel, so QEMU's version stands in for it.
    release: String,
    payload_dir: PathBuf,
    payloads: Mutex<HashMap<&'static str, Arc<Payload>>>,
    /// How long the guest may take to reach its next doorbell.
    deadline: Duration,
    /// What the first guest's gdbstub answered to `qSupported`.
    stub_features: OnceLock<Vec<String>>,
}

impl QemuVmm {
    /// Check the QEMU at `qemu` (a bare name is looked up on PATH): it must run and be 9.2 or
    /// newer, else [`VmmError::Unsupported`] says what to install.
    pub fn open(
        lane: Lane,
        qemu: PathBuf,
        payload_dir: PathBuf,
        deadline: Duration,
    ) -> Result<Self, VmmError> {
        let binary = QemuBinary::probe(&qemu)?;
        Ok(QemuVmm {
            lane,
            release: format!("qemu-{}", binary.version),
            binary,
            payload_dir,
            payloads: Mutex::new(HashMap::new()),
            deadline,
            stub_features: OnceLock::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.binary.path
    }

    pub fn version(&self) -> Version {
        self.binary.version
    }

    /// QEMU's own words for its version: the first line of `--version`.
    pub fn banner(&self) -> &str {
        &self.binary.banner
    }

    /// The features the gdbstub announced (`qSupported`), once a guest has booted.
    pub fn stub_features(&self) -> Option<&[String]> {
        self.stub_features.get().map(Vec::as_slice)
    }

    /// The payload `name` and its doorbell, read once and shared by every guest.
    fn payload(&self, name: &'static str) -> Result<Arc<Payload>, VmmError> {
        let mut cache = self.payloads.lock().unwrap();
        if let Some(payload) = cache.get(name) {
            return Ok(Arc::clone(payload));
        }
        let path = self.payload_dir.join(name);
        let (image, doorbell) = crate::payload::read(&path, |elf| {
            elf.symbol(DOORBELL_SYMBOL).ok_or_else(|| {
                VmmError::Host(format!(
                    "payload {} has no symbol {DOORBELL_SYMBOL} (stripped, or older than the \
                     qemu lane); rebuild it with `cargo xtask build`",
                    path.display()
                ))
            })
        })?;
        let payload = Arc::new(Payload { image, doorbell });
        cache.insert(name, Arc::clone(&payload));
        Ok(payload)
    }
}

impl Vmm for QemuVmm {
    fn lane(&self) -> Lane {
        self.lane
    }

    fn kernel_release(&self) -> &str {
        &self.release
    }

    fn boot(&self, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
        let payload = self.payload(options.payload)?;
        let (machine, stub) = start(&self.binary.path, &payload, options.mte, None)?;
        let _ = self.stub_features.set(stub.features().to_vec());
        let mut guest = QemuGuest {
            stub,
            machine,
            qemu: self.binary.path.clone(),
            payload: Arc::clone(&payload),
            deadline: options.deadline.unwrap_or(self.deadline),
            mte: options.mte,
            ids: GuestIds::default(),
            at_doorbell: false,
            ended: None,
        };
        if let Stop::PoweredOff = guest.run_to_doorbell("boot")? {
            return Err(VmmError::Guest(
                "the payload powered off before its first doorbell".into(),
            ));
        }
        guest.ids = crate::boot_check::booted_ids(&guest.mailbox()?, options.payload)?;
        if options.mte && guest.ids.mte_level() < 2 {
            return Err(VmmError::Guest(format!(
                "QEMU runs the guest with mte=on, yet it sees ID_AA64PFR1_EL1 = {:#x} (MTE field {})",
                guest.ids.id_aa64pfr1_el1,
                guest.ids.mte_level()
            )));
        }
        Ok(Box::new(guest))
    }

    fn abi_vm(&self, _mte: bool) -> Result<Box<dyn AbiVm>, VmmError> {
        Err(VmmError::Unsupported(
            "QEMU is the VMM in the qemu lane; KVM_ARM_MTE_COPY_TAGS is a KVM ioctl".into(),
        ))
    }

    fn mte_capable(&self) -> Result<(), VmmError> {
        Ok(())
    }
}

/// Start QEMU on `payload` (from its entry, or from an `incoming` migration file), shake hands
/// with its gdbstub and set the doorbell's breakpoint.
fn start(
    qemu: &Path,
    payload: &Payload,
    mte: bool,
    incoming: Option<&Path>,
) -> Result<(Machine, Connection), VmmError> {
    let (machine, stream) = Machine::start(qemu, &payload.image, mte, incoming, STARTUP_LIMIT)?;
    if incoming.is_some() {
        // The gdbstub answers only once the guest's state is in place.
        machine
            .qmp(REPLY_LIMIT)?
            .wait_for_migration(MIGRATION_LIMIT)
            .map_err(|e| {
                VmmError::Host(format!(
                    "the incoming QEMU: {e}; QEMU: {}",
                    machine.messages()
                ))
            })?;
    }
    let mut stub = Connection::handshake(stream, REPLY_LIMIT).map_err(|e| {
        VmmError::Host(format!(
            "QEMU's gdbstub did not take the handshake: {e}; QEMU: {}",
            machine.messages()
        ))
    })?;
    let breakpoint = format!("Z0,{:x},{INSTRUCTION}", payload.doorbell);
    stub.request_ok(&breakpoint, REPLY_LIMIT).map_err(|e| {
        VmmError::Host(format!(
            "setting the doorbell breakpoint: {e}; QEMU: {}",
            machine.messages()
        ))
    })?;
    Ok((machine, stub))
}

/// Why the guest stopped running.
enum Stop {
    Doorbell,
    PoweredOff,
}

/// A booted payload in its own QEMU. Field order is drop order: the connection before the
/// process.
struct QemuGuest {
    stub: Connection,
    machine: Machine,
    /// What a migration's destination is started from.
    qemu: PathBuf,
    payload: Arc<Payload>,
    deadline: Duration,
    mte: bool,
    ids: GuestIds,
    /// Stopped at the doorbell (rather than at the entry point, before the first run).
    at_doorbell: bool,
    /// Why the guest can take no more steps, once it cannot (it powered off, it was stopped).
    ended: Option<String>,
}

impl QemuGuest {
    /// Migrate the guest, stopped at its doorbell, with QEMU's own migration: to a file, then
    /// into a new QEMU started with `-incoming` on it. The guest goes on in the new QEMU, at
    /// the same doorbell; the old one is gone.
    fn migrate_through_file(&mut self) -> Result<VmmMigration, VmmError> {
        self.still_running("migrating")?;
        if !self.at_doorbell {
            return Err(VmmError::Host(
                "a guest is migrated at a doorbell, where its state is the protocol's".into(),
            ));
        }
        let started = Instant::now();
        let file = self.machine.migration_file();
        let host = |what: &str, e: String| VmmError::Host(format!("{what}: {e}"));
        let mut qmp = self.machine.qmp(REPLY_LIMIT)?;
        let uri = format!("file:{}", file.display());
        qmp.execute("migrate", serde_json::json!({ "uri": uri }))
            .map_err(|e| host("QMP migrate", e))?;
        let status = qmp
            .wait_for_migration(MIGRATION_LIMIT)
            .map_err(|e| host("the outgoing migration", e))?;
        let figure = |key: &str| status.get(key).and_then(serde_json::Value::as_u64);
        let bytes = std::fs::metadata(&file)
            .map(|m| m.len())
            .map_err(|e| host("the migration file", e.to_string()))?;
        let (machine, stub) = start(&self.qemu, &self.payload, self.mte, Some(&file))?;
        // The source (and its directory, with the file) goes once the destination has loaded.
        self.stub = stub;
        self.machine = machine;
        let millis = |key: &str| Duration::from_millis(figure(key).unwrap_or_default());
        Ok(VmmMigration {
            how: format!(
                "QEMU: migrate to a file, -incoming in a new QEMU ({:.0} ms from the source's \
                 stop to the destination's gdbstub)",
                started.elapsed().as_secs_f64() * 1e3
            ),
            stream_bytes: bytes,
            total: millis("total-time"),
            downtime: millis("downtime"),
        })
    }

    /// Let the guest run until it rings the doorbell, powers off, or the deadline passes.
    fn run_to_doorbell(&mut self, what: &str) -> Result<Stop, VmmError> {
        if self.at_doorbell {
            // Past the doorbell's store, which must not run.
            self.stub
                .write_register(PC, self.payload.doorbell + INSTRUCTION, REPLY_LIMIT)
                .map_err(|e| self.stub_error(what, e))?;
        }
        self.at_doorbell = false;
        self.stub
            .resume(REPLY_LIMIT)
            .map_err(|e| self.stub_error(what, e))?;
        let stop = self.stub.wait_for_stop(Instant::now() + self.deadline);
        match stop {
            Ok(StopReply::Signal(SIGTRAP)) => {
                let pc = self
                    .stub
                    .read_register(PC, REPLY_LIMIT)
                    .map_err(|e| self.stub_error(what, e))?;
                if pc != self.payload.doorbell {
                    return Err(self.end(format!(
                        "the guest stopped at PC {pc:#x} during {what}, not at the doorbell \
                         ({:#x})",
                        self.payload.doorbell
                    )));
                }
                self.at_doorbell = true;
                Ok(Stop::Doorbell)
            }
            Ok(StopReply::Signal(signal)) => Err(self.end(format!(
                "the guest stopped with signal {signal} during {what}"
            ))),
            // SYSTEM_OFF ends QEMU: the stub reports the exit, or only closes the connection.
            Ok(StopReply::Exited(0)) => Ok(self.powered_off()),
            Err(RspError::Closed) if self.machine.exited_cleanly(REPLY_LIMIT) => {
                Ok(self.powered_off())
            }
            Ok(StopReply::Exited(_) | StopReply::Terminated(_)) | Err(RspError::Closed) => {
                Err(self.end(format!(
                    "QEMU ended during {what}: {}",
                    self.machine.messages()
                )))
            }
            Err(RspError::Timeout) => {
                // Stop the vCPU, then the process: nothing of the guest is needed any more.
                let _ = self.stub.interrupt();
                self.machine.kill();
                self.ended = Some(format!("it was stopped by its deadline during {what}"));
                Err(VmmError::Timeout {
                    what: what.into(),
                    seconds: self.deadline.as_secs_f64(),
                })
            }
            Err(e) => {
                let error = self.stub_error(what, e);
                self.ended = Some(format!("an error during {what}"));
                Err(error)
            }
        }
    }

    fn powered_off(&mut self) -> Stop {
        self.ended = Some("it powered off".into());
        Stop::PoweredOff
    }

    /// A guest error after which the guest takes no more steps.
    fn end(&mut self, why: String) -> VmmError {
        self.ended = Some(why.clone());
        VmmError::Guest(why)
    }

    /// A failed exchange with the stub, as a step's error.
    fn stub_error(&self, during: &str, error: RspError) -> VmmError {
        match error {
            RspError::Timeout => VmmError::Timeout {
                what: format!("QEMU's gdbstub answering during {during}"),
                seconds: REPLY_LIMIT.as_secs_f64(),
            },
            RspError::Closed => VmmError::Guest(format!(
                "QEMU ended during {during}: {}",
                self.machine.messages()
            )),
            RspError::Refused { packet, reply } => VmmError::Host(format!(
                "QEMU's gdbstub answered `{packet}` with `{reply}` during {during}{}",
                memtags::explain(&packet, &reply)
            )),
            other => VmmError::Host(format!("QEMU's gdbstub during {during}: {other}")),
        }
    }

    /// Refuse a step once the guest has ended.
    fn still_running(&self, step: &str) -> Result<(), VmmError> {
        match &self.ended {
            Some(why) => Err(VmmError::Guest(format!("{step} after {why}"))),
            None => Ok(()),
        }
    }

    fn mailbox(&mut self) -> Result<Mailbox, VmmError> {
        let bytes = self
            .stub
            .read_memory(MAILBOX_IPA, std::mem::size_of::<Mailbox>(), REPLY_LIMIT)
            .map_err(|e| self.stub_error("reading the mailbox", e))?;
        Ok(Mailbox::from_bytes(&bytes).expect("read to size"))
    }

    /// The host's tag steps need the stub's memory-tagging packets.
    fn require_memory_tagging(&self) -> Result<(), VmmError> {
        if self.stub.supports("memory-tagging") {
            Ok(())
        } else if self.mte {
            Err(VmmError::Unsupported(
                "QEMU's gdbstub has no memory-tagging packets (QEMU >= 9.2 needed)".into(),
            ))
        } else {
            Err(VmmError::Unsupported(
                "the guest runs without MTE (mte=off): QEMU's gdbstub offers no \
                 memory-tagging packets for it"
                    .into(),
            ))
        }
    }
}

/// Tags go by whole granules.
fn require_granules(ipa: u64, len: u64) -> Result<(), VmmError> {
    if ipa % GRANULE == 0 && len % GRANULE == 0 {
        Ok(())
    } else {
        Err(VmmError::Host(format!(
            "tags of [{ipa:#x}, +{len:#x}) asked for: not whole granules of {GRANULE} bytes"
        )))
    }
}

impl Guest for QemuGuest {
    fn ids(&self) -> GuestIds {
        self.ids
    }

    fn exec(&mut self, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        self.still_running(&format!("{command:?}"))?;
        assert!(args.len() <= 8, "at most 8 command arguments");
        // Status, command and arguments are neighbours in the mailbox: one write posts all.
        const _: () = assert!(
            offsets::COMMAND == offsets::STATUS + 4 && offsets::ARGS == offsets::COMMAND + 4
        );
        let mut post = Vec::with_capacity(8 + 64);
        post.extend_from_slice(&(Status::Empty as u32).to_le_bytes());
        post.extend_from_slice(&(command as u32).to_le_bytes());
        let mut words = [0u64; 8];
        words[..args.len()].copy_from_slice(args);
        post.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        let what = format!("{command:?}");
        self.stub
            .write_memory(MAILBOX_IPA + offsets::STATUS as u64, &post, REPLY_LIMIT)
            .map_err(|e| self.stub_error(&what, e))?;
        match self.run_to_doorbell(&what)? {
            // QEMU is gone with the guest's memory: there is no mailbox to read.
            Stop::PoweredOff if command == Command::PowerOff => Ok(Reply {
                status: Status::Done,
                result: [0; 8],
                fault: Default::default(),
            }),
            Stop::PoweredOff => Err(VmmError::Guest(format!(
                "the guest powered off during {command:?}"
            ))),
            Stop::Doorbell => {
                let mailbox = self.mailbox()?;
                let status = Status::from_u32(mailbox.status).ok_or_else(|| {
                    VmmError::Guest(format!(
                        "status {} is not a protocol status",
                        mailbox.status
                    ))
                })?;
                Ok(Reply {
                    status,
                    result: mailbox.result,
                    fault: mailbox.fault,
                })
            }
        }
    }

    fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError> {
        assert!(
            len as u64 <= BULK_SIZE,
            "bulk reads stay inside the bulk buffer"
        );
        self.still_running("reading the bulk buffer")?;
        self.stub
            .read_memory(BULK_IPA, len, REPLY_LIMIT)
            .map_err(|e| self.stub_error("reading the bulk buffer", e))
    }

    fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError> {
        assert!(
            bytes.len() as u64 <= BULK_SIZE,
            "bulk writes stay inside the bulk buffer"
        );
        self.still_running("writing the bulk buffer")?;
        self.stub
            .write_memory(BULK_IPA, bytes, REPLY_LIMIT)
            .map_err(|e| self.stub_error("writing the bulk buffer", e))
    }

    fn host_read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        self.still_running("reading tags")?;
        self.require_memory_tagging()?;
        require_granules(ipa, len)?;
        let during = format!("the host's read of the tags of [{ipa:#x}, +{len:#x})");
        (0..granules(len) as u64)
            .map(|granule| {
                let packet = memtags::read_packet(ipa + granule * GRANULE);
                let reply = self
                    .stub
                    .request(&packet, REPLY_LIMIT)
                    .map_err(|e| self.stub_error(&during, e))?;
                memtags::parse_read_reply(&reply)
                    .ok_or_else(|| self.stub_error(&during, RspError::Refused { packet, reply }))
            })
            .collect()
    }

    fn host_write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        self.still_running("writing tags")?;
        self.require_memory_tagging()?;
        let len = tags.len() as u64 * GRANULE;
        require_granules(ipa, len)?;
        let during = format!("the host's write of the tags of [{ipa:#x}, +{len:#x})");
        let max_tags = self.stub.hex_bytes_per_packet();
        for (address, range) in memtags::write_chunks(ipa, tags.len(), max_tags) {
            let packet = memtags::write_packet(address, &tags[range]);
            self.stub
                .request_ok(&packet, REPLY_LIMIT)
                .map_err(|e| self.stub_error(&during, e))?;
        }
        Ok(())
    }

    fn console(&self) -> String {
        self.machine.console()
    }

    fn migrate_by_vmm(mut self: Box<Self>) -> Result<(Box<dyn Guest>, VmmMigration), VmmError> {
        let migration = self.migrate_through_file()?;
        Ok((self, migration))
    }
}
