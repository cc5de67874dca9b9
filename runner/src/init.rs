//! Duties of the runner when it is the emulated machine's /init: mount the kernel's file
//! systems, read the run's arguments from the initramfs, and power the machine off at the end
//! (init must never exit: the kernel would panic).

use std::ffi::CString;

/// Where xtask puts the run's arguments (one per line) and the payloads.
pub const ARGS_FILE: &str = "/mte/args";
pub const PAYLOAD_DIR: &str = "/mte/payloads";
/// Where criterion writes its files in the performance suite (`--bench`); the records carry
/// them out of the machine.
pub const CRITERION_DIR: &str = "/mte/criterion";

/// Whether this process is the machine's init.
pub fn is_init() -> bool {
    std::process::id() == 1
}

fn mount(source: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (
        CString::new(source).unwrap(),
        CString::new(target).unwrap(),
        CString::new(fstype).unwrap(),
    );
    // SAFETY: valid NUL-terminated strings; no data argument.
    let ret = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if ret != 0 {
        eprintln!(
            "mte-runner: mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Make the machine usable: /proc, /sys, /dev (for /dev/kvm), a console on stdout, and the
/// kernel's console messages limited to emergencies so that they do not cut records apart.
pub fn set_up_machine() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    // SAFETY: F_GETFD on fd 1 only queries it.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } < 0 {
        let console = CString::new("/dev/console").unwrap();
        // SAFETY: open/dup2 of a path we own; fds 0-2 are free when the kernel gave none.
        unsafe {
            let fd = libc::open(console.as_ptr(), libc::O_RDWR);
            if fd >= 0 {
                libc::dup2(fd, 0);
                libc::dup2(fd, 1);
                libc::dup2(fd, 2);
            }
        }
    }
    const SYSLOG_ACTION_CONSOLE_LEVEL: libc::c_int = 8;
    // SAFETY: sets the console log level; no buffer involved.
    unsafe { libc::klogctl(SYSLOG_ACTION_CONSOLE_LEVEL, std::ptr::null_mut(), 1) };
}

/// The run's arguments as xtask wrote them.
pub fn read_args() -> Vec<String> {
    match std::fs::read_to_string(ARGS_FILE) {
        Ok(text) => text.lines().map(String::from).collect(),
        Err(e) => {
            eprintln!("mte-runner: {ARGS_FILE}: {e}; running with defaults");
            Vec::new()
        }
    }
}

/// Flush and power off; never returns.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot have no memory-safety preconditions; we are init.
    unsafe {
        // The last records may still sit in the console's output queue.
        libc::tcdrain(1);
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Only reached if reboot failed; init must not exit.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
