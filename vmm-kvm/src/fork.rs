//! Forking the VMM: the child process looks at its copy of guest RAM through a VM of its own
//! (KVM ties a VM to the mm that created it, so the parent's VM fd is of no use there).
//!
//! The runner is multithreaded, so between fork and `_exit` the child may only make raw system
//! calls: it allocates nothing and takes no lock. Everything it needs is prepared before the
//! fork: the plan (plain slices), a `MAP_SHARED` area for its report, two pipes. It reports
//! through the shared area and the pipe, and kills itself with `alarm` if the parent forgets
//! it; the parent waits for it with deadlines and kills it on timeout or drop.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_enable_cap, kvm_userspace_memory_region, KVM_CAP_ARM_MTE};
use mte_protocol::{granules, pattern_word, GRANULE, RAM_IPA};
use mte_suites::host_mm::{ChildReport, ChildWrite, Fill, ForkPlan, ForkedChild};
use mte_suites::vmm::VmmError;

use vmm_sys_util::ioctl::{ioctl_with_ref, ioctl_with_val};

use crate::copy_tags;
use crate::ioctls::{KVM_CREATE_VM, KVM_ENABLE_CAP, KVM_SET_USER_MEMORY_REGION};
use crate::memory::{page_size, GuestRam};

/// Where the child is, in the report's header.
const STARTED: u64 = 0;
const READY: u64 = 1;
const DONE: u64 = 2;
const FAILED: u64 = 3;

/// The child's steps, for the report of one that failed.
const STEPS: [&str; 10] = [
    "none",
    "open /dev/kvm",
    "KVM_CREATE_VM",
    "KVM_ENABLE_CAP(KVM_CAP_ARM_MTE)",
    "KVM_SET_USER_MEMORY_REGION",
    "KVM_ARM_MTE_COPY_TAGS just after the fork",
    "KVM_ARM_MTE_COPY_TAGS after its writes",
    "telling the parent it is ready",
    "waiting for the parent",
    "KVM_ARM_MTE_COPY_TAGS after the parent's writes",
];

/// The report area's header; tag maps and data follow it.
#[repr(C)]
struct Header {
    state: u64,
    step: u64,
    errno: u64,
}
const HEADER: usize = 64;

/// A `MAP_SHARED | MAP_ANONYMOUS` area that parent and child both see.
struct SharedArea {
    ptr: *mut u8,
    len: usize,
}

impl SharedArea {
    fn new(len: usize) -> Result<Self, VmmError> {
        // SAFETY: a fresh anonymous mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_error("mmap of the fork report area"));
        }
        Ok(SharedArea {
            ptr: ptr.cast(),
            len,
        })
    }

    fn header(&self) -> (u64, u64, u64) {
        let header = self.ptr as *const Header;
        // SAFETY: the area starts with a header; the child writes it, volatile reads see it.
        unsafe {
            (
                std::ptr::addr_of!((*header).state).read_volatile(),
                std::ptr::addr_of!((*header).step).read_volatile(),
                std::ptr::addr_of!((*header).errno).read_volatile(),
            )
        }
    }

    fn bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        assert!(offset + len <= self.len, "inside the report area");
        // SAFETY: in range (asserted) of a live mapping; the child has exited.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len).to_vec() }
    }
}

impl Drop for SharedArea {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn last_error(call: &str) -> VmmError {
    VmmError::Sys {
        call: call.into(),
        errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), VmmError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, which become ours.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_error("pipe2"));
    }
    // SAFETY: fresh descriptors nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Everything the child reads, prepared before the fork.
struct ChildArgs<'a> {
    ram_hva: u64,
    ram_size: u64,
    make_vm: bool,
    mte: bool,
    watch: &'a [(u64, u64)],
    writes: &'a [ChildWrite],
    area: *mut u8,
    /// Granules over `watch`: the size of each of the three tag maps.
    granules: usize,
    ready_write: RawFd,
    go_read: RawFd,
    alarm_secs: u32,
}

impl ChildArgs<'_> {
    fn tags_at(&self, which: usize) -> usize {
        HEADER + which * self.granules
    }
    fn data_at(&self) -> usize {
        HEADER + 3 * self.granules
    }
}

/// A forked VMM process.
pub struct KvmChild {
    pid: libc::pid_t,
    go: OwnedFd,
    area: SharedArea,
    granules: usize,
    data_len: usize,
    deadline: Duration,
    reaped: bool,
}

/// Fork, let the child take its first look (as `plan` says) and wait until it has.
pub fn spawn(ram: &GuestRam, plan: &ForkPlan, deadline: Duration) -> Result<KvmChild, VmmError> {
    let inside = |&(ipa, len): &(u64, u64)| {
        let page = page_size() as u64;
        ipa >= RAM_IPA
            && ipa % page == 0
            && len % page == 0
            && ipa - RAM_IPA + len <= ram.size() as u64
    };
    let writes: Vec<(u64, u64)> = plan.writes.iter().map(|w| (w.ipa, w.len)).collect();
    if let Some(bad) = plan.watch.iter().chain(&writes).find(|r| !inside(r)) {
        return Err(VmmError::Host(format!(
            "fork plan range {:#x}+{:#x} is not page aligned inside guest RAM",
            bad.0, bad.1
        )));
    }
    let data_len: u64 = plan.watch.iter().map(|&(_, len)| len).sum();
    let granules = granules(data_len);
    let area = SharedArea::new(HEADER + 3 * granules + data_len as usize)?;
    let (ready_read, ready_write) = pipe()?;
    let (go_read, go_write) = pipe()?;
    let args = ChildArgs {
        ram_hva: ram.host_address(),
        ram_size: ram.size() as u64,
        make_vm: !plan.watch.is_empty(),
        mte: plan.mte,
        watch: &plan.watch,
        writes: &plan.writes,
        area: area.ptr,
        granules,
        ready_write: ready_write.as_raw_fd(),
        go_read: go_read.as_raw_fd(),
        alarm_secs: (deadline.as_secs() as u32).saturating_mul(2).max(2),
    };

    // SAFETY: the child runs only `child_main`, which makes raw system calls on memory
    // prepared above and ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_error("fork"));
    }
    if pid == 0 {
        // SAFETY: in the child, with `args` prepared before the fork.
        unsafe { child_main(&args) }
    }
    drop((ready_write, go_read));
    let mut child = KvmChild {
        pid,
        go: go_write,
        area,
        granules,
        data_len: data_len as usize,
        deadline,
        reaped: false,
    };
    child.wait_ready(&ready_read)?;
    Ok(child)
}

impl KvmChild {
    /// Wait for the child's byte on the ready pipe, or its death, or the deadline.
    fn wait_ready(&mut self, ready: &OwnedFd) -> Result<(), VmmError> {
        let started = Instant::now();
        loop {
            let mut poll = libc::pollfd {
                fd: ready.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut poll, 1, 20) };
            if n > 0 {
                let mut byte = 0u8;
                // SAFETY: one byte into a local.
                let got =
                    unsafe { libc::read(ready.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
                if got == 1 {
                    return match self.area.header().0 {
                        READY => Ok(()),
                        _ => Err(self.failure()),
                    };
                }
            }
            if let Some(status) = self.try_reap() {
                return Err(self.died(status));
            }
            if started.elapsed() > self.deadline {
                self.kill();
                return Err(VmmError::Timeout {
                    what: format!("the forked child {}'s first look", self.pid),
                    seconds: self.deadline.as_secs_f64(),
                });
            }
        }
    }

    fn try_reap(&mut self) -> Option<libc::c_int> {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let ret = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if ret == self.pid {
            self.reaped = true;
            Some(status)
        } else {
            None
        }
    }

    fn kill(&mut self) {
        if !self.reaped {
            // SAFETY: our own child, not yet reaped (so the pid is still ours).
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            self.reaped = true;
        }
    }

    /// The child's own account of a failed step.
    fn failure(&mut self) -> VmmError {
        self.kill();
        let (_, step, errno) = self.area.header();
        VmmError::Sys {
            call: format!(
                "forked child {}: {}",
                self.pid,
                STEPS.get(step as usize).unwrap_or(&"an unknown step")
            ),
            errno: errno as i32,
        }
    }

    fn died(&mut self, status: libc::c_int) -> VmmError {
        if self.area.header().0 == FAILED {
            return self.failure();
        }
        let how = if libc::WIFSIGNALED(status) {
            format!("was killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exited with status {}", libc::WEXITSTATUS(status))
        };
        VmmError::Host(format!("the forked child {} {how}", self.pid))
    }
}

impl ForkedChild for KvmChild {
    fn pid(&self) -> u32 {
        self.pid as u32
    }

    fn finish(mut self: Box<Self>) -> Result<ChildReport, VmmError> {
        let byte = 1u8;
        // SAFETY: one byte from a local to our pipe.
        if unsafe { libc::write(self.go.as_raw_fd(), (&byte as *const u8).cast(), 1) } != 1 {
            let error = last_error("telling the forked child to finish");
            self.kill();
            return Err(error);
        }
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.try_reap() {
                break status;
            }
            if started.elapsed() > self.deadline {
                self.kill();
                return Err(VmmError::Timeout {
                    what: format!("the forked child {}'s last look and exit", self.pid),
                    seconds: self.deadline.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
            || self.area.header().0 != DONE
        {
            return Err(self.died(status));
        }
        let g = self.granules;
        Ok(ChildReport {
            pid: self.pid as u32,
            tags_at_fork: self.area.bytes(HEADER, g),
            tags_after_own_writes: self.area.bytes(HEADER + g, g),
            tags_after_parent: self.area.bytes(HEADER + 2 * g, g),
            data_at_end: self.area.bytes(HEADER + 3 * g, self.data_len),
        })
    }
}

impl Drop for KvmChild {
    fn drop(&mut self) {
        self.kill();
    }
}

// The child. From here on: raw system calls only, no allocation, no lock, no panic.

fn errno() -> i32 {
    // SAFETY: the thread's errno location.
    unsafe { *libc::__errno_location() }
}

/// # Safety
/// Only in a freshly forked child, with `args` prepared before the fork.
unsafe fn child_main(args: &ChildArgs) -> ! {
    // SAFETY: async-signal-safe calls; the header lies at the start of the shared area.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::alarm(args.alarm_secs);

        let header = args.area as *mut Header;
        let code = match child_steps(args, header) {
            Ok(()) => {
                std::ptr::addr_of_mut!((*header).state).write_volatile(DONE);
                0
            }
            Err((step, errno)) => {
                std::ptr::addr_of_mut!((*header).step).write_volatile(step);
                std::ptr::addr_of_mut!((*header).errno).write_volatile(errno as u64);
                std::ptr::addr_of_mut!((*header).state).write_volatile(FAILED);
                let byte = 0u8;
                libc::write(args.ready_write, (&byte as *const u8).cast(), 1);
                1
            }
        };
        libc::_exit(code)
    }
}

/// The child's work; `Err((step, errno))` on the first failure.
///
/// # Safety
/// As [`child_main`].
unsafe fn child_steps(args: &ChildArgs, header: *mut Header) -> Result<(), (u64, i32)> {
    let check = |ret: libc::c_int, step: u64| {
        if ret < 0 {
            Err((step, errno()))
        } else {
            Ok(ret)
        }
    };
    // SAFETY: raw calls on descriptors and memory prepared before the fork.
    unsafe {
        std::ptr::addr_of_mut!((*header).state).write_volatile(STARTED);
        let mut vm = -1;
        if args.make_vm {
            let kvm = check(
                libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC),
                1,
            )?;
            vm = check(ioctl_with_val(&kvm, KVM_CREATE_VM(), 0), 2)?;
            if args.mte {
                let cap = kvm_enable_cap {
                    cap: KVM_CAP_ARM_MTE,
                    ..Default::default()
                };
                check(ioctl_with_ref(&vm, KVM_ENABLE_CAP(), &cap), 3)?;
            }
            let region = kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: RAM_IPA,
                memory_size: args.ram_size,
                userspace_addr: args.ram_hva,
            };
            check(
                ioctl_with_ref(&vm, KVM_SET_USER_MEMORY_REGION(), &region),
                4,
            )?;
            copy_watched_tags(args, vm, 0, 5)?;
        }
        for write in args.writes {
            fill(args, write);
        }
        if args.make_vm {
            copy_watched_tags(args, vm, 1, 6)?;
        }
        std::ptr::addr_of_mut!((*header).state).write_volatile(READY);
        let byte = 1u8;
        if libc::write(args.ready_write, (&byte as *const u8).cast(), 1) != 1 {
            return Err((7, errno()));
        }
        let mut got = 0u8;
        loop {
            let n = libc::read(args.go_read, (&mut got as *mut u8).cast(), 1);
            if n >= 0 {
                break;
            }
            if errno() != libc::EINTR {
                return Err((8, errno()));
            }
        }
        if args.make_vm {
            copy_watched_tags(args, vm, 2, 9)?;
            let mut at = args.data_at();
            for &(ipa, len) in args.watch {
                let from = (args.ram_hva + (ipa - RAM_IPA)) as *const u8;
                std::ptr::copy_nonoverlapping(from, args.area.add(at), len as usize);
                at += len as usize;
            }
        }
        Ok(())
    }
}

/// KVM_ARM_MTE_COPY_TAGS(FROM_GUEST) of every watched range into tag map `which`.
///
/// # Safety
/// As [`child_main`]; `vm` is the child's VM.
unsafe fn copy_watched_tags(
    args: &ChildArgs,
    vm: RawFd,
    which: usize,
    step: u64,
) -> Result<(), (u64, i32)> {
    let mut at = args.tags_at(which);
    for &(ipa, len) in args.watch {
        // SAFETY: the map of this range, len / 16 bytes, lies inside the area (sized before
        // the fork), which nothing else in this process uses.
        let map =
            unsafe { std::slice::from_raw_parts_mut(args.area.add(at), (len / GRANULE) as usize) };
        match copy_tags::from_guest(vm, ipa, map) {
            Ok(copied) if copied as u64 == len => {}
            Ok(_) => return Err((step, libc::EIO)),
            Err(e) => return Err((step, e.raw_os_error().unwrap_or(libc::EIO))),
        }
        at += (len / GRANULE) as usize;
    }
    Ok(())
}

/// The child's write of a range through its copy of the VMM's mapping.
///
/// # Safety
/// As [`child_main`]; the range was checked to lie inside guest RAM before the fork.
unsafe fn fill(args: &ChildArgs, write: &ChildWrite) {
    let base = args.ram_hva + (write.ipa - RAM_IPA);
    let mut offset = 0;
    while offset < write.len {
        let value = match write.fill {
            Fill::Zeros => 0,
            Fill::Pattern(seed) => pattern_word(seed, offset),
        };
        // SAFETY: inside guest RAM (checked before the fork), 8-byte aligned.
        unsafe { ((base + offset) as *mut u64).write_volatile(value) };
        offset += 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram_with(byte: u8) -> GuestRam {
        let ram = GuestRam::new(16 * 4096).unwrap();
        ram.write(0, &[byte; 16 * 4096]);
        ram
    }

    #[test]
    fn the_childs_writes_stay_in_the_child() {
        let ram = ram_with(7);
        let plan = ForkPlan {
            mte: false,
            watch: Vec::new(),
            writes: vec![ChildWrite {
                ipa: RAM_IPA + 4096,
                len: 4096,
                fill: Fill::Zeros,
            }],
        };
        let child = Box::new(spawn(&ram, &plan, Duration::from_secs(10)).unwrap());
        let report = child.finish().unwrap();
        assert!(report.tags_at_fork.is_empty() && report.data_at_end.is_empty());
        let mut page = vec![0u8; 4096];
        ram.read(4096, &mut page);
        assert!(
            page.iter().all(|&b| b == 7),
            "the parent's copy is untouched"
        );
    }

    #[test]
    fn a_plan_outside_guest_ram_is_refused_before_forking() {
        let ram = ram_with(0);
        let plan = ForkPlan {
            watch: vec![(RAM_IPA + 64 * 4096, 4096)],
            ..ForkPlan::default()
        };
        assert!(matches!(
            spawn(&ram, &plan, Duration::from_secs(1)),
            Err(VmmError::Host(_))
        ));
    }

    #[test]
    fn a_child_dropped_unfinished_is_killed_and_reaped() {
        let ram = ram_with(0);
        let child = spawn(&ram, &ForkPlan::default(), Duration::from_secs(10)).unwrap();
        let pid = child.pid;
        drop(child);
        // SAFETY: probing whether the pid is still ours to wait for.
        let ret = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(ret, -1, "already reaped");
    }
}
