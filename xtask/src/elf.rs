//! Whether the built images can do their jobs: the runner must be a static aarch64 executable
//! (the initramfs has no dynamic loader or libc), the payload must fit the guest memory layout.
//! Both are read with the `object` crate; the payload check is the one the VMM backends load
//! payloads with (`mte_vmm::payload`).

use object::elf::PT_INTERP;
use object::read::elf::ProgramHeader;

/// Why a binary is not a static aarch64 executable, or `Ok(())` if it is.
pub fn check_static_aarch64(bytes: &[u8]) -> Result<(), String> {
    let elf = mte_vmm::payload::aarch64_elf(bytes)?;
    let endian = elf.endian();
    if elf
        .elf_program_headers()
        .iter()
        .any(|header| header.p_type(endian) == PT_INTERP)
    {
        return Err(
            "dynamically linked (it names a program interpreter); it must be static".into(),
        );
    }
    Ok(())
}

/// Why an image cannot be loaded as a payload, or `Ok(())` if it can.
pub fn check_payload(bytes: &[u8]) -> Result<(), String> {
    mte_vmm::payload::check(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF header with `program_types` as its program headers.
    fn elf(machine: u16, program_types: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64 + 56 * program_types.len()];
        bytes[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        bytes[18..20].copy_from_slice(&machine.to_le_bytes());
        bytes[32..40].copy_from_slice(&64u64.to_le_bytes());
        bytes[52..54].copy_from_slice(&64u16.to_le_bytes());
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
