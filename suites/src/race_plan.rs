//! A race as a scenario plans it and a VMM runs it: commands on one or more vCPUs of a guest,
//! let go together from the guest's start barrier, while a host thread works on the same pages
//! (or does nothing, when the vCPUs race each other). The scenario draws every choice of a plan
//! from its seed; the VMM only carries it out and says what happened, with times.

use std::time::Duration;

use mte_protocol::Command;

use crate::reply::Reply;

/// One vCPU's part of a race: a command, posted so that it waits at the start barrier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuPart {
    pub vcpu: usize,
    pub command: Command,
    pub args: Vec<u64>,
    /// Busy-wait iterations after the barrier lets the vCPU go, before its command.
    pub spins: u64,
}

/// Where the host's copy of one page's tags is held: after `after_granules` granules its user
/// buffer runs onto a page that is not there yet (userfaultfd), and only then are the vCPUs
/// let go. The copy goes on once they are done, or once `hold` has passed. A kernel that lets
/// a vCPU's first touch initialise the page meanwhile clears what the copy wrote so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// The page, one of the host part's pages.
    pub page: u64,
    /// Granules copied before the hold: 1 to the granules of a page less one.
    pub after_granules: usize,
    pub hold: Duration,
}

/// What the host does while the vCPUs run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPart {
    /// Nothing: the vCPUs race each other.
    Nothing,
    /// KVM_ARM_MTE_COPY_TAGS(TO_GUEST) of each page of `order` once, with `tags` (one byte a
    /// granule of the race's range), one page a call, maybe with one page's copy held.
    WriteTags {
        order: Vec<u64>,
        tags: Vec<u8>,
        stall: Option<Stall>,
    },
    /// KVM_ARM_MTE_COPY_TAGS(FROM_GUEST) of each page of `order`, sweep after sweep until the
    /// vCPUs are done (at least one sweep).
    ReadTags { order: Vec<u64> },
    /// STG of `tags` through a PROT_MTE mapping of guest RAM in the VMM, page by page.
    StoreTagsMapped { order: Vec<u64>, tags: Vec<u8> },
    /// LDG through a PROT_MTE mapping of guest RAM in the VMM, sweep after sweep until the
    /// vCPUs are done (at least one sweep).
    LoadTagsMapped { order: Vec<u64> },
    /// MADV_PAGEOUT of each page of `order`, sweep after sweep until the vCPUs are done.
    PageOut { order: Vec<u64> },
    /// Post-copy of the pages of `order`, which are not there when the race starts: each is
    /// put in place when a thread first faults on it, in the order the suite's migration
    /// engine uses on this kernel, with the data pattern of `data_seed` (offsets from the
    /// race's base) and `tags`, waiting `hold` between the data and the tags (a page server
    /// whose tags come after the data); pages nobody touched are put in place at the end.
    PostCopy {
        order: Vec<u64>,
        tags: Vec<u8>,
        data_seed: u64,
        hold: Duration,
    },
}

impl HostPart {
    /// The pages the host works on, in its order.
    pub fn order(&self) -> &[u64] {
        match self {
            HostPart::Nothing => &[],
            HostPart::WriteTags { order, .. }
            | HostPart::ReadTags { order }
            | HostPart::StoreTagsMapped { order, .. }
            | HostPart::LoadTagsMapped { order }
            | HostPart::PageOut { order }
            | HostPart::PostCopy { order, .. } => order,
        }
    }

    /// The tags the host writes, if it writes any.
    pub fn tags_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            HostPart::WriteTags { tags, .. }
            | HostPart::StoreTagsMapped { tags, .. }
            | HostPart::PostCopy { tags, .. } => Some(tags),
            _ => None,
        }
    }
}

/// A race over the pages `[base, base + len)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RacePlan {
    pub base: u64,
    pub len: u64,
    pub vcpus: Vec<VcpuPart>,
    pub host: HostPart,
    /// How long after the go the host starts (without a stall); short delays are spun.
    pub host_delay: Duration,
}

/// What happened to a [`Stall`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StallLog {
    /// The copy reached the held page (and the vCPUs were let go then).
    pub reached: bool,
    /// How long the copy was held, in µs.
    pub held_us: u64,
    /// Whether the vCPUs were done before the hold ended.
    pub vcpus_done_first: bool,
    /// Whether the hold ended because the vCPUs stood at the held page's first granule (their
    /// touch of it inside the copy) for a while, rather than at its time limit.
    pub vcpus_waited_at_page: bool,
}

/// What happened in a race; times are µs from the go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaceLog {
    /// Each vCPU part's reply, in the plan's order.
    pub replies: Vec<Reply>,
    /// The host's reads ([`HostPart::ReadTags`], [`HostPart::LoadTagsMapped`]): page, tags.
    pub reads: Vec<(u64, Vec<u8>)>,
    pub host_started_us: u64,
    pub host_finished_us: u64,
    /// When the last vCPU was done.
    pub vcpus_finished_us: u64,
    /// Pages the host copied, stored, loaded or paged out.
    pub host_pages: u64,
    pub stall: Option<StallLog>,
    /// How the host worked on guest RAM, in words, where the plan leaves it to the VMM (the
    /// mapping it used, the order of post-copy), for the evidence.
    pub how: String,
}

/// The run's settings for races: the seed every race check draws its schedule from (each
/// check mixes in its name, so that one seed replays any check alone), and how long each race
/// check may run its rounds. Set once by the runner before the checks start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaceSettings {
    /// `--seed`; without it each check draws its own from the clock (and reports it).
    pub seed: Option<u64>,
    /// `--race-budget`: each race check's rounds stop once this much time has passed.
    pub budget: Duration,
}

/// The runner's own default, a second a check: what CI (`cargo xtask test`) and the lab's
/// bundle give each race check. Hardware runs take more with `--race-budget`.
pub const DEFAULT_RACE_BUDGET: Duration = Duration::from_secs(1);

/// What the default run (`cargo xtask run`) gives each race check: ten checks in about 4 s of
/// it. On the emulated machine 6.1's lost tags and its post-copy race showed within the first
/// rounds in every default run measured (see README, "Races").
pub const RUN_RACE_BUDGET: Duration = Duration::from_millis(300);

impl Default for RaceSettings {
    fn default() -> Self {
        RaceSettings {
            seed: None,
            budget: DEFAULT_RACE_BUDGET,
        }
    }
}

static SETTINGS: std::sync::OnceLock<RaceSettings> = std::sync::OnceLock::new();

/// Set the run's race settings; only the first call counts (the runner's, before any check).
pub fn configure(settings: RaceSettings) {
    let _ = SETTINGS.set(settings);
}

/// The run's race settings: what [`configure`] set, else the defaults.
pub fn settings() -> RaceSettings {
    SETTINGS.get().copied().unwrap_or_default()
}

/// A seed from words: `0x`-hex or decimal.
pub fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_as_hex_or_decimal() {
        assert_eq!(parse_seed("0x1f"), Some(31));
        assert_eq!(parse_seed(" 31 "), Some(31));
        assert_eq!(parse_seed("0xg"), None);
        assert_eq!(parse_seed("seed"), None);
    }
}
