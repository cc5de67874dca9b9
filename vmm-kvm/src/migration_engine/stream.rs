//! The migration stream: what goes from the source VMM to the destination, byte for byte.
//!
//! A header, then records. The header is the magic `MTEMIGR\0`, the format version (u16), a
//! reserved u16 (0), the page size and the tag granule (u32 each) and a CRC-32 of those 20
//! bytes. Each record is a frame of kind (u8), flags (u8), reserved (u16, 0), sequence number
//! (u32, counting records from 0), payload length (u32), the payload, and a CRC-32 of frame and
//! payload. All integers are little-endian. The records:
//!
//! | kind | record      | payload                                                           |
//! |------|-------------|-------------------------------------------------------------------|
//! | 1    | `Memory`    | IPA and size of guest RAM (u64 each); flag 1: the VM has MTE      |
//! | 2    | `Page`      | IPA (u64); with flag 1 the page's data; with flag 2 its tags, two |
//! |      |             | granules a byte, the lower granule in the low nibble              |
//! | 3    | `Registers` | count (u32), then per register its KVM ONE_REG id (u64) and value |
//! |      |             | (the size the id's size field gives)                              |
//! | 4    | `RoundEnd`  | round (u32) and the page records it sent (u64)                    |
//! | 5    | `End`       | the page records of the whole stream (u64); nothing follows       |
//!
//! A page of zeros carries no data and a page whose tags are all 0 carries no tags, so a 4 KiB
//! page costs 128 bytes of tags at most and untagged memory none. A later `Page` for the same
//! IPA replaces the earlier one. Decoding checks everything it can and names the record and
//! what was wrong; a reader never trusts a length before checking it against its kind.

use std::io::{self, Read, Write};

pub const MAGIC: [u8; 8] = *b"MTEMIGR\0";
/// Bump on any change a reader of the previous version would misread.
pub const VERSION: u16 = 1;
/// The tag granule the format knows: one 4-bit tag per 16 bytes.
pub const GRANULE: u32 = 16;
const HEADER_LEN: usize = 24;
const FRAME_LEN: usize = 12;

/// The page sizes a stream may have: those of arm64 Linux.
const PAGE_SIZES: [u32; 3] = [4096, 16384, 65536];
/// KVM ONE_REG values are at most 2048 bits.
const MAX_REGISTER_BYTES: usize = 256;
const MAX_REGISTERS: u32 = 4096;

mod kind {
    pub const MEMORY: u8 = 1;
    pub const PAGE: u8 = 2;
    pub const REGISTERS: u8 = 3;
    pub const ROUND_END: u8 = 4;
    pub const END: u8 = 5;
}

/// Flags of a `Memory` record.
const MEMORY_MTE: u8 = 1;
/// Flags of a `Page` record.
const PAGE_DATA: u8 = 1;
const PAGE_TAGS: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub page_size: u32,
    pub granule: u32,
}

/// One vCPU register in KVM ONE_REG terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    pub id: u64,
    pub value: Vec<u8>,
}

/// The bytes a KVM ONE_REG id's size field (bits 55:52) gives its value.
pub fn register_size(id: u64) -> usize {
    1 << ((id >> 52) & 0xf)
}

/// A page as it travels: `None` for data of zeros and for tags that are all 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub ipa: u64,
    pub data: Option<Vec<u8>>,
    /// One tag a granule (unpacked).
    pub tags: Option<Vec<u8>>,
}

impl Page {
    /// The record for a page with these bytes and tags (one a granule), leaving out what is
    /// all zero.
    pub fn new(ipa: u64, data: &[u8], tags: &[u8]) -> Self {
        let zero = |bytes: &[u8]| bytes.iter().all(|&b| b == 0);
        Page {
            ipa,
            data: (!zero(data)).then(|| data.to_vec()),
            tags: (!zero(tags)).then(|| tags.to_vec()),
        }
    }

    /// The record of a page of zeros with tags 0.
    pub fn zeros(ipa: u64) -> Self {
        Page {
            ipa,
            data: None,
            tags: None,
        }
    }

    /// Bytes of packed tags this page costs in the stream.
    pub fn tag_bytes(&self) -> usize {
        self.tags.as_ref().map_or(0, |t| t.len().div_ceil(2))
    }

    pub fn data_bytes(&self) -> usize {
        self.data.as_ref().map_or(0, Vec::len)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Memory { ipa: u64, size: u64, mte: bool },
    Page(Page),
    Registers(Vec<Register>),
    RoundEnd { round: u32, pages: u64 },
    End { pages: u64 },
}

impl Record {
    fn name(kind: u8) -> &'static str {
        match kind {
            kind::MEMORY => "Memory",
            kind::PAGE => "Page",
            kind::REGISTERS => "Registers",
            kind::ROUND_END => "RoundEnd",
            kind::END => "End",
            _ => "unknown",
        }
    }
}

/// Two 4-bit tags a byte, the lower granule in the low nibble.
pub fn pack_tags(tags: &[u8]) -> Vec<u8> {
    tags.chunks(2)
        .map(|pair| (pair[0] & 0xf) | (pair.get(1).copied().unwrap_or(0) & 0xf) << 4)
        .collect()
}

pub fn unpack_tags(packed: &[u8]) -> Vec<u8> {
    packed.iter().flat_map(|&b| [b & 0xf, b >> 4]).collect()
}

/// Where a stream went wrong and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    /// The record's sequence number; None for the header.
    pub record: Option<u32>,
    /// Byte offset of the header or record in the stream.
    pub offset: u64,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Io(String),
    BadMagic([u8; 8]),
    UnsupportedVersion {
        found: u16,
    },
    HeaderChecksum {
        stored: u32,
        computed: u32,
    },
    BadGranule(u32),
    BadPageSize(u32),
    Reserved(u16),
    /// The stream ends inside `part`.
    Truncated {
        part: &'static str,
        needed: usize,
        got: usize,
    },
    /// The stream ends between records, before `End`.
    MissingEnd,
    Checksum {
        stored: u32,
        computed: u32,
    },
    UnknownKind(u8),
    Sequence {
        found: u32,
    },
    BadFlags {
        kind: &'static str,
        flags: u8,
    },
    BadLength {
        kind: &'static str,
        found: u32,
        expected: u32,
    },
    TooLong {
        found: u32,
        limit: u32,
    },
    PageBeforeMemory,
    MemoryTwice,
    /// Guest RAM that is not whole pages: a page the decoder lets through must lie in it.
    BadMemory {
        ipa: u64,
        size: u64,
    },
    UnalignedPage(u64),
    PageOutsideMemory {
        ipa: u64,
        base: u64,
        size: u64,
    },
    RegisterSize {
        id: u64,
    },
    PageCount {
        stated: u64,
        seen: u64,
    },
    TrailingBytes,
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.record {
            None => write!(f, "migration stream header: ")?,
            Some(n) => write!(f, "migration stream record {n} (at byte {}): ", self.offset)?,
        }
        match &self.problem {
            Problem::Io(e) => write!(f, "read failed: {e}"),
            Problem::BadMagic(m) => write!(f, "magic {m:02x?} is not {MAGIC:02x?}"),
            Problem::UnsupportedVersion { found } => {
                write!(
                    f,
                    "format version {found}, this reader knows version {VERSION}"
                )
            }
            Problem::HeaderChecksum { stored, computed }
            | Problem::Checksum { stored, computed } => {
                write!(f, "CRC-32 {stored:#010x} stored, {computed:#010x} computed")
            }
            Problem::BadGranule(g) => write!(f, "tag granule {g}, the format knows {GRANULE}"),
            Problem::BadPageSize(p) => write!(f, "page size {p} is none of {PAGE_SIZES:?}"),
            Problem::Reserved(r) => write!(f, "reserved field is {r:#x}, not 0"),
            Problem::Truncated { part, needed, got } => {
                write!(f, "truncated in its {part}: {got} of {needed} bytes")
            }
            Problem::MissingEnd => write!(f, "the stream ends without an End record"),
            Problem::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            Problem::Sequence { found } => write!(f, "sequence number {found} out of order"),
            Problem::BadFlags { kind, flags } => write!(f, "{kind} record with flags {flags:#x}"),
            Problem::BadLength {
                kind,
                found,
                expected,
            } => write!(f, "{kind} payload of {found} bytes, expected {expected}"),
            Problem::TooLong { found, limit } => {
                write!(
                    f,
                    "payload of {found} bytes exceeds the largest record ({limit})"
                )
            }
            Problem::PageBeforeMemory => write!(f, "Page record before the Memory record"),
            Problem::MemoryTwice => write!(f, "a second Memory record"),
            Problem::BadMemory { ipa, size } => write!(
                f,
                "guest RAM {ipa:#x}+{size:#x} is not whole pages of the address space"
            ),
            Problem::UnalignedPage(ipa) => write!(f, "page IPA {ipa:#x} is not page aligned"),
            Problem::PageOutsideMemory { ipa, base, size } => {
                write!(f, "page IPA {ipa:#x} outside guest RAM {base:#x}+{size:#x}")
            }
            Problem::RegisterSize { id } => {
                write!(f, "register {id:#x} has a size field no register has")
            }
            Problem::PageCount { stated, seen } => {
                write!(f, "End counts {stated} page records, the stream had {seen}")
            }
            Problem::TrailingBytes => write!(f, "bytes follow the End record"),
        }
    }
}

impl std::error::Error for StreamError {}

/// Writes a stream. Records are written whole; the caller flushes or drops the writer.
pub struct Encoder<W: Write> {
    out: W,
    page_size: u32,
    seq: u32,
    pages: u64,
    bytes: u64,
}

impl<W: Write> Encoder<W> {
    pub fn new(mut out: W, page_size: u32) -> io::Result<Self> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes());
        header.extend_from_slice(&page_size.to_le_bytes());
        header.extend_from_slice(&GRANULE.to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
        out.write_all(&header)?;
        Ok(Encoder {
            out,
            page_size,
            seq: 0,
            pages: 0,
            bytes: HEADER_LEN as u64,
        })
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        let (kind, flags, payload) = match record {
            Record::Memory { ipa, size, mte } => {
                let mut p = ipa.to_le_bytes().to_vec();
                p.extend_from_slice(&size.to_le_bytes());
                (kind::MEMORY, if *mte { MEMORY_MTE } else { 0 }, p)
            }
            Record::Page(page) => {
                assert_eq!(page.ipa % self.page_size as u64, 0, "pages are aligned");
                let mut p = page.ipa.to_le_bytes().to_vec();
                let mut flags = 0;
                if let Some(data) = &page.data {
                    assert_eq!(data.len(), self.page_size as usize, "a page of data");
                    p.extend_from_slice(data);
                    flags |= PAGE_DATA;
                }
                if let Some(tags) = &page.tags {
                    assert_eq!(
                        tags.len(),
                        (self.page_size / GRANULE) as usize,
                        "a page of tags"
                    );
                    p.extend_from_slice(&pack_tags(tags));
                    flags |= PAGE_TAGS;
                }
                self.pages += 1;
                (kind::PAGE, flags, p)
            }
            Record::Registers(registers) => {
                let mut p = (registers.len() as u32).to_le_bytes().to_vec();
                for r in registers {
                    assert_eq!(r.value.len(), register_size(r.id), "value sized by its id");
                    p.extend_from_slice(&r.id.to_le_bytes());
                    p.extend_from_slice(&r.value);
                }
                (kind::REGISTERS, 0, p)
            }
            Record::RoundEnd { round, pages } => {
                let mut p = round.to_le_bytes().to_vec();
                p.extend_from_slice(&pages.to_le_bytes());
                (kind::ROUND_END, 0, p)
            }
            Record::End { pages } => (kind::END, 0, pages.to_le_bytes().to_vec()),
        };
        let mut frame = Vec::with_capacity(FRAME_LEN + payload.len() + 4);
        frame.push(kind);
        frame.push(flags);
        frame.extend_from_slice(&0u16.to_le_bytes());
        frame.extend_from_slice(&self.seq.to_le_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&payload);
        let crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(&frame)?;
        self.seq += 1;
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// Write the `End` record, which counts the page records.
    pub fn end(&mut self) -> io::Result<()> {
        let pages = self.pages;
        self.write(&Record::End { pages })?;
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads a stream record by record, checking each.
pub struct Decoder<R: Read> {
    input: R,
    header: Header,
    seq: u32,
    offset: u64,
    memory: Option<(u64, u64)>,
    pages: u64,
    ended: bool,
}

impl<R: Read> Decoder<R> {
    /// Read and check the header.
    pub fn new(mut input: R) -> Result<Self, StreamError> {
        let fail = |problem| StreamError {
            record: None,
            offset: 0,
            problem,
        };
        let mut bytes = [0u8; HEADER_LEN];
        let got =
            read_full(&mut input, &mut bytes).map_err(|e| fail(Problem::Io(e.to_string())))?;
        if got < HEADER_LEN {
            return Err(fail(Problem::Truncated {
                part: "header",
                needed: HEADER_LEN,
                got,
            }));
        }
        let magic: [u8; 8] = bytes[..8].try_into().expect("8 bytes");
        if magic != MAGIC {
            return Err(fail(Problem::BadMagic(magic)));
        }
        let stored = le32(&bytes[20..24]);
        let computed = crc32fast::hash(&bytes[..20]);
        if stored != computed {
            return Err(fail(Problem::HeaderChecksum { stored, computed }));
        }
        let header = Header {
            version: u16::from_le_bytes([bytes[8], bytes[9]]),
            page_size: le32(&bytes[12..16]),
            granule: le32(&bytes[16..20]),
        };
        let reserved = u16::from_le_bytes([bytes[10], bytes[11]]);
        if header.version != VERSION {
            return Err(fail(Problem::UnsupportedVersion {
                found: header.version,
            }));
        }
        if reserved != 0 {
            return Err(fail(Problem::Reserved(reserved)));
        }
        if header.granule != GRANULE {
            return Err(fail(Problem::BadGranule(header.granule)));
        }
        if !PAGE_SIZES.contains(&header.page_size) {
            return Err(fail(Problem::BadPageSize(header.page_size)));
        }
        Ok(Decoder {
            input,
            header,
            seq: 0,
            offset: HEADER_LEN as u64,
            memory: None,
            pages: 0,
            ended: false,
        })
    }

    pub fn header(&self) -> Header {
        self.header
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn error(&self, problem: Problem) -> StreamError {
        StreamError {
            record: Some(self.seq),
            offset: self.offset,
            problem,
        }
    }

    fn page_payload(&self, flags: u8) -> u32 {
        let mut len = 8;
        if flags & PAGE_DATA != 0 {
            len += self.header.page_size;
        }
        if flags & PAGE_TAGS != 0 {
            len += self.header.page_size / GRANULE / 2;
        }
        len
    }

    /// The next record; None once `End` has been read.
    pub fn next_record(&mut self) -> Result<Option<Record>, StreamError> {
        if self.ended {
            return Ok(None);
        }
        let mut frame = [0u8; FRAME_LEN];
        let got = read_full(&mut self.input, &mut frame)
            .map_err(|e| self.error(Problem::Io(e.to_string())))?;
        if got == 0 {
            return Err(self.error(Problem::MissingEnd));
        }
        if got < FRAME_LEN {
            return Err(self.error(Problem::Truncated {
                part: "frame",
                needed: FRAME_LEN,
                got,
            }));
        }
        let (kind, flags) = (frame[0], frame[1]);
        let reserved = u16::from_le_bytes([frame[2], frame[3]]);
        let seq = le32(&frame[4..8]);
        let len = le32(&frame[8..12]);
        let limit = self
            .page_payload(PAGE_DATA | PAGE_TAGS)
            .max(4 + MAX_REGISTERS * (8 + MAX_REGISTER_BYTES as u32));
        if len > limit {
            return Err(self.error(Problem::TooLong { found: len, limit }));
        }
        let mut rest = vec![0u8; len as usize + 4];
        let got = read_full(&mut self.input, &mut rest)
            .map_err(|e| self.error(Problem::Io(e.to_string())))?;
        if got < rest.len() {
            return Err(self.error(Problem::Truncated {
                part: "payload and checksum",
                needed: rest.len(),
                got,
            }));
        }
        let stored = le32(&rest[len as usize..]);
        let computed = {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&frame);
            crc.update(&rest[..len as usize]);
            crc.finalize()
        };
        if stored != computed {
            return Err(self.error(Problem::Checksum { stored, computed }));
        }
        // The checksum holds, so what follows is what the sender meant: check its sense.
        if seq != self.seq {
            return Err(self.error(Problem::Sequence { found: seq }));
        }
        if reserved != 0 {
            return Err(self.error(Problem::Reserved(reserved)));
        }
        let payload = &rest[..len as usize];
        let record = self.parse(kind, flags, payload)?;
        self.seq += 1;
        self.offset += (FRAME_LEN + rest.len()) as u64;
        Ok(Some(record))
    }

    /// The record of `kind` from its checked frame: its flags and payload make sense for it.
    fn parse(&mut self, kind: u8, flags: u8, payload: &[u8]) -> Result<Record, StreamError> {
        let allowed = match kind {
            kind::MEMORY => MEMORY_MTE,
            kind::PAGE => PAGE_DATA | PAGE_TAGS,
            kind::REGISTERS | kind::ROUND_END | kind::END => 0,
            other => return Err(self.error(Problem::UnknownKind(other))),
        };
        if flags & !allowed != 0 {
            let kind = Record::name(kind);
            return Err(self.error(Problem::BadFlags { kind, flags }));
        }
        match kind {
            kind::MEMORY => self.parse_memory(flags, payload),
            kind::PAGE => self.parse_page(flags, payload),
            kind::REGISTERS => self.parse_registers(payload),
            kind::ROUND_END => {
                self.expect_length(kind, payload, 12)?;
                Ok(Record::RoundEnd {
                    round: le32(&payload[..4]),
                    pages: le64(&payload[4..]),
                })
            }
            _ => self.parse_end(payload),
        }
    }

    /// A payload of `kind` that must be `expected` bytes long.
    fn expect_length(&self, kind: u8, payload: &[u8], expected: u32) -> Result<(), StreamError> {
        if payload.len() as u32 == expected {
            Ok(())
        } else {
            Err(self.error(Problem::BadLength {
                kind: Record::name(kind),
                found: payload.len() as u32,
                expected,
            }))
        }
    }

    fn parse_memory(&mut self, flags: u8, payload: &[u8]) -> Result<Record, StreamError> {
        self.expect_length(kind::MEMORY, payload, 16)?;
        if self.memory.is_some() {
            return Err(self.error(Problem::MemoryTwice));
        }
        let (ipa, size) = (le64(&payload[..8]), le64(&payload[8..]));
        let page = u64::from(self.header.page_size);
        if ipa % page != 0 || size == 0 || size % page != 0 || ipa.checked_add(size).is_none() {
            return Err(self.error(Problem::BadMemory { ipa, size }));
        }
        self.memory = Some((ipa, size));
        Ok(Record::Memory {
            ipa,
            size,
            mte: flags & MEMORY_MTE != 0,
        })
    }

    fn parse_page(&mut self, flags: u8, payload: &[u8]) -> Result<Record, StreamError> {
        self.expect_length(kind::PAGE, payload, self.page_payload(flags))?;
        let ipa = le64(&payload[..8]);
        let Some((base, size)) = self.memory else {
            return Err(self.error(Problem::PageBeforeMemory));
        };
        if ipa % self.header.page_size as u64 != 0 {
            return Err(self.error(Problem::UnalignedPage(ipa)));
        }
        if ipa < base || ipa - base >= size {
            return Err(self.error(Problem::PageOutsideMemory { ipa, base, size }));
        }
        let page_size = self.header.page_size as usize;
        let mut at = 8;
        let data = (flags & PAGE_DATA != 0).then(|| {
            at += page_size;
            payload[8..at].to_vec()
        });
        let tags = (flags & PAGE_TAGS != 0).then(|| unpack_tags(&payload[at..]));
        self.pages += 1;
        Ok(Record::Page(Page { ipa, data, tags }))
    }

    /// A count, then each register's id and its value, as long as the id says.
    fn parse_registers(&self, payload: &[u8]) -> Result<Record, StreamError> {
        if payload.len() < 4 {
            return Err(self.error(Problem::BadLength {
                kind: Record::name(kind::REGISTERS),
                found: payload.len() as u32,
                expected: 4,
            }));
        }
        let count = le32(&payload[..4]);
        let mut registers = Vec::new();
        let mut at = 4;
        for _ in 0..count.min(MAX_REGISTERS) {
            if payload.len() < at + 8 {
                break;
            }
            let id = le64(&payload[at..at + 8]);
            let size = register_size(id);
            if size > MAX_REGISTER_BYTES {
                return Err(self.error(Problem::RegisterSize { id }));
            }
            if payload.len() < at + 8 + size {
                break;
            }
            registers.push(Register {
                id,
                value: payload[at + 8..at + 8 + size].to_vec(),
            });
            at += 8 + size;
        }
        if registers.len() as u32 != count || at != payload.len() {
            return Err(self.error(Problem::BadLength {
                kind: Record::name(kind::REGISTERS),
                found: payload.len() as u32,
                expected: at as u32,
            }));
        }
        Ok(Record::Registers(registers))
    }

    /// `End`, whose page count must be the pages seen.
    fn parse_end(&mut self, payload: &[u8]) -> Result<Record, StreamError> {
        self.expect_length(kind::END, payload, 8)?;
        let stated = le64(payload);
        if stated != self.pages {
            return Err(self.error(Problem::PageCount {
                stated,
                seen: self.pages,
            }));
        }
        self.ended = true;
        Ok(Record::End { pages: stated })
    }

    /// After `End`: check that nothing follows (for a transport that carries only the stream).
    pub fn expect_eof(&mut self) -> Result<(), StreamError> {
        let mut byte = [0u8; 1];
        match read_full(&mut self.input, &mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(self.error(Problem::TrailingBytes)),
            Err(e) => Err(self.error(Problem::Io(e.to_string()))),
        }
    }
}

/// Read until `buf` is full or the input ends; the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))
}

fn le64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u32 = 4096;
    const BASE: u64 = 0x4000_0000;

    fn tags(seed: u8) -> Vec<u8> {
        (0..256)
            .map(|i| ((i as u8).wrapping_mul(7) ^ seed) & 0xf)
            .collect()
    }

    fn records() -> Vec<Record> {
        vec![
            Record::Memory {
                ipa: BASE,
                size: 1 << 20,
                mte: true,
            },
            Record::Page(Page::new(BASE, &[5u8; 4096], &tags(3))),
            Record::Page(Page::new(BASE + 0x1000, &[0u8; 4096], &[0u8; 256])),
            Record::Page(Page::new(BASE + 0x2000, &[0u8; 4096], &tags(9))),
            Record::RoundEnd { round: 0, pages: 3 },
            Record::Registers(vec![
                Register {
                    id: 0x6030_0000_0010_0040,
                    value: vec![1, 2, 3, 4, 5, 6, 7, 8],
                },
                Register {
                    id: 0x6040_0000_0010_0054,
                    value: vec![9; 16],
                },
            ]),
        ]
    }

    fn encode(records: &[Record]) -> Vec<u8> {
        let mut encoder = Encoder::new(Vec::new(), PAGE).unwrap();
        for r in records {
            encoder.write(r).unwrap();
        }
        encoder.end().unwrap();
        encoder.into_inner()
    }

    fn decode(bytes: &[u8]) -> Result<Vec<Record>, StreamError> {
        let mut decoder = Decoder::new(bytes)?;
        let mut out = Vec::new();
        while let Some(r) = decoder.next_record()? {
            out.push(r);
        }
        decoder.expect_eof()?;
        Ok(out)
    }

    fn problem(bytes: &[u8]) -> (Option<u32>, Problem) {
        let e = decode(bytes).unwrap_err();
        (e.record, e.problem)
    }

    /// Byte offset of record `n` in the stream of `records()`.
    fn record_offset(bytes: &[u8], n: usize) -> usize {
        let mut at = HEADER_LEN;
        for _ in 0..n {
            at += FRAME_LEN + le32(&bytes[at + 8..]) as usize + 4;
        }
        at
    }

    /// Rewrite record `n` with `edit` and a checksum that holds again.
    fn edit_record(bytes: &mut [u8], n: usize, edit: impl FnOnce(&mut [u8])) {
        let at = record_offset(bytes, n);
        let len = le32(&bytes[at + 8..]) as usize;
        edit(&mut bytes[at..at + FRAME_LEN + len]);
        let crc = crc32fast::hash(&bytes[at..at + FRAME_LEN + len]);
        bytes[at + FRAME_LEN + len..at + FRAME_LEN + len + 4].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn records_round_trip() {
        let records = records();
        let bytes = encode(&records);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(&decoded[..records.len()], &records[..]);
        assert_eq!(decoded.last(), Some(&Record::End { pages: 3 }));
    }

    #[test]
    fn zero_pages_carry_nothing_and_tags_cost_128_bytes_a_page() {
        let bytes = encode(&records());
        let frame = |n| le32(&bytes[record_offset(&bytes, n) + 8..]);
        assert_eq!(frame(1), 8 + 4096 + 128);
        assert_eq!(frame(2), 8);
        assert_eq!(frame(3), 8 + 128);
        let page = Page::new(BASE, &[1; 4096], &tags(1));
        assert_eq!((page.tag_bytes(), page.data_bytes()), (128, 4096));
    }

    #[test]
    fn tags_pack_two_a_byte_low_granule_first() {
        assert_eq!(pack_tags(&[0x1, 0xf, 0x3]), vec![0xf1, 0x03]);
        let t = tags(5);
        assert_eq!(unpack_tags(&pack_tags(&t)), t);
    }

    #[test]
    fn a_bad_header_is_named() {
        let good = encode(&records());
        let mut bytes = good.clone();
        bytes[0] = b'X';
        assert!(matches!(problem(&bytes), (None, Problem::BadMagic(_))));

        let mut bytes = good.clone();
        bytes[8] = 2;
        assert!(matches!(
            problem(&bytes),
            (None, Problem::HeaderChecksum { .. })
        ));
        let crc = crc32fast::hash(&bytes[..20]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            problem(&bytes),
            (None, Problem::UnsupportedVersion { found: 2 })
        );

        let reheader = |offset: usize, value: u32| {
            let mut bytes = good.clone();
            bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
            let crc = crc32fast::hash(&bytes[..20]);
            bytes[20..24].copy_from_slice(&crc.to_le_bytes());
            bytes
        };
        assert_eq!(
            problem(&reheader(12, 8192)),
            (None, Problem::BadPageSize(8192))
        );
        assert_eq!(problem(&reheader(16, 32)), (None, Problem::BadGranule(32)));
        assert_eq!(
            problem(&reheader(8, VERSION as u32 | 1 << 16)),
            (None, Problem::Reserved(1))
        );

        assert_eq!(
            problem(&good[..10]),
            (
                None,
                Problem::Truncated {
                    part: "header",
                    needed: 24,
                    got: 10
                }
            )
        );
    }

    #[test]
    fn truncation_names_the_record_and_the_part() {
        let bytes = encode(&records());
        let at = record_offset(&bytes, 1);
        assert_eq!(
            problem(&bytes[..at + 5]),
            (
                Some(1),
                Problem::Truncated {
                    part: "frame",
                    needed: 12,
                    got: 5
                }
            )
        );
        assert!(matches!(
            problem(&bytes[..at + 100]),
            (
                Some(1),
                Problem::Truncated {
                    part: "payload and checksum",
                    ..
                }
            )
        ));
        // Cut between records: the End record is missing.
        assert_eq!(problem(&bytes[..at]), (Some(1), Problem::MissingEnd));
    }

    #[test]
    fn a_flipped_bit_fails_the_records_checksum() {
        let mut bytes = encode(&records());
        let at = record_offset(&bytes, 3);
        bytes[at + FRAME_LEN + 9] ^= 0x10;
        let e = decode(&bytes).unwrap_err();
        assert!(matches!(e.problem, Problem::Checksum { .. }), "{e}");
        assert_eq!(e.record, Some(3));
        assert!(
            e.to_string()
                .starts_with("migration stream record 3 (at byte"),
            "{e}"
        );
    }

    #[test]
    fn a_dropped_record_breaks_the_sequence() {
        let bytes = encode(&records());
        let (a, b) = (record_offset(&bytes, 2), record_offset(&bytes, 3));
        let mut dropped = bytes[..a].to_vec();
        dropped.extend_from_slice(&bytes[b..]);
        assert_eq!(problem(&dropped), (Some(2), Problem::Sequence { found: 3 }));
    }

    #[test]
    fn frames_that_make_no_sense_are_refused() {
        let good = encode(&records());
        let mut bytes = good.clone();
        edit_record(&mut bytes, 1, |r| r[0] = 9);
        assert_eq!(problem(&bytes), (Some(1), Problem::UnknownKind(9)));

        let mut bytes = good.clone();
        edit_record(&mut bytes, 1, |r| r[1] = 4);
        assert_eq!(
            problem(&bytes),
            (
                Some(1),
                Problem::BadFlags {
                    kind: "Page",
                    flags: 4
                }
            )
        );

        let mut bytes = good.clone();
        edit_record(&mut bytes, 1, |r| r[2] = 1);
        assert_eq!(problem(&bytes), (Some(1), Problem::Reserved(1)));

        // A page that claims tags it does not carry.
        let mut bytes = good.clone();
        edit_record(&mut bytes, 2, |r| r[1] = PAGE_TAGS);
        assert_eq!(
            problem(&bytes),
            (
                Some(2),
                Problem::BadLength {
                    kind: "Page",
                    found: 8,
                    expected: 136
                }
            )
        );

        let mut bytes = good.clone();
        let at = record_offset(&bytes, 1);
        bytes[at + 8..at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            problem(&bytes),
            (Some(1), Problem::TooLong { .. })
        ));
    }

    #[test]
    fn pages_must_lie_in_the_memory_announced_first() {
        let page = |ipa| Record::Page(Page::new(ipa, &[1; 4096], &[0; 256]));
        let memory = Record::Memory {
            ipa: BASE,
            size: 0x2000,
            mte: true,
        };
        assert_eq!(
            problem(&encode(&[page(BASE)])),
            (Some(0), Problem::PageBeforeMemory)
        );
        assert_eq!(
            problem(&encode(&[memory.clone(), page(BASE + 0x2000)])),
            (
                Some(1),
                Problem::PageOutsideMemory {
                    ipa: BASE + 0x2000,
                    base: BASE,
                    size: 0x2000
                }
            )
        );
        assert_eq!(
            problem(&encode(&[memory.clone(), memory.clone()])),
            (Some(1), Problem::MemoryTwice)
        );
        let mut bytes = encode(&[memory, page(BASE)]);
        edit_record(&mut bytes, 1, |r| r[FRAME_LEN] = 0x10);
        assert_eq!(
            problem(&bytes),
            (Some(1), Problem::UnalignedPage(BASE + 0x10))
        );
    }

    /// Found by the `migration_stream` fuzz target: RAM of 4 bytes, and a page at its base that
    /// the decoder let through though it lay mostly outside, for the destination to copy at
    /// an index past its RAM.
    #[test]
    fn guest_ram_must_be_whole_pages() {
        // The header, then the Memory record: kind 1, MTE, sequence 0, 16 bytes of payload
        // (IPA 0x4000_0000, size 4), its CRC (made to hold, as the target repairs them).
        const FOUND: &str = "4d54454d49475200 0100 0000 00100000 10000000 da3429e2 \
                             01 01 0000 00000000 10000000 \
                             0000004000000000 0400000000000000 c1a54836";
        let hex: String = FOUND.split_whitespace().collect();
        let found: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let memory = |size| Record::Memory {
            ipa: BASE,
            size,
            mte: true,
        };
        let page = Record::Page(Page::new(BASE, &[1; 4096], &[0; 256]));
        let bytes = encode(&[memory(4), page.clone()]);
        assert_eq!(
            bytes[..found.len()],
            found[..],
            "the input found, header and Memory"
        );
        let bad = |ipa, size| Problem::BadMemory { ipa, size };
        assert_eq!(problem(&bytes), (Some(0), bad(BASE, 4)));
        assert_eq!(problem(&encode(&[memory(0)])), (Some(0), bad(BASE, 0)));
        assert_eq!(
            problem(&encode(&[memory(0x1800)])),
            (Some(0), bad(BASE, 0x1800))
        );
        let at_the_top = Record::Memory {
            ipa: u64::MAX - 0xfff,
            size: 0x2000,
            mte: true,
        };
        assert_eq!(
            problem(&encode(&[at_the_top])),
            (Some(0), bad(u64::MAX - 0xfff, 0x2000))
        );
        let unaligned = Record::Memory {
            ipa: BASE + 0x10,
            size: 0x1000,
            mte: true,
        };
        assert_eq!(
            problem(&encode(&[unaligned])),
            (Some(0), bad(BASE + 0x10, 0x1000))
        );
        assert!(decode(&encode(&[memory(0x1000), page])).is_ok());
    }

    #[test]
    fn registers_are_sized_by_their_ids() {
        let mut bytes = encode(&records());
        // The first register's id gets a size field of 2^15 bytes.
        edit_record(&mut bytes, 5, |r| r[FRAME_LEN + 4 + 6] = 0xf0);
        assert!(matches!(
            problem(&bytes),
            (Some(5), Problem::RegisterSize { .. })
        ));

        let mut bytes = encode(&records());
        // One register more than the payload holds.
        edit_record(&mut bytes, 5, |r| r[FRAME_LEN] = 3);
        assert!(matches!(
            problem(&bytes),
            (
                Some(5),
                Problem::BadLength {
                    kind: "Registers",
                    ..
                }
            )
        ));
        assert_eq!(register_size(0x6030_0000_0010_0040), 8);
        assert_eq!(register_size(0x6040_0000_0010_0054), 16);
    }

    #[test]
    fn the_end_counts_pages_and_nothing_follows_it() {
        let mut bytes = encode(&records());
        let last = records().len();
        edit_record(&mut bytes, last, |r| r[FRAME_LEN] = 2);
        assert_eq!(
            problem(&bytes),
            (Some(6), Problem::PageCount { stated: 2, seen: 3 })
        );
        let mut bytes = encode(&records());
        bytes.push(0);
        assert_eq!(problem(&bytes), (Some(7), Problem::TrailingBytes));
    }

    #[test]
    fn a_read_error_is_reported_as_such() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("cable cut"))
            }
        }
        let e = Decoder::new(Failing).err().unwrap();
        assert_eq!(e.problem, Problem::Io("cable cut".into()));
    }
}
