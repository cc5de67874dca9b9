//! QEMU's mapping of guest RAM, seen from outside QEMU: where it is (/proc/PID/maps, told apart
//! from QEMU's other mappings by the guest's mailbox at its start), what the host kernel says
//! of its pages (/proc/PID/pagemap, /proc/PID/smaps), and the memory-management calls another
//! process may make on it (process_madvise(2)).
//!
//! Under KVM the guest's tags are in the host kernel's pages behind that mapping, so paging it
//! out or merging it with KSM are the host paths that must keep them.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use mte_protocol::{MAILBOX_MAGIC, PROTOCOL_VERSION, RAM_SIZE};
use mte_suites::host_mm::{Advice, PageState};
use mte_suites::vmm::VmmError;
use mte_vmm::host_kernel::{page_size, page_state, pagemap_of};

/// A mapping in `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    /// The file mapped (`/memfd:mte-ram (deleted)`), if any.
    pub path: Option<String>,
}

impl Mapping {
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Whether QEMU maps it shared (`s`) rather than private (`p`).
    pub fn shared(&self) -> bool {
        self.perms.ends_with('s')
    }

    /// Its name in `/proc/PID/map_files`, which opens the file behind it.
    pub fn map_file(&self, pid: u32) -> String {
        format!("/proc/{pid}/map_files/{:x}-{:x}", self.start, self.end)
    }
}

/// The mappings of `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?.to_string();
            // offset, device, inode, then the path (which may hold spaces).
            let path = fields.skip(3).collect::<Vec<_>>().join(" ");
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                perms,
                path: (!path.is_empty()).then_some(path),
            })
        })
        .collect()
}

/// QEMU's mapping of the guest's RAM: the readable and writable mapping of exactly the
/// guest's RAM size whose first bytes are the guest's mailbox (its magic and protocol
/// version), which the guest wrote before its first doorbell.
pub fn find(pid: u32) -> Result<Mapping, VmmError> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| VmmError::Host(format!("reading /proc/{pid}/maps of QEMU: {e}")))?;
    let memory = File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| VmmError::Host(format!("opening /proc/{pid}/mem of QEMU: {e}")))?;
    let mut head = [0u8; 8];
    let mut expected = MAILBOX_MAGIC.to_le_bytes().to_vec();
    expected.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    parse_maps(&maps)
        .into_iter()
        .filter(|m| m.size() == RAM_SIZE && m.perms.starts_with("rw"))
        .find(|m| memory.read_exact_at(&mut head, m.start).is_ok() && head[..] == expected[..])
        .ok_or_else(|| {
            VmmError::Host(format!(
                "no mapping of QEMU (pid {pid}) holds the guest's RAM ({} MiB starting with its \
                 mailbox)",
                RAM_SIZE >> 20
            ))
        })
}

/// The page states of `[offset, offset + len)` of QEMU's RAM mapping, from its pagemap (a
/// page counts as resident when a page table entry maps it: mincore cannot look into another
/// process).
pub fn page_states(
    pid: u32,
    ram: &Mapping,
    offset: u64,
    len: u64,
) -> Result<Vec<PageState>, VmmError> {
    let pages = (len as usize).div_ceil(page_size());
    let entries = pagemap_of(&pid.to_string(), (ram.start + offset) as usize, pages)
        .map_err(|e| VmmError::Host(format!("reading /proc/{pid}/pagemap of QEMU: {e}")))?;
    let kpageflags = File::open("/proc/kpageflags").ok();
    Ok(entries
        .into_iter()
        .map(|entry| page_state(entry, kpageflags.as_ref(), None))
        .collect())
}

/// Whether QEMU's RAM mapping is open to KSM (`mg` in its smaps VmFlags: QEMU gives it
/// MADV_MERGEABLE itself, with `-machine mem-merge=on`, its default).
pub fn mergeable(pid: u32, ram: &Mapping) -> Result<bool, VmmError> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(|e| VmmError::Host(format!("reading /proc/{pid}/smaps of QEMU: {e}")))?;
    let header = format!("{:x}-{:x} ", ram.start, ram.end);
    let mergeable = vm_flags(&smaps, &header).any(|flag| flag == "mg");
    Ok(mergeable)
}

/// The VmFlags of the mapping whose smaps entry starts with `header`: the first VmFlags line
/// after it, which ends its entry.
fn vm_flags<'a>(smaps: &'a str, header: &str) -> impl Iterator<Item = &'a str> {
    smaps
        .lines()
        .skip_while(|line| !line.starts_with(header))
        .find_map(|line| line.strip_prefix("VmFlags:"))
        .unwrap_or_default()
        .split_whitespace()
}

/// `advice` on `[offset, offset + len)` of QEMU's RAM mapping, from this process:
/// process_madvise(2), which takes MADV_COLD and MADV_PAGEOUT (and MADV_WILLNEED,
/// MADV_COLLAPSE) but nothing that changes what QEMU's memory holds.
pub fn process_madvise(
    pid: u32,
    ram: &Mapping,
    offset: u64,
    len: u64,
    advice: Advice,
) -> Result<(), VmmError> {
    if advice != Advice::PageOut {
        return Err(VmmError::Unsupported(format!(
            "{} on QEMU's mapping of guest RAM: process_madvise(2) from another process takes \
             MADV_PAGEOUT and MADV_COLD, not advice that changes QEMU's memory",
            advice.name()
        )));
    }
    let call = format!("process_madvise({}) on QEMU's guest RAM", advice.name());
    let sys = |e: io::Error| VmmError::Sys {
        call: call.clone(),
        errno: e.raw_os_error().unwrap_or(0),
    };
    let pidfd = pidfd_open(pid).map_err(sys)?;
    let range = libc::iovec {
        iov_base: (ram.start + offset) as *mut libc::c_void,
        iov_len: len as usize,
    };
    // SAFETY: the iovec names QEMU's memory, which the kernel looks up in QEMU's address space
    // (it is never dereferenced here); one iovec, no flags.
    let advised = unsafe {
        libc::syscall(
            libc::SYS_process_madvise,
            pidfd.as_raw_fd(),
            &range as *const libc::iovec,
            1usize,
            advice.value(),
            0u32,
        )
    };
    if advised < 0 {
        return Err(sys(io::Error::last_os_error()));
    }
    Ok(())
}

/// A pidfd of `pid` (pidfd_open(2)).
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_range_permissions_and_path() {
        let text = "\
aaaab0000000-aaaab0010000 r-xp 00000000 00:02 123   /usr/bin/qemu-system-aarch64
ffff80000000-ffff84000000 rw-s 00000000 00:01 9     /memfd:mte-ram (deleted)
ffff90000000-ffff94000000 rw-p 00000000 00:00 0 
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[1].size(), 64 << 20);
        assert!(maps[1].shared());
        assert_eq!(maps[1].path.as_deref(), Some("/memfd:mte-ram (deleted)"));
        assert_eq!(maps[2].path, None);
        assert!(!maps[2].shared());
        assert_eq!(
            maps[1].map_file(42),
            "/proc/42/map_files/ffff80000000-ffff84000000"
        );
    }

    #[test]
    fn the_flags_are_those_of_the_mapping_asked_for() {
        let smaps = "\
aaaab0000000-aaaab0010000 r-xp 00000000 00:02 123   /usr/bin/qemu-system-aarch64
Size:                 64 kB
VmFlags: rd ex mr mw me
ffff90000000-ffff94000000 rw-p 00000000 00:00 0
Size:              65536 kB
VmFlags: rd wr mr mw me ac mg
";
        let flags = |header| vm_flags(smaps, header).collect::<Vec<_>>();
        assert_eq!(flags("ffff90000000-ffff94000000 ").last(), Some(&"mg"));
        assert!(!flags("aaaab0000000-aaaab0010000 ").contains(&"mg"));
        assert!(flags("ffff00000000-ffff00001000 ").is_empty());
    }
}
