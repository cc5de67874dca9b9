//! userfaultfd(2), as post-copy and the races need it: a descriptor that reports the faults of
//! a registered range (missing pages; minor faults of shared memory, whose page is in the page
//! cache but not yet mapped there), UFFDIO_COPY to fill a missing page, UFFDIO_CONTINUE to map
//! a page that is there already, each with or without waking who waits for it, and
//! UFFDIO_WAKE. Its structs are declared here, kept by hand: userfaultfd-sys generates them
//! with bindgen at build time, which the static aarch64 cross build has no headers or libclang
//! for; the ioctl numbers come from vmm-sys-util's macros.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mte_suites::kernel_options::{self, Call};
use mte_suites::vmm::{errno_name, VmmError};
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_val};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iowr_nr};

const UFFDIO: u32 = 0xaa;
const UFFD_API: u64 = 0xaa;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioContinue {
    range: UffdioRange,
    mode: u64,
    mapped: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// `struct uffd_msg` as a page fault fills it.
#[repr(C)]
#[derive(Default)]
struct UffdMsg {
    event: u8,
    reserved: [u8; 7],
    flags: u64,
    address: u64,
    feat: u64,
}

ioctl_iowr_nr!(UFFDIO_API, UFFDIO, 0x3f, UffdioApi);
ioctl_iowr_nr!(UFFDIO_REGISTER, UFFDIO, 0x00, UffdioRegister);
ioctl_ior_nr!(UFFDIO_WAKE, UFFDIO, 0x02, UffdioRange);
ioctl_iowr_nr!(UFFDIO_COPY, UFFDIO, 0x03, UffdioCopy);
ioctl_iowr_nr!(UFFDIO_CONTINUE, UFFDIO, 0x07, UffdioContinue);
// On /dev/userfaultfd.
ioctl_io_nr!(USERFAULTFD_IOC_NEW, UFFDIO, 0x00);

const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFDIO_REGISTER_MODE_MINOR: u64 = 1 << 2;
const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1;
const UFFDIO_CONTINUE_MODE_DONTWAKE: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// UFFDIO_API feature: minor faults on shmem (5.14).
const UFFD_FEATURE_MINOR_SHMEM: u64 = 1 << 10;
/// Bits of `ioctls` (the ioctl numbers' low bytes) a registered range must offer: UFFDIO_WAKE,
/// and UFFDIO_COPY for missing pages, UFFDIO_CONTINUE for minor faults.
const WAKE_IOCTL: u64 = 1 << 0x02;
const COPY_IOCTL: u64 = 1 << 0x03;
const CONTINUE_IOCTL: u64 = 1 << 0x07;

/// Which faults of a range a descriptor reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// Missing pages, filled with UFFDIO_COPY.
    Missing,
    /// Missing pages and, of shared memory, pages in the page cache but not mapped here, which
    /// UFFDIO_CONTINUE maps.
    MissingAndMinor,
}

/// A userfaultfd descriptor, non-blocking.
pub struct Userfaultfd {
    fd: OwnedFd,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Whether a copy found the page already there (another fault on it was served first).
pub enum Filled {
    Now,
    AlreadyThere,
}

impl Userfaultfd {
    /// Open one that reports `faults` (minor faults of shmem need the kernel's
    /// UFFD_FEATURE_MINOR_SHMEM, 5.14), by the system call or else by /dev/userfaultfd;
    /// Unsupported with both reasons where neither is allowed.
    pub fn open(faults: Faults) -> Result<Self, VmmError> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: the system call takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) } as i32;
        let fd = if fd >= 0 {
            fd
        } else {
            let syscall_errno = last_errno();
            if let VmmError::Unsupported(why) =
                kernel_options::call_error(Call::Userfaultfd, "userfaultfd", syscall_errno)
            {
                return Err(VmmError::Unsupported(why));
            }
            Self::open_device(flags).map_err(|device| {
                let sysctl = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd")
                    .map_or_else(|_| "unreadable".into(), |s| s.trim().to_string());
                VmmError::Unsupported(format!(
                    "userfaultfd is not available: the system call fails with {} \
                     (vm.unprivileged_userfaultfd = {sysctl}; CAP_SYS_PTRACE also allows it), and \
                     /dev/userfaultfd {device}",
                    errno_name(syscall_errno)
                ))
            })?
        };
        let uffd = Userfaultfd {
            // SAFETY: a fresh descriptor that nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        };
        let features = match faults {
            Faults::Missing => 0,
            Faults::MissingAndMinor => UFFD_FEATURE_MINOR_SHMEM,
        };
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ..Default::default()
        };
        uffd.ioctl(UFFDIO_API(), &mut api, "UFFDIO_API")
            .map_err(|e| match e {
                VmmError::Sys { errno, .. } if features != 0 && errno == libc::EINVAL => {
                    VmmError::Unsupported(
                        "userfaultfd has no minor faults of shmem (UFFD_FEATURE_MINOR_SHMEM, 5.14)"
                            .into(),
                    )
                }
                other => other,
            })?;
        Ok(uffd)
    }

    fn open_device(flags: i32) -> Result<i32, String> {
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/userfaultfd")
            .map_err(|e| format!("cannot be opened ({e})"))?;
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags by value and returns a new descriptor.
        let fd = unsafe { ioctl_with_val(&device, USERFAULTFD_IOC_NEW(), flags as libc::c_ulong) };
        if fd < 0 {
            return Err(format!(
                "refuses USERFAULTFD_IOC_NEW ({})",
                errno_name(last_errno())
            ));
        }
        Ok(fd)
    }

    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T, name: &str) -> Result<(), VmmError> {
        // SAFETY: `arg` is the struct `request` is defined with.
        if unsafe { ioctl_with_mut_ref(&self.fd, request, arg) } != 0 {
            return Err(VmmError::Sys {
                call: name.into(),
                errno: last_errno(),
            });
        }
        Ok(())
    }

    /// Report `faults` of `[start, start + len)`.
    pub fn register(&self, start: u64, len: u64, faults: Faults) -> Result<(), VmmError> {
        let (mode, name, needed) = match faults {
            Faults::Missing => (
                UFFDIO_REGISTER_MODE_MISSING,
                "UFFDIO_REGISTER(MODE_MISSING)",
                WAKE_IOCTL | COPY_IOCTL,
            ),
            Faults::MissingAndMinor => (
                UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR,
                "UFFDIO_REGISTER(MODE_MISSING|MODE_MINOR)",
                WAKE_IOCTL | COPY_IOCTL | CONTINUE_IOCTL,
            ),
        };
        let mut register = UffdioRegister {
            range: UffdioRange { start, len },
            mode,
            ioctls: 0,
        };
        self.ioctl(UFFDIO_REGISTER(), &mut register, name)?;
        if register.ioctls & needed != needed {
            return Err(VmmError::Unsupported(format!(
                "the range registered with {name} offers ioctls {:#x}, not {needed:#x}",
                register.ioctls
            )));
        }
        Ok(())
    }

    /// The address of the next missing-page fault, waiting at most `timeout_ms`; None if none
    /// came.
    pub fn next_fault(&self, timeout_ms: i32) -> Result<Option<u64>, VmmError> {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, timeout_ms) } <= 0 {
            return Ok(None);
        }
        let mut msg = UffdMsg::default();
        let size = std::mem::size_of::<UffdMsg>();
        // SAFETY: reading one message into a struct of its size.
        let got =
            unsafe { libc::read(self.fd.as_raw_fd(), (&mut msg as *mut UffdMsg).cast(), size) };
        if got < 0 {
            let errno = last_errno();
            return if errno == libc::EAGAIN {
                Ok(None)
            } else {
                Err(VmmError::Sys {
                    call: "read of userfaultfd".into(),
                    errno,
                })
            };
        }
        if got as usize != size || msg.event != UFFD_EVENT_PAGEFAULT {
            return Err(VmmError::Host(format!(
                "userfaultfd reported event {:#x} ({got} bytes), not a page fault",
                msg.event
            )));
        }
        Ok(Some(msg.address))
    }

    /// Fill the missing page at `dst` with `src` (a page of bytes). With `wake` false, whoever
    /// waits for the page keeps waiting until [`Userfaultfd::wake`].
    pub fn copy(&self, dst: u64, src: &[u8], wake: bool) -> Result<Filled, VmmError> {
        let mut copy = UffdioCopy {
            dst,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            mode: if wake { 0 } else { UFFDIO_COPY_MODE_DONTWAKE },
            copy: 0,
        };
        match self.ioctl(UFFDIO_COPY(), &mut copy, "UFFDIO_COPY") {
            Ok(()) => Ok(Filled::Now),
            Err(VmmError::Sys { errno, .. }) if errno == libc::EEXIST => Ok(Filled::AlreadyThere),
            Err(e) => Err(e),
        }
    }

    /// Map the page at `dst` (of shared memory, whose page cache holds it already) where it was
    /// registered; with `wake` false, whoever waits for it keeps waiting until
    /// [`Userfaultfd::wake`].
    pub fn continue_mapping(&self, dst: u64, len: u64, wake: bool) -> Result<Filled, VmmError> {
        let mut request = UffdioContinue {
            range: UffdioRange { start: dst, len },
            mode: if wake {
                0
            } else {
                UFFDIO_CONTINUE_MODE_DONTWAKE
            },
            mapped: 0,
        };
        match self.ioctl(UFFDIO_CONTINUE(), &mut request, "UFFDIO_CONTINUE") {
            Ok(()) => Ok(Filled::Now),
            Err(VmmError::Sys { errno, .. }) if errno == libc::EEXIST => Ok(Filled::AlreadyThere),
            Err(e) => Err(e),
        }
    }

    /// Wake whoever waits for a page of `[start, start + len)`.
    pub fn wake(&self, start: u64, len: u64) -> Result<(), VmmError> {
        let mut range = UffdioRange { start, len };
        self.ioctl(UFFDIO_WAKE(), &mut range, "UFFDIO_WAKE")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_uapi() {
        assert_eq!(std::mem::size_of::<UffdMsg>(), 32);
        assert_eq!(UFFDIO_API(), 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER(), 0xc020_aa00);
        assert_eq!(UFFDIO_COPY(), 0xc028_aa03);
        assert_eq!(UFFDIO_WAKE(), 0x8010_aa02);
        assert_eq!(UFFDIO_CONTINUE(), 0xc020_aa07);
        assert_eq!(std::mem::size_of::<UffdioContinue>(), 32);
        assert_eq!(USERFAULTFD_IOC_NEW(), 0xaa00);
    }
}
