//! The source side: the guest's RAM and tags as the engine reads them, and the mailbox words a
//! copying thread watches and sets while the guest runs its pre-copy workload.

use std::os::fd::RawFd;

use mte_protocol::{granules, offsets, MAILBOX_IPA, PAGE_SIZE, RAM_IPA, STOP_ARG};
use mte_suites::host_mm::Backing;
use mte_suites::vmm::VmmError;

use crate::copy_tags;
use crate::memory;
use crate::vm::Vm;

/// Tags are read this many bytes of guest RAM at a time: one ioctl for many pages.
const TAG_CHUNK: u64 = 1 << 20;

/// A VM's RAM and its tags, by raw descriptor and address so that copying threads can read them
/// while the vCPU thread runs the guest.
#[derive(Clone, Copy)]
pub struct SourceMemory {
    vm: RawFd,
    hva: *const u8,
    pub size: u64,
    pub page_size: u64,
    /// Private anonymous RAM, whose pages never mapped read as zeros (data and tags).
    private_anonymous: bool,
}

// SAFETY: the mapping and the VM outlive every thread given a copy (the engine's threads are
// scoped inside the source's lifetime); reads race only with the guest, which pre-copy
// tolerates by sending dirtied pages again.
unsafe impl Send for SourceMemory {}

impl SourceMemory {
    pub fn of(vm: &Vm) -> Self {
        SourceMemory {
            vm: vm.raw_fd(),
            hva: vm.ram.host_address() as *const u8,
            size: vm.ram.size() as u64,
            page_size: memory::page_size() as u64,
            private_anonymous: vm.ram.backing() == Backing::PrivateAnonymous,
        }
    }

    /// For each page of `[ipa, ipa + len)`, whether it was never mapped: zero data and zero
    /// tags, known without reading either (the guest never touched it, nor did KVM map it for
    /// the guest). All `false` where that cannot be known: RAM of another backing, or no
    /// pagemap.
    pub fn never_mapped(&self, ipa: u64, len: u64) -> Vec<bool> {
        let pages = (len / self.page_size) as usize;
        let offset = self.offset(ipa, len);
        if !self.private_anonymous {
            return vec![false; pages];
        }
        match memory::pagemap(self.hva as usize + offset, pages) {
            Ok(entries) => entries.into_iter().map(memory::never_mapped).collect(),
            Err(_) => vec![false; pages],
        }
    }

    /// The tags of `[ipa, ipa + len)` as [`SourceMemory::tags`] reads them, but zeros for the
    /// pages `skip` marks, which are not read. Returns the tags and the bytes of guest RAM
    /// actually read.
    pub fn tags_except(
        &self,
        ipa: u64,
        len: u64,
        skip: &[bool],
    ) -> Result<(Vec<u8>, u64), VmmError> {
        let per_page = granules(self.page_size);
        let mut tags = vec![0u8; granules(len)];
        let mut read = 0;
        let mut page = 0;
        while page < skip.len() {
            if skip[page] {
                page += 1;
                continue;
            }
            let run = skip[page..].iter().take_while(|&&s| !s).count();
            let at = page * per_page;
            let run_tags = self.tags(
                ipa + page as u64 * self.page_size,
                run as u64 * self.page_size,
            )?;
            tags[at..at + run_tags.len()].copy_from_slice(&run_tags);
            read += run as u64 * self.page_size;
            page += run;
        }
        Ok((tags, read))
    }

    pub fn vm_fd(&self) -> RawFd {
        self.vm
    }

    pub fn pages(&self) -> usize {
        (self.size / self.page_size) as usize
    }

    /// The bytes of the page at `ipa`, read a word at a time (volatile: the guest may be
    /// writing them).
    pub fn data(&self, ipa: u64) -> Vec<u8> {
        let offset = self.offset(ipa, self.page_size);
        let mut out = vec![0u8; self.page_size as usize];
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            // SAFETY: inside the mapping (checked by `offset`); 8-byte aligned as pages are.
            let word = unsafe { (self.hva.add(offset + i * 8) as *const u64).read_volatile() };
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        out
    }

    /// The tags of `[ipa, ipa + len)` (page aligned), one byte a granule, through
    /// KVM_ARM_MTE_COPY_TAGS in chunks.
    pub fn tags(&self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        self.offset(ipa, len);
        let mut tags = vec![0u8; granules(len)];
        let mut done = 0;
        while done < len {
            let chunk = TAG_CHUNK.min(len - done);
            let at = granules(done);
            copy_tags::read_into(self.vm, ipa + done, &mut tags[at..at + granules(chunk)])?;
            done += chunk;
        }
        Ok(tags)
    }

    fn offset(&self, ipa: u64, len: u64) -> usize {
        assert!(
            ipa >= RAM_IPA && ipa - RAM_IPA + len <= self.size,
            "{ipa:#x}+{len:#x} lies inside guest RAM"
        );
        (ipa - RAM_IPA) as usize
    }

    /// The mailbox words of the guest's pre-copy workload.
    pub fn mailbox(&self) -> WorkloadMailbox {
        let base = self.offset(MAILBOX_IPA, PAGE_SIZE);
        WorkloadMailbox {
            // SAFETY: the mailbox page lies inside the mapping (checked above).
            passes: unsafe { self.hva.add(base + offsets::RESULT) } as *mut u64,
            // SAFETY: as above, the arguments lie in the same mailbox page.
            stop: unsafe { self.hva.add(base + offsets::ARGS + STOP_ARG * 8) } as *mut u64,
        }
    }
}

/// `result[0]` (passes done) and `args[STOP_ARG]` of the mailbox, shared with a running guest.
#[derive(Clone, Copy)]
pub struct WorkloadMailbox {
    passes: *mut u64,
    stop: *mut u64,
}

// SAFETY: as for `SourceMemory`, whose mapping these point into.
unsafe impl Send for WorkloadMailbox {}

impl WorkloadMailbox {
    /// Passes the workload has finished (0 until its first).
    pub fn passes(&self) -> u64 {
        // SAFETY: a mailbox word; the guest writes it concurrently, hence volatile.
        unsafe { self.passes.read_volatile() }
    }

    /// Clear the pass count while the guest is paused, so that a count left by an earlier
    /// command is not taken for the workload's.
    pub fn reset(&self) {
        // SAFETY: as in `passes`.
        unsafe { self.passes.write_volatile(0) }
    }

    pub fn request_stop(&self) {
        // SAFETY: as in `passes`.
        unsafe { self.stop.write_volatile(1) }
    }
}
