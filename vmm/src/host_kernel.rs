//! What the VMM's host kernel offers every VM and says of a VMM's memory: swap devices, KSM,
//! /proc/vmstat, and the page map of a process (its own, or QEMU's seen from outside).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use mte_suites::host_mm::{parse_proc_swaps, KsmKnob, KsmState, PageState, SwapDevice};
use mte_suites::vmm::VmmError;

const KSM: &str = "/sys/kernel/mm/ksm";

/// The active swap devices (/proc/swaps).
pub fn swap_devices() -> Result<Vec<SwapDevice>, VmmError> {
    let text = std::fs::read_to_string("/proc/swaps").map_err(|e| {
        VmmError::Unsupported(format!(
            "/proc/swaps cannot be read ({e}): a kernel without swap support"
        ))
    })?;
    Ok(parse_proc_swaps(&text))
}

/// The memory counters of /proc/vmstat.
pub fn vmstat() -> Result<Vec<(String, u64)>, VmmError> {
    let text = std::fs::read_to_string("/proc/vmstat")
        .map_err(|e| VmmError::Unsupported(format!("/proc/vmstat cannot be read ({e})")))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect())
}

/// swapoff(2) of `device`, which brings back every page it holds (the kernel's unuse path,
/// try_to_unuse()), then swapon(2) of it again at its priority; the time swapoff took.
pub fn swap_off_and_on(device: &SwapDevice) -> Result<Duration, VmmError> {
    let path = CString::new(device.name.as_str())
        .map_err(|_| VmmError::Host(format!("swap device name {:?}", device.name)))?;
    let started = Instant::now();
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::swapoff(path.as_ptr()) } != 0 {
        return Err(sys_error(&format!("swapoff {}", device.name)));
    }
    let took = started.elapsed();
    // swapon(2)'s flags (linux/swap.h; not in the libc crate). A negative priority was the
    // kernel's own choice: let it choose again.
    const SWAP_FLAG_PREFER: i32 = 0x8000;
    const SWAP_FLAG_PRIO_MASK: i32 = 0x7fff;
    let flags = match u16::try_from(device.priority) {
        Ok(priority) => SWAP_FLAG_PREFER | (i32::from(priority) & SWAP_FLAG_PRIO_MASK),
        Err(_) => 0,
    };
    // SAFETY: a valid NUL-terminated path; flags as swapon(2) takes them.
    if unsafe { libc::swapon(path.as_ptr(), flags) } != 0 {
        return Err(sys_error(&format!("swapon {} after swapoff", device.name)));
    }
    Ok(took)
}

fn sys_error(call: &str) -> VmmError {
    VmmError::Sys {
        call: call.into(),
        errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
    }
}

fn ksm_read(file: &str) -> Result<Option<u64>, VmmError> {
    let path = format!("{KSM}/{file}");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| VmmError::Host(format!("{path} holds {text:?}, not a number"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(VmmError::Host(format!("reading {path}: {e}"))),
    }
}

/// The KSM knobs and counters.
pub fn ksm_state() -> Result<KsmState, VmmError> {
    if !std::path::Path::new(KSM).is_dir() {
        return Err(VmmError::Unsupported(format!(
            "the host kernel has no KSM ({KSM} is missing: built without CONFIG_KSM, or sysfs \
             is not mounted)"
        )));
    }
    let required = |file: &str| {
        ksm_read(file)?.ok_or_else(|| VmmError::Host(format!("{KSM}/{file} is missing")))
    };
    Ok(KsmState {
        run: required("run")?,
        pages_to_scan: required("pages_to_scan")?,
        sleep_millisecs: required("sleep_millisecs")?,
        full_scans: required("full_scans")?,
        pages_shared: required("pages_shared")?,
        pages_sharing: required("pages_sharing")?,
        use_zero_pages: ksm_read("use_zero_pages")?,
    })
}

/// Write a KSM knob.
pub fn ksm_set(knob: KsmKnob, value: u64) -> Result<(), VmmError> {
    let path = format!("{KSM}/{}", knob.file());
    std::fs::write(&path, value.to_string()).map_err(|e| VmmError::Sys {
        call: format!("write {value} to {path}"),
        errno: e.raw_os_error().unwrap_or(0),
    })
}

/// The /proc/PROCESS/pagemap entries of `pages` pages from the address `start` of that process
/// (`self`, or a process id) (Documentation/admin-guide/mm/pagemap.rst): bit 63 present, bit
/// 62 swapped, bit 56 mapped exclusively, bits 0-54 the page frame (to CAP_SYS_ADMIN).
pub fn pagemap_of(process: &str, start: usize, pages: usize) -> io::Result<Vec<u64>> {
    let mut entries = vec![0u8; pages * 8];
    File::open(format!("/proc/{process}/pagemap"))?
        .read_exact_at(&mut entries, (start / page_size() * 8) as u64)?;
    Ok(entries
        .chunks_exact(8)
        .map(|entry| u64::from_le_bytes(entry.try_into().expect("8 bytes")))
        .collect())
}

/// Bits of /proc/kpageflags (Documentation/admin-guide/mm/pagemap.rst).
const KPF_THP: u64 = 22;
const KPF_ZERO_PAGE: u64 = 24;

/// What a pagemap `entry` says of its page, with the page's /proc/kpageflags where they can be
/// read; `resident` is what mincore(2) said, where the mapping is the caller's own (else
/// whether a page table entry maps the page).
pub fn page_state(entry: u64, kpageflags: Option<&File>, resident: Option<bool>) -> PageState {
    let present = (entry >> 63) & 1 == 1;
    let pfn = if present { entry & ((1 << 55) - 1) } else { 0 };
    let flags = match (kpageflags, pfn) {
        (Some(file), pfn) if pfn != 0 => {
            let mut word = [0u8; 8];
            file.read_exact_at(&mut word, pfn * 8)
                .map_or(0, |()| u64::from_le_bytes(word))
        }
        _ => 0,
    };
    PageState {
        resident: resident.unwrap_or(present),
        present,
        swapped: (entry >> 62) & 1 == 1,
        exclusive: (entry >> 56) & 1 == 1,
        pfn,
        zero_page: (flags >> KPF_ZERO_PAGE) & 1 == 1,
        huge: (flags >> KPF_THP) & 1 == 1,
    }
}

/// The host kernel's page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}
