//! The memfds and files behind shared guest RAM, and the tmpfs and ramfs mounts that hold the
//! files (an existing mount of the right kind if there is one, else one of our own in a
//! directory under the temporary directory).

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use mte_suites::host_mm::Backing;
use mte_suites::kernel_options::{self, Call};
use mte_suites::vmm::VmmError;

/// statfs(2) f_type of ramfs (include/uapi/linux/magic.h).
const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;

/// A file system that can hold a guest RAM file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fs {
    Tmpfs,
    Ramfs,
}

impl Fs {
    fn name(self) -> &'static str {
        match self {
            Fs::Tmpfs => "tmpfs",
            Fs::Ramfs => "ramfs",
        }
    }
    fn magic(self) -> libc::c_long {
        match self {
            Fs::Tmpfs => libc::TMPFS_MAGIC,
            Fs::Ramfs => RAMFS_MAGIC,
        }
    }
    /// Mounts set up at boot that may already be of this kind.
    fn known_places(self) -> &'static [&'static str] {
        match self {
            Fs::Tmpfs => &["/dev/shm", "/run/shm"],
            Fs::Ramfs => &["/mnt/ramfs"],
        }
    }
}

/// The memfd or file (created, sized and unlinked) for `backing`; `None` for anonymous memory.
pub fn open(backing: Backing, size: usize) -> Result<Option<OwnedFd>, VmmError> {
    let fd = match backing {
        Backing::PrivateAnonymous | Backing::SharedAnonymous => return Ok(None),
        Backing::Memfd => memfd()?,
        Backing::TmpfsFile => file_in(&mount(Fs::Tmpfs)?)?,
        Backing::RamfsFile { .. } => file_in(&mount(Fs::Ramfs)?)?,
    };
    // SAFETY: ftruncate on a descriptor we own.
    if unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), size as i64) } != 0 {
        return Err(sys_error(format!(
            "ftruncate of the {} behind guest RAM",
            backing.describe()
        )));
    }
    Ok(Some(fd))
}

fn sys_error(call: String) -> VmmError {
    VmmError::Sys {
        call,
        errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
    }
}

fn memfd() -> Result<OwnedFd, VmmError> {
    // SAFETY: a NUL-terminated name; the descriptor returned is ours.
    let fd = unsafe { libc::memfd_create(c"mte-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(kernel_options::call_error(
            Call::MemfdCreate,
            "memfd_create",
            errno,
        ));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new file in `dir`, unlinked at once (the descriptor keeps it).
fn file_in(dir: &Path) -> Result<OwnedFd, VmmError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "guest-ram-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a path we made");
    // SAFETY: a NUL-terminated path; the descriptor returned is ours.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(sys_error(format!("open {}", path.display())));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: unlinking the path we just created.
    unsafe { libc::unlink(c_path.as_ptr()) };
    Ok(fd)
}

/// The file system type of `path`, if it exists.
// f_type is a c_long with glibc and a c_ulong with musl.
#[allow(clippy::unnecessary_cast)]
fn magic_of(path: &Path) -> Option<libc::c_long> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain integers, for which all zeros is a valid value.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs struct to fill, both live for the call.
    let found = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) } == 0;
    found.then_some(buf.f_type as libc::c_long)
}

/// A directory on a mount of `fs`, found or made once per process.
fn mount(fs: Fs) -> Result<PathBuf, VmmError> {
    static TMPFS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static RAMFS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let cell = match fs {
        Fs::Tmpfs => &TMPFS,
        Fs::Ramfs => &RAMFS,
    };
    cell.get_or_init(|| find_or_mount(fs))
        .clone()
        .map_err(VmmError::Unsupported)
}

fn find_or_mount(fs: Fs) -> Result<PathBuf, String> {
    if let Some(place) = fs
        .known_places()
        .iter()
        .map(PathBuf::from)
        .find(|p| magic_of(p) == Some(fs.magic()))
    {
        return Ok(place);
    }
    let dir = std::env::temp_dir().join(format!("mte-suite-{}", fs.name()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        format!(
            "no {} for guest RAM: creating {}: {e}",
            fs.name(),
            dir.display()
        )
    })?;
    if magic_of(&dir) == Some(fs.magic()) {
        return Ok(dir);
    }
    let c_dir = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in a path we made");
    let c_fs = CString::new(fs.name()).expect("no NUL");
    // SAFETY: NUL-terminated strings; no mount data.
    let ret = unsafe {
        libc::mount(
            c_fs.as_ptr(),
            c_dir.as_ptr(),
            c_fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(format!(
            "no {} for guest RAM: none at {} and mount on {} failed: {}",
            fs.name(),
            fs.known_places().join(", "),
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    match magic_of(&dir) {
        Some(magic) if magic == fs.magic() => Ok(dir),
        other => Err(format!(
            "mounted {} on {}, which then reports file system type {other:x?}",
            fs.name(),
            dir.display()
        )),
    }
}
