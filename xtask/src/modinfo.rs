//! What a kernel module's `.modinfo` section says: its `key=value` strings, and the modules
//! it depends on.
//!
//! Kept apart from the rest of `kernel_modules` (files, decompression, load order) and free of
//! the crate's own items, so that the fuzz targets include this file as it is
//! (`#[path = "../../xtask/src/modinfo.rs"]`): a module file comes from a kernel package,
//! which another program wrote.

use anyhow::{Context, Result};
use object::{Object, ObjectSection};

/// The `key=value` strings of a module's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>> {
    let object = object::File::parse(elf).context("not an ELF object")?;
    let section = object
        .section_by_name(".modinfo")
        .context("the ELF object has no .modinfo section")?;
    let data = section.data().context("the ELF object is truncated")?;
    Ok(data
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let text = std::str::from_utf8(entry).ok()?;
            let (key, value) = text.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect())
}

/// `zsmalloc,lz4_compress` -> both names; an empty value has none.
pub fn split_depends(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 object whose sections are `(name, contents)`, after the null section and
    /// a section-name table.
    fn object(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut name_at = Vec::new();
        for (name, _) in sections.iter().chain(&[(".shstrtab", &[][..])]) {
            name_at.push(names.len() as u32);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let mut bytes = vec![0u8; 64];
        bytes[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        let mut placed = Vec::new();
        for (_, contents) in sections {
            placed.push((bytes.len() as u64, contents.len() as u64));
            bytes.extend_from_slice(contents);
        }
        placed.push((bytes.len() as u64, names.len() as u64));
        bytes.extend_from_slice(&names);
        let shoff = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 64]);
        for (i, (offset, size)) in placed.iter().enumerate() {
            let mut header = [0u8; 64];
            header[..4].copy_from_slice(&name_at[i].to_le_bytes());
            header[24..32].copy_from_slice(&offset.to_le_bytes());
            header[32..40].copy_from_slice(&size.to_le_bytes());
            bytes.extend_from_slice(&header);
        }
        let count = placed.len() as u16 + 1;
        bytes[40..48].copy_from_slice(&shoff.to_le_bytes());
        bytes[58..60].copy_from_slice(&64u16.to_le_bytes());
        bytes[60..62].copy_from_slice(&count.to_le_bytes());
        bytes[62..64].copy_from_slice(&(count - 1).to_le_bytes());
        bytes
    }

    #[test]
    fn modinfo_is_read_from_its_section() {
        let elf = object(&[
            (".text", b"\x1f\x20\x03\xd5"),
            (
                ".modinfo",
                b"alias=zpool-zsmalloc\0depends=zsmalloc,lz4_compress\0name=zram\0\0",
            ),
        ]);
        let info = modinfo(&elf).unwrap();
        assert_eq!(
            info,
            [
                ("alias".to_string(), "zpool-zsmalloc".to_string()),
                ("depends".into(), "zsmalloc,lz4_compress".into()),
                ("name".into(), "zram".into()),
            ]
        );
        assert!(modinfo(&object(&[(".text", b"")]))
            .unwrap_err()
            .to_string()
            .contains("no .modinfo"));
        assert!(modinfo(b"#!/bin/sh").is_err());
        // Without the last section header, the section names cannot be read.
        let mut cut = elf.clone();
        cut.truncate(cut.len() - 64);
        assert!(modinfo(&cut).is_err());
    }

    #[test]
    fn depends_lists_names_with_underscores() {
        assert_eq!(
            split_depends("lz4_compress,lz4hc-compress"),
            ["lz4_compress", "lz4hc_compress"]
        );
        assert!(split_depends("").is_empty());
    }
}
