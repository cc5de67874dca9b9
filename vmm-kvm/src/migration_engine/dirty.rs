//! KVM dirty logging of the RAM memslot: KVM_MEM_LOG_DIRTY_PAGES on, then KVM_GET_DIRTY_LOG,
//! which hands over the pages written since the previous call and write-protects them again
//! (without KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, which this engine does not enable).

use std::os::fd::RawFd;

use kvm_bindings::{kvm_dirty_log, kvm_dirty_log__bindgen_ty_1};
use mte_suites::vmm::VmmError;
use vmm_sys_util::ioctl::ioctl_with_ref;

use crate::ioctls::KVM_GET_DIRTY_LOG;

/// What the engine says it uses, for the report.
pub const INTERFACE: &str = "KVM_MEM_LOG_DIRTY_PAGES + KVM_GET_DIRTY_LOG";

/// The bitmap of memslot `slot` (`pages` pages), cleared in the kernel as it is read. It takes
/// a raw descriptor so that a copying thread can call it while the vCPU runs.
pub fn fetch(vm: RawFd, slot: u32, pages: usize) -> Result<Vec<u64>, VmmError> {
    let mut bitmap = vec![0u64; pages.div_ceil(64)];
    let log = kvm_dirty_log {
        slot,
        padding1: 0,
        __bindgen_anon_1: kvm_dirty_log__bindgen_ty_1 {
            dirty_bitmap: bitmap.as_mut_ptr().cast(),
        },
    };
    // SAFETY: the bitmap has a bit for every page of the slot; the kernel writes only there.
    if unsafe { ioctl_with_ref(&vm, KVM_GET_DIRTY_LOG(), &log) } != 0 {
        return Err(VmmError::Sys {
            call: "KVM_GET_DIRTY_LOG".into(),
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    Ok(bitmap)
}

/// The IPAs of the pages whose bits are set.
pub fn dirty_pages(bitmap: &[u64], base: u64, page_size: u64, pages: usize) -> Vec<u64> {
    (0..pages)
        .filter(|&i| bitmap[i / 64] >> (i % 64) & 1 == 1)
        .map(|i| base + i as u64 * page_size)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_bits_become_page_addresses() {
        let bitmap = [0b101, 1 << 3];
        assert_eq!(
            dirty_pages(&bitmap, 0x4000_0000, 0x1000, 70),
            vec![0x4000_0000, 0x4000_2000, 0x4004_3000]
        );
        // Bits past the slot's pages are not pages.
        assert_eq!(dirty_pages(&[u64::MAX], 0, 0x1000, 2), vec![0, 0x1000]);
    }
}
