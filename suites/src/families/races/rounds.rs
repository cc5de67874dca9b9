//! The rounds of a race check: a schedule drawn from one seed, rounds until the time budget is
//! spent (or until a round shows lost tags, or something worse), and the verdict, which depends
//! on what the kernel under test is known to do with the tag-initialisation race (the
//! expectations table): on a kernel without PG_mte_lock lost tags are its documented behaviour
//! (an xfail, with the round that showed them), and rounds that show none say so; on a kernel
//! with it, every round must be clean.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mte_results::{Evidence, Lane};

use super::judge::{judge, Judgement, Observed, Verdict};
use crate::check::Finding;
use crate::expectations::{lookup, KernelVersion, POSTCOPY_ORDER, TAG_INIT};
use crate::race_plan::{settings, RaceLog};
use crate::steps::random::{nonzero_tags, Rng};
use crate::vmm::{Guest, Vmm, VmmError};

/// Race checks take turns: a held copy needs a CPU free for the thread that releases it, and
/// the rounds of two races at once would disturb each other's timing.
static RACE_TURN: Mutex<()> = Mutex::new(());

/// Held by a race check while it plays its rounds; its guest boots and is torn down outside
/// it, beside another check's rounds.
fn race_turn() -> MutexGuard<'static, ()> {
    RACE_TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every choice of a check's rounds, from one seed: the run's `--seed`, or the clock's. The
/// check's name is mixed in, so that one seed replays any check alone.
pub struct Schedule {
    pub seed: u64,
    rng: Rng,
}

impl Schedule {
    pub fn for_check(check: &str, seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x5eed, |d| d.as_nanos() as u64)
        });
        let mixed = check.bytes().fold(seed, |mixed, byte| {
            Rng::new(mixed ^ u64::from(byte)).next_u64()
        });
        Schedule {
            seed,
            rng: Rng::new(mixed),
        }
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.rng.below(n) == 0
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        self.rng.shuffle(items)
    }

    /// Nonzero tags for `n` granules.
    pub fn tags(&mut self, n: usize) -> Vec<u8> {
        nonzero_tags(self.rng.next_u64(), n)
    }
}

/// One round as a kind of race plays it: the pages it raced on, what it did (in words), what
/// each side wrote and read, and the VMM's log of the race.
pub struct Round {
    pub ipa: u64,
    pub what: String,
    pub observed: Observed,
    pub log: RaceLog,
}

/// What the rounds of a check did.
pub struct Rounds {
    pub seed: u64,
    pub rounds: u64,
    pub elapsed: Duration,
    /// Rounds whose host copy was held mid-page, and of those, the ones in which the copy
    /// reached its hold and the ones in which the vCPUs finished before it was released.
    pub held: u64,
    pub held_reached: u64,
    pub held_vcpus_first: u64,
    /// Held rounds released once the vCPUs had stood at the held page a while.
    pub held_vcpus_waited: u64,
    /// Rounds in which the host started before the last vCPU finished.
    pub overlapped: u64,
    /// The round that ended the check (lost tags, or wrong), with what it showed.
    pub decisive: Option<(u64, String, Judgement)>,
    /// The last clean round's comparison, shown when every round was clean.
    pub last_clean: Option<(u64, String, Judgement)>,
    /// Notes of the kind: what backs RAM, how the host reached it, what ran.
    pub notes: Vec<String>,
}

/// Play rounds on `guest` until the run's race budget is spent or a round is not clean.
pub fn play(
    check: &str,
    guest: &mut dyn Guest,
    mut round: impl FnMut(&mut dyn Guest, &mut Schedule, u64) -> Result<Round, VmmError>,
) -> Result<Rounds, VmmError> {
    let settings = settings();
    let _turn = race_turn();
    let mut schedule = Schedule::for_check(check, settings.seed);
    let mut rounds = Rounds {
        seed: schedule.seed,
        rounds: 0,
        elapsed: Duration::ZERO,
        held: 0,
        held_reached: 0,
        held_vcpus_first: 0,
        held_vcpus_waited: 0,
        overlapped: 0,
        decisive: None,
        last_clean: None,
        notes: Vec::new(),
    };
    let started = Instant::now();
    while rounds.rounds == 0 || started.elapsed() < settings.budget {
        let index = rounds.rounds;
        let played = round(guest, &mut schedule, index)?;
        rounds.rounds += 1;
        if let Some(stall) = played.log.stall {
            rounds.held += 1;
            rounds.held_reached += u64::from(stall.reached);
            rounds.held_vcpus_first += u64::from(stall.vcpus_done_first);
            rounds.held_vcpus_waited += u64::from(stall.vcpus_waited_at_page);
        }
        if played.log.host_started_us < played.log.vcpus_finished_us {
            rounds.overlapped += 1;
        }
        let how = format!("the host's part: {}", played.log.how);
        if !played.log.how.is_empty() && !rounds.notes.contains(&how) {
            rounds.notes.push(how);
        }
        let judgement = judge(played.ipa, &played.observed);
        let what = format!("{}; {}", played.what, timing(&played.log));
        if judgement.verdict == Verdict::Clean {
            rounds.last_clean = Some((index, what, judgement));
        } else {
            rounds.decisive = Some((index, what, judgement));
            break;
        }
    }
    rounds.elapsed = started.elapsed();
    Ok(rounds)
}

fn timing(log: &RaceLog) -> String {
    let mut text = format!(
        "host from {} to {} µs ({} pages), last vCPU done at {} µs",
        log.host_started_us, log.host_finished_us, log.host_pages, log.vcpus_finished_us
    );
    if let Some(stall) = log.stall {
        text.push_str(&format!(
            "; copy held {} µs ({}), {}",
            stall.held_us,
            if stall.reached {
                "reached its hold"
            } else {
                "never reached its hold"
            },
            match (stall.vcpus_done_first, stall.vcpus_waited_at_page) {
                (true, _) => "the vCPUs done before its release",
                (false, true) => "released once the vCPUs had waited at the held page",
                (false, false) => "released before the vCPUs were done",
            }
        ));
    }
    text
}

/// What some kernels are known to get wrong in a race, as the expectations table has it.
#[derive(Clone, Copy, Debug)]
pub struct Known {
    /// The table's case for the check.
    pub case: &'static str,
    /// What such a kernel lacks, in words.
    pub lacks: &'static str,
}

/// The tag-initialisation race, before PG_mte_lock.
pub const TAG_INIT_RACE: Known = Known {
    case: TAG_INIT,
    lacks: "without PG_mte_lock (d77e59a8fccd, 6.2)",
};

/// Post-copy with several vCPUs, before MAP_SHARED memslots with MTE.
pub const POSTCOPY_RACE: Known = Known {
    case: POSTCOPY_ORDER,
    lacks: "without MAP_SHARED memslots for MTE guests (c911f0d46879, 6.2), where the engine \
            can only map a page (UFFDIO_COPY, DONTWAKE) before it writes the page's tags,",
};

/// The verdict of a check's rounds on the kernel `vmm` runs.
pub fn conclude(vmm: &dyn Vmm, check: &str, known: Known, rounds: Rounds) -> Finding {
    let release = vmm.kernel_release();
    let expectation = lookup(check, known.case, release);
    let racy = matches!(&expectation, Ok((e, _)) if e.outcome == mte_results::Outcome::Xfail);
    let kernel = match &expectation {
        Ok((e, version)) => format!("kernel {version}: {} ({})", e.behaviour, e.kernels()),
        Err(why) => why.clone(),
    };
    let change = expectation.as_ref().map_or("", |(e, _)| e.change);
    let lacks = known.lacks;
    let rate = rounds.rounds as f64 / rounds.elapsed.as_secs_f64().max(1e-9);
    let summary = format!(
        "{} rounds in {:.2} s ({rate:.1} rounds/s){}",
        rounds.rounds,
        rounds.elapsed.as_secs_f64(),
        if rounds.held > 0 {
            format!(
                ", {} with the host's copy held mid-page ({} reached the hold; the vCPUs were \
                 done before its release in {}, and waited at the held page until it in {})",
                rounds.held, rounds.held_reached, rounds.held_vcpus_first, rounds.held_vcpus_waited
            )
        } else {
            String::new()
        }
    );
    let mut detail = vec![
        Evidence::Note {
            text: format!(
                "seed {:#x}; replay: {}",
                rounds.seed,
                replay(vmm.lane(), release, rounds.seed, check)
            ),
        },
        Evidence::Values {
            what: "race rounds".into(),
            expected: format!("rounds within the budget of {:?}", settings().budget),
            observed: format!(
                "{summary}; the host started before the last vCPU was done in {}",
                rounds.overlapped
            ),
        },
        Evidence::Note { text: kernel },
    ];
    if !change.is_empty() {
        detail.push(Evidence::Note {
            text: format!("the change: {change}"),
        });
    }
    detail.extend(
        rounds
            .notes
            .iter()
            .map(|note| Evidence::Note { text: note.clone() }),
    );
    let (mut finding, shown) = match rounds.decisive {
        Some((round, what, judgement)) => {
            let Judgement { verdict, evidence } = judgement;
            let finding = match verdict {
                Verdict::Lost(ref granules) | Verdict::Early(ref granules) => {
                    let what = match verdict {
                        Verdict::Lost(_) => format!(
                            "round {round} lost the tags of {} granules (host and guest read 0 \
                             where only nonzero tags were written)",
                            granules.len()
                        ),
                        _ => format!(
                            "in round {round} a vCPU read {} granules with tag 0 before their \
                             tags were in",
                            granules.len()
                        ),
                    };
                    if racy {
                        Finding::xfail(format!(
                            "the race was observed: {what}, as this kernel {lacks} is known to"
                        ))
                    } else {
                        Finding::fail(format!(
                            "{what}, on a kernel that must not ({})",
                            expectation
                                .as_ref()
                                .map_or(String::new(), |(e, _)| e.kernels())
                        ))
                    }
                }
                Verdict::Wrong(why) => Finding::fail(format!("round {round}: {why}")),
                Verdict::Clean => unreachable!("a decisive round is not clean"),
            };
            let refuted = finding.outcome == mte_results::Outcome::Fail;
            (
                Finding { refuted, ..finding },
                Some((round, what, evidence)),
            )
        }
        None if racy => (
            Finding::xfail(format!(
                "the race was not observed: {summary}, every one clean, within the budget; \
                 this kernel {lacks} is known to get it wrong, so a clean run proves nothing \
                 of it"
            )),
            rounds
                .last_clean
                .map(|(round, what, j)| (round, what, j.evidence)),
        ),
        None => (
            Finding {
                outcome: mte_results::Outcome::Pass,
                reason: format!(
                    "{summary}: every granule ended with a tag written to it, the same for \
                     host and guest, and every read during the races saw zero or a written tag"
                ),
                detail: Vec::new(),
                refuted: false,
            },
            rounds
                .last_clean
                .map(|(round, what, j)| (round, what, j.evidence)),
        ),
    };
    if let Some((round, what, evidence)) = shown {
        detail.push(Evidence::Note {
            text: format!("round {round}: {what}"),
        });
        detail.extend(evidence);
    }
    finding.detail = detail;
    finding
}

/// The command that replays a check's schedule in the lane it ran in.
fn replay(lane: Lane, release: &str, seed: u64, check: &str) -> String {
    let kernel = KernelVersion::parse(release).map_or(String::new(), |v| format!(" --kernel {v}"));
    let lane = match lane {
        Lane::Emulated => kernel,
        other => format!(" --lane {other}"),
    };
    format!("cargo xtask run{lane} --seed {seed:#x} -- {check} --exact")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_a_check_alone_and_checks_differ() {
        let draw = |check: &str| {
            let mut s = Schedule::for_check(check, Some(42));
            (0..8).map(|_| s.below(1000)).collect::<Vec<_>>()
        };
        assert_eq!(draw("races::a"), draw("races::a"));
        assert_ne!(draw("races::a"), draw("races::b"));
        assert_eq!(Schedule::for_check("races::a", Some(42)).seed, 42);
    }

    #[test]
    fn the_replay_names_the_lane_kernel_and_seed() {
        assert_eq!(
            replay(Lane::Emulated, "6.1.0-54-arm64", 0xab, "races::x"),
            "cargo xtask run --kernel 6.1 --seed 0xab -- races::x --exact"
        );
        assert_eq!(
            replay(Lane::Host, "6.12.9", 1, "races::x"),
            "cargo xtask run --lane host --seed 0x1 -- races::x --exact"
        );
    }
}
