//! Each kind of race: the guest it boots, the vCPUs' and the host's parts of its rounds, and
//! what else it must show (that the path it races ran).

use std::time::Duration;

use super::round::{make_fresh, race, region, skip, spins, tag_first, Host, Pages, Racer, Role};
use super::rounds::{conclude, play, Schedule, POSTCOPY_RACE, TAG_INIT_RACE};
use crate::check::Finding;
use crate::host_mm::{Advice, Backing, ForkPlan, KsmKnob};
use crate::steps::boot::boot_tagged;
use crate::steps::host_memory::{forking, ksm_turn, no_forks_meanwhile, restore_ksm};
use crate::steps::swap::{no_swapoff_meanwhile, page_out, require_swap, GiveUp};
use crate::vmm::{BootOptions, Guest, Vmm, VmmError};

/// The guest's vCPUs: both race in most rounds, on the emulated machine's two CPUs.
const VCPUS: usize = 2;

/// A guest booted for races: two vCPUs, the region out of transparent huge pages (each page
/// faults alone), and how its pages are made fresh.
struct Racing {
    guest: Box<dyn Guest>,
    fresh: Advice,
    notes: Vec<String>,
}

impl Racing {
    fn boot(vmm: &dyn Vmm, backing: Backing) -> Result<Self, VmmError> {
        let mut guest = boot_tagged(
            vmm,
            &BootOptions {
                vcpus: VCPUS,
                backing: Some(backing),
                ..BootOptions::default()
            },
        )?;
        let (base, len) = region();
        guest.madvise(base, len, Advice::NoHugePage)?;
        let fresh = match backing {
            Backing::PrivateAnonymous => Advice::DontNeed,
            _ => Advice::Remove,
        };
        Ok(Racing {
            guest,
            fresh,
            notes: vec![format!("guest RAM on {}", backing.describe())],
        })
    }

    /// On a memfd mapped MAP_SHARED where the kernel takes such a memslot with MTE (6.2 on),
    /// else on private memory, saying why.
    fn boot_shared_if_allowed(vmm: &dyn Vmm) -> Result<Self, VmmError> {
        match Self::boot(vmm, Backing::Memfd) {
            Ok(racing) => Ok(racing),
            Err(VmmError::Unsupported(why)) => Err(VmmError::Unsupported(why)),
            Err(refused) => {
                let mut racing = Self::boot(vmm, Backing::PrivateAnonymous)?;
                racing.notes.push(format!(
                    "a guest on a memfd mapped MAP_SHARED did not boot ({refused}): private \
                     memory instead"
                ));
                Ok(racing)
            }
        }
    }
}

/// One or both vCPUs, each with the role `role` draws and its spins; `partial` lets a vCPU
/// start inside the first page (for races on a first touch, where the granules it leaves show
/// what the other side's initialisation did to them).
fn racers(
    schedule: &mut Schedule,
    count: usize,
    partial: bool,
    mut role: impl FnMut(&mut Schedule) -> Role,
) -> Vec<Racer> {
    let first = schedule.below(VCPUS as u64) as usize;
    (0..count)
        .map(|i| Racer {
            vcpu: (first + i) % VCPUS,
            role: role(schedule),
            skip: if partial { skip(schedule) } else { 0 },
            spins: spins(schedule),
        })
        .collect()
}

/// A race on the first touch of fresh pages: the vCPUs in `role`, the host as `host` says.
/// With the host writing tags, half the rounds race one vCPU against a held copy.
fn first_touch(
    vmm: &dyn Vmm,
    check: &str,
    mut racing: Racing,
    host: Host,
    role: fn(&mut Schedule, usize) -> Role,
) -> Result<Finding, VmmError> {
    let fresh = racing.fresh;
    let mut rounds = play(check, racing.guest.as_mut(), |guest, schedule, _| {
        let pages = Pages::draw(schedule);
        make_fresh(guest, &pages, fresh)?;
        let count = if schedule.one_in(2) { 1 } else { VCPUS };
        let n = pages.granules();
        let racers = racers(schedule, count, true, |s| role(s, n));
        let raced = race(guest, schedule, &pages, racers, host)?;
        let observed = raced.observe(guest)?;
        Ok(raced.into_round(observed))
    })?;
    rounds.notes.append(&mut racing.notes);
    Ok(conclude(vmm, check, TAG_INIT_RACE, rounds))
}

fn ldg(_: &mut Schedule, _: usize) -> Role {
    Role::Ldg
}

fn tag_random(_: &mut Schedule, _: usize) -> Role {
    Role::TagRandom
}

pub fn host_tag_writes_vs_guest_first_read(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let check = "races::host_tag_writes_vs_guest_first_read";
    let _forks = no_forks_meanwhile();
    let racing = Racing::boot(vmm, Backing::PrivateAnonymous)?;
    first_touch(vmm, check, racing, Host::WriteTags, ldg)
}

pub fn host_tag_reads_vs_guest_first_tagging(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let check = "races::host_tag_reads_vs_guest_first_tagging";
    let _forks = no_forks_meanwhile();
    let racing = Racing::boot(vmm, Backing::PrivateAnonymous)?;
    first_touch(vmm, check, racing, Host::ReadTags, tag_random)
}

pub fn host_tag_writes_vs_guest_first_tagging(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let check = "races::host_tag_writes_vs_guest_first_tagging";
    let _forks = no_forks_meanwhile();
    let racing = Racing::boot(vmm, Backing::PrivateAnonymous)?;
    first_touch(vmm, check, racing, Host::WriteTags, tag_random)
}

pub fn host_mapping_tag_stores_vs_guest_first_read(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let check = "races::host_mapping_tag_stores_vs_guest_first_read";
    let _forks = no_forks_meanwhile();
    let racing = Racing::boot_shared_if_allowed(vmm)?;
    first_touch(vmm, check, racing, Host::StoreTagsMapped, ldg)
}

pub fn host_mapping_tag_loads_vs_guest_first_tagging(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let check = "races::host_mapping_tag_loads_vs_guest_first_tagging";
    let _forks = no_forks_meanwhile();
    let racing = Racing::boot_shared_if_allowed(vmm)?;
    first_touch(vmm, check, racing, Host::LoadTagsMapped, tag_random)
}

pub fn vcpus_first_touch_the_same_pages(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let check = "races::vcpus_first_touch_the_same_pages";
    let _forks = no_forks_meanwhile();
    let mut racing = Racing::boot(vmm, Backing::PrivateAnonymous)?;
    let fresh = racing.fresh;
    let mut rounds = play(check, racing.guest.as_mut(), |guest, schedule, _| {
        let pages = Pages::draw(schedule);
        make_fresh(guest, &pages, fresh)?;
        let n = pages.granules();
        let mut racers = racers(schedule, VCPUS, true, |s| match s.below(4) {
            0 => Role::Ldg,
            1 => Role::Tag(s.tags(n)),
            2 => Role::Load,
            _ => Role::Store,
        });
        // At least one stores tags: a race of readers alone has nothing to lose.
        if !racers.iter().any(|r| matches!(r.role, Role::Tag(_))) {
            let i = schedule.below(VCPUS as u64) as usize;
            racers[i].role = Role::Tag(schedule.tags(n));
        }
        let raced = race(guest, schedule, &pages, racers, Host::Nothing)?;
        let observed = raced.observe(guest)?;
        Ok(raced.into_round(observed))
    })?;
    rounds.notes.append(&mut racing.notes);
    Ok(conclude(vmm, check, TAG_INIT_RACE, rounds))
}

/// How long, at most, the second vCPU of a post-copy round starts after the first, in spins:
/// around the time the page server takes to put a page in place in the emulated machine.
const POSTCOPY_SPREAD_SPINS: u64 = 400_000;

pub fn postcopy_pages_reach_every_vcpu_with_their_tags(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let check = "races::postcopy_pages_reach_every_vcpu_with_their_tags";
    let _forks = no_forks_meanwhile();
    let mut racing = Racing::boot_shared_if_allowed(vmm)?;
    let fresh = racing.fresh;
    let mut rounds = play(check, racing.guest.as_mut(), |guest, schedule, _| {
        let pages = Pages::draw(schedule);
        make_fresh(guest, &pages, fresh)?;
        // Both read the pages' tags; the second a while after the first, so that it may
        // find a page the first one's fault brought in.
        let mut racers = racers(schedule, VCPUS, true, |_| Role::Ldg);
        racers[0].spins = 0;
        racers[1].spins = schedule.below(POSTCOPY_SPREAD_SPINS);
        let raced = race(guest, schedule, &pages, racers, Host::PostCopy)?;
        let observed = raced.observe(guest)?;
        Ok(raced.into_round(observed))
    })?;
    rounds.notes.append(&mut racing.notes);
    Ok(conclude(vmm, check, POSTCOPY_RACE, rounds))
}

/// Both vCPUs store new tags on the round's pages, each its own.
fn retaggers(schedule: &mut Schedule, pages: &Pages) -> Vec<Racer> {
    let n = pages.granules();
    racers(schedule, VCPUS, false, |s| Role::Tag(s.tags(n)))
}

/// How long a round tries to page its pages out before the race.
const SWAP_OUT_WITHIN: Duration = Duration::from_millis(200);

fn pswpout(guest: &dyn Guest) -> Result<u64, VmmError> {
    Ok(guest
        .vmstat()?
        .into_iter()
        .find(|(name, _)| name == "pswpout")
        .map_or(0, |(_, value)| value))
}

pub fn guest_tag_writes_vs_swap(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let check = "races::guest_tag_writes_vs_swap";
    let _forks = no_forks_meanwhile();
    let _swap = no_swapoff_meanwhile();
    let mut racing = Racing::boot(vmm, Backing::PrivateAnonymous)?;
    let (_, len) = region();
    require_swap(racing.guest.as_ref(), len)?;
    let before = pswpout(racing.guest.as_ref())?;
    let fresh = racing.fresh;
    let mut swapped = 0;
    let mut rounds = play(check, racing.guest.as_mut(), |guest, schedule, _| {
        let pages = Pages::draw(schedule);
        make_fresh(guest, &pages, fresh)?;
        tag_first(guest, &pages, schedule)?;
        // Out first, so that the vCPUs' stores fault the pages back in from swap while the
        // host pages them out again. (Pages just faulted in sit in a per-CPU batch that
        // MADV_PAGEOUT cannot isolate yet: it is retried a while.)
        let out = page_out(guest, pages.ipa, pages.len, GiveUp::After(SWAP_OUT_WITHIN))?;
        swapped += out.swapped();
        let racers = retaggers(schedule, &pages);
        let raced = race(guest, schedule, &pages, racers, Host::PageOut)?;
        let observed = raced.observe(guest)?;
        Ok(raced.into_round(observed))
    })?;
    let out = pswpout(racing.guest.as_ref())?.saturating_sub(before);
    if out == 0 && rounds.decisive.is_none() {
        return Ok(Finding::skip(format!(
            "no page went out to swap in {} rounds (pswpout did not move): the race with \
             swap did not run",
            rounds.rounds
        )));
    }
    rounds.notes.append(&mut racing.notes);
    rounds.notes.push(format!(
        "{out} pages went out to swap meanwhile (pswpout); {swapped} were out as the vCPUs \
         started"
    ));
    Ok(conclude(vmm, check, TAG_INIT_RACE, rounds))
}

pub fn guest_tag_writes_vs_cow_break(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let check = "races::guest_tag_writes_vs_cow_break";
    let _forks = forking();
    let mut racing = Racing::boot(vmm, Backing::PrivateAnonymous)?;
    let fresh = racing.fresh;
    let mut rounds = play(check, racing.guest.as_mut(), |guest, schedule, _| {
        let pages = Pages::draw(schedule);
        make_fresh(guest, &pages, fresh)?;
        let before = tag_first(guest, &pages, schedule)?;
        let child = guest.fork(&ForkPlan {
            mte: true,
            watch: vec![(pages.ipa, pages.len)],
            writes: Vec::new(),
        })?;
        let racers = retaggers(schedule, &pages);
        let raced = race(guest, schedule, &pages, racers, Host::Nothing);
        // The child goes whatever the race did.
        let report = child.finish()?;
        let raced = raced?;
        let mut observed = raced.observe(guest)?;
        observed.also.push((
            "the forked child's copy at the fork".into(),
            before.clone(),
            report.tags_at_fork,
        ));
        observed.also.push((
            "the forked child's copy after the vCPUs' writes".into(),
            before,
            report.tags_after_parent,
        ));
        Ok(raced.into_round(observed))
    })?;
    rounds.notes.append(&mut racing.notes);
    rounds
        .notes
        .push("a forked child held the pages of each round (copy-on-write)".into());
    Ok(conclude(vmm, check, TAG_INIT_RACE, rounds))
}

/// KSM at full speed over the region: every page a pass, no sleep.
const KSM_FAST: [(KsmKnob, u64); 3] = [
    (KsmKnob::PagesToScan, 4096),
    (KsmKnob::SleepMillisecs, 0),
    (KsmKnob::Run, 1),
];

pub fn guest_tag_writes_vs_ksm_scanning(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let check = "races::guest_tag_writes_vs_ksm_scanning";
    let _ksm = ksm_turn();
    let _forks = no_forks_meanwhile();
    let mut racing = Racing::boot(vmm, Backing::PrivateAnonymous)?;
    let saved = racing.guest.ksm_state()?;
    let (base, len) = region();
    racing.guest.madvise(base, len, Advice::Mergeable)?;
    let scanned = (|| {
        let fresh = racing.fresh;
        let rounds = play(check, racing.guest.as_mut(), |guest, schedule, index| {
            // KSM goes at full speed from the first round, in this race's turn: a CPU it
            // takes is one another race's held copy may need.
            if index == 0 {
                if saved.use_zero_pages.is_some() {
                    guest.ksm_set(KsmKnob::UseZeroPages, 1)?;
                }
                for (knob, value) in KSM_FAST {
                    guest.ksm_set(knob, value)?;
                }
            }
            let pages = Pages::draw(schedule);
            // Fresh pages one round in four; the others store over tags already there.
            if index % 4 == 0 {
                make_fresh(guest, &pages, fresh)?;
            }
            let racers = retaggers(schedule, &pages);
            let raced = race(guest, schedule, &pages, racers, Host::Nothing)?;
            let observed = raced.observe(guest)?;
            Ok(raced.into_round(observed))
        })?;
        let after = racing.guest.ksm_state()?;
        Ok::<_, VmmError>((rounds, after))
    })();
    let restored = restore_ksm(racing.guest.as_mut(), &saved);
    let (mut rounds, after) = scanned?;
    restored?;
    racing.guest.madvise(base, len, Advice::Unmergeable)?;
    let scans = after.full_scans.saturating_sub(saved.full_scans);
    if scans == 0 && rounds.decisive.is_none() {
        return Ok(Finding::skip(format!(
            "KSM finished no full scan in {} rounds: the race with its scanning did not run",
            rounds.rounds
        )));
    }
    rounds.notes.append(&mut racing.notes);
    rounds.notes.push(format!(
        "KSM made {scans} full scans meanwhile (pages_shared {} -> {}) over pages whose data \
         is all zero",
        saved.pages_shared, after.pages_shared,
    ));
    Ok(conclude(vmm, check, TAG_INIT_RACE, rounds))
}
