//! Swap on a zram device: the kernel's swap-out and swap-in paths (which must keep a page's
//! MTE tags) without a disk. The initramfs holds no other program, so the runner writes the
//! swap header itself.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// The signature in the last bytes of a swap area's first page (swap header version 1).
pub const SWAP_MAGIC: &[u8; 10] = b"SWAPSPACE2";
/// The size of the swap device: room for the checks' pages, a fraction of the machine's RAM.
const ZRAM_BYTES: u64 = 256 << 20;
const ZRAM_DEVICE: &str = "/dev/zram0";
const ZRAM_SYSFS: &str = "/sys/block/zram0";
/// How long the device node may take to appear after the module created the device.
const DEVICE_NODE_WAIT: Duration = Duration::from_secs(2);

/// The first page of a swap area of `size` bytes, as the kernel's `union swap_header` lays it
/// out: `info` (version 1, the last usable page, no bad pages) after 1024 bytes left for boot
/// blocks, and [`SWAP_MAGIC`] ending the page. Fields are in the machine's byte order.
pub fn swap_header(page_size: usize, size: u64) -> Vec<u8> {
    const INFO: usize = 1024;
    let mut page = vec![0u8; page_size];
    let pages = size / page_size as u64;
    let last_page = u32::try_from(pages.saturating_sub(1)).unwrap_or(u32::MAX);
    page[INFO..INFO + 4].copy_from_slice(&1u32.to_ne_bytes());
    page[INFO + 4..INFO + 8].copy_from_slice(&last_page.to_ne_bytes());
    page[INFO + 8..INFO + 12].copy_from_slice(&0u32.to_ne_bytes());
    page[page_size - SWAP_MAGIC.len()..].copy_from_slice(SWAP_MAGIC);
    page
}

/// Size zram0, write a swap header on it and swap on it; what it is, or why not.
pub fn start_on_zram() -> Result<String, String> {
    if !std::path::Path::new(ZRAM_SYSFS).exists() {
        return Err(format!(
            "no {ZRAM_SYSFS}: zram is neither built into the kernel nor loaded"
        ));
    }
    std::fs::write(format!("{ZRAM_SYSFS}/disksize"), ZRAM_BYTES.to_string())
        .map_err(|e| format!("setting {ZRAM_SYSFS}/disksize to {ZRAM_BYTES}: {e}"))?;
    let compressor = std::fs::read_to_string(format!("{ZRAM_SYSFS}/comp_algorithm"))
        .ok()
        .and_then(|text| selected_compressor(&text).map(String::from));

    // SAFETY: sysconf has no memory-safety preconditions.
    let page_size = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .map_err(|_| "the page size is unknown".to_string())?;
    let mut device = open_device()?;
    device
        .write_all_at(&swap_header(page_size, ZRAM_BYTES), 0)
        .and_then(|()| device.flush())
        .and_then(|()| device.sync_all())
        .map_err(|e| format!("writing the swap header on {ZRAM_DEVICE}: {e}"))?;
    drop(device);

    let path = std::ffi::CString::new(ZRAM_DEVICE).expect("no NUL in the path");
    // SAFETY: a valid NUL-terminated path; no flags.
    if unsafe { libc::swapon(path.as_ptr(), 0) } != 0 {
        return Err(format!(
            "swapon {ZRAM_DEVICE}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    if !active_areas(&swaps)
        .iter()
        .any(|(name, _)| name == ZRAM_DEVICE)
    {
        return Err(format!(
            "swapon {ZRAM_DEVICE} succeeded but /proc/swaps does not list it"
        ));
    }
    let mib = ZRAM_BYTES >> 20;
    Ok(match compressor {
        Some(compressor) => format!("zram0 {mib} MiB ({compressor})"),
        None => format!("zram0 {mib} MiB"),
    })
}

/// The device node, once devtmpfs has made it.
fn open_device() -> Result<std::fs::File, String> {
    let started = Instant::now();
    loop {
        match std::fs::OpenOptions::new().write(true).open(ZRAM_DEVICE) {
            Ok(file) => return Ok(file),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && started.elapsed() < DEVICE_NODE_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("opening {ZRAM_DEVICE}: {e}")),
        }
    }
}

/// The swap areas the machine already has, in words, or why there are none.
pub fn active() -> Result<String, String> {
    let swaps = std::fs::read_to_string("/proc/swaps").map_err(|e| format!("/proc/swaps: {e}"))?;
    let areas = active_areas(&swaps);
    if areas.is_empty() {
        return Err("no swap is active (/proc/swaps lists none)".into());
    }
    Ok(areas
        .iter()
        .map(|(name, kib)| format!("{name} {} MiB", kib >> 10))
        .collect::<Vec<_>>()
        .join(", "))
}

/// `(name, size in KiB)` of each area in `/proc/swaps` (a header line, then
/// `Filename Type Size Used Priority`).
fn active_areas(swaps: &str) -> Vec<(String, u64)> {
    swaps
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.first()?.to_string(), fields.get(2)?.parse().ok()?))
        })
        .collect()
}

/// The compressor in brackets in zram's `comp_algorithm`: `lzo [lz4] zstd` -> `lz4`.
fn selected_compressor(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_version_1_with_the_signature_ending_the_page() {
        let page = swap_header(4096, 256 << 20);
        assert_eq!(page.len(), 4096);
        assert!(
            page[..1024].iter().all(|&b| b == 0),
            "boot blocks untouched"
        );
        let word = |at: usize| u32::from_ne_bytes(page[at..at + 4].try_into().unwrap());
        assert_eq!(word(1024), 1, "version");
        assert_eq!(
            word(1028),
            65535,
            "last page: 256 MiB of 4 KiB pages, less one"
        );
        assert_eq!(word(1032), 0, "no bad pages");
        assert!(page[1036..4086].iter().all(|&b| b == 0));
        assert_eq!(&page[4086..], b"SWAPSPACE2");

        let page = swap_header(65536, 256 << 20);
        assert_eq!(&page[65526..], SWAP_MAGIC);
        assert_eq!(
            u32::from_ne_bytes(page[1028..1032].try_into().unwrap()),
            4095
        );
    }

    #[test]
    fn proc_swaps_lists_name_and_size() {
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                     /dev/zram0                              partition\t262140\t\t0\t\t-2\n";
        assert_eq!(active_areas(swaps), [("/dev/zram0".to_string(), 262140)]);
        assert!(active_areas("Filename Type Size Used Priority\n").is_empty());
    }

    #[test]
    fn the_selected_compressor_is_the_bracketed_one() {
        assert_eq!(
            selected_compressor("lzo [lzo-rle] lz4 lz4hc zstd\n"),
            Some("lzo-rle")
        );
        assert_eq!(selected_compressor("lz4"), None);
    }
}
