//! A guest saved into a stream held in memory, and restored from one: the stop-and-copy stream
//! without a destination waiting, to be carried elsewhere (to the run's next kernel). Pages of
//! zeros are left out, since the restoring VM's pages are zero until written.

use std::time::Duration;

use mte_protocol::{GuestIds, RAM_IPA};
use mte_suites::migration_plan::{MigrationReport, SavedStream, SentPage, StreamFault};
use mte_suites::vmm::VmmError;

use super::arrived::MigratedGuest;
use super::in_process::{pause, resume_with, Carried};
use super::receive::{receive_broken, stream_error};
use super::send::Sender;
use super::source::SourceMemory;
use super::stream::{Decoder, Record};
use super::vcpu_state;
use crate::KvmGuest;

/// Pause `source` at its doorbell and write it whole into bytes, broken on the way as `fault`
/// says; the source is gone after. The page records come back decoded from the bytes, so that
/// what is reported is what a reader will find.
pub fn save(mut source: KvmGuest, fault: Option<StreamFault>) -> Result<SavedStream, VmmError> {
    let paused = pause(&mut source)?;
    let memory = SourceMemory::of(&source.transport().vm);
    let mut sender = Sender::new(Vec::new(), memory.page_size, fault)?.leaving_out_zero_pages();
    sender.memory(RAM_IPA, memory.size)?;
    sender.send_all(&memory, RAM_IPA, 0)?;
    sender.registers(paused.registers)?;
    sender.end()?;
    let mut saved = SavedStream {
        bytes: sender.into_inner(),
        page_size: memory.page_size,
        ..Default::default()
    };
    read_back_pages(&mut saved)?;
    Ok(saved)
}

/// Fill in the page records of `saved`, and the tags of those that carry some, from its bytes.
fn read_back_pages(saved: &mut SavedStream) -> Result<(), VmmError> {
    let mut decoder = Decoder::new(&saved.bytes[..]).map_err(stream_error)?;
    while let Some(record) = decoder.next_record().map_err(stream_error)? {
        if let Record::Page(page) = record {
            saved.pages.push(SentPage {
                ipa: page.ipa,
                round: 0,
                data_bytes: page.data_bytes() as u32,
                tag_bytes: page.tag_bytes() as u32,
            });
            if let Some(tags) = page.tags {
                saved.tags.insert(page.ipa, tags);
            }
        }
    }
    decoder.expect_eof().map_err(stream_error)
}

/// A new VM from a saved stream, `fault` breaking its pages as they are read; the guest resumes
/// after the doorbell it was saved at, under `deadline`. The stream may come from another
/// kernel: registers this one refuses keep its values, and the report names them.
pub fn restore(
    stream: &[u8],
    fault: Option<StreamFault>,
    deadline: Duration,
) -> Result<MigratedGuest, VmmError> {
    let arrival = receive_broken(stream, true, fault)?;
    let carried = Carried {
        deadline,
        console: Vec::new(),
        // The stream carries what the guest has, not what it read at boot.
        ids: GuestIds::default(),
    };
    let (inner, (differing, refused)) = resume_with(arrival.vm, carried, |vcpu| {
        vcpu_state::restore_across_kernels(vcpu, &arrival.registers)
    })?;
    let report = MigrationReport {
        how: "restored from a saved stream into a new VM".into(),
        stream_bytes: arrival.stats.bytes,
        tag_write_time: arrival.stats.tag_write_time,
        tag_write_bytes: arrival.stats.tag_write_bytes,
        registers: arrival.registers.len(),
        registers_differing: differing,
        registers_refused: refused,
        ..Default::default()
    };
    Ok(MigratedGuest {
        server: None,
        inner,
        report,
    })
}
