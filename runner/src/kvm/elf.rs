//! A payload ready to be copied into guest RAM, from its checked ELF image.

use mte_protocol::elf::{Elf, PT_LOAD};

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
    /// The loadable segments and entry point of an image already checked against the guest
    /// memory layout (by `mte_protocol::elf::parse_payload`).
    pub fn from_elf(elf: &Elf<'_>) -> Self {
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
        Payload {
            entry: elf.entry,
            segments,
        }
    }
}
