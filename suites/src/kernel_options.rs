//! The kernel options the checks need, what their absence looks like to user space, and the
//! kernel's config read back. A kernel built without an option a check needs makes that check a
//! skip that names the option (README.md lists them all), never a fail: the kernel under test
//! was built that way, it did not get the option wrong.

use std::collections::BTreeMap;

use crate::error::{errno_name, VmmError};
use crate::host_mm::Advice;

/// A kernel option (`CONFIG_...`) and what needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOption {
    pub name: &'static str,
    pub needed_for: &'static str,
}

pub const KVM: KernelOption = KernelOption {
    name: "CONFIG_KVM",
    needed_for: "the KVM lanes: the runner is a VMM on the kernel's KVM",
};
pub const ARM64_MTE: KernelOption = KernelOption {
    name: "CONFIG_ARM64_MTE",
    needed_for: "MTE in the kernel and in its KVM guests",
};
pub const UNIX: KernelOption = KernelOption {
    name: "CONFIG_UNIX",
    needed_for: "migration to a new VMM process (a UNIX socket pair to it; CONFIG_NET too)",
};
pub const USERFAULTFD: KernelOption = KernelOption {
    name: "CONFIG_USERFAULTFD",
    needed_for: "post-copy migration",
};
pub const MEMFD_CREATE: KernelOption = KernelOption {
    name: "CONFIG_MEMFD_CREATE",
    needed_for: "guest RAM on a memfd (the shared:: checks)",
};
pub const ADVISE_SYSCALLS: KernelOption = KernelOption {
    name: "CONFIG_ADVISE_SYSCALLS",
    needed_for: "madvise(2): paging guest RAM out, dropping it, KSM and THP advice",
};
pub const SWAP: KernelOption = KernelOption {
    name: "CONFIG_SWAP",
    needed_for: "the swap:: checks",
};
pub const ZRAM: KernelOption = KernelOption {
    name: "CONFIG_ZRAM",
    needed_for: "the emulated machine's swap device (built in, or as a module in the package)",
};
pub const KSM: KernelOption = KernelOption {
    name: "CONFIG_KSM",
    needed_for: "the KSM check (mm::)",
};
pub const TRANSPARENT_HUGEPAGE: KernelOption = KernelOption {
    name: "CONFIG_TRANSPARENT_HUGEPAGE",
    needed_for: "the THP split check (mm::)",
};
pub const IKCONFIG_PROC: KernelOption = KernelOption {
    name: "CONFIG_IKCONFIG_PROC",
    needed_for: "/proc/config.gz, from which the run records the kernel's options (optional)",
};

/// Every option the suite looks for, in the order README.md lists them.
pub const ALL: [KernelOption; 11] = [
    KVM,
    ARM64_MTE,
    UNIX,
    USERFAULTFD,
    MEMFD_CREATE,
    ADVISE_SYSCALLS,
    SWAP,
    ZRAM,
    KSM,
    TRANSPARENT_HUGEPAGE,
    IKCONFIG_PROC,
];

/// A kernel's config (`.config`, or /proc/config.gz unpacked) read into option and value:
/// `CONFIG_X=y` gives `y`, `# CONFIG_X is not set` gives `n`. Other lines are ignored.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut options = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix("# ")
            .and_then(|rest| rest.strip_suffix(" is not set"))
        {
            if name.starts_with("CONFIG_") && !name.contains(char::is_whitespace) {
                options.insert(name.to_string(), "n".to_string());
            }
        } else if let Some((name, value)) = line.split_once('=') {
            if name.starts_with("CONFIG_") && !name.contains(char::is_whitespace) {
                options.insert(name.to_string(), value.to_string());
            }
        }
    }
    options
}

/// Whether `config` has `option` built in or as a module; `n` for an option it does not list
/// (a config lists every option its kernel could have, so an absent one is off).
pub fn value_of<'a>(config: &'a BTreeMap<String, String>, option: &KernelOption) -> &'a str {
    config.get(option.name).map_or("n", String::as_str)
}

/// A system call the checks make whose failure can mean a kernel option is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// socketpair(AF_UNIX, ...).
    UnixSocketPair,
    /// userfaultfd(2), and /dev/userfaultfd after it.
    Userfaultfd,
    MemfdCreate,
    Madvise(Advice),
}

/// The option whose absence makes `call` fail with `errno`, where that is what such a failure
/// means: ENOSYS from a system call the kernel was built without, EAFNOSUPPORT from a socket
/// family it lacks, EINVAL from KSM's advice on a kernel without KSM. (A kernel without THP
/// refuses MADV_NOHUGEPAGE too, but that advice already holds there: the VMM takes it as done.)
pub fn missing_for(call: Call, errno: i32) -> Option<KernelOption> {
    match (call, errno) {
        (Call::UnixSocketPair, libc_errno::ENOSYS | libc_errno::EAFNOSUPPORT) => Some(UNIX),
        (Call::Userfaultfd, libc_errno::ENOSYS) => Some(USERFAULTFD),
        (Call::MemfdCreate, libc_errno::ENOSYS) => Some(MEMFD_CREATE),
        (Call::Madvise(_), libc_errno::ENOSYS) => Some(ADVISE_SYSCALLS),
        (Call::Madvise(Advice::Mergeable | Advice::Unmergeable), libc_errno::EINVAL) => Some(KSM),
        _ => None,
    }
}

/// The error of `call` (named `what`) failing with `errno`: a skip naming the option its kernel
/// lacks where that is the cause, else the system call's failure.
pub fn call_error(call: Call, what: &str, errno: i32) -> VmmError {
    match missing_for(call, errno) {
        Some(option) => VmmError::Unsupported(format!(
            "{what} fails with {}: the kernel was built without {}, which {} needs",
            errno_name(errno),
            option.name,
            option.needed_for
        )),
        None => VmmError::Sys {
            call: what.to_string(),
            errno,
        },
    }
}

/// The errno values above, the same on every Linux architecture the suite runs on (the generic
/// ones); spelled out so that this crate needs no libc.
mod libc_errno {
    pub const EINVAL: i32 = 22;
    pub const ENOSYS: i32 = 38;
    pub const EAFNOSUPPORT: i32 = 97;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_read_set_and_unset_options() {
        let config = parse_config(
            "#\n# Automatically generated\nCONFIG_KVM=y\nCONFIG_ZRAM=m\n# CONFIG_UNIX is not set\n\
             CONFIG_LOCALVERSION=\"-mte\"\n  # CONFIG_KSM is not set  \nnonsense\n=y\nCONFIG_X Y=1\n",
        );
        assert_eq!(value_of(&config, &KVM), "y");
        assert_eq!(value_of(&config, &ZRAM), "m");
        assert_eq!(value_of(&config, &UNIX), "n");
        assert_eq!(value_of(&config, &KSM), "n");
        assert_eq!(value_of(&config, &USERFAULTFD), "n");
        assert_eq!(config["CONFIG_LOCALVERSION"], "\"-mte\"");
        assert_eq!(config.len(), 5, "{config:?}");
    }

    #[test]
    fn a_missing_option_is_a_skip_that_names_it() {
        match call_error(Call::UnixSocketPair, "socketpair for the destination", 38) {
            VmmError::Unsupported(why) => assert_eq!(
                why,
                "socketpair for the destination fails with ENOSYS (38): the kernel was built \
                 without CONFIG_UNIX, which migration to a new VMM process (a UNIX socket pair \
                 to it; CONFIG_NET too) needs"
            ),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(missing_for(Call::Madvise(Advice::Mergeable), 22), Some(KSM));
        assert_eq!(missing_for(Call::Madvise(Advice::PageOut), 22), None);
        // Any other failure stays the system call's: a fail that says what broke.
        assert_eq!(
            call_error(Call::MemfdCreate, "memfd_create", 24),
            VmmError::Sys {
                call: "memfd_create".into(),
                errno: 24
            }
        );
    }
}
