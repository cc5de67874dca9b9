//! The kernel's own log (/dev/kmsg), as the runner reads it while checks run: which lines are
//! the kernel warning (a check during which it warned fails), and where a boot's whole log is
//! kept in the run directory.

use crate::artifact::kernel_folder;

/// What marks a kernel line as the kernel warning of something wrong in itself: a `WARN_ON`,
/// a `BUG:` (lockdep, sleeping in atomic context, ...), an Oops, a stack dump, KASAN, or a
/// refcount gone wrong.
pub const WARNING_MARKS: [&str; 8] = [
    "WARNING:",
    "BUG:",
    "Oops",
    "Call trace",
    "Call Trace",
    "kernel BUG",
    "KASAN",
    "refcount_t",
];

/// Whether a kernel log line says the kernel warned.
pub fn is_warning(line: &str) -> bool {
    WARNING_MARKS.iter().any(|mark| line.contains(mark))
}

/// What marks a kernel line as a report of a CPU or task that stopped making progress: a
/// soft lockup, an RCU stall, a hung task. A machine that goes silent after one is stuck.
pub const STUCK_MARKS: [&str; 4] = [
    "BUG: soft lockup",
    "self-detected stall",
    "rcu_preempt detected stalls",
    "blocked for more than",
];

/// Whether a kernel line reports a stuck CPU or task.
pub fn reports_stuck(line: &str) -> bool {
    STUCK_MARKS.iter().any(|mark| line.contains(mark))
}

/// The host fact of an environment that names its boot's kernel log file.
pub const KERNEL_LOG_FACT: &str = "kernel.log";

/// Where the whole kernel log of a boot is kept, relative to the run directory:
/// `kernel-<boot>-<release>.log`, e.g. `kernel-1-6.12.95+deb12-arm64.log`.
pub fn file_name(boot: u32, kernel_release: &str) -> String {
    format!("kernel-{boot}-{}.log", kernel_folder(kernel_release))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_told_from_chatter() {
        assert!(is_warning(
            "[   12.5] WARNING: CPU: 1 PID: 77 at arch/arm64/kvm/mmu.c:1430 user_mem_abort"
        ));
        assert!(is_warning(
            "[    3.1] BUG: sleeping function called from invalid context"
        ));
        assert!(is_warning("[    3.1] Call trace:"));
        assert!(is_warning(
            "[    3.1] refcount_t: underflow; use-after-free."
        ));
        assert!(!is_warning(
            "[    0.0] Booting Linux on physical CPU 0x0000000000"
        ));
        assert!(!is_warning(
            "[    1.2] kvm [1]: Hyp mode initialized successfully"
        ));
    }

    #[test]
    fn a_boot_keeps_its_log_by_boot_and_release() {
        assert_eq!(
            file_name(1, "6.12.95+deb12-arm64"),
            "kernel-1-6.12.95+deb12-arm64.log"
        );
        assert_eq!(file_name(3, "../x y"), "kernel-3-_x_y.log");
    }
}
