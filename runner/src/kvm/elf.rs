//! A payload ready to be copied into guest RAM, from its checked ELF image.

use mte_protocol::elf::{parse_payload, PT_LOAD};

/// A loadable segment: bytes to copy; the rest of its memory size stays zero (fresh RAM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub ipa: u64,
    pub data: Vec<u8>,
}

/// A parsed payload, shared by every VM that boots it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub entry: u64,
    pub segments: Vec<Segment>,
}

impl Payload {
    /// Parse and check against the guest memory layout (see `mte_protocol::elf`).
    pub fn parse(image: &[u8]) -> Result<Self, String> {
        let elf = parse_payload(image).map_err(|e| e.to_string())?;
        let segments = elf
            .program_headers()
            .filter(|h| h.kind == PT_LOAD)
            .map(|h| Segment {
                ipa: h.paddr,
                data: elf
                    .segment_data(&h)
                    .expect("checked by parse_payload")
                    .to_vec(),
            })
            .collect();
        Ok(Payload {
            entry: elf.entry,
            segments,
        })
    }
}
