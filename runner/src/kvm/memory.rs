//! Guest RAM: an anonymous mapping the VMM shares with KVM through a memslot.

use std::io;
use std::ptr::NonNull;

/// An anonymous private mapping, unmapped on drop.
pub struct GuestRam {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access goes through &self/&mut self
// (the guest writes to it concurrently only while its vCPU runs, which happens on the thread
// that owns the VM).
unsafe impl Send for GuestRam {}

impl GuestRam {
    pub fn new(size: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(GuestRam {
            base: NonNull::new(ptr.cast()).expect("mmap never returns null"),
            size,
        })
    }

    pub fn host_address(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    pub fn size(&self) -> usize {
        self.size
    }

    fn check(&self, offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.size),
            "guest RAM access out of range"
        );
    }

    /// Copy bytes out. Volatile, because the guest changes this memory behind the compiler's back.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len());
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: in range (checked above) of a live mapping.
            *byte = unsafe { self.base.as_ptr().add(offset + i).read_volatile() };
        }
    }

    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        self.check(offset, bytes.len());
        for (i, byte) in bytes.iter().enumerate() {
            // SAFETY: in range (checked above) of a live mapping.
            unsafe { self.base.as_ptr().add(offset + i).write_volatile(*byte) };
        }
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped; KVM's memslot dies with the VM fd, which
        // is dropped before this (field order of the owners).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let mut ram = GuestRam::new(1 << 16).unwrap();
        ram.write(100, &[1, 2, 3]);
        let mut out = [0u8; 4];
        ram.read(99, &mut out);
        assert_eq!(out, [0, 1, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn out_of_range_access_panics() {
        let ram = GuestRam::new(4096).unwrap();
        ram.read(4095, &mut [0u8; 2]);
    }
}
