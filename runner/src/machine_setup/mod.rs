//! What the emulated machine offers the memory-management checks, set up once at boot by
//! init: kernel modules from the initramfs, swap on zram, KSM, and a ramfs mount. Nothing here
//! may stop init: a step that fails leaves its facility unavailable, with the reason, and the
//! checks that need it skip with that reason.
//!
//! A runner that is not init (the host and qemu lanes) sets nothing up and reports what the
//! machine it runs on already has.

mod modules;
mod swap;

use std::ffi::CString;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use mte_results::Feature;

pub use swap::{swap_header, SWAP_MAGIC};

/// Where xtask lists the modules to load, one initramfs path a line, in load order.
pub const MODULES_LIST: &str = "/mte/modules";
/// Where a ramfs is mounted: memory that no swap device backs.
pub const RAMFS_DIR: &str = "/mnt/ramfs";
/// The kernel's KSM controls.
pub const KSM_DIR: &str = "/sys/kernel/mm/ksm";

/// The environment features that carry the facilities, for checks that look them up by name.
pub const SWAP_FEATURE: &str = "swap";
pub const KSM_FEATURE: &str = "KSM";
pub const RAMFS_FEATURE: &str = "ramfs";
pub const MODULES_FEATURE: &str = "kernel modules";

/// Whether a facility can be used, and what it is or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Facility {
    /// Usable; what it is, e.g. "zram0 256 MiB".
    Ready(String),
    /// Not usable; why, in words a skip reason can quote.
    Unavailable(String),
}

impl Facility {
    /// What it is, or why it is not there.
    pub fn ready(&self) -> Result<&str, &str> {
        match self {
            Facility::Ready(what) => Ok(what),
            Facility::Unavailable(why) => Err(why),
        }
    }

    fn describe(&self) -> String {
        match self {
            Facility::Ready(what) => what.clone(),
            Facility::Unavailable(why) => format!("unavailable: {why}"),
        }
    }
}

/// Everything the machine was given, or found with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facilities {
    /// Modules loaded at boot, or why some were not; empty when there were none to load.
    pub modules: Vec<String>,
    pub swap: Facility,
    pub ksm: Facility,
    pub ramfs: Facility,
}

static FACILITIES: OnceLock<Facilities> = OnceLock::new();

/// Set up by [`prepare_beside`] while the harness opens the VMM; [`facilities`] waits for it.
static PREPARING: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

/// As init: [`prepare`] on a thread of its own, beside the VMM's opening (a fifth of a second
/// each on the emulated machine), before anything asks for [`facilities`].
pub fn prepare_beside() {
    let preparing = std::thread::spawn(|| {
        prepare();
    });
    *PREPARING.lock().unwrap_or_else(PoisonError::into_inner) = Some(preparing);
}

/// As init: load the modules, start swap on zram, mount the ramfs. Call once, after /proc,
/// /sys and /dev are mounted.
pub fn prepare() -> &'static Facilities {
    FACILITIES.get_or_init(|| {
        let modules = modules::load_listed(MODULES_LIST);
        let swap = match swap::start_on_zram() {
            Ok(what) => Facility::Ready(what),
            Err(why) if modules.is_empty() => Facility::Unavailable(format!(
                "{why} ({MODULES_LIST} lists no modules: a kernel given without its package?)"
            )),
            Err(why) => Facility::Unavailable(format!("{why} (modules: {})", modules.join("; "))),
        };
        Facilities {
            modules,
            swap,
            ksm: ksm(),
            ramfs: mount_ramfs(),
        }
    })
}

/// The machine's facilities: as set up by [`prepare`], or, in a runner that is not init, as
/// found.
pub fn facilities() -> &'static Facilities {
    let preparing = PREPARING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(preparing) = preparing {
        // A panic in it leaves FACILITIES unset: what is found then is what there is.
        let _ = preparing.join();
    }
    FACILITIES.get_or_init(|| Facilities {
        modules: Vec::new(),
        swap: swap::active().map_or_else(Facility::Unavailable, Facility::Ready),
        ksm: ksm(),
        ramfs: mounted_ramfs(),
    })
}

/// The facilities as environment features.
pub fn features() -> Vec<Feature> {
    let found = facilities();
    let mut features = vec![
        Feature::new(SWAP_FEATURE, found.swap.describe()),
        Feature::new(KSM_FEATURE, found.ksm.describe()),
        Feature::new(RAMFS_FEATURE, found.ramfs.describe()),
    ];
    if !found.modules.is_empty() {
        features.push(Feature::new(MODULES_FEATURE, found.modules.join("; ")));
    }
    features
}

/// KSM needs nothing at boot: the checks switch it on themselves.
fn ksm() -> Facility {
    match std::fs::read_to_string(format!("{KSM_DIR}/run")) {
        Ok(run) => Facility::Ready(format!("{KSM_DIR} (run {})", run.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Facility::Unavailable(format!("no {KSM_DIR}: the kernel was built without KSM"))
        }
        Err(e) => Facility::Unavailable(format!("{KSM_DIR}/run: {e}")),
    }
}

fn mount_ramfs() -> Facility {
    if let Err(e) = std::fs::create_dir_all(RAMFS_DIR) {
        return Facility::Unavailable(format!("creating {RAMFS_DIR}: {e}"));
    }
    let (source, target) = (
        CString::new("ramfs").unwrap(),
        CString::new(RAMFS_DIR).unwrap(),
    );
    // SAFETY: valid NUL-terminated strings; no data argument.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret == 0 {
        Facility::Ready(RAMFS_DIR.to_string())
    } else {
        Facility::Unavailable(format!(
            "mount ramfs on {RAMFS_DIR}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// A ramfs already mounted at [`RAMFS_DIR`].
fn mounted_ramfs() -> Facility {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if is_ramfs_mount(&mounts, RAMFS_DIR) {
        Facility::Ready(RAMFS_DIR.to_string())
    } else {
        Facility::Unavailable(format!("no ramfs is mounted at {RAMFS_DIR}"))
    }
}

/// Whether `/proc/mounts` shows a ramfs at `dir`.
fn is_ramfs_mount(mounts: &str, dir: &str) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(dir) && fields.next() == Some("ramfs")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramfs_mounts_are_found_by_place_and_type() {
        let mounts = "rootfs / rootfs rw 0 0\nramfs /mnt/ramfs ramfs rw,relatime 0 0\n\
                      tmpfs /mnt/tmp tmpfs rw 0 0\n";
        assert!(is_ramfs_mount(mounts, "/mnt/ramfs"));
        assert!(!is_ramfs_mount(mounts, "/mnt/tmp"));
        assert!(!is_ramfs_mount("", "/mnt/ramfs"));
    }

    #[test]
    fn features_say_what_is_there_or_why_not() {
        assert_eq!(
            Facility::Ready("zram0 256 MiB".into()).describe(),
            "zram0 256 MiB"
        );
        let missing = Facility::Unavailable("no zram device".into());
        assert_eq!(missing.describe(), "unavailable: no zram device");
        assert_eq!(missing.ready(), Err("no zram device"));
    }
}
