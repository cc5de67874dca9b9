//! Model (c): the post-copy rule of the suite's engine (vmm-kvm/src/migration_engine/fill.rs):
//! a page's data and its tags are both in place before the guest can touch it.
//!
//! Two threads: a vCPU that faults on a page of the destination's RAM that is not there yet
//! (registered with userfaultfd) and then reads the page's data and tags, and the page server
//! that answers the fault. The engine has two orders. Where the kernel takes a MAP_SHARED
//! memslot with MTE (6.2 on), it writes data and tags through a second, PROT_MTE mapping of
//! the memfd behind RAM and only then maps the page where the vCPU faulted, with
//! UFFDIO_CONTINUE ([`Server::TagsBeforePresent`]). Before 6.2 it fills the page with
//! UFFDIO_COPY in UFFDIO_COPY_MODE_DONTWAKE, writes its tags with
//! KVM_ARM_MTE_COPY_TAGS(TO_GUEST), then UFFDIO_WAKE lets the faulting thread go on
//! ([`Server::TagsBeforeWake`]). The fault injection `migrate-late-tags` wakes before the tags
//! in either order ([`Server::LateTags`], [`Server::LateTagsOnContinue`]).
//!
//! How the faulting thread waits matters, so it is a choice ([`FaultPath`]):
//! - [`FaultPath::WakeOnly`], the engine's premise: the thread goes on only when woken.
//! - [`FaultPath::RecheckPte`], `handle_userfault()` as fs/userfaultfd.c has it: the thread
//!   queues its fault (from then on the server can read it), then `userfaultfd_must_wait()`
//!   looks at the PTE once more, locklessly, and sleeps only if it is still none; the kernel's
//!   comment there says why: so that userland need not UFFDIO_WAKE a fault that a concurrent
//!   UFFDIO_COPY already resolved. Either way the fault returns VM_FAULT_RETRY and is retried,
//!   and the retry maps whatever PTE is there. The same holds for anything else that ends the
//!   wait early (a signal to a thread that waits interruptibly, say).
//!
//! What stands for what (mm/userfaultfd.c `mfill_atomic_pte_copy()` and
//! `mfill_atomic_install_pte()`, fs/userfaultfd.c `handle_userfault()`,
//! `userfaultfd_must_wait()`, `wake_userfault()`, `userfaultfd_wake_function()`):
//!
//! | kernel                                                   | model                      |
//! |----------------------------------------------------------|----------------------------|
//! | the page's data (`copy_from_user` into the new folio)     | `data`, stored `Relaxed`   |
//! | `__folio_mark_uptodate()`'s `smp_wmb`, `set_pte_at()`, and the PTE lock's unlock | `present.store(Release)` |
//! | the fault path reading the PTE under the PTE lock (`follow_page_pte()` in the retried fault) | `present.load(Acquire)` |
//! | `userfaultfd_must_wait()`'s lockless PTE read              | `present.load(Relaxed)`    |
//! | the fault's wait-queue entry on `fault_pending_wqh` (added, then the lock released), which `read()` of the uffd hands over | `queued`, `store(Release)`, read `load(Acquire)` |
//! | UFFDIO_WAKE / a waking UFFDIO_COPY: `wake_userfault()`'s `smp_mb`, then `try_to_wake_up()` (a full barrier) | `fence(SeqCst)`, `woken.store(Release)` |
//! | the woken thread going on after `schedule()`              | `woken.load(Acquire)` loop |
//!
//! The vCPU's stage-2 fault (`user_mem_abort()` in arch/arm64/kvm/mmu.c) gets the page with
//! `get_user_pages`, whose fault on the missing page is the one `handle_userfault()` takes,
//! then calls `sanitise_mte_tags()` and maps the page. The page's MTE flags and tags follow
//! [`crate::page`], under either protocol ([`Kernel`]).

use std::sync::Arc;

use loom::sync::atomic::{fence, AtomicBool, AtomicU8, Ordering};
use loom::thread;

use crate::explore::{explore, Broken, Exploration, Trace};
use crate::page::{show, tags, Kernel, Page, Weakened};

/// The page's data on the source; a missing page reads as zeros.
const SOURCE_DATA: u8 = 0x42;

const PRESENT: &str = "pte";
const QUEUED: &str = "fault";
const WOKEN: &str = "woken";
const DATA: &str = "data";

/// What the page server does once it has read the fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// The engine where the kernel takes a MAP_SHARED memslot with MTE (6.2 on): data and
    /// tags written through a second, PROT_MTE mapping of the memfd behind RAM, and only then
    /// the page mapped where the vCPU faults (UFFDIO_CONTINUE, which wakes).
    TagsBeforePresent,
    /// `--inject migrate-late-tags` on that order: the data, UFFDIO_CONTINUE (which wakes),
    /// then the tags.
    LateTagsOnContinue,
    /// The engine before 6.2: UFFDIO_COPY(DONTWAKE), KVM_ARM_MTE_COPY_TAGS(TO_GUEST),
    /// UFFDIO_WAKE.
    TagsBeforeWake,
    /// `--inject migrate-late-tags` on that order: UFFDIO_COPY (which wakes), then the tags.
    LateTags,
}

/// How the faulting thread waits for its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPath {
    /// It goes on only when the server wakes it.
    WakeOnly,
    /// `handle_userfault()`: it re-reads the PTE after queueing the fault and does not sleep if
    /// the page is there by then.
    RecheckPte,
}

/// Explore every interleaving of one post-copy fault on one page. Two threads with a handful
/// of steps each need no preemption bound: loom explores all of them (a few hundred to two
/// thousand interleavings) in a fraction of a second.
pub fn check(server: Server, fault: FaultPath, kernel: Kernel) -> Exploration {
    let model = format!(
        "post-copy, server {server:?}, fault path {fault:?}, {}",
        kernel.name()
    );
    explore(&model, None, move |trace| run(server, fault, kernel, trace))
}

/// The destination's page and the userfaultfd state of its one fault.
struct Destination {
    /// The VMM's PTE for the page: none until UFFDIO_COPY or UFFDIO_CONTINUE installs it.
    present: AtomicBool,
    /// The page's data, one value for the whole page.
    data: AtomicU8,
    /// The page's MTE flags and tags.
    page: Page,
    /// The fault is queued where the server's read() finds it.
    queued: AtomicBool,
    /// The faulting thread has been woken.
    woken: AtomicBool,
}

impl Destination {
    fn new(kernel: Kernel, trace: &Trace) -> Self {
        for location in [PRESENT, QUEUED, WOKEN, DATA] {
            trace.initially(location, 0);
        }
        Destination {
            present: AtomicBool::new(false),
            data: AtomicU8::new(0),
            page: Page::fresh(kernel, Weakened::Nothing, trace),
            queued: AtomicBool::new(false),
            woken: AtomicBool::new(false),
        }
    }

    /// Publish the page at the address the vCPU faults on (`set_pte_at()` under the PTE
    /// lock, the data made visible first by `__folio_mark_uptodate()`).
    fn install_pte(&self, trace: &Trace, how: &str) {
        self.present.store(true, Ordering::Release);
        trace.wrote("server", PRESENT, 1, format!("{how}: PTE installed"));
    }

    /// Wake the faulting thread (`wake_userfault()`).
    fn wake(&self, trace: &Trace, how: &str) {
        fence(Ordering::SeqCst);
        self.woken.store(true, Ordering::Release);
        trace.wrote(
            "server",
            WOKEN,
            1,
            format!("{how}: wakes the faulting vCPU"),
        );
    }

    fn write_data(&self, trace: &Trace, how: &str) {
        self.data.store(SOURCE_DATA, Ordering::Relaxed);
        trace.wrote(
            "server",
            DATA,
            SOURCE_DATA.into(),
            format!("{how}: data := {SOURCE_DATA:#x}"),
        );
    }

    /// UFFDIO_COPY: fill the page, install its PTE and, unless DONTWAKE, wake.
    fn uffdio_copy(&self, trace: &Trace, wake: bool) {
        let how = if wake {
            "UFFDIO_COPY"
        } else {
            "UFFDIO_COPY(DONTWAKE)"
        };
        self.write_data(trace, how);
        self.install_pte(trace, how);
        if wake {
            self.wake(trace, how);
        }
    }
}

fn vcpu(dest: &Destination, fault: FaultPath, trace: &Trace) {
    const ME: &str = "vCPU";
    loop {
        let present = dest.present.load(Ordering::Acquire);
        trace.read(
            ME,
            PRESENT,
            present.into(),
            format!(
                "stage-2 fault: get_user_pages finds the PTE {}",
                if present { "present" } else { "none" }
            ),
        );
        if present {
            break;
        }
        dest.queued.store(true, Ordering::Release);
        trace.wrote(
            ME,
            QUEUED,
            1,
            "handle_userfault: fault queued for the server".into(),
        );
        let sleep = match fault {
            FaultPath::WakeOnly => true,
            FaultPath::RecheckPte => {
                let present = dest.present.load(Ordering::Relaxed);
                trace.read(
                    ME,
                    PRESENT,
                    present.into(),
                    format!(
                        "userfaultfd_must_wait: PTE {}",
                        if present {
                            "present: does not sleep"
                        } else {
                            "none: sleeps"
                        }
                    ),
                );
                !present
            }
        };
        if sleep {
            while !dest.woken.load(Ordering::Acquire) {
                loom::hint::spin_loop();
            }
            trace.read(ME, WOKEN, 1, "woken".into());
        }
        trace.step(ME, "VM_FAULT_RETRY: the fault is retried");
    }
    dest.page.sanitise_mte_tags(trace, ME);
    let data = dest.data.load(Ordering::Relaxed);
    trace.read(ME, DATA, data.into(), format!("LDR: reads data {data:#x}"));
    let tags = dest.page.read_tags(trace, ME, "LDG");
    if data != SOURCE_DATA || tags != tags::HOST {
        trace.broken(
            Broken::TouchedTooEarly,
            format!(
                "the guest read data {data:#x} and tags {} where the source had {SOURCE_DATA:#x} \
                 and {:#x}",
                show(tags),
                tags::HOST
            ),
        );
    }
}

fn page_server(dest: &Destination, server: Server, trace: &Trace) {
    const ME: &str = "server";
    while !dest.queued.load(Ordering::Acquire) {
        loom::hint::spin_loop();
    }
    trace.read(ME, QUEUED, 1, "read(uffd): the fault's address".into());
    match server {
        Server::TagsBeforeWake => {
            dest.uffdio_copy(trace, false);
            dest.page.copy_tags_to_guest(trace, ME, tags::HOST);
            dest.wake(trace, "UFFDIO_WAKE");
        }
        Server::LateTags => {
            dest.uffdio_copy(trace, true);
            dest.page.copy_tags_to_guest(trace, ME, tags::HOST);
        }
        Server::TagsBeforePresent => {
            dest.write_data(trace, "store through the second mapping");
            dest.page.mte_sync_tags(trace, ME);
            dest.page
                .write_tags(trace, ME, "STG through the second mapping", tags::HOST);
            dest.install_pte(trace, "UFFDIO_CONTINUE");
            dest.wake(trace, "UFFDIO_CONTINUE");
        }
        Server::LateTagsOnContinue => {
            dest.write_data(trace, "store through the second mapping");
            dest.page.mte_sync_tags(trace, ME);
            dest.install_pte(trace, "UFFDIO_CONTINUE");
            dest.wake(trace, "UFFDIO_CONTINUE");
            dest.page
                .write_tags(trace, ME, "STG through the second mapping", tags::HOST);
        }
    }
}

fn run(server: Server, fault: FaultPath, kernel: Kernel, trace: &Trace) {
    let dest = Arc::new(Destination::new(kernel, trace));
    let guest = {
        let (dest, trace) = (Arc::clone(&dest), trace.clone());
        thread::spawn(move || vcpu(&dest, fault, &trace))
    };
    let pages = {
        let (dest, trace) = (Arc::clone(&dest), trace.clone());
        thread::spawn(move || page_server(&dest, server, &trace))
    };
    guest.join().expect("the vCPU thread panicked");
    pages.join().expect("the server thread panicked");
    let end = dest.page.read_tags(trace, "end", "both threads done");
    if end != tags::HOST {
        trace.broken(
            Broken::LostTags,
            format!(
                "the server wrote tags {:#x}, and the page ends with {}",
                tags::HOST,
                show(end)
            ),
        );
    }
}
