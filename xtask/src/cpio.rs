//! A writer for the cpio "newc" format, the one the Linux kernel unpacks as an initramfs.
//!
//! Each entry is a 110-byte ASCII header (magic `070701`, then thirteen 8-digit hex fields), the
//! NUL-terminated name padded to a multiple of 4 bytes, and the data padded likewise; the archive
//! ends with an entry named `TRAILER!!!`. Times and owners are zero so that the same inputs make
//! the same bytes.

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

pub struct CpioWriter<W: Write> {
    out: W,
    offset: u64,
    next_inode: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            offset: 0,
            next_inode: 1,
        }
    }

    /// A directory; `path` is relative to the root (a leading `/` is dropped).
    pub fn directory(&mut self, path: &str, permissions: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | permissions, 2, (0, 0), &[])
    }

    pub fn file(&mut self, path: &str, permissions: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | permissions, 1, (0, 0), data)
    }

    /// A character device node, e.g. `/dev/console` (5, 1), which the kernel opens for `/init`
    /// before anything could mount devtmpfs.
    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        self.entry(path, S_IFCHR | permissions, 1, (major, minor), &[])
    }

    /// Write the trailer and hand back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0, 1, (0, 0), 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        links: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        if name.is_empty() || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio path {path:?}"),
            ));
        }
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{path} is over 4 GiB"))
        })?;
        let inode = self.next_inode;
        self.next_inode += 1;
        self.header(name, inode, mode, links, rdev, size)?;
        self.write(data)?;
        self.pad()
    }

    fn header(
        &mut self,
        name: &str,
        inode: u32,
        mode: u32,
        links: u32,
        rdev: (u32, u32),
        size: u32,
    ) -> io::Result<()> {
        let name_size = name.len() as u32 + 1;
        let fields = [
            inode, mode, 0, 0, links, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str(MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - (self.offset % 4) as usize) % 4;
        self.write(&[0; 3][..padding])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Entry {
        name: String,
        mode: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// Read an archive back the way the kernel does, checking alignment on the way.
    fn parse(archive: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(at % 4, 0, "entry at {at} is not 4-byte aligned");
            let header = std::str::from_utf8(&archive[at..at + 110]).unwrap();
            assert_eq!(&header[..6], MAGIC);
            let field = |i: usize| u32::from_str_radix(&header[6 + 8 * i..14 + 8 * i], 16).unwrap();
            let (mode, size, name_size) = (field(1), field(6) as usize, field(11) as usize);
            let name_start = at + 110;
            assert_eq!(
                archive[name_start + name_size - 1],
                0,
                "name is NUL-terminated"
            );
            let name = std::str::from_utf8(&archive[name_start..name_start + name_size - 1])
                .unwrap()
                .to_string();
            let data_start = (name_start + name_size).next_multiple_of(4);
            let data = archive[data_start..data_start + size].to_vec();
            at = (data_start + size).next_multiple_of(4);
            if name == TRAILER {
                assert_eq!(at, archive.len(), "nothing follows the trailer");
                return entries;
            }
            entries.push(Entry {
                name,
                mode,
                rdev: (field(9), field(10)),
                data,
            });
        }
    }

    #[test]
    fn archive_parses_back_to_what_was_written() {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.directory("/dev", 0o755).unwrap();
        cpio.char_device("/dev/console", 0o600, 5, 1).unwrap();
        cpio.file("/init", 0o755, b"\x7fELF and more").unwrap();
        cpio.directory("mte", 0o755).unwrap();
        cpio.file("/mte/args", 0o644, b"--lane\nemulated\n")
            .unwrap();
        cpio.file("/mte/empty", 0o644, b"").unwrap();
        let archive = cpio.finish().unwrap();
        assert_eq!(archive.len() % 4, 0);

        let entries = parse(&archive);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "dev/console", "init", "mte", "mte/args", "mte/empty"]
        );
        assert_eq!(entries[0].mode, 0o040_755);
        assert_eq!((entries[1].mode, entries[1].rdev), (0o020_600, (5, 1)));
        assert_eq!(entries[2].mode, 0o100_755);
        assert_eq!(entries[2].data, b"\x7fELF and more");
        assert_eq!(entries[4].data, b"--lane\nemulated\n");
        assert!(entries[5].data.is_empty());
    }

    #[test]
    fn header_fields_are_eight_hex_digits() {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.file("a", 0o644, b"xyz").unwrap();
        let archive = cpio.finish().unwrap();
        let header = std::str::from_utf8(&archive[..110]).unwrap();
        assert!(header[6..].bytes().all(|b| b.is_ascii_hexdigit()));
        // name "a\0" ends at 112, already aligned; data "xyz" then one pad byte.
        assert_eq!(&archive[110..116], b"a\0xyz\0");
        assert_eq!(&archive[116..122], MAGIC.as_bytes());
    }

    #[test]
    fn empty_or_nul_names_are_refused() {
        let mut cpio = CpioWriter::new(Vec::new());
        assert!(cpio.file("/", 0o644, b"").is_err());
        assert!(cpio.file("a\0b", 0o644, b"").is_err());
    }
}
