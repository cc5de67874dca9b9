//! Races on the initialisation of a page's tags, and on tag writes to pages the host's memory
//! management moves: every path by which a fresh page gets its tags (a vCPU's first touch,
//! `sanitise_mte_tags()`; the VMM's KVM_ARM_MTE_COPY_TAGS; the host's own first touch through
//! a PROT_MTE mapping, `mte_sync_tags()`) raced against the others, and the guest's tag writes
//! raced against swap, copy-on-write and KSM.
//!
//! A check plays rounds until its time budget is spent, each on fresh pages with its choices
//! (pages, the host's order, held copies, spreads and delays) drawn from one seed, which its
//! evidence gives with the command that replays it (`cargo xtask run --seed N -- CHECK`). The
//! guest has two vCPUs, let go together from a start barrier in guest memory, each on a host
//! thread of its own. Each round compares, granule by granule, what the host and the guest
//! read during the race and at its end with what each side wrote ([`judge`]); the kernels
//! known to lose tags in these races are data ([`crate::expectations`], d77e59a8fccd), where
//! lost tags are an xfail with the round that lost them, and a run that saw none says so
//! ([`rounds`]).
//!
//! The host's tag copies are, one round in two, held mid-page: the copy's user buffer runs onto
//! a page that userfaultfd holds back until the vCPU has touched the page, so the vCPU's first
//! touch falls inside the copy every time rather than once in thousands of tries.

mod judge;
mod kinds;
mod round;
mod rounds;

use crate::inject::Injection;
use crate::scenario::Scenario;

const WHY: &str = "KVM zeroes a page's tags when it first maps it for an MTE guest \
    (sanitise_mte_tags()), the host kernel does when the VMM first maps it PROT_MTE \
    (mte_sync_tags()), and KVM_ARM_TAGS_TO_GUEST sets them; each marks the page PG_mte_tagged. \
    Before \"arm64: mte: Lock a page for MTE tag initialisation\" (d77e59a8fccd, 6.2, \
    PG_mte_lock) the flag was tested and set apart, so one path could clear the tags another \
    had just written; from 6.2 stage-2 faults run in parallel too, so two vCPUs reach it at once";

const WHY_MM: &str = "A guest's tag writes must survive what the host's memory management does \
    to its pages meanwhile: swap-out saves a page's tags and swap-in restores them \
    (arch_prepare_to_swap(), arch_swap_restore()), a copy-on-write break copies them \
    (copy_highpage()), and KSM must not merge tagged pages (memcmp_pages() on arm64); each \
    path tests or sets PG_mte_tagged while vCPUs may be writing tags";

const WHY_POSTCOPY: &str = "In post-copy a page's data and tags must both be in place before \
    any vCPU can touch it. A page mapped with UFFDIO_COPY before its tags (the only order \
    private memory allows, with UFFDIO_COPY_MODE_DONTWAKE keeping only the faulting thread \
    asleep) is there for every other vCPU, which KVM then maps with tags 0 \
    (sanitise_mte_tags()); a page whose data and tags go in through a second mapping of shared \
    memory before UFFDIO_CONTINUE maps it (a MAP_SHARED memslot for an MTE guest, 6.2 on) is \
    absent until it is whole";

const PROOFS: &[Injection] = &[Injection::CorruptTag, Injection::MisreadReport];

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "races::host_tag_writes_vs_guest_first_read",
        summary: "While the guest's vCPUs first touch fresh pages with LDG, the host writes \
                  their tags (KVM_ARM_TAGS_TO_GUEST), one round in two with its copy held \
                  mid-page until a vCPU has touched it: the guest reads only zero or the host's \
                  tag, and at the end host and guest both read the host's tags everywhere",
        why: WHY,
        proven_by: PROOFS,
        run: kinds::host_tag_writes_vs_guest_first_read,
    },
    Scenario {
        name: "races::host_tag_reads_vs_guest_first_tagging",
        summary: "While the guest's vCPUs first touch fresh pages by tagging them (IRG+STG), \
                  the host reads their tags (KVM_ARM_TAGS_FROM_GUEST) again and again: the host \
                  reads only zero or a tag a vCPU chose, and at the end host and guest agree on \
                  a tag a vCPU chose for every granule",
        why: WHY,
        proven_by: PROOFS,
        run: kinds::host_tag_reads_vs_guest_first_tagging,
    },
    Scenario {
        name: "races::host_tag_writes_vs_guest_first_tagging",
        summary: "While the guest's vCPUs first touch fresh pages by tagging them, the host \
                  writes their tags, one round in two with its copy held mid-page: every \
                  granule ends with the host's or a vCPU's tag (never zero, never another), the \
                  same for host and guest",
        why: WHY,
        proven_by: PROOFS,
        run: kinds::host_tag_writes_vs_guest_first_tagging,
    },
    Scenario {
        name: "races::vcpus_first_touch_the_same_pages",
        summary: "Two vCPUs let go together first touch the same fresh pages, each as drawn: \
                  LDG, STG, tag-checked loads or stores through tag 0 (at least one STG): every \
                  granule ends with a tag a vCPU stored, the same for host and guest, LDG reads \
                  only zero or a stored tag, and loads and stores fault only where a tag was \
                  stored",
        why: WHY,
        proven_by: PROOFS,
        run: kinds::vcpus_first_touch_the_same_pages,
    },
    Scenario {
        name: "races::host_mapping_tag_stores_vs_guest_first_read",
        summary: "While the guest's vCPUs first touch fresh pages with LDG, a host thread \
                  stores their tags with STG through a PROT_MTE mapping of guest RAM (a second \
                  MAP_SHARED mapping of its memfd where the kernel takes a shared memslot, else \
                  the VMM's own mapping given PROT_MTE): the guest reads only zero or the \
                  host's tag, and at the end both read the host's tags",
        why: WHY,
        proven_by: PROOFS,
        run: kinds::host_mapping_tag_stores_vs_guest_first_read,
    },
    Scenario {
        name: "races::host_mapping_tag_loads_vs_guest_first_tagging",
        summary: "While the guest's vCPUs first touch fresh pages by tagging them, a host \
                  thread loads their tags with LDG through a PROT_MTE mapping of guest RAM, \
                  again and again: it reads only zero or a tag a vCPU chose, and at the end \
                  host and guest agree on a vCPU's tag for every granule",
        why: WHY,
        proven_by: PROOFS,
        run: kinds::host_mapping_tag_loads_vs_guest_first_tagging,
    },
    Scenario {
        name: "races::guest_tag_writes_vs_swap",
        summary: "While two vCPUs store new tags on tagged pages, the host pages them out to \
                  swap again and again (MADV_PAGEOUT), so that the vCPUs' writes fault them back \
                  in: every granule ends with a tag a vCPU stored (never the old one, never \
                  zero), the same for host and guest; pages must have gone to swap",
        why: WHY_MM,
        proven_by: PROOFS,
        run: kinds::guest_tag_writes_vs_swap,
    },
    Scenario {
        name: "races::guest_tag_writes_vs_cow_break",
        summary: "The VMM forks with the guest's tagged pages shared with the child; two vCPUs \
                  then store new tags on them at once, breaking copy-on-write: every granule \
                  ends with a tag a vCPU stored, the same for host and guest, and the child's \
                  copy keeps the tags from before the fork",
        why: WHY_MM,
        proven_by: PROOFS,
        run: kinds::guest_tag_writes_vs_cow_break,
    },
    Scenario {
        name: "races::guest_tag_writes_vs_ksm_scanning",
        summary: "While KSM scans the guest's pages (MADV_MERGEABLE, every page a pass, no \
                  sleep), two vCPUs first touch them by storing tags, on data that is all \
                  zero (what KSM would merge into the zero page): every granule ends with a \
                  stored tag, the same for host and guest; KSM must have scanned meanwhile",
        why: WHY_MM,
        proven_by: PROOFS,
        run: kinds::guest_tag_writes_vs_ksm_scanning,
    },
    Scenario {
        name: "races::postcopy_pages_reach_every_vcpu_with_their_tags",
        summary: "The round's pages come by post-copy, put in place as the suite's migration \
                  engine does on this kernel when a thread first faults on one, the page \
                  server's tags coming a drawn while after the data; two vCPUs read the pages' \
                  tags (LDG), the second a while after the first: neither ever reads a page \
                  without its tags, and at the end host and guest read the source's tags",
        why: WHY_POSTCOPY,
        proven_by: PROOFS,
        run: kinds::postcopy_pages_reach_every_vcpu_with_their_tags,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expectations::{lookup, POSTCOPY_ORDER, TAG_INIT};

    #[test]
    fn every_race_check_knows_what_each_kernel_does() {
        for scenario in SCENARIOS {
            for release in ["6.1.0-54-arm64", "6.12.95+deb12-arm64"] {
                assert!(
                    lookup(scenario.name, TAG_INIT, release)
                        .or_else(|_| lookup(scenario.name, POSTCOPY_ORDER, release))
                        .is_ok(),
                    "{} on {release}",
                    scenario.name
                );
            }
        }
    }

    #[test]
    fn the_region_lies_in_test_ram() {
        let (base, len) = round::region();
        assert!(base >= mte_protocol::TEST_RAM_IPA);
        assert!(base + len <= mte_protocol::TEST_RAM_IPA + mte_protocol::TEST_RAM_SIZE);
    }
}
