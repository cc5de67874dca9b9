//! QEMUs kept between guests. Inside the emulated machine a QEMU takes most of a second to
//! start (its dynamic loading and initialisation run emulated), against a few tens of
//! milliseconds for its guest's boot; a QEMU whose guest ended at a doorbell is kept instead,
//! and the next guest of the same setup gets it reset: its RAM (a shared memfd) discarded, so
//! that every page is fresh with zero data and zero tags, the machine reset (the payload loaded
//! again, the vCPU and the interrupt controller as after QEMU's start).

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use mte_protocol::RAM_SIZE;
use mte_suites::vmm::VmmError;
use mte_vmm::Payload;

use crate::machine::{Ram, Setup};
use crate::qemu_ram::Mapping;
use crate::tag_view::MemfdTagView;
use crate::transport::Process;

/// The most idle QEMUs kept of those one thread started: one is all a thread takes at once.
const KEPT: usize = 1;

/// A QEMU whose guest is done with, and what was learnt of it.
pub(crate) struct Idle {
    pub(crate) process: Process,
    pub(crate) payload: Arc<Payload>,
    pub(crate) setup: Setup,
    pub(crate) ram: Option<Mapping>,
    pub(crate) tag_view: Option<MemfdTagView>,
}

/// The idle QEMUs of a VMM, each for the thread that started it: a QEMU dies with that
/// thread (PR_SET_PDEATHSIG), and a test thread that runs out of checks ends while others
/// still run theirs, so a QEMU handed to another thread could be killed under it. The thread
/// that made the pool (the one that opened the VMM and waits for the test threads) outlives
/// them all: what it started, any thread may take.
pub(crate) struct Pool {
    idle: Mutex<Vec<(ThreadId, Idle)>>,
    maker: ThreadId,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            idle: Mutex::default(),
            maker: std::thread::current().id(),
        }
    }
}

impl Pool {
    /// Whether guests of `setup` may share QEMUs: those on a shared memfd, whose RAM the
    /// runner can discard.
    pub(crate) fn takes(setup: Setup) -> bool {
        setup.ram == Ram::SharedMemfd
    }

    /// Keep `idle` for a later guest (or let it go, when enough are kept).
    pub(crate) fn put(&self, idle: Idle) {
        let mut kept = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let owner = idle.process.machine.started_by();
        if kept.iter().filter(|(thread, _)| *thread == owner).count() < KEPT {
            kept.push((owner, idle));
        }
    }

    /// An idle QEMU of `setup` with `payload` loaded, if one is kept.
    pub(crate) fn take(&self, setup: Setup, payload: &Arc<Payload>) -> Option<Idle> {
        let mut kept = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let taker = std::thread::current().id();
        let at = kept.iter().position(|(thread, idle)| {
            (*thread == taker || *thread == self.maker)
                && idle.setup == setup
                && Arc::ptr_eq(&idle.payload, payload)
        })?;
        Some(kept.swap_remove(at).1)
    }
}

/// Give every page of QEMU's memfd RAM back to the host kernel (fallocate PUNCH_HOLE): the
/// next touch of each, by the guest, QEMU or the runner, finds a fresh page, zero-filled with
/// zero tags. KVM and every mapping of the memfd lose the old pages on the way.
pub(crate) fn discard_ram(pid: u32, ram: &Mapping) -> Result<(), VmmError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(ram.map_file(pid))
        .map_err(|e| VmmError::Host(format!("opening QEMU's guest RAM to discard it: {e}")))?;
    // SAFETY: fallocate on a descriptor we own; it changes only the file's pages.
    let ret = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            RAM_SIZE as libc::off_t,
        )
    };
    if ret != 0 {
        let e = std::io::Error::last_os_error();
        return Err(VmmError::Sys {
            call: "fallocate(PUNCH_HOLE) of QEMU's memfd guest RAM".into(),
            errno: e.raw_os_error().unwrap_or(0),
        });
    }
    Ok(())
}
