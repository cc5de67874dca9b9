//! Races between host tag copies (KVM_ARM_MTE_COPY_TAGS from a host thread) and the guest's
//! first touch of the same, never-touched pages. Whichever side comes first, the page's tags
//! are initialised once and the two views end equal.
//!
//! Bounded: a few rounds of a few pages each, every guest step under the VMM's deadline. The
//! seed of the host's page order and start delays is in the evidence; the runner takes
//! `MTE_RACE_SEED` from its environment to replay one. The race pages are kept out of
//! transparent huge pages, so that each page's first touch is its own. One vCPU: a guest
//! racing itself on several vCPUs is not covered here.

use std::time::Duration;

use mte_protocol::{granules, Command, PAGE_SIZE};

use crate::check::{Checks, Finding};
use crate::host_mm::{Advice, HostTagOp, RaceLog, RacePlan};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::boot_private;
use crate::steps::bulk::NOT_WRITTEN;
use crate::steps::host_memory::pages;
use crate::steps::random::{nonzero_tags, Rng};
use crate::vmm::{Guest, Vmm, VmmError};

const WHY: &str = "KVM zeroes a page's tags when it first maps it for an MTE guest \
    (sanitise_mte_tags()), and KVM_ARM_TAGS_TO_GUEST sets them; both mark the page \
    PG_mte_tagged. Before \"arm64: mte: Lock a page for MTE tag initialisation\" (6.2, with \
    PG_mte_lock) a fault could zero tags the host had just written, or the host's copy could \
    race the zeroing";

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "races::host_tag_writes_vs_guest_first_read",
        summary: "While the guest first touches fresh pages with LDG, a host thread writes \
                  their tags (KVM_ARM_TAGS_TO_GUEST): the guest reads only zero or the host's \
                  tag, and at the end host and guest both read the host's tags everywhere (no \
                  late zeroing)",
        why: WHY,
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: host_writes_vs_guest_read,
    },
    Scenario {
        name: "races::host_tag_reads_vs_guest_first_tagging",
        summary: "While the guest first touches fresh pages by tagging them (IRG+STG), a host \
                  thread reads their tags (KVM_ARM_TAGS_FROM_GUEST) again and again: the host \
                  reads only zero or the guest's tag, and at the end host and guest agree with \
                  the tags the guest chose",
        why: WHY,
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: host_reads_vs_guest_tagging,
    },
    Scenario {
        name: "races::host_tag_writes_vs_guest_first_tagging",
        summary: "While the guest first touches fresh pages by tagging them, a host thread \
                  writes their tags: every granule ends with the guest's or the host's tag \
                  (never zero, never another), and host and guest agree granule by granule",
        why: WHY,
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: host_writes_vs_guest_tagging,
    },
];

const ROUNDS: u64 = 8;
const PAGES_PER_ROUND: u64 = 8;
/// The host's start delay is drawn below this.
const MAX_DELAY_US: u64 = 1200;

/// The seed: `MTE_RACE_SEED` (decimal or 0x-hex) if set, else the clock.
fn seed() -> u64 {
    let given = std::env::var("MTE_RACE_SEED").ok().and_then(|s| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        }
    });
    given.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| d.as_nanos() as u64)
    })
}

/// One round's plan: fresh pages, the host's order and delay from the generator.
fn plan(rng: &mut Rng, round_base: u64, op: HostTagOp) -> RacePlan {
    let (base, len) = pages(round_base, PAGES_PER_ROUND);
    let mut order: Vec<u64> = (0..PAGES_PER_ROUND).map(|p| base + p * PAGE_SIZE).collect();
    rng.shuffle(&mut order);
    // Half the rounds start at once, the others after a drawn delay.
    let delay = if rng.below(2) == 0 {
        0
    } else {
        rng.below(MAX_DELAY_US)
    };
    RacePlan {
        base,
        len,
        order,
        op,
        delay: Duration::from_micros(delay),
    }
}

/// The guest's bulk output of the raced command (the command fills it).
fn raced(
    guest: &mut dyn Guest,
    plan: &RacePlan,
    command: Command,
) -> Result<(Vec<u8>, RaceLog), VmmError> {
    let n = granules(plan.len);
    guest.write_bulk(&vec![NOT_WRITTEN; n])?;
    let (reply, log) = guest.race(plan, command, &[plan.base, plan.len])?;
    if reply.status != mte_protocol::Status::Done {
        return Err(VmmError::Guest(format!(
            "{command:?} during the race answered {:?}",
            reply.status
        )));
    }
    Ok((guest.read_bulk(n)?, log))
}

/// Granules whose tag is in neither allowed set, as (granule, tag).
fn outside(observed: &[u8], allowed: impl Fn(usize, u8) -> bool) -> Vec<(usize, u8)> {
    observed
        .iter()
        .enumerate()
        .filter(|&(i, &t)| !allowed(i, t))
        .map(|(i, &t)| (i, t))
        .collect()
}

fn timing(round: u64, log: &RaceLog) -> String {
    format!(
        "round {round}: host copied {} pages from {} to {} µs, the guest finished at {} µs",
        log.copies, log.host_started_us, log.host_finished_us, log.guest_finished_us
    )
}

struct Rounds {
    checks: Checks,
    rng: Rng,
    overlapped: u64,
    timings: Vec<String>,
}

impl Rounds {
    fn new(check: &str) -> Self {
        let seed = seed();
        let mut checks = Checks::new();
        checks.note(format!(
            "{check}: seed {seed:#x} (replay with MTE_RACE_SEED={seed:#x} in the runner's \
             environment); {ROUNDS} rounds of {PAGES_PER_ROUND} fresh pages, one vCPU"
        ));
        Rounds {
            checks,
            rng: Rng::new(seed),
            overlapped: 0,
            timings: Vec::new(),
        }
    }

    /// Tags for the host to write over a round's pages, from the generator.
    fn host_tags(&mut self) -> Vec<u8> {
        nonzero_tags(self.rng.next_u64(), granules(PAGES_PER_ROUND * PAGE_SIZE))
    }

    /// Round `round`: `command` over its fresh pages while the host does `op`, as the
    /// generator plans it; returns what the guest reported and what the host did.
    fn race(
        &mut self,
        guest: &mut dyn Guest,
        round: u64,
        op: HostTagOp,
        command: Command,
    ) -> Result<(Vec<u8>, RaceLog), VmmError> {
        let plan = plan(&mut self.rng, round_base(round), op);
        let (reported, log) = raced(guest, &plan, command)?;
        if log.host_started_us < log.guest_finished_us {
            self.overlapped += 1;
        }
        self.timings.push(timing(round, &log));
        Ok((reported, log))
    }

    /// Granules outside what may be seen, at most eight of them in the evidence.
    fn only(&mut self, what: &str, odd: &[(usize, u8)]) {
        self.checks.holds(
            what,
            odd.is_empty(),
            "no other tag",
            format!(
                "{} other granules {:?}",
                odd.len(),
                &odd[..odd.len().min(8)]
            ),
        );
    }

    /// At the end of round `round`, host and guest must both read `expected`.
    fn agree_at_end(
        &mut self,
        guest: &mut dyn Guest,
        round: u64,
        expected: (&str, &[u8]),
    ) -> Result<(), VmmError> {
        let range = pages(round_base(round), PAGES_PER_ROUND);
        let host = format!("round {round}: host at the end");
        self.checks
            .expect_host_tags(guest, range, expected, &host)?;
        let ldg = format!("round {round}: guest LDG at the end");
        self.checks
            .expect_guest_tags(guest, range, expected, &ldg)?;
        Ok(())
    }

    fn finish(mut self) -> Finding {
        self.checks.note(format!(
            "the host started before the guest finished in {} of {ROUNDS} rounds; {}",
            self.overlapped,
            self.timings.join("; ")
        ));
        self.checks.finish()
    }
}

/// A guest whose race pages fault one by one: with transparent huge pages the first touch
/// of one page would map (and initialise the tags of) its whole 2 MiB.
fn boot_for_races(vmm: &dyn Vmm) -> Result<Box<dyn Guest>, VmmError> {
    let mut guest = boot_private(vmm)?;
    let (base, len) = pages(round_base(0), ROUNDS * PAGES_PER_ROUND);
    guest.madvise(base, len, Advice::NoHugePage)?;
    Ok(guest)
}

fn round_base(round: u64) -> u64 {
    256 + round * PAGES_PER_ROUND
}

fn host_writes_vs_guest_read(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot_for_races(vmm)?;
    let guest = guest.as_mut();
    let mut rounds = Rounds::new("races::host_tag_writes_vs_guest_first_read");
    for round in 0..ROUNDS {
        let written = rounds.host_tags();
        let op = HostTagOp::Write(written.clone());
        let (during, _) = rounds.race(guest, round, op, Command::ReadTags)?;
        rounds.only(
            &format!("round {round}: the guest's racing LDG read only 0 or the host's tag"),
            &outside(&during, |i, t| t == 0 || t == written[i]),
        );
        rounds.agree_at_end(guest, round, ("tags the host wrote", &written))?;
    }
    Ok(rounds.finish())
}

fn host_reads_vs_guest_tagging(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot_for_races(vmm)?;
    let guest = guest.as_mut();
    let mut rounds = Rounds::new("races::host_tag_reads_vs_guest_first_tagging");
    for round in 0..ROUNDS {
        let (chosen, log) = rounds.race(guest, round, HostTagOp::Read, Command::TagRandom)?;
        let base = pages(round_base(round), PAGES_PER_ROUND).0;
        let per_page = granules(PAGE_SIZE);
        let mut odd = 0usize;
        let mut first_odd = None;
        for (page, tags) in &log.reads {
            let at = granules(page - base);
            let bad = outside(tags, |i, t| t == 0 || chosen.get(at + i) == Some(&t));
            if first_odd.is_none() && !bad.is_empty() {
                first_odd = Some((*page, bad[0]));
            }
            odd += bad.len();
        }
        rounds.checks.holds(
            &format!(
                "round {round}: the host's {} racing reads saw only 0 or the guest's tag",
                log.reads.len()
            ),
            odd == 0 && log.reads.iter().all(|(_, t)| t.len() == per_page),
            "no other tag",
            match first_odd {
                None => "no other tag".into(),
                Some((page, (i, t))) => {
                    format!("{odd} other granules, the first at page {page:#x} granule {i}: {t}")
                }
            },
        );
        rounds.agree_at_end(guest, round, ("tags the guest chose", &chosen))?;
    }
    Ok(rounds.finish())
}

fn host_writes_vs_guest_tagging(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot_for_races(vmm)?;
    let guest = guest.as_mut();
    let mut rounds = Rounds::new("races::host_tag_writes_vs_guest_first_tagging");
    for round in 0..ROUNDS {
        let (base, len) = pages(round_base(round), PAGES_PER_ROUND);
        let written = rounds.host_tags();
        let op = HostTagOp::Write(written.clone());
        let (chosen, _) = rounds.race(guest, round, op, Command::TagRandom)?;
        let host = guest.host_read_tags(base, len)?;
        rounds.only(
            &format!("round {round}: every granule ends with the guest's or the host's tag"),
            &outside(&host, |i, t| t == written[i] || Some(&t) == chosen.get(i)),
        );
        let host = (format!("round {round}: host at the end"), host);
        let ldg = "guest LDG at the end";
        rounds
            .checks
            .expect_guest_tags(guest, (base, len), (&host.0, &host.1), ldg)?;
    }
    Ok(rounds.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_plans() {
        let a = plan(&mut Rng::new(9), 256, HostTagOp::Read);
        let b = plan(&mut Rng::new(9), 256, HostTagOp::Read);
        assert_eq!(a, b);
        assert_eq!(a.order.len() as u64, PAGES_PER_ROUND);
        assert!(a.delay < Duration::from_micros(MAX_DELAY_US));
        let (base, len) = pages(256, PAGES_PER_ROUND);
        assert!(a.order.iter().all(|&p| p >= base && p < base + len));
    }

    #[test]
    fn rounds_use_fresh_pages_inside_test_ram() {
        let (last, len) = pages(round_base(ROUNDS - 1), PAGES_PER_ROUND);
        assert!(last + len <= mte_protocol::TEST_RAM_IPA + mte_protocol::TEST_RAM_SIZE);
        assert!(round_base(1) >= round_base(0) + PAGES_PER_ROUND);
    }
}
