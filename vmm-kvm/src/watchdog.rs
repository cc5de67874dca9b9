//! Deadlines for KVM_RUN: a thread that kicks a stuck vCPU out of the kernel with a signal.
//!
//! KVM_RUN returns EINTR when a signal arrives for its thread. A signal that lands just before
//! the thread enters KVM_RUN would be lost, so once the deadline has passed the watchdog keeps
//! signalling until it is disarmed. Each deadline watches the thread that armed it: a vCPU may
//! run on one thread now and on another later.

use std::sync::{Arc, Condvar, Mutex, Once, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The signal used to kick vCPU threads.
const KICK_SIGNAL: libc::c_int = libc::SIGUSR1;

extern "C" fn on_kick(_: libc::c_int) {}

fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: an empty handler, no SA_RESTART so that KVM_RUN returns EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(KICK_SIGNAL, &action, std::ptr::null_mut());
        }
    });
}

struct State {
    deadline: Option<Instant>,
    /// The thread that armed the deadline, which it signals.
    target: Option<libc::pthread_t>,
    fired: bool,
    quit: bool,
}

/// Watches one vCPU: kicks the thread that runs it once its deadline has passed.
pub struct Watchdog {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn new() -> Self {
        install_kick_handler();
        let shared = Arc::new((
            Mutex::new(State {
                deadline: None,
                target: None,
                fired: false,
                quit: false,
            }),
            Condvar::new(),
        ));
        let watched = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("vcpu-watchdog".into())
            .spawn(move || watch(&watched))
            .expect("spawning the watchdog thread");
        Watchdog {
            shared,
            thread: Some(thread),
        }
    }

    /// Start a deadline `timeout` from now for the calling thread, which must disarm it
    /// before it ends.
    pub fn arm(&self, timeout: Duration) {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap();
        state.deadline = Some(Instant::now() + timeout);
        // SAFETY: pthread_self has no preconditions.
        state.target = Some(unsafe { libc::pthread_self() });
        state.fired = false;
        cv.notify_one();
    }

    /// Stop the deadline; true if it had passed (the vCPU was kicked).
    pub fn disarm(&self) -> bool {
        let (lock, _) = &*self.shared;
        let mut state = lock.lock().unwrap();
        state.deadline = None;
        state.target = None;
        state.fired
    }

    /// Whether the current deadline has passed.
    pub fn fired(&self) -> bool {
        self.shared.0.lock().unwrap().fired
    }
}

fn watch(shared: &(Mutex<State>, Condvar)) {
    let (lock, cv) = shared;
    let mut state = lock.lock().unwrap();
    while !state.quit {
        state = match (state.deadline, state.target) {
            (Some(deadline), Some(target)) => {
                let now = Instant::now();
                if now >= deadline {
                    state.fired = true;
                    // SAFETY: the target thread armed the deadline and disarms it before it
                    // ends (under this lock), so it is alive while it is the target.
                    unsafe { libc::pthread_kill(target, KICK_SIGNAL) };
                    cv.wait_timeout(state, Duration::from_millis(10)).unwrap().0
                } else {
                    cv.wait_timeout(state, deadline - now).unwrap().0
                }
            }
            _ => cv.wait(state).unwrap(),
        };
    }
}

impl Default for Watchdog {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.shared;
            // Dropped while unwinding too: a poisoned lock must not turn into a double panic.
            lock.lock().unwrap_or_else(PoisonError::into_inner).quit = true;
            cv.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_deadline_interrupts_a_blocking_call() {
        let dog = Watchdog::new();
        dog.arm(Duration::from_millis(50));
        let started = Instant::now();
        // A blocking read on a pipe nobody writes: only the kick ends it.
        let mut fds = [0; 2];
        // SAFETY: pipe fills the two descriptors of the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into `byte`.
        let ret = unsafe { libc::read(fds[0], (&mut byte as *mut u8).cast(), 1) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((ret, errno), (-1, Some(libc::EINTR)));
        assert!(dog.disarm());
        assert!(started.elapsed() < Duration::from_secs(5));
        // SAFETY: the test's own descriptors, closed once.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }

    #[test]
    fn a_deadline_kicks_the_thread_that_armed_it() {
        let dog = Watchdog::new();
        let kicked = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    dog.arm(Duration::from_millis(20));
                    let started = Instant::now();
                    // SAFETY: sleeps only; a signal ends it early with EINTR.
                    let ret = unsafe { libc::usleep(5_000_000) };
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    let fired = dog.disarm();
                    (ret, errno, fired, started.elapsed())
                })
                .join()
                .unwrap()
        });
        assert_eq!(
            (kicked.0, kicked.1, kicked.2),
            (-1, Some(libc::EINTR), true)
        );
        assert!(kicked.3 < Duration::from_secs(4));
    }

    #[test]
    fn a_disarmed_deadline_never_fires() {
        let dog = Watchdog::new();
        dog.arm(Duration::from_secs(60));
        assert!(!dog.disarm());
        assert!(!dog.fired());
    }
}
