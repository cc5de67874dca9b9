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
//! - (c) [`postcopy`]: the suite's post-copy engine (UFFDIO_COPY with DONTWAKE, then
//!   `KVM_ARM_MTE_COPY_TAGS(TO_GUEST)`, then UFFDIO_WAKE) keeps a page's data and tags ahead
//!   of the faulting vCPU when the wake is what lets the vCPU go on; with the tags written
//!   after the wake (`migrate-late-tags`) the checker finds the vCPU reading zero tags. Modelled
//!   as fs/userfaultfd.c's `handle_userfault()` has it, the fault re-reads the PTE after
//!   queueing itself and goes on without a wake if UFFDIO_COPY has installed it by then: the
//!   checker finds the vCPU reading zero tags with the engine's order too. Writing data and
//!   tags before the page is mapped where the vCPU faults (UFFDIO_CONTINUE on shared memory)
//!   holds on that fault path.
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
//! maintenance, swap, copy-on-write, KSM and the VMM's other threads are not modelled. The
//! models say which interleavings exist, not how likely they are: the suite's `races::` and
//! `migration::` checks test the real kernels.

pub mod explore;
pub mod page;
pub mod postcopy;
pub mod tag_init;
