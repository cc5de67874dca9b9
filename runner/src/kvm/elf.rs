//! Loading a payload ELF into guest RAM.

use mte_protocol::{RAM_IPA, RAM_SIZE};

/// A loadable segment: bytes to copy and the zero fill after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub ipa: u64,
    pub data: Vec<u8>,
    pub mem_size: u64,
}

/// A parsed payload, ready to be copied into any number of VMs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub entry: u64,
    pub segments: Vec<Segment>,
}

const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl Payload {
    /// Parse and validate: a little-endian ELF64 for aarch64 whose loadable segments and entry
    /// lie in guest RAM.
    pub fn parse(image: &[u8]) -> Result<Self, String> {
        if image.get(..4) != Some(b"\x7fELF") {
            return Err("not an ELF file".into());
        }
        if image.get(4) != Some(&2) || image.get(5) != Some(&1) {
            return Err("not a little-endian 64-bit ELF".into());
        }
        let truncated = || "ELF header truncated".to_string();
        let machine = u16_at(image, 18).ok_or_else(truncated)?;
        if machine != EM_AARCH64 {
            return Err(format!(
                "ELF machine is {machine}, not aarch64 ({EM_AARCH64})"
            ));
        }
        let entry = u64_at(image, 24).ok_or_else(truncated)?;
        let phoff = u64_at(image, 32).ok_or_else(truncated)? as usize;
        let phentsize = u16_at(image, 54).ok_or_else(truncated)? as usize;
        let phnum = u16_at(image, 56).ok_or_else(truncated)? as usize;
        if phentsize < 56 {
            return Err(format!("program header entries of {phentsize} bytes"));
        }
        let ram = RAM_IPA..RAM_IPA + RAM_SIZE;
        let mut segments = Vec::new();
        for i in 0..phnum {
            let ph = phoff + i * phentsize;
            let bad = || format!("program header {i} truncated");
            if u32_at(image, ph).ok_or_else(bad)? != PT_LOAD {
                continue;
            }
            let offset = u64_at(image, ph + 8).ok_or_else(bad)? as usize;
            let paddr = u64_at(image, ph + 24).ok_or_else(bad)?;
            let file_size = u64_at(image, ph + 32).ok_or_else(bad)? as usize;
            let mem_size = u64_at(image, ph + 40).ok_or_else(bad)?;
            if mem_size < file_size as u64 {
                return Err(format!("segment {i}: memory size below file size"));
            }
            if !ram.contains(&paddr) || paddr.checked_add(mem_size).is_none_or(|end| end > ram.end)
            {
                return Err(format!(
                    "segment {i} at {paddr:#x} (+{mem_size:#x}) lies outside guest RAM"
                ));
            }
            let data = offset
                .checked_add(file_size)
                .and_then(|end| image.get(offset..end))
                .ok_or_else(|| {
                    format!("segment {i}: file data beyond the end of the file (truncated?)")
                })?;
            segments.push(Segment {
                ipa: paddr,
                data: data.to_vec(),
                mem_size,
            });
        }
        if segments.is_empty() {
            return Err("no loadable segment".into());
        }
        if !segments
            .iter()
            .any(|s| (s.ipa..s.ipa + s.mem_size).contains(&entry))
        {
            return Err(format!("entry point {entry:#x} is in no loadable segment"));
        }
        Ok(Payload { entry, segments })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF with one PT_LOAD of `code` at `ipa`.
    fn elf(ipa: u64, code: &[u8], machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[24..32].copy_from_slice(&ipa.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        b[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        b[ph + 24..ph + 32].copy_from_slice(&ipa.to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        b[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64 + 64).to_le_bytes());
        b.extend_from_slice(code);
        b
    }

    #[test]
    fn a_valid_payload_parses() {
        let p = Payload::parse(&elf(0x4008_0000, &[1, 2, 3, 4], EM_AARCH64)).unwrap();
        assert_eq!(p.entry, 0x4008_0000);
        assert_eq!(p.segments[0].data, vec![1, 2, 3, 4]);
        assert_eq!(p.segments[0].mem_size, 68);
    }

    #[test]
    fn corrupt_payloads_are_refused_with_a_reason() {
        assert!(Payload::parse(b"MZ").unwrap_err().contains("not an ELF"));
        assert!(Payload::parse(&elf(0x4008_0000, &[0; 4], 62))
            .unwrap_err()
            .contains("not aarch64"));
        assert!(Payload::parse(&elf(0x1000, &[0; 4], EM_AARCH64))
            .unwrap_err()
            .contains("outside guest RAM"));
        let mut cut = elf(0x4008_0000, &[0; 16], EM_AARCH64);
        cut.truncate(cut.len() - 8);
        assert!(Payload::parse(&cut).unwrap_err().contains("truncated"));
    }
}
