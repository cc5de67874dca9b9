//! A tag copy held mid-page: the user buffer of one KVM_ARM_MTE_COPY_TAGS(TO_GUEST) runs, after
//! its first granules, onto a page that is not there yet and that userfaultfd reports instead
//! of filling. The kernel copies the first granules' tags into the guest page, faults on the
//! next byte of the buffer and waits there (its fault waits on the userfaultfd) until the page
//! is filled: until then the copy has started and not finished. A race that lets the guest go
//! when the copy is held puts the guest's first touch of the page inside the copy, every time,
//! instead of once in many tries.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use mte_suites::vmm::VmmError;

use crate::memory::page_size;
use crate::uffd::{Faults, Userfaultfd};
use crate::vm::io_error;

/// How long each wait for the fault polls before it looks at the clock again.
const POLL_MS: i32 = 5;

/// The user buffer of a held copy: two pages, the first resident and ending with the tags
/// copied before the hold, the second registered with userfaultfd, missing until released.
pub struct HeldCopy {
    uffd: Userfaultfd,
    map: NonNull<u8>,
    page: usize,
    /// Tags copied before the hold.
    before: usize,
    /// What the second page gets when released: the rest of the tags, then zeros.
    rest: Vec<u8>,
}

// SAFETY: the buffer is this value's own mapping; the kernel reads it on another thread (the
// copy's), which is what it is for.
unsafe impl Send for HeldCopy {}
// SAFETY: as for Send: the host only reads the address and fills the second page once, by a
// system call.
unsafe impl Sync for HeldCopy {}

impl HeldCopy {
    /// A buffer holding `tags` (one page's), whose copy is held after `before` of them.
    pub fn new(tags: &[u8], before: usize) -> Result<Self, VmmError> {
        let page = page_size();
        if before == 0 || before >= tags.len() || tags.len() > page {
            return Err(VmmError::Host(format!(
                "a held copy of {} tags holds after 1 to {} of them, not {before}",
                tags.len(),
                tags.len().saturating_sub(1)
            )));
        }
        let uffd = Userfaultfd::open(Faults::Missing)?;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io_error(
                "mmap of a held copy's buffer",
                std::io::Error::last_os_error(),
            ));
        }
        let held = HeldCopy {
            uffd,
            map: NonNull::new(map.cast()).expect("mmap never returns null"),
            page,
            before,
            rest: {
                let mut rest = tags[before..].to_vec();
                rest.resize(page, 0);
                rest
            },
        };
        // SAFETY: the last `before` bytes of the first page, which is ours and resident once
        // written.
        unsafe {
            std::ptr::copy_nonoverlapping(
                tags.as_ptr(),
                held.map.as_ptr().add(page - before),
                before,
            )
        };
        held.uffd
            .register(held.second_page(), page as u64, Faults::Missing)?;
        Ok(held)
    }

    fn second_page(&self) -> u64 {
        self.map.as_ptr() as u64 + self.page as u64
    }

    /// Where the copy's user buffer starts: `before` bytes before the missing page.
    pub fn user_tags(&self) -> *const u8 {
        // SAFETY: inside the first page of the mapping.
        unsafe { self.map.as_ptr().add(self.page - self.before) }
    }

    /// Wait (at most `timeout`) for the copy to reach the missing page; whether it did.
    pub fn wait_until_held(&self, timeout: Duration) -> Result<bool, VmmError> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.uffd.next_fault(POLL_MS)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Fill the missing page with the rest of the tags: the copy goes on.
    pub fn release(&self) -> Result<(), VmmError> {
        self.uffd
            .copy(self.second_page(), &self.rest, true)
            .map(drop)
    }
}

impl Drop for HeldCopy {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; the copy that read it has returned
        // (its thread is joined before the race drops the buffer).
        unsafe { libc::munmap(self.map.as_ptr().cast(), 2 * self.page) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of the buffer (as the kernel's copy reads it) gets the first tags, then waits
    /// on the missing page until the release, then gets the rest.
    #[test]
    fn a_reader_of_the_buffer_waits_at_the_hold_until_released() {
        let tags: Vec<u8> = (0..256).map(|i| (i % 15 + 1) as u8).collect();
        let held = match HeldCopy::new(&tags, 100) {
            Ok(held) => held,
            // userfaultfd may be refused where this test runs unprivileged.
            Err(VmmError::Unsupported(why)) => return eprintln!("skipped: {why}"),
            Err(e) => panic!("{e}"),
        };
        let address = held.user_tags() as usize;
        let reader = std::thread::spawn(move || {
            let mut out = vec![0u8; 256];
            // Byte by byte, as the kernel's copy reads it.
            for (i, byte) in out.iter_mut().enumerate() {
                // SAFETY: inside the held copy's buffer, which stays mapped until the test
                // ends (its second page fills on release); a volatile read.
                *byte = unsafe { ((address + i) as *const u8).read_volatile() };
            }
            out
        });
        assert!(held.wait_until_held(Duration::from_secs(5)).unwrap());
        assert!(!reader.is_finished(), "the reader went past the hold");
        held.release().unwrap();
        assert_eq!(reader.join().unwrap(), tags);
    }
}
