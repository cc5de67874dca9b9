//! The initramfs archive, in the cpio "newc" format the Linux kernel unpacks, written with the
//! `cpio` crate. Times and owners are zero so that the same inputs make the same bytes; each
//! entry gets an inode of its own.

use std::io::{self, Write};

use cpio::newc::{trailer, Builder};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

pub struct CpioWriter<W: Write> {
    out: W,
    next_inode: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter { out, next_inode: 1 }
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
        trailer(&mut self.out)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        links: u32,
        (major, minor): (u32, u32),
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
        let entry = Builder::new(name)
            .ino(self.next_inode)
            .mode(mode)
            .nlink(links)
            .rdev_major(major)
            .rdev_minor(minor);
        self.next_inode += 1;
        let mut writer = entry.write(&mut self.out, size);
        writer.write_all(data)?;
        writer.finish().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpio::newc::Reader;

    /// An entry read back: name, mode, device numbers and data.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Read an archive back as the kernel does.
    fn parse(mut archive: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        loop {
            let mut reader = Reader::new(archive).unwrap();
            let entry = reader.entry();
            if entry.is_trailer() {
                assert!(
                    reader.finish().unwrap().is_empty(),
                    "nothing follows the trailer"
                );
                return entries;
            }
            let (name, mode) = (entry.name().to_string(), entry.mode());
            let rdev = (entry.rdev_major(), entry.rdev_minor());
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut data).unwrap();
            entries.push((name, mode, rdev, data));
            archive = reader.finish().unwrap();
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
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "dev/console", "init", "mte", "mte/args", "mte/empty"]
        );
        assert_eq!(entries[0].1, 0o040_755);
        assert_eq!((entries[1].1, entries[1].2), (0o020_600, (5, 1)));
        assert_eq!(entries[2].1, 0o100_755);
        assert_eq!(entries[2].3, b"\x7fELF and more");
        assert_eq!(entries[4].3, b"--lane\nemulated\n");
        assert!(entries[5].3.is_empty());
    }

    #[test]
    fn empty_or_nul_names_are_refused() {
        let mut cpio = CpioWriter::new(Vec::new());
        assert!(cpio.file("/", 0o644, b"").is_err());
        assert!(cpio.file("a\0b", 0o644, b"").is_err());
    }
}
