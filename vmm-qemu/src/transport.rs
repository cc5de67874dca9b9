//! The mailbox protocol's transport on QEMU: guest memory through the gdbstub's `m`/`M`
//! packets, the doorbell a breakpoint on the payload's doorbell store, the console QEMU's
//! PL011 log, and SYSTEM_OFF the end of the QEMU process.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mte_suites::vmm::VmmError;
use mte_vmm::{Payload, Stop, Transport};

use crate::binary::{QemuBinary, Version};
use crate::gdb::{Connection, RspError, StopReply};
use crate::machine::{Machine, Setup};
use crate::memtags;
use crate::pool::{self, Idle, Pool};
use crate::qemu_ram::{self, Mapping};
use crate::tag_view::MemfdTagView;

/// An A64 instruction's length: the breakpoint's kind, and the step over the doorbell.
const INSTRUCTION: u64 = 4;
/// The PC's number in QEMU's aarch64 target description (x0..x30, sp, pc).
const PC: u32 = 32;
/// The signal of a stop at a breakpoint.
const SIGTRAP: u8 = 5;

/// How long QEMU may take to start and open its gdbstub (a busy machine starts slowly).
const STARTUP_LIMIT: Duration = Duration::from_secs(20);
/// How long the gdbstub of a halted guest may take to answer a request.
pub(crate) const REPLY_LIMIT: Duration = Duration::from_secs(10);
/// How long a migration of a guest's 64 MiB to or from a file may take.
pub(crate) const MIGRATION_LIMIT: Duration = Duration::from_secs(30);

/// A QEMU process and the gdbstub session that drives its vCPU. Field order is drop order: the
/// connection before the process.
pub(crate) struct Process {
    pub(crate) stub: Connection,
    pub(crate) machine: Machine,
}

/// What a dropped transport's process is, where it does not go back to a pool.
const LIVE: &str = "a transport's process lives until the transport is dropped";

/// A guest's QEMU, driven over its gdbstub.
pub struct GdbTransport {
    /// The process; taken only as the transport is dropped, to go back to its pool.
    process: Option<Process>,
    /// Where the process goes when the guest is done with, if it may serve another guest.
    pub(crate) pool: Option<Arc<Pool>>,
    /// Where this guest's output starts in the console file (a pooled QEMU served others
    /// before).
    console_from: u64,
    /// What a migration's destination is started from.
    pub(crate) qemu: QemuBinary,
    /// Its version, which the expectations are looked up by.
    pub(crate) version: Version,
    pub(crate) payload: Arc<Payload>,
    pub(crate) setup: Setup,
    doorbell: u64,
    /// Stopped at the doorbell (rather than at the entry point, before the first run).
    pub(crate) at_doorbell: bool,
    /// Why the host cannot see this guest's tags, where it cannot (KVM on private RAM).
    pub(crate) no_tag_view: Option<VmmError>,
    /// QEMU's mapping of guest RAM, once looked up (KVM).
    ram: Option<Mapping>,
    /// The runner's PROT_MTE mapping of QEMU's memfd RAM, once made (KVM on a memfd).
    tag_view: Option<MemfdTagView>,
}

impl Drop for GdbTransport {
    /// A guest done with at a doorbell, in a QEMU that lives, leaves the QEMU to its pool.
    fn drop(&mut self) {
        let (Some(pool), Some(mut process)) = (self.pool.take(), self.process.take()) else {
            return;
        };
        if self.at_doorbell && process.machine.running() {
            pool.put(Idle {
                process,
                payload: Arc::clone(&self.payload),
                setup: self.setup,
                ram: self.ram.take(),
                tag_view: self.tag_view.take(),
            });
        }
    }
}

impl GdbTransport {
    /// Start QEMU on `payload` (from its entry, or from an `incoming` migration file, stopped at
    /// the doorbell it was migrated at), shake hands with its gdbstub and set the doorbell's
    /// breakpoint.
    pub(crate) fn start(
        qemu: &QemuBinary,
        payload: Arc<Payload>,
        setup: Setup,
        incoming: Option<&Path>,
    ) -> Result<Self, VmmError> {
        let doorbell = payload.doorbell_store()?;
        let (machine, stream) =
            Machine::start(&qemu.path, &payload.image, setup, incoming, STARTUP_LIMIT)?;
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
        let breakpoint = format!("Z0,{doorbell:x},{INSTRUCTION}");
        stub.request_ok(&breakpoint, REPLY_LIMIT).map_err(|e| {
            VmmError::Host(format!(
                "setting the doorbell breakpoint: {e}; QEMU: {}",
                machine.messages()
            ))
        })?;
        let mut transport = GdbTransport::of(qemu, Process { stub, machine }, payload, setup);
        transport.doorbell = doorbell;
        transport.at_doorbell = incoming.is_some();
        Ok(transport)
    }

    /// A transport of `process` running `payload`, not in a pool, stopped at its entry, with
    /// nothing of its RAM looked up yet.
    fn of(qemu: &QemuBinary, process: Process, payload: Arc<Payload>, setup: Setup) -> Self {
        GdbTransport {
            process: Some(process),
            pool: None,
            console_from: 0,
            qemu: qemu.clone(),
            version: qemu.version,
            payload,
            setup,
            doorbell: 0,
            at_doorbell: false,
            no_tag_view: None,
            ram: None,
            tag_view: None,
        }
    }

    /// A fresh guest in the QEMU `idle`, reset: its RAM discarded, the machine reset (the
    /// payload loaded again, the vCPU at its entry) and the doorbell's breakpoint set again.
    pub(crate) fn reset(qemu: &QemuBinary, idle: Idle) -> Result<Self, VmmError> {
        let Idle {
            process,
            payload,
            setup,
            ram,
            tag_view,
        } = idle;
        let doorbell = payload.doorbell_store()?;
        let mut transport = GdbTransport::of(qemu, process, payload, setup);
        transport.doorbell = doorbell;
        transport.ram = ram;
        transport.tag_view = tag_view;
        let breakpoint = format!("{doorbell:x},{INSTRUCTION}");
        let failed = |what: &str, e: String| VmmError::Host(format!("resetting QEMU: {what}: {e}"));
        // A software breakpoint is a BRK in guest RAM: taken out while it is there, set again
        // in the payload the reset loads.
        transport
            .stub()
            .request_ok(&format!("z0,{breakpoint}"), REPLY_LIMIT)
            .map_err(|e| failed("removing the doorbell breakpoint", e.to_string()))?;
        let ram = transport.ram_mapping()?;
        pool::discard_ram(transport.machine().pid(), &ram)?;
        // QEMU runs with -no-reboot, which makes any reset its exit: for this one, a reset is
        // a reset.
        let mut qmp = transport.machine().qmp(REPLY_LIMIT)?;
        let reboot = |action: &str| serde_json::json!({ "reboot": action });
        qmp.execute("set-action", reboot("reset"))
            .map_err(|e| failed("set-action", e))?;
        qmp.execute_until_event("system_reset", "RESET", REPLY_LIMIT)
            .map_err(|e| failed("system_reset", e))?;
        qmp.execute("set-action", reboot("shutdown"))
            .map_err(|e| failed("set-action", e))?;
        transport
            .stub()
            .request_ok(&format!("Z0,{breakpoint}"), REPLY_LIMIT)
            .map_err(|e| failed("setting the doorbell breakpoint", e.to_string()))?;
        transport.console_from = transport.machine().console_len();
        Ok(transport)
    }

    pub(crate) fn stub(&mut self) -> &mut Connection {
        &mut self.process.as_mut().expect(LIVE).stub
    }

    pub(crate) fn stub_ref(&self) -> &Connection {
        &self.process.as_ref().expect(LIVE).stub
    }

    pub(crate) fn machine(&self) -> &Machine {
        &self.process.as_ref().expect(LIVE).machine
    }

    pub(crate) fn machine_mut(&mut self) -> &mut Machine {
        &mut self.process.as_mut().expect(LIVE).machine
    }

    /// QEMU's mapping of the guest's RAM, looked up once the guest has written its mailbox.
    pub(crate) fn ram_mapping(&mut self) -> Result<Mapping, VmmError> {
        if self.ram.is_none() {
            self.ram = Some(qemu_ram::find(self.machine().pid())?);
        }
        Ok(self.ram.clone().expect("looked up"))
    }

    /// The runner's tag view of QEMU's memfd RAM, mapped at its first use.
    pub(crate) fn tag_view(&mut self) -> Result<&MemfdTagView, VmmError> {
        if let Some(why) = &self.no_tag_view {
            return Err(why.clone());
        }
        if self.tag_view.is_none() {
            let ram = self.ram_mapping()?;
            self.tag_view = Some(MemfdTagView::open(self.machine().pid(), &ram)?);
        }
        Ok(self.tag_view.as_ref().expect("mapped"))
    }

    /// What the gdbstub announced (`qSupported`).
    pub fn stub_features(&self) -> &[String] {
        self.stub_ref().features()
    }

    /// A failed exchange with the stub, as a step's error.
    pub(crate) fn stub_error(&self, during: &str, error: RspError) -> VmmError {
        match error {
            RspError::Timeout => VmmError::Timeout {
                what: format!("QEMU's gdbstub answering during {during}"),
                seconds: REPLY_LIMIT.as_secs_f64(),
            },
            RspError::Closed => VmmError::Guest(format!(
                "QEMU ended during {during}: {}",
                self.machine().messages()
            )),
            RspError::Refused { packet, reply } => refusal(&packet, &reply, during),
            other => VmmError::Host(format!("QEMU's gdbstub during {during}: {other}")),
        }
    }

    /// Let the guest go on from where it stopped: past the doorbell's store, which must not
    /// run, once it is at the doorbell.
    fn resume(&mut self, what: &str) -> Result<(), VmmError> {
        if self.at_doorbell {
            let next = self.doorbell + INSTRUCTION;
            self.stub()
                .write_register(PC, next, REPLY_LIMIT)
                .map_err(|e| self.stub_error(what, e))?;
        }
        self.at_doorbell = false;
        self.stub()
            .resume(REPLY_LIMIT)
            .map_err(|e| self.stub_error(what, e))
    }

    /// A stop that ends the guest: `why`, as this step's error and every later step's reason.
    fn ended(why: String) -> Stop {
        Stop::Ended {
            error: VmmError::Guest(why.clone()),
            why,
        }
    }
}

/// What the stub's refusal of `packet` with `reply` means. An empty reply is the protocol's "I
/// do not know this packet": the VMM lacks what the lane drives, which says nothing of its
/// conformance, so the check is a skip that says so. Any other refusal is the VMM's error.
pub fn refusal(packet: &str, reply: &str, during: &str) -> VmmError {
    if reply.is_empty() {
        return VmmError::Unsupported(unsupported_packet(packet, during));
    }
    VmmError::Host(format!(
        "QEMU's gdbstub answered `{packet}` with `{reply}` during {during}{}",
        memtags::explain(packet, reply)
    ))
}

/// Why a check cannot run on a gdbstub that answered `packet` with an empty packet.
fn unsupported_packet(packet: &str, during: &str) -> String {
    let name: String = packet
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let name = if name.is_empty() { packet } else { &name };
    format!(
        "QEMU's gdbstub does not support the `{name}` packet (it answered `{packet}` with an \
         empty packet during {during}): the qemu lane drives QEMU through register reads and \
         the memory-tagging packets of QEMU 9.2 or newer; give it one with --qemu PATH or \
         MTE_QEMU"
    )
}

impl Transport for GdbTransport {
    fn read(&mut self, ipa: u64, len: usize) -> Result<Vec<u8>, VmmError> {
        self.stub()
            .read_memory(ipa, len, REPLY_LIMIT)
            .map_err(|e| self.stub_error(&format!("the read of [{ipa:#x}, +{len:#x})"), e))
    }

    fn write(&mut self, ipa: u64, bytes: &[u8]) -> Result<(), VmmError> {
        self.stub()
            .write_memory(ipa, bytes, REPLY_LIMIT)
            .map_err(|e| {
                let len = bytes.len();
                self.stub_error(&format!("the write of [{ipa:#x}, +{len:#x})"), e)
            })
    }

    fn run_to_doorbell(&mut self, what: &str, deadline: Duration) -> Result<Stop, VmmError> {
        self.resume(what)?;
        match self.stub().wait_for_stop(Instant::now() + deadline) {
            Ok(StopReply::Signal(SIGTRAP)) => {
                let pc = self
                    .stub()
                    .read_register(PC, REPLY_LIMIT)
                    .map_err(|e| self.stub_error(what, e))?;
                if pc != self.doorbell {
                    return Ok(Self::ended(format!(
                        "the guest stopped at PC {pc:#x} during {what}, not at the doorbell \
                         ({:#x})",
                        self.doorbell
                    )));
                }
                self.at_doorbell = true;
                Ok(Stop::Doorbell)
            }
            Ok(StopReply::Signal(signal)) => Ok(Self::ended(format!(
                "the guest stopped with signal {signal} during {what}"
            ))),
            // SYSTEM_OFF ends QEMU: the stub reports the exit, or only closes the connection.
            Ok(StopReply::Exited(0)) => Ok(Stop::PoweredOff),
            Err(RspError::Closed) if self.machine_mut().exited_cleanly(REPLY_LIMIT) => {
                Ok(Stop::PoweredOff)
            }
            Ok(StopReply::Exited(_) | StopReply::Terminated(_)) | Err(RspError::Closed) => {
                let how = self.machine_mut().ended_how(REPLY_LIMIT);
                Ok(Self::ended(format!(
                    "QEMU ended during {what} ({}): {}",
                    how.as_deref().unwrap_or("still running"),
                    self.machine().messages()
                )))
            }
            Err(RspError::Timeout) => {
                // Stop the vCPU, then the process: nothing of the guest is needed any more.
                let _ = self.stub().interrupt();
                self.machine_mut().kill();
                Ok(Stop::Ended {
                    error: VmmError::Timeout {
                        what: what.into(),
                        seconds: deadline.as_secs_f64(),
                    },
                    why: format!("it was stopped by its deadline during {what}"),
                })
            }
            Err(e) => Ok(Stop::Ended {
                error: self.stub_error(what, e),
                why: format!("an error during {what}"),
            }),
        }
    }

    fn console(&self) -> String {
        self.machine().console_from(self.console_from)
    }

    fn other_vcpu(&mut self, _index: usize) -> Result<Self, VmmError> {
        Err(VmmError::Unsupported(
            "guests of several vCPUs: QEMU's gdbstub stops every vCPU when one reaches a \
             breakpoint (all-stop mode), so each vCPU cannot run to its own doorbell while the \
             others run; the KVM lanes, where the runner is the VMM, take them"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_the_stub_does_not_know_is_a_skip_not_a_fail() {
        match refusal("p20", "", "boot") {
            VmmError::Unsupported(why) => {
                assert!(why.starts_with("QEMU's gdbstub does not support the `p` packet (it answered `p20` with an empty packet during boot)"), "{why}");
                assert!(why.contains("9.2 or newer"), "{why}");
            }
            other => panic!("unexpected {other:?}"),
        }
        match refusal("qMemTags:41000000,1:1", "E04", "a tag read") {
            VmmError::Host(why) => assert!(why.ends_with("(E04: not tagged memory)"), "{why}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
