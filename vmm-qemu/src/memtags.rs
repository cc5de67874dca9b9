//! The memory-tagging packets (`qMemTags`, `QMemTags`, type 1: allocation tags) in the shapes
//! QEMU's gdbstub handles correctly:
//!
//! - a read covers exactly one granule (length 1): with any other length the stub answers
//!   `E02` and then sends the tag anyway, two replies to one packet, which would shift every
//!   later answer by one;
//! - a write stays within one target page (4 KiB on virt with `-cpu max`), else `E03`;
//! - a write of several tags starts on an even granule: the stub walks the packed tag bytes
//!   (two tags a byte) from the start granule's byte, so from an odd granule it puts the tags
//!   on the wrong granules, silently.
//!
//! Addresses are virtual: the stub translates them with the guest's own stage 1 tables, which
//! the payload's identity map makes equal to IPAs. `E04` means the granule is not tagged memory
//! (a guest without MTE, an untagged mapping, no memory).

use std::ops::Range;

use mte_protocol::{GRANULE, PAGE_SIZE};

use super::gdb::{hex, unhex};

/// The packet that reads the allocation tag of the granule holding `address`.
pub fn read_packet(address: u64) -> String {
    format!("qMemTags:{address:x},1:1")
}

/// The tag in a read's reply: `m` and one hex byte.
pub fn parse_read_reply(reply: &str) -> Option<u8> {
    match unhex(reply.strip_prefix('m')?)?[..] {
        [tag] => Some(tag),
        _ => None,
    }
}

/// The packet that sets the allocation tags of consecutive granules from `address`.
pub fn write_packet(address: u64, tags: &[u8]) -> String {
    let len = tags.len() as u64 * GRANULE;
    format!("QMemTags:{address:x},{len:x}:1:{}", hex(tags))
}

/// What an error reply to a memory-tagging packet means, to append to its report; empty for
/// other packets and replies.
pub fn explain(packet: &str, reply: &str) -> &'static str {
    if !packet.starts_with("qMemTags:") && !packet.starts_with("QMemTags:") {
        return "";
    }
    match reply {
        "E02" => " (E02: a length or tag type the stub does not take)",
        "E03" => " (E03: a write across a page, or a tag type the stub does not take)",
        "E04" => " (E04: not tagged memory)",
        _ => "",
    }
}

/// Split setting `count` tags from the granule-aligned `address` into writes the stub takes:
/// at most `max_tags` each, each within one page, and a write of several tags starting on an
/// even granule. Each write is its address and the range of tag indices it carries.
pub fn write_chunks(address: u64, count: usize, max_tags: usize) -> Vec<(u64, Range<usize>)> {
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < count {
        let at = address + first as u64 * GRANULE;
        let odd_granule = (at / GRANULE) % 2 == 1;
        let left_in_page = ((PAGE_SIZE - at % PAGE_SIZE) / GRANULE) as usize;
        let len = if odd_granule {
            1
        } else {
            (count - first).min(left_in_page).min(max_tags.max(1))
        };
        chunks.push((at, first..first + len));
        first += len;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_one_granule_and_their_reply_one_tag() {
        assert_eq!(read_packet(0x4100_0010), "qMemTags:41000010,1:1");
        assert_eq!(parse_read_reply("m0a"), Some(0xa));
        assert_eq!(parse_read_reply("m0a0b"), None);
        assert_eq!(parse_read_reply("E04"), None);
        assert_eq!(parse_read_reply("m"), None);
    }

    #[test]
    fn error_replies_to_tag_packets_are_explained() {
        assert!(explain("qMemTags:0,1:1", "E04").contains("not tagged"));
        assert_eq!(explain("m0,4", "E04"), "");
        assert_eq!(explain("QMemTags:0,10:1:01", "OK"), "");
    }

    #[test]
    fn writes_carry_a_byte_length_and_one_hex_byte_a_tag() {
        assert_eq!(
            write_packet(0x4100_8000, &[1, 0xf, 3]),
            "QMemTags:41008000,30:1:010f03"
        );
    }

    #[test]
    fn writes_stay_in_a_page_and_start_on_even_granules() {
        // Page aligned: whole pages, at most `max_tags` a write.
        assert_eq!(
            write_chunks(0x4100_0000, 512, 1000),
            [(0x4100_0000, 0..256), (0x4100_1000, 256..512)]
        );
        assert_eq!(
            write_chunks(0x4100_0000, 256, 100),
            [
                (0x4100_0000, 0..100),
                (0x4100_0640, 100..200),
                (0x4100_0c80, 200..256)
            ]
        );
        // An odd start goes alone; the page end still splits.
        assert_eq!(
            write_chunks(0x4100_0ff0, 3, 1000),
            [(0x4100_0ff0, 0..1), (0x4100_1000, 1..3)]
        );
        assert_eq!(
            write_chunks(0x4100_0010, 4, 1000),
            [(0x4100_0010, 0..1), (0x4100_0020, 1..4)]
        );
        // An odd `max_tags` never leaves a later write on an odd granule with company.
        for (at, range) in write_chunks(0x4100_0000, 600, 7) {
            assert!(
                (at / GRANULE) % 2 == 0 || range.len() == 1,
                "{at:#x} {range:?}"
            );
            assert_eq!(
                at / PAGE_SIZE,
                (at + (range.len() as u64 - 1) * GRANULE) / PAGE_SIZE
            );
        }
        assert!(write_chunks(0x4100_0000, 0, 10).is_empty());
    }
}
