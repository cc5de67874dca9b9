//! One page's MTE bookkeeping as the arm64 kernel keeps it, and the kernel paths that
//! initialise, write and read its tags, in both protocols.
//!
//! Each atomic and each ordering below stands for one kernel primitive, in the C11 terms loom
//! checks (the usual mapping of the kernel's barriers for the message-passing and lock patterns
//! these protocols use):
//!
//! | kernel                                   | model                                    |
//! |------------------------------------------|------------------------------------------|
//! | `page->flags` (PG_mte_tagged, PG_mte_lock bits in one word) | one `AtomicUsize`, [`Page::flags`] |
//! | the page's tags (written by `STGM`/`STG` in `mte_clear_page_tags`, `mte_copy_tags_from_user`, read by `LDG`) | an `AtomicU8` read and written `Relaxed`: plain stores and loads, ordered only by the barriers (as plain non-atomic data loom would stop at the first unordered access, before the rule could be checked) |
//! | `test_bit()` (a `READ_ONCE`, no ordering) | `load(Relaxed)`                          |
//! | `set_bit()` (a non-value-returning atomic: no ordering) | `fetch_or(Relaxed)`          |
//! | `smp_wmb()` before `set_bit()`           | `fence(Release)`                         |
//! | `smp_rmb()` after `test_bit()`           | `fence(Acquire)`                         |
//! | `test_and_set_bit(PG_mte_lock)`          | `fetch_or(Relaxed)`: see [`Page::try_page_mte_tagging`] |
//! | `smp_cond_load_acquire(&page->flags, VAL & PG_mte_tagged)` | a `load(Acquire)` loop, yielding to loom |
//!
//! The kernel sources (arch/arm64/include/asm/mte.h for the helpers, arch/arm64/kvm/mmu.c
//! `sanitise_mte_tags()`, arch/arm64/kvm/guest.c `kvm_vm_ioctl_mte_copy_tags()`,
//! arch/arm64/kernel/mte.c `mte_sync_tags()`):
//!
//! - before "arm64: mte: Lock a page for MTE tag initialisation" (d77e59a8fccd, 6.2), with
//!   "arm64: mte: Fix/clarify the PG_mte_tagged semantics" (e059853d14ca, 6.2, in 6.1 stable
//!   since 6.1.17) that added the barriers: an initialiser tests PG_mte_tagged
//!   (`page_mte_tagged()`: `test_bit` then `smp_rmb` if set), clears or restores the tags if it
//!   is clear, then sets it (`set_page_mte_tagged()`: `smp_wmb` then `set_bit`).
//!   `KVM_ARM_MTE_COPY_TAGS(TO_GUEST)` does not test it: it writes the tags and sets it.
//! - from d77e59a8fccd on: an initialiser first takes PG_mte_lock (`try_page_mte_tagging()`:
//!   `test_and_set_bit`; the loser waits for PG_mte_tagged with `smp_cond_load_acquire`), and
//!   only the winner clears or restores the tags. The lock is never released with
//!   `clear_bit_unlock`: PG_mte_tagged, never cleared, means unlocked. `TO_GUEST` takes the
//!   lock too (so that it waits for a concurrent initialiser) but writes its tags either way.

use loom::sync::atomic::{fence, AtomicU8, AtomicUsize, Ordering};

use crate::explore::{Broken, Trace};

/// PG_mte_tagged (PG_arch_2): the page's tags are initialised.
const PG_MTE_TAGGED: usize = 1 << 0;
/// PG_mte_lock (PG_arch_3, from d77e59a8fccd): a path is initialising the tags.
const PG_MTE_LOCK: usize = 1 << 1;

/// The locations as a trace names them.
const TAGGED: &str = "PG_mte_tagged";
const LOCK: &str = "PG_mte_lock";
const TAGS: &str = "tags";

/// Tag values the models write, one per writer, so that a read tells who wrote what it saw.
pub mod tags {
    /// What a fresh page's tag storage holds from its last use: never initialised.
    pub const STALE: u8 = 0xf;
    /// `mte_clear_page_tags()`.
    pub const CLEARED: u8 = 0x0;
    /// What the VMM writes with `KVM_ARM_MTE_COPY_TAGS(TO_GUEST)` (or the source's tags in
    /// post-copy).
    pub const HOST: u8 = 0xa;
    /// What a guest stores with `STG` once its first touch has mapped the page.
    pub const GUEST: u8 = 0x5;
}

/// Which protocol the kernel follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Test PG_mte_tagged, initialise, set it (6.1 with e059853d14ca; Debian's 6.1).
    PreLock,
    /// Take PG_mte_lock first; only the winner initialises (d77e59a8fccd, 6.2 and later).
    PageLock,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::PreLock => "pre-6.2 protocol (test PG_mte_tagged, initialise, set it)",
            Kernel::PageLock => "6.2+ protocol (PG_mte_lock, then initialise, then PG_mte_tagged)",
        }
    }
}

/// A barrier left out on purpose, to show that the checker catches a wrong ordering and not
/// only a wrong sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weakened {
    Nothing,
    /// `set_page_mte_tagged()` without its `smp_wmb()`.
    NoSmpWmb,
    /// `page_mte_tagged()` without its `smp_rmb()`.
    NoSmpRmb,
}

/// One page: its flags and (one granule standing for) its tags.
pub struct Page {
    /// `page->flags`.
    pub flags: AtomicUsize,
    /// The page's tags: one value stands for every granule, since every path here writes or
    /// reads the whole page.
    pub tags: AtomicU8,
    kernel: Kernel,
    weakened: Weakened,
}

pub fn show(tags: u8) -> String {
    match tags {
        tags::STALE => "0xf (stale)".into(),
        other => format!("{other:#x}"),
    }
}

impl Page {
    /// A freshly allocated page: no flag set, its tags whatever its last use left.
    pub fn fresh(kernel: Kernel, weakened: Weakened, trace: &Trace) -> Self {
        trace.initially(TAGGED, 0);
        trace.initially(LOCK, 0);
        trace.initially(TAGS, tags::STALE.into());
        Page {
            flags: AtomicUsize::new(0),
            tags: AtomicU8::new(tags::STALE),
            kernel,
            weakened,
        }
    }

    /// `page_mte_tagged()`: `test_bit(PG_mte_tagged)`, then `smp_rmb()` if it was set, so that
    /// the tags read next are those written before the flag was set.
    pub fn page_mte_tagged(&self, trace: &Trace, actor: &'static str) -> bool {
        let tagged = self.flags.load(Ordering::Relaxed) & PG_MTE_TAGGED != 0;
        // Each step is recorded right after its atomic operation, before loom can switch.
        trace.read(
            actor,
            TAGGED,
            tagged.into(),
            format!(
                "page_mte_tagged: test_bit(PG_mte_tagged) = {}{}",
                u8::from(tagged),
                if tagged && self.weakened == Weakened::NoSmpRmb {
                    ", its smp_rmb left out"
                } else {
                    ""
                }
            ),
        );
        if tagged && self.weakened != Weakened::NoSmpRmb {
            fence(Ordering::Acquire);
        }
        tagged
    }

    /// `set_page_mte_tagged()`: `smp_wmb()` so that the tags written before are visible before
    /// the flag, then `set_bit(PG_mte_tagged)`.
    pub fn set_page_mte_tagged(&self, trace: &Trace, actor: &'static str) {
        if self.weakened != Weakened::NoSmpWmb {
            fence(Ordering::Release);
        }
        self.flags.fetch_or(PG_MTE_TAGGED, Ordering::Relaxed);
        let what = if self.weakened == Weakened::NoSmpWmb {
            "set_page_mte_tagged: set_bit(PG_mte_tagged), its smp_wmb left out"
        } else {
            "set_page_mte_tagged: smp_wmb; set_bit(PG_mte_tagged)"
        };
        trace.wrote(actor, TAGGED, 1, what.into());
    }

    /// `try_page_mte_tagging()`: true if this path won PG_mte_lock and must initialise the tags;
    /// false once another path has (after waiting for PG_mte_tagged).
    ///
    /// The kernel uses `test_and_set_bit()`, not `test_and_set_bit_lock()`: a value-returning
    /// atomic, so fully ordered (Documentation/atomic_bitops.txt); its comment in mte.h asks
    /// for acquire semantics only when the page is already tagged. The model gives the bit operation no ordering at all and
    /// takes acquire only from the wait, `smp_cond_load_acquire()`: the protocol holds even so,
    /// hence with the kernel's stronger ordering too.
    pub fn try_page_mte_tagging(&self, trace: &Trace, actor: &'static str) -> bool {
        let won = self.flags.fetch_or(PG_MTE_LOCK, Ordering::Relaxed) & PG_MTE_LOCK == 0;
        let what = if won {
            "try_page_mte_tagging: test_and_set_bit(PG_mte_lock) = 0: won, initialises"
        } else {
            "try_page_mte_tagging: test_and_set_bit(PG_mte_lock) = 1: waits for PG_mte_tagged"
        };
        trace.read_and_wrote(actor, LOCK, (!won).into(), 1, what.into());
        if won {
            return true;
        }
        while self.flags.load(Ordering::Acquire) & PG_MTE_TAGGED == 0 {
            loom::hint::spin_loop();
        }
        trace.read(
            actor,
            TAGGED,
            1,
            "try_page_mte_tagging: smp_cond_load_acquire sees PG_mte_tagged".into(),
        );
        false
    }

    /// Write the page's tags (`mte_clear_page_tags()`, `mte_copy_tags_from_user()`, `STG`).
    pub fn write_tags(&self, trace: &Trace, actor: &'static str, how: &str, value: u8) {
        self.tags.store(value, Ordering::Relaxed);
        trace.wrote(
            actor,
            TAGS,
            value.into(),
            format!("{how}: tags := {}", show(value)),
        );
    }

    /// Read the page's tags (`mte_copy_tags_to_user()`, `LDG`).
    pub fn read_tags(&self, trace: &Trace, actor: &'static str, how: &str) -> u8 {
        let value = self.tags.load(Ordering::Relaxed);
        trace.read(
            actor,
            TAGS,
            value.into(),
            format!("{how}: reads tags {}", show(value)),
        );
        value
    }

    /// A vCPU's first touch of the page: `user_mem_abort()` calls `sanitise_mte_tags()` before
    /// it maps the page at stage 2 (arch/arm64/kvm/mmu.c).
    pub fn sanitise_mte_tags(&self, trace: &Trace, actor: &'static str) {
        trace.step(
            actor,
            "stage-2 fault: user_mem_abort calls sanitise_mte_tags",
        );
        self.initialise_tags(trace, actor);
    }

    /// The first touch through a PROT_MTE mapping: `set_pte_at()` calls `mte_sync_tags()`
    /// (arch/arm64/kernel/mte.c), the same steps as `sanitise_mte_tags()`.
    pub fn mte_sync_tags(&self, trace: &Trace, actor: &'static str) {
        trace.step(actor, "PROT_MTE mapping: set_pte_at calls mte_sync_tags");
        self.initialise_tags(trace, actor);
    }

    /// Clear the tags unless another path has initialised them (or, from 6.2, is doing so).
    fn initialise_tags(&self, trace: &Trace, actor: &'static str) {
        let initialise = match self.kernel {
            Kernel::PreLock => !self.page_mte_tagged(trace, actor),
            Kernel::PageLock => self.try_page_mte_tagging(trace, actor),
        };
        if initialise {
            self.write_tags(trace, actor, "mte_clear_page_tags", tags::CLEARED);
            self.set_page_mte_tagged(trace, actor);
        }
    }

    /// `KVM_ARM_MTE_COPY_TAGS` with `KVM_ARM_TAGS_TO_GUEST` for this page
    /// (`kvm_vm_ioctl_mte_copy_tags()`, arch/arm64/kvm/guest.c).
    pub fn copy_tags_to_guest(&self, trace: &Trace, actor: &'static str, value: u8) {
        if self.kernel == Kernel::PageLock {
            // Taken only to wait for a concurrent initialiser; the tags are written either way.
            self.try_page_mte_tagging(trace, actor);
        }
        self.write_tags(
            trace,
            actor,
            "KVM_ARM_MTE_COPY_TAGS(TO_GUEST): mte_copy_tags_from_user",
            value,
        );
        self.set_page_mte_tagged(trace, actor);
    }

    /// `KVM_ARM_MTE_COPY_TAGS` with `KVM_ARM_TAGS_FROM_GUEST`: the tags if the page is tagged,
    /// zeros if not. Finding the page tagged and reading stale tags breaks the rule.
    pub fn copy_tags_from_guest(&self, trace: &Trace, actor: &'static str) -> u8 {
        if !self.page_mte_tagged(trace, actor) {
            trace.step(
                actor,
                "KVM_ARM_MTE_COPY_TAGS(FROM_GUEST): untagged, gives zeros",
            );
            return tags::CLEARED;
        }
        let value = self.read_tags(
            trace,
            actor,
            "KVM_ARM_MTE_COPY_TAGS(FROM_GUEST): mte_copy_tags_to_user",
        );
        if value == tags::STALE {
            trace.broken(
                Broken::StaleTags,
                format!("{actor} found PG_mte_tagged set and read the page's stale tags"),
            );
        }
        value
    }
}
