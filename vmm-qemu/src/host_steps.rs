//! The host steps of the QEMU backend: the host's view of tags through the gdbstub's
//! memory-tagging packets, and QEMU's own migration (QMP `migrate` to a file, `-incoming` in a
//! new QEMU). The steps that need the VMM's own mapping of guest RAM are not QEMU's to offer.

use std::time::{Duration, Instant};

use mte_protocol::{granules, GRANULE};
use mte_suites::vmm::{Guest, VmmError, VmmMigration};
use mte_vmm::HostSteps;

use crate::gdb::RspError;
use crate::memtags;
use crate::transport::{GdbTransport, MIGRATION_LIMIT, REPLY_LIMIT};
use crate::QemuGuest;

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

impl GdbTransport {
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

    /// Migrate the guest, stopped at its doorbell, with QEMU's own migration: to a file, then
    /// into a new QEMU started with `-incoming` on it. The guest goes on in the new QEMU, at
    /// the same doorbell; the old one is gone.
    fn migrate_through_file(&mut self) -> Result<VmmMigration, VmmError> {
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
        let destination = GdbTransport::start(
            &self.qemu,
            std::sync::Arc::clone(&self.payload),
            self.mte,
            Some(&file),
        )?;
        // The source (and its directory, with the file) goes once the destination has loaded.
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
}

impl HostSteps for GdbTransport {
    fn host_read_tags(guest: &mut QemuGuest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        guest.still_running("reading tags")?;
        let stub = guest.transport_mut();
        stub.require_memory_tagging()?;
        require_granules(ipa, len)?;
        let during = format!("the host's read of the tags of [{ipa:#x}, +{len:#x})");
        (0..granules(len) as u64)
            .map(|granule| {
                let packet = memtags::read_packet(ipa + granule * GRANULE);
                let reply = stub
                    .stub
                    .request(&packet, REPLY_LIMIT)
                    .map_err(|e| stub.stub_error(&during, e))?;
                memtags::parse_read_reply(&reply)
                    .ok_or_else(|| stub.stub_error(&during, RspError::Refused { packet, reply }))
            })
            .collect()
    }

    fn host_write_tags(guest: &mut QemuGuest, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        guest.still_running("writing tags")?;
        let stub = guest.transport_mut();
        stub.require_memory_tagging()?;
        let len = tags.len() as u64 * GRANULE;
        require_granules(ipa, len)?;
        let during = format!("the host's write of the tags of [{ipa:#x}, +{len:#x})");
        let max_tags = stub.stub.hex_bytes_per_packet();
        for (address, range) in memtags::write_chunks(ipa, tags.len(), max_tags) {
            let packet = memtags::write_packet(address, &tags[range]);
            stub.stub
                .request_ok(&packet, REPLY_LIMIT)
                .map_err(|e| stub.stub_error(&during, e))?;
        }
        Ok(())
    }

    fn migrate_by_vmm(mut guest: QemuGuest) -> Result<(Box<dyn Guest>, VmmMigration), VmmError> {
        guest.still_running("migrating")?;
        let migration = guest.transport_mut().migrate_through_file()?;
        Ok((Box::new(guest), migration))
    }
}
