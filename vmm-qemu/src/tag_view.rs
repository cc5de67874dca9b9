//! The host's view of a KVM guest's tags under QEMU, where QEMU gives none: QEMU maps guest
//! RAM without PROT_MTE, never calls KVM_ARM_MTE_COPY_TAGS, and its gdbstub's tag packets do
//! not work under KVM. Where the guest's RAM is a shared memfd, the runner maps the same memfd
//! with PROT_MTE (which the host kernel allows for shmem) and reads and writes the tags of its
//! pages with LDG and STG: they are the tags the guest's loads are checked against, kept by
//! the host kernel with the page.

use std::ptr::NonNull;

use mte_protocol::{GRANULE, RAM_IPA, RAM_SIZE};
use mte_suites::vmm::VmmError;

use crate::qemu_ram::Mapping;

/// How this view reads and writes tags, in the words verdicts quote.
pub const DESCRIPTION: &str = "LDG and STG through the runner's own PROT_MTE mapping of QEMU's \
    shared memfd guest RAM (QEMU maps it without PROT_MTE, and its gdbstub's tag packets do not \
    work under KVM)";

/// The runner's PROT_MTE mapping of a QEMU's memfd guest RAM, unmapped on drop.
pub struct MemfdTagView {
    base: NonNull<u8>,
}

// SAFETY: a mapping owned by this value, touched only by tag instructions through &self
// while the guest waits at its doorbell.
unsafe impl Send for MemfdTagView {}

impl MemfdTagView {
    /// Map the memfd behind QEMU's (pid `pid`) shared RAM mapping `ram` with PROT_MTE.
    pub fn open(pid: u32, ram: &Mapping) -> Result<Self, VmmError> {
        if !ram.shared() {
            return Err(VmmError::Host(format!(
                "QEMU maps its guest RAM privately ({}): no other process can map it",
                ram.perms
            )));
        }
        map_with_tags(&ram.map_file(pid)).map(|base| MemfdTagView { base })
    }

    /// The granule pointers of `[ipa, ipa + len)` in this mapping.
    fn granules(&self, ipa: u64, len: u64) -> Result<impl Iterator<Item = u64>, VmmError> {
        if ipa < RAM_IPA || ipa + len > RAM_IPA + RAM_SIZE {
            return Err(VmmError::Host(format!(
                "tags of [{ipa:#x}, +{len:#x}) asked for: outside guest RAM"
            )));
        }
        let start = self.base.as_ptr() as u64 + (ipa - RAM_IPA);
        Ok((0..len / GRANULE).map(move |i| start + i * GRANULE))
    }

    /// The tags of `[ipa, ipa + len)`, one byte a granule.
    pub fn read(&self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        Ok(self.granules(ipa, len)?.map(load_tag).collect())
    }

    /// Set the tags of the granules from `ipa` on.
    pub fn write(&self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        let granules = self.granules(ipa, tags.len() as u64 * GRANULE)?;
        granules.zip(tags).for_each(|(at, &tag)| store_tag(at, tag));
        Ok(())
    }
}

impl Drop for MemfdTagView {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map_with_tags mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), RAM_SIZE as usize) };
    }
}

#[cfg(target_arch = "aarch64")]
fn map_with_tags(file: &str) -> Result<NonNull<u8>, VmmError> {
    use std::os::fd::AsRawFd;

    let fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .map_err(|e| VmmError::Host(format!("opening QEMU's guest RAM at {file}: {e}")))?;
    // SAFETY: a new shared mapping of the whole memfd; nothing else lives at the address the
    // kernel picks, and the descriptor may close once it is mapped.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            RAM_SIZE as usize,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_MTE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        return Err(VmmError::Sys {
            call: format!("mmap(PROT_MTE, MAP_SHARED) of QEMU's guest RAM ({file})"),
            errno: e.raw_os_error().unwrap_or(0),
        });
    }
    Ok(NonNull::new(base.cast()).expect("mmap succeeded"))
}

#[cfg(not(target_arch = "aarch64"))]
fn map_with_tags(_file: &str) -> Result<NonNull<u8>, VmmError> {
    Err(VmmError::Unsupported(
        "reading tags through a PROT_MTE mapping needs an arm64 host with MTE".into(),
    ))
}

/// The allocation tag of the granule at `address` (LDG).
#[cfg(target_arch = "aarch64")]
fn load_tag(address: u64) -> u8 {
    let mut tagged = address;
    // SAFETY: LDG reads the allocation tag of a granule of our PROT_MTE mapping (the caller
    // keeps `address` inside it) and writes only the register.
    unsafe {
        core::arch::asm!(
            ".arch_extension memtag",
            "ldg {tagged}, [{address}]",
            tagged = inout(reg) tagged,
            address = in(reg) address,
            options(nostack, readonly, preserves_flags)
        );
    }
    ((tagged >> mte_protocol::TAG_SHIFT) & 0xf) as u8
}

/// Set the allocation tag of the granule at `address` (STG).
#[cfg(target_arch = "aarch64")]
fn store_tag(address: u64, tag: u8) {
    let tagged = mte_protocol::with_tag(address, tag);
    // SAFETY: STG writes the allocation tag of one granule of our PROT_MTE mapping (the caller
    // keeps `address` inside it), never its data.
    unsafe {
        core::arch::asm!(
            ".arch_extension memtag",
            "stg {tagged}, [{tagged}]",
            tagged = in(reg) tagged,
            options(nostack, preserves_flags)
        );
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn load_tag(_address: u64) -> u8 {
    unreachable!("no view is mapped off arm64")
}

#[cfg(not(target_arch = "aarch64"))]
fn store_tag(_address: u64, _tag: u8) {
    unreachable!("no view is mapped off arm64")
}
