//! A PROT_MTE view of guest RAM in the VMM, for the host's own tag loads and stores (LDG and
//! STG from a VMM thread, as a VMM that keeps a guest's tags itself would make them): a second
//! MAP_SHARED mapping of the memfd or file behind RAM where it has one (a memslot that KVM lets
//! have MTE from 6.2 on), else the VMM's own mapping of private RAM, given PROT_MTE by
//! mprotect(2) over the range the view covers.
//!
//! The host's first touch of a page through a PROT_MTE mapping initialises its tags in the
//! host kernel (`set_pte_at()`, `mte_sync_tags()`), which is one more path into the tag
//! initialisation that a vCPU's first touch (`sanitise_mte_tags()`) races.

use mte_suites::vmm::VmmError;

use crate::memory::GuestRam;
use crate::vm::io_error;

/// PROT_MTE (arm64's asm/mman.h).
const PROT_MTE: i32 = 0x20;

/// Where a view's mapping comes from.
enum Mapping {
    /// A second mapping of RAM's file, unmapped with the view.
    Second(GuestRam),
    /// RAM's own mapping, given PROT_MTE; the view holds its address.
    Own(u64),
}

/// Guest RAM seen through a PROT_MTE mapping, from RAM offset 0.
pub struct MteView {
    mapping: Mapping,
    size: usize,
    how: String,
}

impl MteView {
    /// A view of `ram` whose PROT_MTE covers at least `[offset, offset + len)`.
    pub fn of(ram: &GuestRam, offset: usize, len: usize) -> Result<Self, VmmError> {
        let backing = ram.backing().describe();
        if let Some(second) = ram
            .second_mapping_with(PROT_MTE)
            .map_err(|e| io_error("mmap(PROT_MTE, MAP_SHARED) of guest RAM", e))?
        {
            return Ok(MteView {
                mapping: Mapping::Second(second),
                size: ram.size(),
                how: format!("a second PROT_MTE mapping of guest RAM ({backing})"),
            });
        }
        ram.mprotect(offset, len, libc::PROT_READ | libc::PROT_WRITE | PROT_MTE)
            .map_err(|e| io_error("mprotect(PROT_MTE) of the VMM's mapping of guest RAM", e))?;
        Ok(MteView {
            mapping: Mapping::Own(ram.host_address()),
            size: ram.size(),
            how: format!(
                "the VMM's own mapping of guest RAM ({backing}), given PROT_MTE by mprotect"
            ),
        })
    }

    /// How the view reaches RAM, in words.
    pub fn describe(&self) -> &str {
        &self.how
    }

    fn address(&self, offset: usize, granules: usize) -> u64 {
        assert!(
            offset + granules * 16 <= self.size && offset % 16 == 0,
            "tag access outside the view"
        );
        let base = match &self.mapping {
            Mapping::Second(ram) => ram.host_address(),
            Mapping::Own(address) => *address,
        };
        base + offset as u64
    }

    /// Whether the view is a mapping of its own (a second mapping of RAM's file), through
    /// which memory can be written without touching the guest's mapping of it.
    pub fn is_second_mapping(&self) -> bool {
        matches!(self.mapping, Mapping::Second(_))
    }

    /// Copy `data` into RAM at `offset` through the view (untagged: the thread's tag checks are
    /// off, as a process's are unless it asks for them).
    pub fn write_data(&self, offset: usize, data: &[u8]) {
        let start = self.address(offset, data.len() / 16);
        // SAFETY: inside the view's mapping (checked by `address`), which it keeps mapped;
        // `data` is ours and apart from it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), start as *mut u8, data.len()) };
    }

    /// STG of `tags` (one a granule) from RAM offset `offset` on.
    pub fn store_tags(&self, offset: usize, tags: &[u8]) {
        let start = self.address(offset, tags.len());
        for (i, &tag) in tags.iter().enumerate() {
            arch::store_tag(start + i as u64 * 16, tag);
        }
    }

    /// LDG of `tags.len()` granules from RAM offset `offset` on.
    pub fn load_tags(&self, offset: usize, tags: &mut [u8]) {
        let start = self.address(offset, tags.len());
        for (i, tag) in tags.iter_mut().enumerate() {
            *tag = arch::load_tag(start + i as u64 * 16);
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use std::arch::asm;

    /// STG at `address` of tag `tag`. Unchecked: STG does not check tags.
    pub fn store_tag(address: u64, tag: u8) {
        let pointer = address & !(0xf << 56) | u64::from(tag & 0xf) << 56;
        // SAFETY: `address` is a granule of a PROT_MTE mapping of guest RAM that the view
        // keeps mapped (checked by the caller); STG changes only the granule's tag, which the
        // race asks the host to change.
        unsafe {
            asm!(".arch_extension memtag", "stg {p}, [{p}]", p = in(reg) pointer,
                 options(nostack, preserves_flags))
        };
    }

    /// LDG at `address`: the granule's tag.
    pub fn load_tag(address: u64) -> u8 {
        let mut pointer = address;
        // SAFETY: `address` is a granule of a PROT_MTE mapping the view keeps mapped; LDG
        // only reads its tag.
        unsafe {
            asm!(".arch_extension memtag", "ldg {p}, [{p}]", p = inout(reg) pointer,
                 options(nostack, preserves_flags, readonly))
        };
        ((pointer >> 56) & 0xf) as u8
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod arch {
    /// No MTE here: there is no arm64 KVM either, so no view is ever made.
    pub fn store_tag(_address: u64, _tag: u8) {
        unreachable!("tag stores are arm64's")
    }

    pub fn load_tag(_address: u64) -> u8 {
        unreachable!("tag loads are arm64's")
    }
}
