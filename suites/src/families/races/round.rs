//! One round of a race, as every kind of race plays it: fresh pages (or pages tagged by the
//! guest first, for the races on pages already in use), the vCPUs' parts and the host's part
//! drawn from the schedule, the race, then what each side reports and the host's and guest's
//! view of the tags at the end.

use std::time::Duration;

use mte_protocol::{access_kind, granules, Command, Status, GRANULE, PAGE_SIZE};

use super::judge::{Observed, Reading};
use super::rounds::{Round, Schedule};
use crate::error::VmmError;
use crate::host_mm::Advice;
use crate::race_plan::{HostPart, RaceLog, RacePlan, Stall, VcpuPart};
use crate::steps::bulk::NOT_WRITTEN;
use crate::steps::host_memory::pages;
use crate::steps::tags::{guest_ldg, guest_store_tags};
use crate::vmm::Guest;

/// The pages races run on: a region of test RAM kept out of transparent huge pages, of which
/// each round takes a few.
pub const REGION_FIRST_PAGE: u64 = 256;
pub const REGION_PAGES: u64 = 8;
const MAX_ROUND_PAGES: u64 = 4;
/// The most a vCPU spins after the go, and the longest the host waits: spreads of a few
/// microseconds under TCG, around the moment both sides enter the kernel.
const MAX_SPINS: u64 = 4000;
const MAX_HOST_DELAY_US: u64 = 400;
/// How long a post-copy page server waits between a page's data and its tags, drawn between
/// these: long against a vCPU's touch of a page in the emulated machine, so that a second vCPU
/// can land in the window (on 6.1 every round that showed the race had held the tags 1.4 ms
/// or more).
const MIN_POSTCOPY_HOLD_US: u64 = 1000;
const MAX_POSTCOPY_HOLD_US: u64 = 4000;
/// The longest a held copy waits for the vCPUs: far longer than a vCPU's first touch of a page
/// takes in the emulated machine, when nothing holds it.
pub const HOLD: Duration = Duration::from_millis(40);

/// The region, as an IPA range.
pub fn region() -> (u64, u64) {
    pages(REGION_FIRST_PAGE, REGION_PAGES)
}

/// What a vCPU does in a race.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// LDG of every granule (it reports what it read).
    Ldg,
    /// IRG+STG of every granule (it reports the tags it chose).
    TagRandom,
    /// STG of these tags.
    Tag(Vec<u8>),
    /// A load through tag 0 from every granule (it reports where it faulted).
    Load,
    /// A store through tag 0 to every granule.
    Store,
}

impl Role {
    fn name(&self) -> &'static str {
        match self {
            Role::Ldg => "LDG",
            Role::TagRandom => "IRG+STG",
            Role::Tag(_) => "STG",
            Role::Load => "tag-checked loads",
            Role::Store => "tag-checked stores",
        }
    }
}

/// A vCPU's part in a round: its role over the round's pages from granule `skip` on (the
/// granules before are left to the other side: what a late initialisation clears there is
/// lost even where the vCPU tags the rest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Racer {
    pub vcpu: usize,
    pub role: Role,
    pub skip: usize,
    pub spins: u64,
}

/// What the host does in a round, before its pages, order and tags are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Nothing,
    /// Tag copies into the guest; with one racing vCPU, one of them held mid-page.
    WriteTags,
    ReadTags,
    StoreTagsMapped,
    LoadTagsMapped,
    PageOut,
    /// The pages come by post-copy, their tags after their data by a drawn hold.
    PostCopy,
}

/// The pages of a round: how many, where in the region, and the order the host visits them.
pub struct Pages {
    pub ipa: u64,
    pub len: u64,
    pub order: Vec<u64>,
}

impl Pages {
    pub fn draw(schedule: &mut Schedule) -> Self {
        let count = 1 + schedule.below(MAX_ROUND_PAGES);
        let first = REGION_FIRST_PAGE + schedule.below(REGION_PAGES - count + 1);
        let (ipa, len) = pages(first, count);
        let mut order: Vec<u64> = (0..count).map(|p| ipa + p * PAGE_SIZE).collect();
        schedule.shuffle(&mut order);
        Pages { ipa, len, order }
    }

    pub fn granules(&self) -> usize {
        granules(self.len)
    }
}

/// Where a vCPU starts on the round's pages, drawn: half of them at the first granule, the
/// others inside the first page.
pub fn skip(schedule: &mut Schedule) -> usize {
    if schedule.one_in(2) {
        0
    } else {
        schedule.below(granules(PAGE_SIZE) as u64) as usize
    }
}

/// How long after the go a vCPU waits, drawn: half of them at once.
pub fn spins(schedule: &mut Schedule) -> u64 {
    if schedule.one_in(2) {
        0
    } else {
        schedule.below(MAX_SPINS)
    }
}

fn host_delay(schedule: &mut Schedule) -> Duration {
    if schedule.one_in(2) {
        Duration::ZERO
    } else {
        Duration::from_micros(schedule.below(MAX_HOST_DELAY_US))
    }
}

/// Make the round's pages fresh: the next touch finds new pages whose tags nobody has
/// initialised (MADV_DONTNEED of private memory, MADV_REMOVE of shared memory).
pub fn make_fresh(guest: &mut dyn Guest, pages: &Pages, advice: Advice) -> Result<(), VmmError> {
    guest.madvise(pages.ipa, pages.len, advice)
}

/// Tags every granule of `pages` had before the race, stored by vCPU 0: for races on pages
/// the guest already uses. They are no valid end: the race writes over them.
pub fn tag_first(
    guest: &mut dyn Guest,
    pages: &Pages,
    schedule: &mut Schedule,
) -> Result<Vec<u8>, VmmError> {
    let tags = schedule.tags(pages.granules());
    guest_store_tags(guest, pages.ipa, &tags)?;
    Ok(tags)
}

/// A round's plan and what the race left.
pub struct Raced {
    pub plan: RacePlan,
    pub racers: Vec<Racer>,
    /// The tags the host writes, if it writes any.
    pub host_tags: Option<Vec<u8>>,
    pub log: RaceLog,
    /// Each racer's report from its bulk buffer, one byte a granule.
    pub reports: Vec<Vec<u8>>,
}

/// Draw the host's part, run the race and read each racer's report.
pub fn race(
    guest: &mut dyn Guest,
    schedule: &mut Schedule,
    pages: &Pages,
    racers: Vec<Racer>,
    host: Host,
) -> Result<Raced, VmmError> {
    let n = pages.granules();
    let order = pages.order.clone();
    let mut host_tags = None;
    let host = match host {
        Host::Nothing => HostPart::Nothing,
        Host::WriteTags => {
            let tags = schedule.tags(n);
            host_tags = Some(tags.clone());
            // A held copy races one vCPU: a vCPU that waits on it in a kernel with
            // PG_mte_lock keeps its CPU, and one must stay for the host.
            let stall = (racers.len() == 1).then(|| Stall {
                page: order[0],
                after_granules: 1 + schedule.below(granules(PAGE_SIZE) as u64 - 1) as usize,
                hold: HOLD,
            });
            HostPart::WriteTags { order, tags, stall }
        }
        Host::ReadTags => HostPart::ReadTags { order },
        Host::StoreTagsMapped => {
            let tags = schedule.tags(n);
            host_tags = Some(tags.clone());
            HostPart::StoreTagsMapped { order, tags }
        }
        Host::LoadTagsMapped => HostPart::LoadTagsMapped { order },
        Host::PageOut => HostPart::PageOut { order },
        Host::PostCopy => {
            let tags = schedule.tags(n);
            host_tags = Some(tags.clone());
            HostPart::PostCopy {
                order,
                tags,
                data_seed: schedule.below(u64::MAX),
                hold: Duration::from_micros(
                    MIN_POSTCOPY_HOLD_US
                        + schedule.below(MAX_POSTCOPY_HOLD_US - MIN_POSTCOPY_HOLD_US),
                ),
            }
        }
    };
    let mut parts = Vec::new();
    for racer in &racers {
        let skip = racer.skip.min(n - 1);
        let (ipa, len) = (
            pages.ipa + skip as u64 * GRANULE,
            pages.len - skip as u64 * GRANULE,
        );
        let (command, args) = match &racer.role {
            Role::Ldg => (Command::ReadTags, vec![ipa, len]),
            Role::TagRandom => (Command::TagRandom, vec![ipa, len]),
            Role::Tag(tags) => {
                guest.write_bulk_on(racer.vcpu, &tags[skip..])?;
                (Command::TagFromBulk, vec![ipa, len])
            }
            Role::Load => (Command::AccessRange, vec![ipa, len, access_kind::LOAD, 0]),
            Role::Store => (Command::AccessRange, vec![ipa, len, access_kind::STORE, 0]),
        };
        if !matches!(racer.role, Role::Tag(_)) {
            // A report the racer does not write stays poisoned, and no tag or fault flag
            // reads 0xff.
            guest.write_bulk_on(racer.vcpu, &vec![NOT_WRITTEN; n - skip])?;
        }
        parts.push(VcpuPart {
            vcpu: racer.vcpu,
            command,
            args,
            spins: racer.spins,
        });
    }
    let plan = RacePlan {
        base: pages.ipa,
        len: pages.len,
        vcpus: parts,
        host,
        host_delay: host_delay(schedule),
    };
    let log = guest.race(&plan)?;
    for (racer, reply) in racers.iter().zip(&log.replies) {
        if reply.status != Status::Done {
            return Err(VmmError::Guest(format!(
                "vCPU {}'s {} in the race answered {:?} (argument {:#x})",
                racer.vcpu,
                racer.role.name(),
                reply.status,
                reply.result[0]
            )));
        }
    }
    let reports = racers
        .iter()
        .map(|racer| guest.read_bulk_on(racer.vcpu, n - racer.skip.min(n - 1)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Raced {
        plan,
        racers,
        host_tags,
        log,
        reports,
    })
}

impl Raced {
    /// What each side wrote and read, and the views at the end: the host's read, then
    /// vCPU 0's LDG.
    pub fn observe(&self, guest: &mut dyn Guest) -> Result<Observed, VmmError> {
        let (ipa, len) = (self.plan.base, self.plan.len);
        let n = granules(len);
        let mut writers = vec![Vec::new(); n];
        if let Some(tags) = &self.host_tags {
            for (g, &t) in tags.iter().enumerate() {
                writers[g].push(t);
            }
        }
        let mut during = Vec::new();
        let mut faults = Vec::new();
        for (racer, report) in self.racers.iter().zip(&self.reports) {
            let who = format!("vCPU {}'s {}", racer.vcpu, racer.role.name());
            let first = racer.skip.min(n - 1);
            match &racer.role {
                Role::Tag(tags) => push_writers(&mut writers[first..], &tags[first..]),
                Role::TagRandom => push_writers(&mut writers[first..], report),
                Role::Ldg => during.push(Reading {
                    who,
                    first,
                    values: report.clone(),
                }),
                Role::Load | Role::Store => faults.push(Reading {
                    who,
                    first,
                    values: report.clone(),
                }),
            }
        }
        for (page, tags) in &self.log.reads {
            during.push(Reading {
                who: format!("the host's read of page {page:#x}"),
                first: granules(page - ipa),
                values: tags.clone(),
            });
        }
        let end_host = guest.host_read_tags(ipa, len)?;
        let end_guest = guest_ldg(guest, ipa, len)?;
        Ok(Observed {
            writers,
            during,
            faults,
            end_host,
            end_guest,
            also: Vec::new(),
            strict: matches!(self.plan.host, HostPart::PostCopy { .. }),
        })
    }

    /// The round in words.
    pub fn describe(&self) -> String {
        let pages = self.plan.len / PAGE_SIZE;
        let racers: Vec<String> = self
            .racers
            .iter()
            .map(|r| {
                let from = match r.skip {
                    0 => String::new(),
                    skip => format!(" from granule {skip}"),
                };
                format!(
                    "vCPU {} {}{from} after {} spins",
                    r.vcpu,
                    r.role.name(),
                    r.spins
                )
            })
            .collect();
        let order = |order: &[u64]| -> String {
            order
                .iter()
                .map(|p| format!("{p:#x}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let host = match &self.plan.host {
            HostPart::Nothing => "the host does nothing".to_string(),
            HostPart::WriteTags {
                order: o, stall, ..
            } => format!(
                "the host copies tags into pages {}{}",
                order(o),
                stall.map_or(String::new(), |s| format!(
                    ", the copy of {:#x} held after {} granules (at most {:?})",
                    s.page, s.after_granules, s.hold
                ))
            ),
            HostPart::ReadTags { order: o } => format!("the host reads the tags of {}", order(o)),
            HostPart::StoreTagsMapped { order: o, .. } => {
                format!("the host stores tags (STG) into {}", order(o))
            }
            HostPart::LoadTagsMapped { order: o } => {
                format!("the host loads tags (LDG) of {}", order(o))
            }
            HostPart::PageOut { order: o } => format!("the host pages out {}", order(o)),
            HostPart::PostCopy { hold, .. } => {
                format!("the pages come by post-copy, each page's tags {hold:?} after its data")
            }
        };
        format!(
            "{pages} pages from {:#x}: {}; {host} after {:?}",
            self.plan.base,
            racers.join(", "),
            self.plan.host_delay
        )
    }

    /// The round as [`super::rounds::play`] judges it.
    pub fn into_round(self, observed: Observed) -> Round {
        Round {
            ipa: self.plan.base,
            what: self.describe(),
            observed,
            log: self.log,
        }
    }
}

fn push_writers(writers: &mut [Vec<u8>], tags: &[u8]) {
    for (g, &t) in tags.iter().enumerate().take(writers.len()) {
        if !writers[g].contains(&t) {
            writers[g].push(t);
        }
    }
}
