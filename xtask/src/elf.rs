//! Just enough ELF reading to tell whether a binary can be `/init` of the emulated machine: a
//! 64-bit little-endian aarch64 executable with no program interpreter (the initramfs has no
//! dynamic loader or libc).

const EM_AARCH64: u16 = 183;
const PT_INTERP: u32 = 3;

/// Why a binary is not a static aarch64 executable, or `Ok(())` if it is.
pub fn check_static_aarch64(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());

    let machine = u16_at(18);
    if machine != EM_AARCH64 {
        return Err(format!(
            "built for ELF machine {machine}, not aarch64 ({EM_AARCH64})"
        ));
    }
    let (phoff, phentsize, phnum) = (
        u64_at(32) as usize,
        u16_at(54) as usize,
        u16_at(56) as usize,
    );
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if phentsize < 4 || at + phentsize > bytes.len() {
            return Err("program headers run past the end of the file".into());
        }
        if u32_at(at) == PT_INTERP {
            return Err(
                "dynamically linked (it names a program interpreter); it must be static".into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF header with `program_types` as its program headers.
    fn elf(machine: u16, program_types: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64 + 56 * program_types.len()];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[18..20].copy_from_slice(&machine.to_le_bytes());
        bytes[32..40].copy_from_slice(&64u64.to_le_bytes());
        bytes[54..56].copy_from_slice(&56u16.to_le_bytes());
        bytes[56..58].copy_from_slice(&(program_types.len() as u16).to_le_bytes());
        for (i, kind) in program_types.iter().enumerate() {
            bytes[64 + 56 * i..68 + 56 * i].copy_from_slice(&kind.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn static_aarch64_passes() {
        assert_eq!(check_static_aarch64(&elf(183, &[6, 1, 1, 2])), Ok(()));
    }

    #[test]
    fn other_machines_and_dynamic_binaries_are_named() {
        assert!(check_static_aarch64(&elf(62, &[1]))
            .unwrap_err()
            .contains("machine 62"));
        assert!(check_static_aarch64(&elf(183, &[6, 3, 1]))
            .unwrap_err()
            .contains("dynamically linked"));
        assert!(check_static_aarch64(b"#!/bin/sh\n")
            .unwrap_err()
            .contains("not an ELF"));
        let mut truncated = elf(183, &[1]);
        truncated.truncate(100);
        assert!(check_static_aarch64(&truncated).is_err());
    }
}
