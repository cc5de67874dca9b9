//! Models (a) and (b): two paths initialising one fresh page's tags at once, and a third
//! reading them, under the pre-6.2 protocol and under the 6.2+ one.
//!
//! The rules: tags a path wrote are never wiped by another path's initialisation (the page
//! ends with the tags of the last writer in any order the paths could have run one after the
//! other), and a path that finds the page tagged never reads the tags it had before.

use std::sync::Arc;

use loom::thread;

use crate::explore::{explore, Broken, Exploration, Trace};
use crate::page::{show, tags, Kernel, Page, Weakened};

/// Which two paths race to initialise the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Race {
    /// A vCPU's first touch (`sanitise_mte_tags()`, then `LDG`) against the VMM writing the
    /// page's tags with `KVM_ARM_MTE_COPY_TAGS(TO_GUEST)`; the VMM reads them meanwhile with
    /// `KVM_ARM_MTE_COPY_TAGS(FROM_GUEST)`. What `races::host_tag_writes_vs_guest_first_read`
    /// runs on the real kernels.
    VcpuAgainstHostWrite,
    /// Two vCPUs' first touches of the same page: vCPU 0 stores tags (`STG`) once its touch
    /// has mapped the page, vCPU 1 loads them (`LDG`); the VMM reads them meanwhile.
    TwoVcpus,
}

impl Race {
    fn name(self) -> &'static str {
        match self {
            Race::VcpuAgainstHostWrite => {
                "a vCPU's first touch against KVM_ARM_MTE_COPY_TAGS(TO_GUEST)"
            }
            Race::TwoVcpus => "two vCPUs' first touches, one storing tags",
        }
    }
}

/// Interleavings with more preemptions of a runnable thread than this are not explored.
/// Every counterexample here needs two at most (one path stopped between its test of the flag
/// and its clear, or between its clear and its flag; the other run through), and three keep a
/// model to about a second in a release build (5,000 to 12,000 interleavings). Waiting for a
/// flag yields to loom and costs no preemption. Without a bound the same models take 35,000 to
/// 400,000 interleavings and 2 to 30 s in a release build, with the same verdicts: see
/// [`check_with_bound`] and the ignored tests.
pub const PREEMPTION_BOUND: Option<usize> = Some(3);

/// Explore every interleaving of `race` on a fresh page under `kernel`'s protocol, within
/// [`PREEMPTION_BOUND`].
pub fn check(kernel: Kernel, race: Race, weakened: Weakened) -> Exploration {
    check_with_bound(kernel, race, weakened, PREEMPTION_BOUND)
}

/// [`check`] with another preemption bound; `None` explores every interleaving.
pub fn check_with_bound(
    kernel: Kernel,
    race: Race,
    weakened: Weakened,
    bound: Option<usize>,
) -> Exploration {
    let mut model = format!("{}, {}", kernel.name(), race.name());
    if weakened != Weakened::Nothing {
        model.push_str(&format!(", {weakened:?}"));
    }
    explore(&model, bound, move |trace| {
        run(kernel, race, weakened, trace)
    })
}

/// A guest load of the tags after its first touch: what it reads must be initialised.
fn guest_loads_tags(page: &Page, trace: &Trace, actor: &'static str) {
    if page.read_tags(trace, actor, "LDG") == tags::STALE {
        trace.broken(
            Broken::StaleTags,
            format!("{actor} read the page's stale tags after its first touch"),
        );
    }
}

fn run(kernel: Kernel, race: Race, weakened: Weakened, trace: &Trace) {
    let page = Arc::new(Page::fresh(kernel, weakened, trace));
    let spawn = |actor: &'static str, path: fn(&Page, &Trace, &'static str)| {
        let (page, trace) = (Arc::clone(&page), trace.clone());
        thread::spawn(move || path(&page, &trace, actor))
    };
    let (first, second, expected, writer) = match race {
        Race::VcpuAgainstHostWrite => (
            spawn("vCPU", |page, trace, actor| {
                page.sanitise_mte_tags(trace, actor);
                guest_loads_tags(page, trace, actor);
            }),
            spawn("host", |page, trace, actor| {
                page.copy_tags_to_guest(trace, actor, tags::HOST)
            }),
            tags::HOST,
            "the host",
        ),
        Race::TwoVcpus => (
            spawn("vCPU 0", |page, trace, actor| {
                page.sanitise_mte_tags(trace, actor);
                page.write_tags(trace, actor, "STG", tags::GUEST);
            }),
            spawn("vCPU 1", |page, trace, actor| {
                page.sanitise_mte_tags(trace, actor);
                guest_loads_tags(page, trace, actor);
            }),
            tags::GUEST,
            "vCPU 0",
        ),
    };
    let reader = spawn("reader", |page, trace, actor| {
        page.copy_tags_from_guest(trace, actor);
    });
    for handle in [first, second, reader] {
        handle.join().expect("a model thread panicked");
    }
    // Every thread has been joined: this load sees the last tags written.
    let end = page.read_tags(trace, "end", "every thread done");
    if end != expected {
        trace.broken(
            Broken::LostTags,
            format!(
                "{writer} wrote tags {expected:#x}, and the page ends with {}",
                show(end)
            ),
        );
    }
}
