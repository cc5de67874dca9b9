//! The host steps of the QEMU backend: the host's view of tags (under TCG the gdbstub's
//! memory-tagging packets; under KVM the runner's PROT_MTE mapping of QEMU's memfd RAM), the
//! gdbstub's tag packets as a step of their own, QEMU's own migration (QMP `migrate` to a file,
//! `-incoming` in a new QEMU), and under KVM what the host kernel does to QEMU's guest RAM
//! from outside QEMU (process_madvise, its page map, KSM, swap).

use std::time::{Duration, Instant};

use mte_protocol::{granules, GRANULE, RAM_IPA, RAM_SIZE};
use mte_suites::host_mm::{Advice, Backing, KsmKnob, KsmState, PageState, SwapDevice};
use mte_suites::vmm::{Guest, StubExchange, StubTagPackets, VmmError, VmmMigration};
use mte_vmm::{host_kernel, HostSteps};

use crate::expectations::{self, Step};
use crate::gdb::RspError;
use crate::machine::{Accel, Ram};
use crate::transport::{GdbTransport, MIGRATION_LIMIT, REPLY_LIMIT};
use crate::{memtags, qemu_ram, tag_view, QemuGuest};

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

/// The offset of `[ipa, ipa + len)` in guest RAM.
fn ram_offset(ipa: u64, len: u64) -> Result<u64, VmmError> {
    if ipa < RAM_IPA || ipa + len > RAM_IPA + RAM_SIZE {
        return Err(VmmError::Host(format!(
            "[{ipa:#x}, +{len:#x}) is not inside guest RAM"
        )));
    }
    Ok(ipa - RAM_IPA)
}

/// What only QEMU under KVM offers, asked of QEMU under TCG.
fn kvm_only(step: &str) -> VmmError {
    VmmError::Unsupported(format!(
        "{step}: under TCG QEMU keeps the guest's tags in its own memory, not in the host \
         kernel's pages (the qemu-kvm lane takes this step)"
    ))
}

impl GdbTransport {
    /// The host's tag steps through the stub need its memory-tagging packets.
    fn require_memory_tagging(&self) -> Result<(), VmmError> {
        if self.stub_ref().supports("memory-tagging") {
            Ok(())
        } else if self.setup.mte {
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

    /// The tags of `[ipa, ipa + len)` through the gdbstub, a granule a packet.
    fn stub_read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        self.require_memory_tagging()?;
        let during = format!("the host's read of the tags of [{ipa:#x}, +{len:#x})");
        (0..granules(len) as u64)
            .map(|granule| {
                let packet = memtags::read_packet(ipa + granule * GRANULE);
                let reply = self
                    .stub()
                    .request(&packet, REPLY_LIMIT)
                    .map_err(|e| self.stub_error(&during, e))?;
                memtags::parse_read_reply(&reply)
                    .ok_or_else(|| self.stub_error(&during, RspError::Refused { packet, reply }))
            })
            .collect()
    }

    /// Set the tags of the granules from `ipa` on through the gdbstub.
    fn stub_write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        self.require_memory_tagging()?;
        let len = tags.len() as u64 * GRANULE;
        let during = format!("the host's write of the tags of [{ipa:#x}, +{len:#x})");
        let max_tags = self.stub_ref().hex_bytes_per_packet();
        for (address, range) in memtags::write_chunks(ipa, tags.len(), max_tags) {
            let packet = memtags::write_packet(address, &tags[range]);
            self.stub()
                .request_ok(&packet, REPLY_LIMIT)
                .map_err(|e| self.stub_error(&during, e))?;
        }
        Ok(())
    }

    /// Send `packet` to the stub: its reply, or how QEMU ended on it (with what the
    /// expectations know of that, for this QEMU).
    fn exchange(&mut self, packet: String) -> StubExchange {
        let reply = match self.stub().request(&packet, REPLY_LIMIT) {
            Ok(reply) => Ok(reply),
            Err(RspError::Closed) => Err(match self.machine_mut().ended_how(REPLY_LIMIT) {
                Some(how) => {
                    let known =
                        expectations::lookup(Step::StubTagPackets, self.setup.accel, self.version)
                            .map(|e| format!("; known for {}: {}", e.versions(), e.source))
                            .unwrap_or_default();
                    format!("QEMU {how} ({}){known}", self.machine().messages())
                }
                None => "QEMU closed the gdbstub's connection".into(),
            }),
            Err(e) => Err(e.to_string()),
        };
        StubExchange { packet, reply }
    }

    /// Migrate the guest, stopped at its doorbell, with QEMU's own migration: to a file, then
    /// into a new QEMU started with `-incoming` on it. The guest goes on in the new QEMU, at
    /// the same doorbell; the old one is gone. A refusal the expectations document for this
    /// QEMU is that, quoting QEMU.
    fn migrate_through_file(&mut self) -> Result<VmmMigration, VmmError> {
        if !self.at_doorbell {
            return Err(VmmError::Host(
                "a guest is migrated at a doorbell, where its state is the protocol's".into(),
            ));
        }
        let started = Instant::now();
        let file = self.machine().migration_file();
        let host = |what: &str, e: String| VmmError::Host(format!("{what}: {e}"));
        let mut qmp = self.machine().qmp(REPLY_LIMIT)?;
        let uri = format!("file:{}", file.display());
        if let Err(refusal) = qmp.execute("migrate", serde_json::json!({ "uri": uri })) {
            let blocked = qmp
                .execute("query-migrate", serde_json::json!({}))
                .ok()
                .and_then(|status| status.get("blocked-reasons").cloned());
            return Err(self.refusal(Step::Migrate, &refusal, blocked));
        }
        let status = qmp
            .wait_for_migration(MIGRATION_LIMIT)
            .map_err(|e| host("the outgoing migration", e))?;
        let figure = |key: &str| status.get(key).and_then(serde_json::Value::as_u64);
        let bytes = std::fs::metadata(&file)
            .map(|m| m.len())
            .map_err(|e| host("the migration file", e.to_string()))?;
        let destination = GdbTransport::start(
            &self.qemu,
            std::sync::Arc::clone(&self.payload),
            self.setup,
            Some(&file),
        )?;
        // The source (and its directory, with the file) goes once the destination has loaded,
        // and never to a pool: its guest lives on in the destination.
        self.pool = None;
        *self = destination;
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

    /// QEMU's refusal of `step` as an error: documented (an xfail) where the expectations say
    /// this QEMU refuses it with these words, else a failure of the VMM.
    fn refusal(&self, step: Step, refusal: &str, blocked: Option<serde_json::Value>) -> VmmError {
        let blocked = blocked
            .map(|b| format!("; query-migrate's blocked-reasons: {b}"))
            .unwrap_or_default();
        let version = self.version;
        match expectations::lookup(step, self.setup.accel, version) {
            Some(known) if refusal.contains(known.message) => VmmError::Documented(format!(
                "QEMU {version} (-accel {}) refuses: {refusal}{blocked}; documented for {}: {}",
                self.setup.accel.name(),
                known.versions(),
                known.source
            )),
            _ => VmmError::Host(format!("QEMU {version} refused: {refusal}{blocked}")),
        }
    }

    /// Under KVM: the offset of `[ipa, ipa + len)` in QEMU's RAM mapping, and the mapping.
    fn kvm_ram(
        &mut self,
        step: &str,
        ipa: u64,
        len: u64,
    ) -> Result<(qemu_ram::Mapping, u64), VmmError> {
        if self.setup.accel != Accel::Kvm {
            return Err(kvm_only(step));
        }
        let offset = ram_offset(ipa, len)?;
        Ok((self.ram_mapping()?, offset))
    }
}

impl HostSteps for GdbTransport {
    fn host_read_tags(guest: &mut QemuGuest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        guest.still_running("reading tags")?;
        require_granules(ipa, len)?;
        let qemu = guest.transport_mut();
        match qemu.setup.accel {
            Accel::Tcg => qemu.stub_read_tags(ipa, len),
            Accel::Kvm => qemu.tag_view()?.read(ipa, len),
        }
    }

    fn host_write_tags(guest: &mut QemuGuest, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        guest.still_running("writing tags")?;
        require_granules(ipa, tags.len() as u64 * GRANULE)?;
        let qemu = guest.transport_mut();
        match qemu.setup.accel {
            Accel::Tcg => qemu.stub_write_tags(ipa, tags),
            Accel::Kvm => qemu.tag_view()?.write(ipa, tags),
        }
    }

    fn host_tag_view(guest: &QemuGuest) -> Option<String> {
        Some(match guest.transport().setup.accel {
            Accel::Tcg => "QEMU's gdbstub, qMemTags and QMemTags packets".into(),
            Accel::Kvm => tag_view::DESCRIPTION.into(),
        })
    }

    fn stub_tag_packets(
        guest: &mut QemuGuest,
        probe: Option<(u64, u8)>,
    ) -> Result<StubTagPackets, VmmError> {
        guest.still_running("the gdbstub's tag packets")?;
        let qemu = guest.transport_mut();
        let advertised = qemu.stub_ref().supports("memory-tagging");
        let features = qemu.stub_ref().features().join(";");
        let mut exchanges = Vec::new();
        if let (true, Some((ipa, tag))) = (advertised, probe) {
            let packets = [
                memtags::read_packet(ipa),
                memtags::write_packet(ipa, &[tag]),
                format!("qIsAddressTagged:{ipa:x}"),
            ];
            for packet in packets {
                let sent = match exchanges.last() {
                    Some(StubExchange { reply: Err(_), .. }) => StubExchange {
                        packet,
                        reply: Err("not sent: QEMU had ended".into()),
                    },
                    _ => qemu.exchange(packet),
                };
                exchanges.push(sent);
            }
        }
        Ok(StubTagPackets {
            advertised,
            features,
            exchanges,
        })
    }

    /// Not told: the checks that ask work on the VMM's own mapping of guest RAM (madvise,
    /// mprotect, fork, a second VM on it), which QEMU owns here. They skip at once, rather than
    /// at the step QEMU cannot take from outside.
    fn ram_backing(guest: &QemuGuest) -> Result<Backing, VmmError> {
        let ram = match guest.transport().setup.ram {
            Ram::Private => "its private RAM",
            Ram::SharedMemfd => "a shared memfd",
        };
        Err(VmmError::Unsupported(format!(
            "steps on the VMM's own mapping of guest RAM: QEMU maps the guest's RAM ({ram}) \
             itself here; the qemu:: checks page out and merge QEMU's guest RAM from outside"
        )))
    }

    fn madvise(guest: &mut QemuGuest, ipa: u64, len: u64, advice: Advice) -> Result<(), VmmError> {
        guest.still_running("madvise")?;
        let qemu = guest.transport_mut();
        let (ram, offset) = qemu.kvm_ram(advice.name(), ipa, len)?;
        let pid = qemu.machine().pid();
        if advice == Advice::Mergeable {
            // QEMU gives its RAM to KSM itself (mem-merge=on); from outside it can only be seen.
            return match qemu_ram::mergeable(pid, &ram)? {
                true => Ok(()),
                false => Err(VmmError::Unsupported(
                    "QEMU did not make its guest RAM mergeable (no `mg` in its smaps VmFlags; \
                     -machine mem-merge=off?), and no other process can"
                        .into(),
                )),
            };
        }
        qemu_ram::process_madvise(pid, &ram, offset, len, advice)
    }

    fn page_states(guest: &mut QemuGuest, ipa: u64, len: u64) -> Result<Vec<PageState>, VmmError> {
        let qemu = guest.transport_mut();
        let (ram, offset) = qemu.kvm_ram("the page map of QEMU's guest RAM", ipa, len)?;
        qemu_ram::page_states(qemu.machine().pid(), &ram, offset, len)
    }

    fn swap_devices(guest: &QemuGuest) -> Result<Vec<SwapDevice>, VmmError> {
        match guest.transport().setup.accel {
            Accel::Kvm => host_kernel::swap_devices(),
            Accel::Tcg => Err(kvm_only("the host's swap")),
        }
    }

    fn vmstat(guest: &QemuGuest) -> Result<Vec<(String, u64)>, VmmError> {
        match guest.transport().setup.accel {
            Accel::Kvm => host_kernel::vmstat(),
            Accel::Tcg => Err(kvm_only("the host's /proc/vmstat")),
        }
    }

    fn ksm_state(guest: &QemuGuest) -> Result<KsmState, VmmError> {
        match guest.transport().setup.accel {
            Accel::Kvm => host_kernel::ksm_state(),
            Accel::Tcg => Err(kvm_only("the host's KSM")),
        }
    }

    fn ksm_set(guest: &mut QemuGuest, knob: KsmKnob, value: u64) -> Result<(), VmmError> {
        match guest.transport().setup.accel {
            Accel::Kvm => host_kernel::ksm_set(knob, value),
            Accel::Tcg => Err(kvm_only("the host's KSM")),
        }
    }

    fn migrate_by_vmm(mut guest: QemuGuest) -> Result<(Box<dyn Guest>, VmmMigration), VmmError> {
        guest.still_running("migrating")?;
        let migration = guest.transport_mut().migrate_through_file()?;
        Ok((Box::new(guest), migration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_outside_guest_ram_are_refused() {
        assert_eq!(ram_offset(RAM_IPA + 0x1000, 0x1000).unwrap(), 0x1000);
        assert!(ram_offset(RAM_IPA - 0x1000, 0x1000).is_err());
        assert!(ram_offset(RAM_IPA + RAM_SIZE - 0x1000, 0x2000).is_err());
        assert!(require_granules(RAM_IPA, 32).is_ok());
        assert!(require_granules(RAM_IPA + 8, 32).is_err());
    }

    #[test]
    fn kvm_only_steps_say_which_lane_takes_them() {
        let why = kvm_only("the host's KSM").to_string();
        assert!(why.contains("qemu-kvm lane"), "{why}");
    }
}
