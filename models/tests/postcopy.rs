//! Model (c): the post-copy rule of the suite's engine, its late-tags fault, and the kernel's
//! fault path.

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

#[test]
fn postcopy_tags_before_the_wake_keep_the_vcpu_from_zero_tags() {
    for kernel in [Kernel::PageLock, Kernel::PreLock] {
        assert_holds(&check(Server::TagsBeforeWake, FaultPath::WakeOnly, kernel));
    }
}

#[test]
fn postcopy_late_tags_let_the_vcpu_read_zero_tags() {
    assert_reads_zero_tags(&check(
        Server::LateTags,
        FaultPath::WakeOnly,
        Kernel::PageLock,
    ));
}

/// `handle_userfault()` re-reads the PTE after queueing the fault and goes on without a wake
/// if UFFDIO_COPY(DONTWAKE) has installed it by then: DONTWAKE alone does not hold the vCPU.
#[test]
fn postcopy_dontwake_does_not_hold_a_fault_that_rechecks_the_pte() {
    assert_reads_zero_tags(&check(
        Server::TagsBeforeWake,
        FaultPath::RecheckPte,
        Kernel::PageLock,
    ));
}

#[test]
fn postcopy_tags_before_the_pte_hold_on_the_kernels_fault_path() {
    for kernel in [Kernel::PageLock, Kernel::PreLock] {
        assert_holds(&check(
            Server::TagsBeforePresent,
            FaultPath::RecheckPte,
            kernel,
        ));
    }
}
