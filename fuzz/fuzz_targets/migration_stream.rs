//! The reference migration engine's stream as a destination reads it (a stream saved on
//! another kernel comes from that kernel's runner): each record is what the format says or an
//! error naming the record, never a panic or an allocation a length field asked for. What the
//! decoder lets through keeps the promises the receiving VM relies on, and a whole stream
//! written again reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mte_vmm_kvm::migration_engine::stream::{register_size, Decoder, Encoder, Record, GRANULE};

/// The format's header and record frame (see the stream module), for repairing checksums.
const HEADER_LEN: usize = 24;
const FRAME_LEN: usize = 12;

fuzz_target!(|bytes: &[u8]| {
    decode(bytes);
    // The same bytes with checksums that hold, so that mutations get past the CRC-32 of the
    // header and of each record to what they guard.
    let repaired = with_checksums_repaired(bytes);
    if repaired != bytes {
        decode(&repaired);
    }
});

/// `bytes` with the header's CRC and each whole record's made to hold, records found by their
/// length fields.
fn with_checksums_repaired(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    if bytes.len() < HEADER_LEN {
        return bytes;
    }
    let crc = crc32fast::hash(&bytes[..20]);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    let mut at = HEADER_LEN;
    while at + FRAME_LEN <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        let end = at + FRAME_LEN + len as usize;
        if end + 4 > bytes.len() {
            break;
        }
        let crc = crc32fast::hash(&bytes[at..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        at = end + 4;
    }
    bytes
}

/// Read a whole stream as a destination does, checking what it promises.
fn decode(bytes: &[u8]) {
    let Ok(mut decoder) = Decoder::new(bytes) else {
        return;
    };
    let page_size = decoder.header().page_size;
    let mut memory = None;
    let mut records = Vec::new();
    loop {
        match decoder.next_record() {
            Ok(Some(record)) => {
                check(&record, page_size, &mut memory);
                records.push(record);
            }
            Ok(None) => break,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
    }
    if decoder.expect_eof().is_err() {
        return;
    }
    let mut encoder = Encoder::new(Vec::new(), page_size).expect("writes to memory");
    for record in &records[..records.len() - 1] {
        encoder.write(record).expect("writes to memory");
    }
    encoder.end().expect("writes to memory");
    let again = encoder.into_inner();
    let mut decoder = Decoder::new(&again[..]).expect("a stream written again reads");
    let mut read_again = Vec::new();
    while let Some(record) = decoder.next_record().expect("a stream written again reads") {
        read_again.push(record);
    }
    assert_eq!(read_again, records);
}

/// What the receiving VM takes for granted of a record the decoder returned.
fn check(record: &Record, page_size: u32, memory: &mut Option<(u64, u64)>) {
    let page = u64::from(page_size);
    match record {
        Record::Memory { ipa, size, .. } => *memory = Some((*ipa, *size)),
        Record::Page(p) => {
            let (base, size) = memory.expect("pages come after the Memory record");
            assert_eq!(p.ipa % page, 0, "page aligned");
            // The whole page lies in guest RAM: the destination copies a page at its index.
            let offset = p
                .ipa
                .checked_sub(base)
                .expect("a page above the RAM's base");
            assert!(
                offset.checked_add(page).is_some_and(|end| end <= size),
                "page {:#x} of RAM {base:#x}+{size:#x}",
                p.ipa
            );
            if let Some(data) = &p.data {
                assert_eq!(data.len(), page_size as usize);
            }
            if let Some(tags) = &p.tags {
                assert_eq!(tags.len(), (page_size / GRANULE) as usize);
                assert!(tags.iter().all(|&t| t < 16));
            }
        }
        Record::Registers(registers) => {
            for r in registers {
                assert_eq!(r.value.len(), register_size(r.id));
            }
        }
        Record::RoundEnd { .. } | Record::End { .. } => {}
    }
}
