//! Checked models of the protocols that keep a guest page's MTE tags: small state machines
//! standing for the kernel paths, run by the [loom](https://docs.rs/loom) checker over every
//! interleaving of their threads (and the weak-memory executions loom explores). The tests of
//! this crate are the models; `cargo test -p mte-models -- --nocapture` prints each one's
//! interleavings and the counterexamples it found.
//!
//! - (a) [`tag_init`] with [`page::Kernel::PreLock`]: the pre-6.2 protocol for initialising a
//!   page's tags (test PG_mte_tagged; if clear, clear the tags; set PG_mte_tagged, with
//!   `smp_wmb` before the `set_bit` and readers' `smp_rmb` after their `test_bit`), two
//!   initialisers (a vCPU's first touch, `sanitise_mte_tags()`, against the VMM's
//!   `KVM_ARM_MTE_COPY_TAGS(TO_GUEST)`, or against another vCPU's first touch) and a reader
//!   (`KVM_ARM_MTE_COPY_TAGS(FROM_GUEST)`). The checker finds the lost-tags interleaving: one
//!   path tests the flag, the other writes its tags and sets the flag, the first clears them.
//!   The barriers are right (no stale read); the test-then-set is not atomic.
//! - (b) the same with [`page::Kernel::PageLock`], the 6.2+ protocol of d77e59a8fccd (take
//!   PG_mte_lock; the loser waits for PG_mte_tagged with acquire; the winner initialises and
//!   sets PG_mte_tagged with release): every interleaving keeps the tags. Leaving out the
//!   `smp_wmb` or the `smp_rmb` ([`page::Weakened`]) lets a reader see stale tags, which the
//!   checker finds: it catches orderings, not only sequences.
//! - (c) [`postcopy`]: the suite's post-copy engine. Its order where the kernel takes a
//!   MAP_SHARED memslot with MTE (6.2 on) writes a page's data and tags through a second,
//!   PROT_MTE mapping of the memfd behind RAM and only then maps the page where the vCPU
//!   faulted (UFFDIO_CONTINUE): it holds on the kernel's fault path, which re-reads the PTE
//!   after queueing the fault (fs/userfaultfd.c's `handle_userfault()`). Its order before 6.2
//!   (UFFDIO_COPY with DONTWAKE, then `KVM_ARM_MTE_COPY_TAGS(TO_GUEST)`, then UFFDIO_WAKE)
//!   holds when the wake is what lets the vCPU go on, and the checker finds the vCPU reading
//!   zero tags on that fault path: `handle_userfault()` goes on without a wake if UFFDIO_COPY
//!   has installed the PTE by the time it re-reads it. With the tags written after the wake
//!   (`migrate-late-tags`, either order) the checker finds the vCPU reading zero tags.
//!
//! Which kernel primitive each atomic and ordering stands for is said where they are defined
//! ([`page`], [`postcopy`]), with the kernel files they come from.
//!
//! What the models do not cover: they are models of the protocols, not of the kernel's code.
//! Each path is reduced to its steps on one page's flag, tags, PTE and wait queue; one value
//! stands for the page's tags (a page has 256 granules, written one by one) and one for its
//! data; one fault, one page. Loom checks the C11 memory model, with the kernel's barriers
//! mapped to C11 fences and orderings as tabled; the arm64 and Linux kernel memory models are
//! not C11, and loom leaves out some C11 executions (load buffering). Tag storage, cache
//! maintenance, swap, copy-on-write, KSM and the VMM's other threads are not modelled, nor is
//! `kvm->mmu_lock`: before 6.2 stage-2 faults take it for writing around
//! `sanitise_mte_tags()`, so two vCPUs' first touches do not interleave there on such a
//! kernel (parallel faults came with 6.2, 1577cb5823ce, together with PG_mte_lock), and the
//! races of (a) that a real 6.1 shows are those with the VMM's paths. The
//! models say which interleavings exist, not how likely they are: the suite's `races::` and
//! `migration::` checks test the real kernels.

pub mod explore;
pub mod page;
pub mod postcopy;
pub mod tag_init;
