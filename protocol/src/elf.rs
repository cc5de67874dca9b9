//! Just enough ELF64 reading for the suite's two aarch64 images: the bare-metal payload a VMM
//! loads into guest RAM (and whose symbols a debugger backend looks up), and the static runner
//! that is the emulated machine's /init. No allocation, so the host loader and the build checks
//! share it.

/// ELF machine number of aarch64.
pub const EM_AARCH64: u16 = 183;
use crate::{RAM_IPA, RAM_SIZE};

/// A segment to load.
pub const PT_LOAD: u32 = 1;
/// A segment naming a program interpreter: the binary is dynamically linked.
pub const PT_INTERP: u32 = 3;

/// A section holding a symbol table.
pub const SHT_SYMTAB: u32 = 2;
/// The section index of an undefined symbol.
const SHN_UNDEF: u16 = 0;

const HEADER_SIZE: usize = 64;
const PROGRAM_HEADER_SIZE: usize = 56;
const SECTION_HEADER_SIZE: usize = 64;
const SYMBOL_SIZE: usize = 24;

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    pub kind: u32,
    pub offset: u64,
    pub paddr: u64,
    pub file_size: u64,
    pub mem_size: u64,
}

/// A validated little-endian ELF64 image for aarch64.
#[derive(Clone, Copy, Debug)]
pub struct Elf<'a> {
    bytes: &'a [u8],
    pub entry: u64,
    phoff: usize,
    phentsize: usize,
    phnum: usize,
    shoff: usize,
    shentsize: usize,
    shnum: usize,
}

/// The fields of a section header that symbol lookup needs.
#[derive(Clone, Copy, Debug)]
struct SectionHeader {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
    entry_size: u64,
}

/// Why an image is not a usable aarch64 ELF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    NotElf,
    Not64BitLittleEndian,
    /// The ELF machine it was built for.
    WrongMachine(u16),
    /// The headers run past the end of the file.
    Truncated,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ElfError::NotElf => f.write_str("not an ELF file"),
            ElfError::Not64BitLittleEndian => f.write_str("not a 64-bit little-endian ELF"),
            ElfError::WrongMachine(m) => {
                write!(f, "built for ELF machine {m}, not aarch64 ({EM_AARCH64})")
            }
            ElfError::Truncated => f.write_str("headers run past the end of the file (truncated?)"),
        }
    }
}

fn le<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], ElfError> {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(ElfError::Truncated)
}

impl<'a> Elf<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        if bytes.get(..4) != Some(b"\x7fELF") {
            return Err(ElfError::NotElf);
        }
        if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
            return Err(ElfError::Not64BitLittleEndian);
        }
        if bytes.len() < HEADER_SIZE {
            return Err(ElfError::Truncated);
        }
        let machine = u16::from_le_bytes(le(bytes, 18)?);
        if machine != EM_AARCH64 {
            return Err(ElfError::WrongMachine(machine));
        }
        let elf = Elf {
            bytes,
            entry: u64::from_le_bytes(le(bytes, 24)?),
            phoff: u64::from_le_bytes(le(bytes, 32)?) as usize,
            phentsize: u16::from_le_bytes(le(bytes, 54)?) as usize,
            phnum: u16::from_le_bytes(le(bytes, 56)?) as usize,
            shoff: u64::from_le_bytes(le(bytes, 40)?) as usize,
            shentsize: u16::from_le_bytes(le(bytes, 58)?) as usize,
            shnum: u16::from_le_bytes(le(bytes, 60)?) as usize,
        };
        if elf.phnum > 0 && elf.phentsize < PROGRAM_HEADER_SIZE {
            return Err(ElfError::Truncated);
        }
        // Every program header must be inside the file, so that iterating cannot fail.
        for i in 0..elf.phnum {
            elf.program_header(i)?;
        }
        Ok(elf)
    }

    fn program_header(&self, index: usize) -> Result<ProgramHeader, ElfError> {
        let at = self
            .phoff
            .checked_add(index * self.phentsize)
            .ok_or(ElfError::Truncated)?;
        let word = |offset: usize| le::<8>(self.bytes, at + offset).map(u64::from_le_bytes);
        Ok(ProgramHeader {
            kind: u32::from_le_bytes(le(self.bytes, at)?),
            offset: word(8)?,
            paddr: word(24)?,
            file_size: word(32)?,
            mem_size: word(40)?,
        })
    }

    pub fn program_headers(&self) -> impl Iterator<Item = ProgramHeader> + '_ {
        (0..self.phnum).filter_map(|i| self.program_header(i).ok())
    }

    /// The file bytes of a segment, if the file holds them all.
    pub fn segment_data(&self, header: &ProgramHeader) -> Option<&'a [u8]> {
        let start = usize::try_from(header.offset).ok()?;
        let end = start.checked_add(usize::try_from(header.file_size).ok()?)?;
        self.bytes.get(start..end)
    }

    /// Whether the image names a program interpreter (is dynamically linked).
    pub fn is_dynamic(&self) -> bool {
        self.program_headers().any(|h| h.kind == PT_INTERP)
    }

    /// The value (address) of the defined symbol `name` in the image's symbol table; `None`
    /// where there is no such symbol, no symbol table (a stripped image), or the tables run
    /// past the end of the file. Section headers are not needed to load an image, so `parse`
    /// does not check them: a bad one only means no symbol is found.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        let symtab = (0..self.shnum)
            .filter_map(|i| self.section_header(i))
            .find(|h| h.kind == SHT_SYMTAB)?;
        let strings = self.section_header(symtab.link as usize)?;
        let strings = self.section_bytes(&strings)?;
        let symbols = self.section_bytes(&symtab)?;
        let entry_size = match symtab.entry_size as usize {
            0 => SYMBOL_SIZE,
            n if n >= SYMBOL_SIZE => n,
            _ => return None,
        };
        symbols
            .chunks_exact(entry_size)
            .filter(|symbol| {
                let section = u16::from_le_bytes([symbol[6], symbol[7]]);
                section != SHN_UNDEF
            })
            .find(|symbol| {
                let at = u32::from_le_bytes([symbol[0], symbol[1], symbol[2], symbol[3]]);
                string_at(strings, at as usize) == Some(name.as_bytes())
            })
            .and_then(|symbol| le::<8>(symbol, 8).ok().map(u64::from_le_bytes))
    }

    fn section_header(&self, index: usize) -> Option<SectionHeader> {
        if self.shentsize < SECTION_HEADER_SIZE {
            return None;
        }
        let at = self.shoff.checked_add(index.checked_mul(self.shentsize)?)?;
        let field = |offset: usize| at.checked_add(offset);
        let word = |offset| {
            le::<8>(self.bytes, field(offset)?)
                .ok()
                .map(u64::from_le_bytes)
        };
        let half = |offset| {
            le::<4>(self.bytes, field(offset)?)
                .ok()
                .map(u32::from_le_bytes)
        };
        Some(SectionHeader {
            kind: half(4)?,
            offset: word(24)?,
            size: word(32)?,
            link: half(40)?,
            entry_size: word(56)?,
        })
    }

    /// The file bytes of a section, if the file holds them all.
    fn section_bytes(&self, header: &SectionHeader) -> Option<&'a [u8]> {
        let start = usize::try_from(header.offset).ok()?;
        let end = start.checked_add(usize::try_from(header.size).ok()?)?;
        self.bytes.get(start..end)
    }
}

/// The NUL-terminated string at `at` in a string table, without its NUL.
fn string_at(strings: &[u8], at: usize) -> Option<&[u8]> {
    let rest = strings.get(at..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..len])
}

/// Why an image cannot be a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    Elf(ElfError),
    /// A loadable segment (by index) does not lie within guest RAM.
    OutsideRam {
        segment: usize,
        paddr: u64,
        mem_size: u64,
    },
    /// A loadable segment's memory size is below its file size.
    MemoryBelowFile {
        segment: usize,
    },
    /// A loadable segment's file data is not in the file.
    DataMissing {
        segment: usize,
    },
    NothingToLoad,
    EntryOutsideSegments {
        entry: u64,
    },
}

impl core::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PayloadError::Elf(e) => e.fmt(f),
            PayloadError::OutsideRam {
                segment,
                paddr,
                mem_size,
            } => write!(
                f,
                "segment {segment} at {paddr:#x} (+{mem_size:#x}) lies outside guest RAM \
                 [{RAM_IPA:#x}, {:#x})",
                RAM_IPA + RAM_SIZE
            ),
            PayloadError::MemoryBelowFile { segment } => {
                write!(f, "segment {segment}: memory size below file size")
            }
            PayloadError::DataMissing { segment } => {
                write!(
                    f,
                    "segment {segment}: file data beyond the end of the file (truncated?)"
                )
            }
            PayloadError::NothingToLoad => f.write_str("no loadable segment"),
            PayloadError::EntryOutsideSegments { entry } => {
                write!(f, "entry point {entry:#x} is in no loadable segment")
            }
        }
    }
}

/// Parse a payload and check it against the guest memory layout: every loadable segment in
/// guest RAM with its data in the file, and the entry point inside one of them.
pub fn parse_payload(bytes: &[u8]) -> Result<Elf<'_>, PayloadError> {
    let elf = Elf::parse(bytes).map_err(PayloadError::Elf)?;
    let ram = RAM_IPA..RAM_IPA + RAM_SIZE;
    let mut loadable = 0;
    let mut entry_inside = false;
    for (segment, header) in elf.program_headers().enumerate() {
        if header.kind != PT_LOAD {
            continue;
        }
        loadable += 1;
        let end = header.paddr.checked_add(header.mem_size);
        if !ram.contains(&header.paddr) || end.is_none_or(|end| end > ram.end) {
            return Err(PayloadError::OutsideRam {
                segment,
                paddr: header.paddr,
                mem_size: header.mem_size,
            });
        }
        if header.mem_size < header.file_size {
            return Err(PayloadError::MemoryBelowFile { segment });
        }
        if elf.segment_data(&header).is_none() {
            return Err(PayloadError::DataMissing { segment });
        }
        entry_inside |= (header.paddr..header.paddr + header.mem_size).contains(&elf.entry);
    }
    if loadable == 0 {
        return Err(PayloadError::NothingToLoad);
    }
    if !entry_inside {
        return Err(PayloadError::EntryOutsideSegments { entry: elf.entry });
    }
    Ok(elf)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An image with one program header per `(kind, paddr, data)`, the data after the headers.
    pub fn image(machine: u16, entry: u64, segments: &[(u32, u64, &[u8])]) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        let mut data_at = 64 + 56 * segments.len();
        for (i, (kind, paddr, data)) in segments.iter().enumerate() {
            let ph = 64 + 56 * i;
            b[ph..ph + 4].copy_from_slice(&kind.to_le_bytes());
            b[ph + 8..ph + 16].copy_from_slice(&(data_at as u64).to_le_bytes());
            b[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
            b[ph + 32..ph + 40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            b[ph + 40..ph + 48].copy_from_slice(&(data.len() as u64 + 64).to_le_bytes());
            b[data_at..data_at + data.len()].copy_from_slice(data);
            data_at += data.len();
        }
        b
    }

    /// A loadable image with a symbol table of `(name, value, section index)` and the section
    /// headers that lead to it: null, `.symtab`, `.strtab`.
    fn image_with_symbols(symbols: &[(&str, u64, u16)]) -> [u8; 1024] {
        const STRTAB: usize = 512;
        const SYMTAB: usize = 640;
        const SECTIONS: usize = 768;
        let mut b = [0u8; 1024];
        b[..512].copy_from_slice(&image(
            EM_AARCH64,
            0x4008_0000,
            &[(PT_LOAD, 0x4008_0000, &[0; 8])],
        ));
        // Both tables start with an empty entry, as a linker writes them.
        let mut strings_len = 1;
        let mut symbols_end = SYMTAB + SYMBOL_SIZE;
        for (name, value, section) in symbols {
            let name_at = STRTAB + strings_len;
            b[name_at..name_at + name.len()].copy_from_slice(name.as_bytes());
            let sym = symbols_end;
            b[sym..sym + 4].copy_from_slice(&(strings_len as u32).to_le_bytes());
            b[sym + 6..sym + 8].copy_from_slice(&section.to_le_bytes());
            b[sym + 8..sym + 16].copy_from_slice(&value.to_le_bytes());
            strings_len += name.len() + 1;
            symbols_end += SYMBOL_SIZE;
        }
        b[40..48].copy_from_slice(&(SECTIONS as u64).to_le_bytes());
        b[58..60].copy_from_slice(&(SECTION_HEADER_SIZE as u16).to_le_bytes());
        b[60..62].copy_from_slice(&3u16.to_le_bytes());
        let mut section = |index: usize, kind: u32, offset: usize, size: usize, link: u32| {
            let sh = SECTIONS + index * SECTION_HEADER_SIZE;
            b[sh + 4..sh + 8].copy_from_slice(&kind.to_le_bytes());
            b[sh + 24..sh + 32].copy_from_slice(&(offset as u64).to_le_bytes());
            b[sh + 32..sh + 40].copy_from_slice(&(size as u64).to_le_bytes());
            b[sh + 40..sh + 44].copy_from_slice(&link.to_le_bytes());
            b[sh + 56..sh + 64].copy_from_slice(&(SYMBOL_SIZE as u64).to_le_bytes());
        };
        section(1, SHT_SYMTAB, SYMTAB, symbols_end - SYMTAB, 2);
        section(2, 3, STRTAB, strings_len, 0);
        b
    }

    #[test]
    fn symbols_are_found_by_their_whole_name() {
        let bytes = image_with_symbols(&[
            ("mte_doorbell", 0x4008_0140, 1),
            ("mte_doorbell_store", 0x4008_0148, 1),
            ("imported", 0, SHN_UNDEF),
        ]);
        let elf = Elf::parse(&bytes).unwrap();
        assert_eq!(elf.symbol("mte_doorbell_store"), Some(0x4008_0148));
        assert_eq!(elf.symbol("mte_doorbell"), Some(0x4008_0140));
        assert_eq!(elf.symbol("mte_doorbell_st"), None);
        assert_eq!(
            elf.symbol("imported"),
            None,
            "undefined symbols have no address"
        );
        assert_eq!(elf.symbol(""), None);
        assert_eq!(elf.symbol("absent"), None);
    }

    #[test]
    fn stripped_or_damaged_symbol_tables_find_nothing() {
        let stripped = image(EM_AARCH64, 0x4008_0000, &[(PT_LOAD, 0x4008_0000, &[0; 8])]);
        assert_eq!(Elf::parse(&stripped).unwrap().symbol("_start"), None);

        let whole = image_with_symbols(&[("_start", 0x4008_0000, 1)]);
        // Section headers past the end of the file.
        let cut = &whole[..900];
        assert_eq!(Elf::parse(cut).unwrap().symbol("_start"), None);
        // A name offset past the end of the string table.
        let mut astray = whole;
        astray[640 + SYMBOL_SIZE..640 + SYMBOL_SIZE + 4].copy_from_slice(&0xffffu32.to_le_bytes());
        assert_eq!(Elf::parse(&astray).unwrap().symbol("_start"), None);
        // Section headers at an offset that overflows.
        let mut overflowing = whole;
        overflowing[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Elf::parse(&overflowing).unwrap().symbol("_start"), None);
    }

    #[test]
    fn segments_and_their_data_are_read() {
        let bytes = image(
            EM_AARCH64,
            0x4008_0000,
            &[(PT_LOAD, 0x4008_0000, &[1, 2, 3])],
        );
        let elf = Elf::parse(&bytes).unwrap();
        assert_eq!(elf.entry, 0x4008_0000);
        let header = elf.program_headers().next().unwrap();
        assert_eq!(
            (header.kind, header.paddr, header.mem_size),
            (PT_LOAD, 0x4008_0000, 67)
        );
        assert_eq!(elf.segment_data(&header), Some(&[1u8, 2, 3][..]));
        assert!(!elf.is_dynamic());
    }

    #[test]
    fn bad_images_say_why() {
        assert_eq!(Elf::parse(b"#!/bin/sh\n").unwrap_err(), ElfError::NotElf);
        let x86 = image(62, 0, &[(PT_LOAD, 0, &[])]);
        assert_eq!(Elf::parse(&x86).unwrap_err(), ElfError::WrongMachine(62));
        let dynamic = image(EM_AARCH64, 0, &[(PT_INTERP, 0, &[]), (PT_LOAD, 0, &[])]);
        assert!(Elf::parse(&dynamic).unwrap().is_dynamic());
        let whole = image(EM_AARCH64, 0, &[(PT_LOAD, 0, &[]), (PT_LOAD, 0, &[])]);
        assert_eq!(Elf::parse(&whole[..100]).unwrap_err(), ElfError::Truncated);
    }

    #[test]
    fn payloads_must_fit_the_guest_layout() {
        let good = image(EM_AARCH64, 0x4008_0000, &[(PT_LOAD, 0x4008_0000, &[0; 8])]);
        assert!(parse_payload(&good).is_ok());
        let low = image(EM_AARCH64, 0x1000, &[(PT_LOAD, 0x1000, &[0; 8])]);
        assert!(matches!(
            parse_payload(&low),
            Err(PayloadError::OutsideRam { segment: 0, .. })
        ));
        let astray = image(EM_AARCH64, 0x5000_0000, &[(PT_LOAD, 0x4008_0000, &[0; 8])]);
        assert!(matches!(
            parse_payload(&astray),
            Err(PayloadError::EntryOutsideSegments { .. })
        ));
        let empty = image(EM_AARCH64, 0x4008_0000, &[]);
        assert_eq!(
            parse_payload(&empty).unwrap_err(),
            PayloadError::NothingToLoad
        );
    }
}
