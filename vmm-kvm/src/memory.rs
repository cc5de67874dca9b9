//! Guest RAM: the VMM's mapping that a memslot hands to KVM, with its backing (private or
//! shared anonymous memory, a memfd, a file), and what the VMM can do to it and learn about it
//! (madvise, mprotect, mincore, /proc/self/pagemap, /proc/kpageflags).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use mte_suites::host_mm::{Backing, PageState};
use mte_suites::vmm::VmmError;
pub use mte_vmm::host_kernel::page_size;
use mte_vmm::host_kernel::{page_state, pagemap_of};

use super::backing;

/// A mapping of guest RAM, unmapped on drop.
pub struct GuestRam {
    base: NonNull<u8>,
    size: usize,
    backing: Backing,
    /// The memfd or file behind the mapping, kept so that it can be mapped again.
    file: Option<Arc<OwnedFd>>,
}

// SAFETY: the mapping is plain memory owned by this value, valid until it is dropped; every
// access is a volatile copy in or out (or a system call on the range), which the guest's vCPUs
// and the VMM's threads may make at the same time, as with any memory a guest shares with its
// VMM.
unsafe impl Send for GuestRam {}
// SAFETY: as for Send: no access assumes that nobody else changes the memory meanwhile.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Private anonymous memory, as VMMs use by default.
    pub fn new(size: usize) -> io::Result<Self> {
        Self::map(size, Backing::PrivateAnonymous, None)
    }

    /// Memory with the given backing (a memfd or a file is created for it, and unlinked).
    pub fn with_backing(size: usize, backing: Backing) -> Result<Self, VmmError> {
        let file = backing::open(backing, size)?.map(Arc::new);
        Self::map(size, backing, file).map_err(|e| VmmError::Sys {
            call: format!("mmap of guest RAM on {}", backing.describe()),
            errno: e.raw_os_error().unwrap_or(0),
        })
    }

    /// A second mapping of the same memory: only for backings with a file.
    pub fn second_mapping(&self) -> io::Result<Option<GuestRam>> {
        self.second_mapping_with(0)
    }

    /// A second mapping of the same memory with protection bits `extra` besides read and
    /// write (PROT_MTE, say): only for backings with a file.
    pub fn second_mapping_with(&self, extra: i32) -> io::Result<Option<GuestRam>> {
        match &self.file {
            Some(file) => {
                Self::map_with(self.size, self.backing, Some(Arc::clone(file)), extra).map(Some)
            }
            None => Ok(None),
        }
    }

    fn map(size: usize, backing: Backing, file: Option<Arc<OwnedFd>>) -> io::Result<Self> {
        Self::map_with(size, backing, file, 0)
    }

    fn map_with(
        size: usize,
        backing: Backing,
        file: Option<Arc<OwnedFd>>,
        extra: i32,
    ) -> io::Result<Self> {
        let sharing = match backing {
            Backing::PrivateAnonymous | Backing::RamfsFile { shared: false } => libc::MAP_PRIVATE,
            _ => libc::MAP_SHARED,
        };
        let (flags, fd) = match &file {
            Some(file) => (sharing, file.as_raw_fd()),
            None => (sharing | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1),
        };
        // SAFETY: a fresh mapping (anonymous, or of a file we own); no existing memory is
        // affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE | extra,
                flags,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(GuestRam {
            base: NonNull::new(ptr.cast()).expect("mmap never returns null"),
            size,
            backing,
            file,
        })
    }

    pub fn host_address(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn backing(&self) -> Backing {
        self.backing
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

    /// Copy bytes out with one memcpy: for memory no vCPU is writing, as in the plain copy the
    /// performance suite sets a tag copy against.
    pub fn copy_out(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len());
        // SAFETY: in range (checked above) of a live mapping; `out` is ours and apart from it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
    }

    pub fn write(&self, offset: usize, bytes: &[u8]) {
        self.check(offset, bytes.len());
        for (i, byte) in bytes.iter().enumerate() {
            // SAFETY: in range (checked above) of a live mapping.
            unsafe { self.base.as_ptr().add(offset + i).write_volatile(*byte) };
        }
    }

    /// The 32-bit word at `offset` (4-byte aligned), read atomically with acquire ordering: a
    /// word the guest's vCPUs change atomically while the host watches.
    pub fn load_u32(&self, offset: usize) -> u32 {
        self.word(offset).load(Ordering::Acquire)
    }

    /// Store the 32-bit word at `offset` (4-byte aligned) atomically with release ordering.
    pub fn store_u32(&self, offset: usize, value: u32) {
        self.word(offset).store(value, Ordering::Release)
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4);
        assert!(offset % 4 == 0, "a word of guest RAM is 4-byte aligned");
        // SAFETY: in range (checked) and aligned; the mapping lives as long as `self`, and
        // every access to this word from the host is atomic (the guest's are its own).
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    /// madvise(2) of `[offset, offset + len)` (page aligned).
    pub fn madvise(&self, offset: usize, len: usize, advice: i32) -> io::Result<()> {
        self.check(offset, len);
        // SAFETY: advice on a range of our own mapping; none of the advice used unmaps it.
        let ret = unsafe { libc::madvise(self.base.as_ptr().add(offset).cast(), len, advice) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// mprotect(2) of `[offset, offset + len)` (page aligned).
    pub fn mprotect(&self, offset: usize, len: usize, prot: i32) -> io::Result<()> {
        self.check(offset, len);
        // SAFETY: a range of our own mapping; the host writes guest RAM only through `write`,
        // which the callers do not use while the range is read-only.
        let ret = unsafe { libc::mprotect(self.base.as_ptr().add(offset).cast(), len, prot) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// What the kernel says about each page of `[offset, offset + len)`.
    pub fn page_states(&self, offset: usize, len: usize) -> io::Result<Vec<PageState>> {
        self.check(offset, len);
        let page = page_size();
        let start = self.host_address() as usize + offset;
        let pages = len.div_ceil(page);
        let mut incore = vec![0u8; pages];
        // SAFETY: a range of our own mapping, and a vector of one byte a page.
        if unsafe { libc::mincore((start as *mut u8).cast(), len, incore.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let kpageflags = File::open("/proc/kpageflags").ok();
        Ok(pagemap(start, pages)?
            .into_iter()
            .zip(incore)
            .map(|(entry, incore)| page_state(entry, kpageflags.as_ref(), Some(incore & 1 == 1)))
            .collect())
    }
}

/// The /proc/self/pagemap entries of `pages` pages of this process from the address `start`.
pub fn pagemap(start: usize, pages: usize) -> io::Result<Vec<u64>> {
    pagemap_of("self", start, pages)
}

/// Whether a pagemap entry is neither present nor swapped (nor a migration entry, which
/// pagemap counts as swapped): a page of private anonymous memory in that state was never
/// written or was dropped, and reads as zeros.
pub fn never_mapped(entry: u64) -> bool {
    entry >> 62 == 0
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map() mapped; KVM's memslot dies with the VM fd, which
        // is dropped before this (field order of the owners).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let ram = GuestRam::new(1 << 16).unwrap();
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

    #[test]
    fn a_memfd_mapped_twice_shares_its_bytes() {
        let ram = GuestRam::with_backing(1 << 16, Backing::Memfd).unwrap();
        let second = ram
            .second_mapping()
            .unwrap()
            .expect("a memfd can be mapped again");
        ram.write(4096, &[7, 8, 9]);
        let mut out = [0u8; 3];
        second.read(4096, &mut out);
        assert_eq!(out, [7, 8, 9]);
        assert_ne!(ram.host_address(), second.host_address());
        assert!(GuestRam::new(4096)
            .unwrap()
            .second_mapping()
            .unwrap()
            .is_none());
    }

    #[test]
    fn pages_never_written_are_told_from_written_ones() {
        let page = page_size();
        let ram = GuestRam::new(4 * page).unwrap();
        ram.write(page, &[1]);
        let entries = pagemap(ram.host_address() as usize, 4).unwrap();
        let never: Vec<bool> = entries.into_iter().map(never_mapped).collect();
        assert_eq!(never, [true, false, true, true]);
    }

    #[test]
    fn dontneed_on_private_memory_frees_the_pages() {
        let page = page_size();
        let ram = GuestRam::new(4 * page).unwrap();
        ram.write(0, &vec![1u8; 4 * page]);
        let states = ram.page_states(0, 4 * page).unwrap();
        assert!(states.iter().all(|s| s.present && s.resident), "{states:?}");
        ram.madvise(0, 2 * page, libc::MADV_DONTNEED).unwrap();
        let states = ram.page_states(0, 4 * page).unwrap();
        assert!(!states[0].present && !states[1].present && states[2].present);
        let mut out = [9u8; 1];
        ram.read(0, &mut out);
        assert_eq!(out, [0]);
    }

    #[test]
    fn a_read_only_range_still_reads() {
        let page = page_size();
        let ram = GuestRam::new(2 * page).unwrap();
        ram.write(page, &[5]);
        ram.mprotect(page, page, libc::PROT_READ).unwrap();
        let mut out = [0u8; 1];
        ram.read(page, &mut out);
        assert_eq!(out, [5]);
        ram.mprotect(page, page, libc::PROT_READ | libc::PROT_WRITE)
            .unwrap();
        ram.write(page, &[6]);
    }
}
