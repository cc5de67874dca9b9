//! Why a step of a scenario could not be taken, and errno values in words. The bottom of the
//! crate: it depends on nothing else here.

/// Why a step could not be taken.
#[derive(Clone, Debug, PartialEq)]
pub enum VmmError {
    /// The lane cannot do this at all (no MTE, no KVM, no such ioctl): the check is a skip.
    Unsupported(String),
    /// A system call failed: which one, and errno.
    Sys { call: String, errno: i32 },
    /// The guest did not reach its next doorbell before the deadline.
    Timeout { what: String, seconds: f64 },
    /// The guest stopped in a way the protocol does not allow (panic, unexpected exit).
    Guest(String),
    /// The VMM's own step went wrong in a way that is not an errno (a short copy, say).
    Host(String),
    /// The kernel or VMM refused the step as it is documented to at its version (QEMU blocks
    /// the migration of a KVM guest with MTE; a kernel before 6.2 refuses shared memory): the
    /// check is an xfail with this reason, which quotes the refusal and names the version and
    /// the change or source.
    Documented(String),
}

impl std::fmt::Display for VmmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmmError::Unsupported(why) => write!(f, "unsupported here: {why}"),
            VmmError::Sys { call, errno } => write!(f, "{call} failed: {}", errno_name(*errno)),
            VmmError::Timeout { what, seconds } => {
                write!(f, "timeout: {what} did not finish within {seconds:.1} s")
            }
            VmmError::Guest(why) => write!(f, "guest: {why}"),
            VmmError::Host(why) => write!(f, "host: {why}"),
            VmmError::Documented(why) => write!(f, "documented: {why}"),
        }
    }
}

impl std::error::Error for VmmError {}

/// The symbolic name of an errno value, for evidence a person reads.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        25 => "ENOTTY",
        28 => "ENOSPC",
        38 => "ENOSYS",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        _ => return format!("errno {errno}"),
    };
    format!("{name} ({errno})")
}
