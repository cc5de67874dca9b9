//! Deadlines for KVM_RUN: a thread that kicks a stuck vCPU out of the kernel with a signal.
//!
//! KVM_RUN returns EINTR when a signal arrives for its thread. A signal that lands just before
//! the thread enters KVM_RUN would be lost, so once the deadline has passed the watchdog keeps
//! signalling until it is disarmed.

use std::marker::PhantomData;
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
    fired: bool,
    quit: bool,
}

/// Watches one vCPU thread (the one that created it). Not `Send`: it must not outlive that
/// thread, whose id it signals.
pub struct Watchdog {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    _stays_on_its_thread: PhantomData<*const ()>,
}

impl Watchdog {
    pub fn for_current_thread() -> Self {
        install_kick_handler();
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let shared = Arc::new((
            Mutex::new(State {
                deadline: None,
                fired: false,
                quit: false,
            }),
            Condvar::new(),
        ));
        let watched = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("vcpu-watchdog".into())
            .spawn(move || watch(target, &watched))
            .expect("spawning the watchdog thread");
        Watchdog {
            shared,
            thread: Some(thread),
            _stays_on_its_thread: PhantomData,
        }
    }

    /// Start a deadline `timeout` from now.
    pub fn arm(&self, timeout: Duration) {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap();
        state.deadline = Some(Instant::now() + timeout);
        state.fired = false;
        cv.notify_one();
    }

    /// Stop the deadline; true if it had passed (the vCPU was kicked).
    pub fn disarm(&self) -> bool {
        let (lock, _) = &*self.shared;
        let mut state = lock.lock().unwrap();
        state.deadline = None;
        state.fired
    }

    /// Whether the current deadline has passed.
    pub fn fired(&self) -> bool {
        self.shared.0.lock().unwrap().fired
    }
}

fn watch(target: libc::pthread_t, shared: &(Mutex<State>, Condvar)) {
    let (lock, cv) = shared;
    let mut state = lock.lock().unwrap();
    while !state.quit {
        state = match state.deadline {
            None => cv.wait(state).unwrap(),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    state.fired = true;
                    // SAFETY: the target thread outlives the watchdog (it owns it and joins it
                    // on drop).
                    unsafe { libc::pthread_kill(target, KICK_SIGNAL) };
                    cv.wait_timeout(state, Duration::from_millis(10)).unwrap().0
                } else {
                    cv.wait_timeout(state, deadline - now).unwrap().0
                }
            }
        };
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
        let dog = Watchdog::for_current_thread();
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
    fn a_disarmed_deadline_never_fires() {
        let dog = Watchdog::for_current_thread();
        dog.arm(Duration::from_secs(60));
        assert!(!dog.disarm());
        assert!(!dog.fired());
    }
}
