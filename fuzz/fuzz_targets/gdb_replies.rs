//! What QEMU's gdbstub sends the qemu lane's client: packets (`$payload#cs`) with escapes and
//! run lengths, acknowledgements, and in them stop replies, hex data, feature lists and
//! memory-tag replies. Whatever arrives, split wherever a socket splits it, is a packet, an
//! acknowledgement or a protocol error, never a panic; and what the readers accept is what the
//! protocol allows.
//!
//! The input's first byte says how the rest arrives: its low 7 bits the size of each read
//! (1 to 128 bytes), its top bit whether an acknowledgement is expected before each packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mte_vmm_qemu::gdb::{
    checksum, decode, frame, hex, parse_features, parse_stop_reply, unhex, Received, StopReply,
};
use mte_vmm_qemu::memtags;

fuzz_target!(|input: &[u8]| {
    let Some((&how, bytes)) = input.split_first() else {
        return;
    };
    let read_size = usize::from(how & 0x7f) + 1;
    let acknowledged = how & 0x80 != 0;
    receive(bytes, read_size, acknowledged);
    // The same bytes with checksums that hold, so that mutated packets get past them.
    let repaired = with_checksums_repaired(bytes);
    if repaired != bytes {
        receive(&repaired, read_size, acknowledged);
    }
    // Any payload, framed as the client frames it, decodes back to itself.
    let framed = frame(bytes);
    let body = &framed[1..framed.len() - 3];
    assert_eq!(decode(body).as_deref(), Ok(bytes));
});

/// `bytes` with the two hex digits after each packet's `#` made its checksum.
fn with_checksums_repaired(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let mut at = 0;
    while let Some(start) = bytes[at..].iter().position(|&b| b == b'$').map(|p| at + p) {
        let Some(end) = bytes[start..]
            .iter()
            .position(|&b| b == b'#')
            .map(|p| start + p)
        else {
            break;
        };
        if end + 3 > bytes.len() {
            break;
        }
        let sum = format!("{:02x}", checksum(&bytes[start + 1..end]));
        bytes[end + 1..end + 3].copy_from_slice(sum.as_bytes());
        at = end + 3;
    }
    bytes
}

/// Take `bytes` as the client does, `read_size` bytes a read.
fn receive(bytes: &[u8], read_size: usize, acknowledged: bool) {
    let mut received = Received::default();
    'reads: for read in bytes.chunks(read_size) {
        received.extend(read);
        loop {
            if acknowledged && received.take_acknowledgement().is_err() {
                break 'reads;
            }
            match received.take_packet() {
                Ok(Some(packet)) => reply(&packet),
                Ok(None) => break,
                Err(_) => break 'reads,
            }
        }
    }
}

/// Every reader of a reply, with what it may accept.
fn reply(packet: &str) {
    if let Some(stop) = parse_stop_reply(packet) {
        let code = &packet[1..3];
        assert!(code.bytes().all(|b| b.is_ascii_hexdigit()), "{packet:?}");
        let (StopReply::Signal(n) | StopReply::Exited(n) | StopReply::Terminated(n)) = stop;
        assert_eq!(format!("{n:02x}"), code.to_ascii_lowercase());
    }
    if let Some(bytes) = unhex(packet) {
        assert!(packet.bytes().all(|b| b.is_ascii_hexdigit()), "{packet:?}");
        assert_eq!(hex(&bytes), packet.to_ascii_lowercase());
    }
    let (features, _packet_size) = parse_features(packet);
    assert!(!features.is_empty());
    if let Some(tag) = memtags::parse_read_reply(packet) {
        assert_eq!(packet.len(), 3, "{packet:?}");
        let _ = tag;
    }
    let _ = memtags::explain("qMemTags:0,1:1", packet);
}
