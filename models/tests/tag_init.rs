//! Models (a) and (b): the tag-initialisation protocol before and after d77e59a8fccd.

use mte_models::explore::{Broken, Exploration};
use mte_models::page::{Kernel, Weakened};
use mte_models::tag_init::{check, check_with_bound, Race};

/// The lost-tags interleaving must be found, and be the only thing wrong: the pre-6.2
/// barriers are right, its test-then-set is not atomic.
fn assert_loses_tags(exploration: &Exploration) {
    println!("{exploration}");
    assert!(
        exploration.counterexample(Broken::LostTags).is_some(),
        "the checker did not find the lost-tags interleaving"
    );
    assert!(
        exploration.counterexample(Broken::StaleTags).is_none(),
        "a reader saw stale tags with the kernel's barriers"
    );
}

fn assert_holds(exploration: &Exploration) {
    println!("{exploration}");
    assert!(exploration.holds(), "{exploration}");
}

#[test]
fn pre_lock_protocol_loses_the_tags_the_host_writes() {
    assert_loses_tags(&check(
        Kernel::PreLock,
        Race::VcpuAgainstHostWrite,
        Weakened::Nothing,
    ));
}

#[test]
fn pre_lock_protocol_loses_the_tags_a_vcpu_stores() {
    assert_loses_tags(&check(Kernel::PreLock, Race::TwoVcpus, Weakened::Nothing));
}

#[test]
fn page_lock_protocol_keeps_the_tags_the_host_writes() {
    assert_holds(&check(
        Kernel::PageLock,
        Race::VcpuAgainstHostWrite,
        Weakened::Nothing,
    ));
}

#[test]
fn page_lock_protocol_keeps_the_tags_a_vcpu_stores() {
    assert_holds(&check(Kernel::PageLock, Race::TwoVcpus, Weakened::Nothing));
}

/// Fault injection: the checker must see a barrier that is missing (one race each, to keep
/// the debug build's run short; either race shows both).
fn assert_stale_tags_found(race: Race, weakened: Weakened) {
    let exploration = check(Kernel::PageLock, race, weakened);
    println!("{exploration}");
    assert!(
        exploration.counterexample(Broken::StaleTags).is_some(),
        "the checker missed {weakened:?} in {race:?}"
    );
}

#[test]
fn the_checker_finds_a_missing_smp_wmb() {
    assert_stale_tags_found(Race::TwoVcpus, Weakened::NoSmpWmb);
}

#[test]
fn the_checker_finds_a_missing_smp_rmb() {
    assert_stale_tags_found(Race::VcpuAgainstHostWrite, Weakened::NoSmpRmb);
}

/// Every interleaving, without a preemption bound: 100,000+ interleavings per race, about
/// 10-15 s each in a release build. `cargo test -p mte-models --release -- --ignored`.
#[test]
#[ignore = "slow: every interleaving without a preemption bound"]
fn page_lock_protocol_keeps_the_tags_without_a_preemption_bound() {
    for race in [Race::VcpuAgainstHostWrite, Race::TwoVcpus] {
        assert_holds(&check_with_bound(
            Kernel::PageLock,
            race,
            Weakened::Nothing,
            None,
        ));
    }
}
