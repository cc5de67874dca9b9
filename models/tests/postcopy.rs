//! Model (c): the post-copy rule of the suite's engine in its two orders, their late-tags
//! faults, and the kernel's fault path.

use mte_models::explore::{Broken, Exploration};
use mte_models::page::Kernel;
use mte_models::postcopy::{check, FaultPath, Server};

fn assert_holds(exploration: &Exploration) {
    println!("{exploration}");
    assert!(exploration.holds(), "{exploration}");
}

/// The checker must find the vCPU reading the page with zero tags, and print it.
fn assert_reads_zero_tags(exploration: &Exploration) {
    println!("{exploration}");
    let found = exploration
        .counterexample(Broken::TouchedTooEarly)
        .expect("the checker did not find the vCPU touching the page too early");
    assert!(
        found.how.contains("tags 0x0 "),
        "the counterexample is not a read of zero tags: {}",
        found.how
    );
}

/// The engine's order where the kernel takes a shared memslot with MTE: data and tags before
/// the page is mapped hold on the kernel's own fault path, which re-reads the PTE after
/// queueing the fault, on either tag protocol.
#[test]
fn postcopy_the_engines_order_holds_on_the_kernels_fault_path() {
    for kernel in [Kernel::PageLock, Kernel::PreLock] {
        for fault in [FaultPath::RecheckPte, FaultPath::WakeOnly] {
            assert_holds(&check(Server::TagsBeforePresent, fault, kernel));
        }
    }
}

/// `migrate-late-tags` on that order: mapped (and woken) before its tags, the page is read
/// with zero tags.
#[test]
fn postcopy_late_tags_after_continue_let_the_vcpu_read_zero_tags() {
    assert_reads_zero_tags(&check(
        Server::LateTagsOnContinue,
        FaultPath::RecheckPte,
        Kernel::PageLock,
    ));
}

/// The engine's order before 6.2 holds only while the wake is what lets the vCPU go on...
#[test]
fn postcopy_the_fallback_holds_if_only_the_wake_lets_the_vcpu_go() {
    for kernel in [Kernel::PageLock, Kernel::PreLock] {
        assert_holds(&check(Server::TagsBeforeWake, FaultPath::WakeOnly, kernel));
    }
}

/// ...which the kernel does not promise: `handle_userfault()` re-reads the PTE after queueing
/// the fault and goes on without a wake if UFFDIO_COPY(DONTWAKE) has installed it by then.
#[test]
fn postcopy_the_fallback_does_not_hold_a_fault_that_rechecks_the_pte() {
    assert_reads_zero_tags(&check(
        Server::TagsBeforeWake,
        FaultPath::RecheckPte,
        Kernel::PageLock,
    ));
}

#[test]
fn postcopy_late_tags_let_the_vcpu_read_zero_tags() {
    assert_reads_zero_tags(&check(
        Server::LateTags,
        FaultPath::WakeOnly,
        Kernel::PageLock,
    ));
}
