//! Payload images: the bare-metal guest ELF a backend boots, read with the `object` crate and
//! checked against the guest memory layout of `mte_protocol`, and a directory of them read once
//! each. xtask checks its payload builds with [`check`], the same reading the backends do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mte_protocol::{RAM_IPA, RAM_SIZE};
use mte_suites::vmm::VmmError;
use object::elf::{EM_AARCH64, PT_LOAD};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, FileKind, Object, ObjectSymbol};

/// The payload's global label on the doorbell's store: where a transport that drives the guest
/// with a debugger (QEMU's gdbstub) puts its breakpoint.
pub const DOORBELL_SYMBOL: &str = "mte_doorbell_store";

/// A loadable segment: bytes to copy; the rest of its memory size stays zero (fresh RAM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub ipa: u64,
    pub data: Vec<u8>,
}

/// A payload read and checked, shared by every guest that boots it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    /// The whole ELF file, for a VMM that loads it itself (QEMU's `-kernel`).
    pub image: Vec<u8>,
    pub entry: u64,
    pub segments: Vec<Segment>,
    /// The address of [`DOORBELL_SYMBOL`]; `None` in an image without a symbol table.
    pub doorbell_store: Option<u64>,
}

impl Payload {
    /// Read the payload at `path` and check it. The error for a payload that cannot be read or
    /// is corrupt says to (re)build it with `cargo xtask build`.
    pub fn read(path: &Path) -> Result<Self, VmmError> {
        let image = std::fs::read(path).map_err(|e| {
            VmmError::Host(format!(
                "payload {} cannot be read ({e}); build it with `cargo xtask build`",
                path.display()
            ))
        })?;
        Self::parse(path, image).map_err(|e| {
            VmmError::Host(format!(
                "payload {} is corrupt: {e}; rebuild it with `cargo xtask build`",
                path.display()
            ))
        })
    }

    fn parse(path: &Path, image: Vec<u8>) -> Result<Self, String> {
        let elf = aarch64_elf(&image)?;
        let segments = loadable_segments(&elf)?;
        let doorbell_store = elf
            .symbol_by_name(DOORBELL_SYMBOL)
            .filter(|symbol| !symbol.is_undefined())
            .map(|symbol| symbol.address());
        let entry = elf.entry();
        Ok(Payload {
            path: path.to_path_buf(),
            image,
            entry,
            segments,
            doorbell_store,
        })
    }

    /// The doorbell's address, or an error that says how to get a payload that has it.
    pub fn doorbell_store(&self) -> Result<u64, VmmError> {
        self.doorbell_store.ok_or_else(|| {
            VmmError::Host(format!(
                "payload {} has no symbol {DOORBELL_SYMBOL} (stripped, or older than the qemu \
                 lane); rebuild it with `cargo xtask build`",
                self.path.display()
            ))
        })
    }
}

/// Why `bytes` cannot be booted as a payload, or `Ok(())` if it can.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    loadable_segments(&aarch64_elf(bytes)?).map(drop)
}

/// `bytes` as a 64-bit little-endian aarch64 ELF file.
pub fn aarch64_elf(bytes: &[u8]) -> Result<ElfFile64<'_, Endianness>, String> {
    match FileKind::parse(bytes) {
        Ok(FileKind::Elf64) => {}
        Ok(FileKind::Elf32) => return Err("not a 64-bit little-endian ELF".into()),
        _ => return Err("not an ELF file".into()),
    }
    let elf = ElfFile64::<Endianness>::parse(bytes)
        .map_err(|e| format!("malformed ELF (truncated?): {e}"))?;
    if !elf.is_little_endian() {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let machine = elf.elf_header().e_machine(elf.endian());
    if machine != EM_AARCH64 {
        return Err(format!(
            "built for ELF machine {machine}, not aarch64 ({EM_AARCH64})"
        ));
    }
    Ok(elf)
}

/// The loadable segments, each checked to lie in guest RAM with its data in the file, and the
/// entry point inside one of them.
fn loadable_segments(elf: &ElfFile64<'_, Endianness>) -> Result<Vec<Segment>, String> {
    let endian = elf.endian();
    let ram = RAM_IPA..RAM_IPA + RAM_SIZE;
    let entry = elf.entry();
    let mut segments = Vec::new();
    let mut entry_inside = false;
    for (index, header) in elf.elf_program_headers().iter().enumerate() {
        if header.p_type(endian) != PT_LOAD {
            continue;
        }
        let (paddr, mem_size) = (header.p_paddr(endian), header.p_memsz(endian));
        let end = paddr.checked_add(mem_size);
        if !ram.contains(&paddr) || end.is_none_or(|end| end > ram.end) {
            return Err(format!(
                "segment {index} at {paddr:#x} (+{mem_size:#x}) lies outside guest RAM \
                 [{:#x}, {:#x})",
                ram.start, ram.end
            ));
        }
        if mem_size < header.p_filesz(endian) {
            return Err(format!("segment {index}: memory size below file size"));
        }
        let data = header.data(endian, elf.data()).map_err(|_| {
            format!("segment {index}: file data beyond the end of the file (truncated?)")
        })?;
        entry_inside |= (paddr..paddr + mem_size).contains(&entry);
        segments.push(Segment {
            ipa: paddr,
            data: data.to_vec(),
        });
    }
    if segments.is_empty() {
        return Err("no loadable segment".into());
    }
    if !entry_inside {
        return Err(format!("entry point {entry:#x} is in no loadable segment"));
    }
    Ok(segments)
}

/// The payloads of a directory, each read and checked once, then shared by every guest.
pub struct PayloadDir {
    dir: PathBuf,
    read: Mutex<HashMap<&'static str, Arc<Payload>>>,
}

impl PayloadDir {
    pub fn new(dir: PathBuf) -> Self {
        PayloadDir {
            dir,
            read: Mutex::new(HashMap::new()),
        }
    }

    /// The payload `name` (a file name, e.g. `mte-guest.elf`).
    pub fn get(&self, name: &'static str) -> Result<Arc<Payload>, VmmError> {
        let mut read = self.read.lock().unwrap();
        if let Some(payload) = read.get(name) {
            return Ok(Arc::clone(payload));
        }
        let payload = Arc::new(Payload::read(&self.dir.join(name))?);
        read.insert(name, Arc::clone(&payload));
        Ok(payload)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use object::elf::{PT_INTERP, SHT_STRTAB, SHT_SYMTAB};

    const SYMBOL_SIZE: usize = 24;
    const SECTION_HEADER_SIZE: usize = 64;

    /// An image with one program header per `(kind, paddr, data)`, the data after the headers.
    pub fn image(machine: u16, entry: u64, segments: &[(u32, u64, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
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
    fn image_with_symbols(symbols: &[(&str, u64, u16)]) -> Vec<u8> {
        const STRTAB: usize = 512;
        const SYMTAB: usize = 640;
        const SECTIONS: usize = 768;
        let mut b = image(EM_AARCH64, 0x4008_0000, &[(PT_LOAD, 0x4008_0000, &[0; 8])]);
        b.resize(1024, 0);
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
        // The string table names the sections too (all with the empty name).
        b[62..64].copy_from_slice(&2u16.to_le_bytes());
        let mut section = |index: usize, kind: u32, offset: usize, size: usize, link: u32| {
            let sh = SECTIONS + index * SECTION_HEADER_SIZE;
            b[sh + 4..sh + 8].copy_from_slice(&kind.to_le_bytes());
            b[sh + 24..sh + 32].copy_from_slice(&(offset as u64).to_le_bytes());
            b[sh + 32..sh + 40].copy_from_slice(&(size as u64).to_le_bytes());
            b[sh + 40..sh + 44].copy_from_slice(&link.to_le_bytes());
            b[sh + 56..sh + 64].copy_from_slice(&(SYMBOL_SIZE as u64).to_le_bytes());
        };
        section(1, SHT_SYMTAB, SYMTAB, symbols_end - SYMTAB, 2);
        section(2, SHT_STRTAB, STRTAB, strings_len, 0);
        b
    }

    fn parse(bytes: Vec<u8>) -> Result<Payload, String> {
        Payload::parse(Path::new("test.elf"), bytes)
    }

    #[test]
    fn segments_entry_and_doorbell_are_read() {
        let payload = parse(image_with_symbols(&[
            ("mte_doorbell", 0x4008_0140, 1),
            (DOORBELL_SYMBOL, 0x4008_0148, 1),
        ]))
        .unwrap();
        assert_eq!(payload.entry, 0x4008_0000);
        assert_eq!(
            payload.segments,
            vec![Segment {
                ipa: 0x4008_0000,
                data: vec![0; 8]
            }]
        );
        assert_eq!(payload.doorbell_store().unwrap(), 0x4008_0148);
    }

    #[test]
    fn a_stripped_or_undefined_doorbell_is_named() {
        let stripped = parse(image(
            EM_AARCH64,
            0x4008_0000,
            &[(PT_LOAD, 0x4008_0000, &[0; 8])],
        ))
        .unwrap();
        let why = stripped.doorbell_store().unwrap_err().to_string();
        assert!(
            why.contains(DOORBELL_SYMBOL) && why.contains("rebuild"),
            "{why}"
        );
        let undefined = parse(image_with_symbols(&[(DOORBELL_SYMBOL, 0, 0)])).unwrap();
        assert_eq!(undefined.doorbell_store, None);
    }

    #[test]
    fn bad_images_say_why() {
        assert!(check(b"#!/bin/sh\n").unwrap_err().contains("not an ELF"));
        let x86 = image(62, 0x4008_0000, &[(PT_LOAD, 0x4008_0000, &[])]);
        assert!(check(&x86).unwrap_err().contains("machine 62"));
        let mut cut = image(EM_AARCH64, 0, &[(PT_LOAD, 0, &[]), (PT_LOAD, 0, &[])]);
        cut.truncate(100);
        assert!(check(&cut).is_err());
    }

    #[test]
    fn payloads_must_fit_the_guest_layout() {
        let good = image(EM_AARCH64, 0x4008_0000, &[(PT_LOAD, 0x4008_0000, &[0; 8])]);
        assert_eq!(check(&good), Ok(()));
        let with_interp = image(
            EM_AARCH64,
            0x4008_0000,
            &[(PT_INTERP, 0, &[]), (PT_LOAD, 0x4008_0000, &[0; 8])],
        );
        assert_eq!(check(&with_interp), Ok(()), "only loadable segments count");
        let low = image(EM_AARCH64, 0x1000, &[(PT_LOAD, 0x1000, &[0; 8])]);
        assert!(check(&low).unwrap_err().contains("outside guest RAM"));
        let astray = image(EM_AARCH64, 0x5000_0000, &[(PT_LOAD, 0x4008_0000, &[0; 8])]);
        assert!(check(&astray).unwrap_err().contains("no loadable segment"));
        let empty = image(EM_AARCH64, 0x4008_0000, &[]);
        assert_eq!(check(&empty).unwrap_err(), "no loadable segment");
    }
}
