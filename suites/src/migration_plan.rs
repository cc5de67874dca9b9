//! The plan a scenario hands to a VMM's migration, and what it gets back: how the guest moves to a
//! destination VM, what may be broken on the way (fault injection), what the move did and cost,
//! and a guest saved into a stream for another kernel. These are the types of the migration
//! steps of [`crate::vmm::Guest`]; the checks that take them are the `migration::` family, and
//! the KVM lanes' VMM moves the guest with the runner's own engine (a lane whose VMM migrates
//! otherwise, QEMU's migrate and -incoming, answers the same steps its own way).

use std::collections::BTreeMap;
use std::time::Duration;

use mte_protocol::Command;

use crate::reply::Reply;

/// How the guest moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// The guest stays paused at its doorbell while data, tags and vCPU state go to a new VM
    /// of the same VMM process.
    StopAndCopy,
    /// As [`Method::StopAndCopy`], into a VM of a new VMM process that reads the stream.
    StopAndCopyNewProcess,
    /// Rounds that copy the pages the guest dirtied (dirty logging) while it runs `workload`,
    /// then a final stop-and-copy.
    PreCopy {
        workload: Workload,
        /// Rounds after the first full copy, at most; fewer when the dirty set gets small.
        max_rounds: u32,
    },
    /// The vCPU state moves first and the destination runs at once; each page (data and tags)
    /// comes from the source when the destination first touches it.
    PostCopy,
}

impl Method {
    pub fn describe(&self) -> &'static str {
        match self {
            Method::StopAndCopy => "stop-and-copy within the VMM process",
            Method::StopAndCopyNewProcess => "stop-and-copy into a new VMM process",
            Method::PreCopy { .. } => "iterative pre-copy with dirty logging",
            Method::PostCopy => "post-copy with pages on demand",
        }
    }
}

/// A guest command that runs while pre-copy rounds copy, and ends when the host sets the
/// mailbox's stop argument (`mte_protocol::STOP_ARG`), as `Command::RetagUntilStopped` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub command: Command,
    pub args: Vec<u64>,
}

/// A fault the stream suffers on the way (fault injection): each must turn the round trip's
/// checks red.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFault {
    /// Page records travel without their tags (data only, as from a VMM unaware of MTE).
    DropTags,
    /// Page records carry tag bytes that are all zero.
    ZeroTags,
    /// Each page's tags travel shifted by one granule (rotated within the page).
    ShiftTags,
    /// A page resent in a later pre-copy round carries the tags it had in its first round.
    StaleTags,
    /// Post-copy wakes the guest before a page's tags are in place; they follow only when the
    /// host next reads tags, after the guest has looked.
    LateTags,
}

/// A migration to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationPlan {
    pub method: Method,
    pub fault: Option<StreamFault>,
}

impl MigrationPlan {
    pub fn new(method: Method) -> Self {
        MigrationPlan {
            method,
            fault: None,
        }
    }
}

/// One page record as it left the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentPage {
    pub ipa: u64,
    /// 0 for the first (or only) copy; pre-copy rounds count up; post-copy pages are round 0.
    pub round: u32,
    /// Bytes of data the record carries (0 for a page of zeros).
    pub data_bytes: u32,
    /// Bytes of tags the record carries (0 when every tag of the page is 0).
    pub tag_bytes: u32,
}

/// One pre-copy round (or the single round of stop-and-copy, or the final round of pre-copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Pages the dirty log reported for this round (empty for a round that sends every page).
    pub dirty: Vec<u64>,
    /// Page records sent.
    pub pages_sent: u64,
    pub duration: Duration,
    /// Whether the guest was paused (the final round).
    pub paused: bool,
}

/// What the migration did and cost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MigrationReport {
    /// The method, the transport and the dirty-tracking interface, in words.
    pub how: String,
    pub rounds: Vec<Round>,
    /// From the guest's pause at its doorbell to the destination's vCPU ready to run.
    pub downtime: Duration,
    /// Every page record sent, in order.
    pub pages: Vec<SentPage>,
    pub stream_bytes: u64,
    /// Host time reading tags at the source (KVM_ARM_MTE_COPY_TAGS, FROM_GUEST), and the
    /// bytes of guest RAM it covered.
    pub tag_read_time: Duration,
    pub tag_read_bytes: u64,
    /// Host time writing tags at the destination (TO_GUEST), and the bytes of guest RAM it
    /// covered (the pages that came with tags).
    pub tag_write_time: Duration,
    pub tag_write_bytes: u64,
    /// The vCPU registers KVM_GET_REG_LIST named, and those the destination read back
    /// otherwise than the source had them.
    pub registers: usize,
    pub registers_differing: Vec<String>,
    /// Restored from a stream of another kernel: the registers this kernel refused (unknown
    /// here, or a value it does not take), each with the saved value and the one it kept.
    pub registers_refused: Vec<String>,
    /// The MTE system registers in the list, by name, with their values.
    pub mte_registers: Vec<(String, u64)>,
    /// SCTLR_EL1 as the source's KVM_GET_ONE_REG read it (its TCF and TCF0 fields).
    pub sctlr_el1: Option<u64>,
    /// PC when the doorbell's exit reached the VMM, and after the exit was completed: the
    /// destination resumes after the doorbell's store.
    pub pc_at_exit: u64,
    pub pc_after_completion: u64,
    /// What the guest's pre-copy workload answered once stopped.
    pub workload: Option<Reply>,
    /// Post-copy: the pages the destination asked for, in order.
    pub on_demand: Vec<u64>,
    /// Post-copy: pages whose tags were in place before the guest was woken.
    pub tags_before_wake: u64,
}

impl MigrationReport {
    /// The records sent for pages of `[ipa, ipa + len)`.
    pub fn pages_in(&self, ipa: u64, len: u64) -> impl Iterator<Item = &SentPage> + '_ {
        self.pages
            .iter()
            .filter(move |p| p.ipa >= ipa && p.ipa < ipa + len)
    }

    /// Tag bytes per page record over `[ipa, ipa + len)`; None if no record covers it.
    pub fn tag_bytes_per_page(&self, ipa: u64, len: u64) -> Option<f64> {
        let (records, bytes) = self
            .pages_in(ipa, len)
            .fold((0u64, 0u64), |(n, b), p| (n + 1, b + p.tag_bytes as u64));
        (records > 0).then(|| bytes as f64 / records as f64)
    }

    /// Reading tags at the source, per GiB of guest RAM, extrapolated linearly from what was
    /// measured; None if nothing was.
    pub fn tag_read_per_gib(&self) -> Option<Duration> {
        per_gib(self.tag_read_time, self.tag_read_bytes)
    }

    /// Writing tags at the destination, per GiB of tagged guest RAM, likewise.
    pub fn tag_write_per_gib(&self) -> Option<Duration> {
        per_gib(self.tag_write_time, self.tag_write_bytes)
    }
}

/// A guest saved into a migration stream held in memory, to be restored elsewhere (on the run's
/// next kernel): the stream's bytes, and its page records as decoded back from those bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SavedStream {
    pub bytes: Vec<u8>,
    pub page_size: u64,
    /// Every page record of the stream, in order.
    pub pages: Vec<SentPage>,
    /// The tags of each page record that carries some (one a granule), by IPA.
    pub tags: BTreeMap<u64, Vec<u8>>,
}

impl SavedStream {
    /// The tags the stream gives `[ipa, ipa + len)` (page aligned), one a granule: 0 for a
    /// page whose record carries none, or that has no record.
    pub fn tags_in(&self, ipa: u64, len: u64) -> Vec<u8> {
        let per_page = (self.page_size / mte_protocol::GRANULE) as usize;
        (0..len / self.page_size)
            .flat_map(|n| match self.tags.get(&(ipa + n * self.page_size)) {
                Some(tags) => tags.clone(),
                None => vec![0; per_page],
            })
            .collect()
    }
}

/// A migration stream the run's previous kernel saved, as this boot found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingStream {
    pub bytes: Vec<u8>,
    /// The kernel release it was saved on.
    pub saved_on: String,
    /// Where it was found.
    pub path: String,
}

fn per_gib(time: Duration, bytes: u64) -> Option<Duration> {
    (bytes > 0).then(|| time.mul_f64((1u64 << 30) as f64 / bytes as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ipa: u64, tag_bytes: u32) -> SentPage {
        SentPage {
            ipa,
            round: 0,
            data_bytes: 4096,
            tag_bytes,
        }
    }

    #[test]
    fn tag_bytes_per_page_counts_only_the_range() {
        let report = MigrationReport {
            pages: vec![page(0x1000, 128), page(0x2000, 0), page(0x9000, 128)],
            ..Default::default()
        };
        assert_eq!(report.tag_bytes_per_page(0x1000, 0x2000), Some(64.0));
        assert_eq!(report.tag_bytes_per_page(0x9000, 0x1000), Some(128.0));
        assert_eq!(report.tag_bytes_per_page(0x5000, 0x1000), None);
    }

    #[test]
    fn a_saved_stream_gives_zero_tags_where_a_page_carries_none() {
        let mut tags = BTreeMap::new();
        tags.insert(0x2000, vec![7; 256]);
        let saved = SavedStream {
            page_size: 4096,
            tags,
            ..Default::default()
        };
        let range = saved.tags_in(0x1000, 0x3000);
        assert_eq!(range.len(), 3 * 256);
        assert!(range[..256].iter().all(|&t| t == 0));
        assert!(range[256..512].iter().all(|&t| t == 7));
        assert!(range[512..].iter().all(|&t| t == 0));
    }

    #[test]
    fn tag_times_extrapolate_to_a_gib() {
        let report = MigrationReport {
            tag_read_time: Duration::from_millis(10),
            tag_read_bytes: 64 << 20,
            tag_write_time: Duration::from_millis(1),
            tag_write_bytes: 1 << 20,
            ..Default::default()
        };
        assert_eq!(report.tag_read_per_gib(), Some(Duration::from_millis(160)));
        assert_eq!(
            report.tag_write_per_gib(),
            Some(Duration::from_millis(1024))
        );
        assert_eq!(MigrationReport::default().tag_read_per_gib(), None);
    }
}
