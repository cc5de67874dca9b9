//! Races on KVM: the vCPUs of a guest, each on a thread of its own, let go together from the
//! guest's start barrier while the calling thread does the plan's host part on the same pages
//! (tag copies, maybe held mid-page; tag loads and stores through a PROT_MTE mapping; page-out;
//! post-copy of the pages, as the migration engine fills them).
//!
//! The host lets the vCPUs go once each has arrived at the barrier and its own side is ready:
//! at once for a free race (the host then waits its delay and starts), or, for a held copy,
//! when the copy has written the first granules of its page and waits on its buffer, so that
//! the vCPUs touch the page inside the copy.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mte_protocol::{
    barrier_offsets, bulk, granules, pattern_word, Command, StartBarrier, GRANULE, RAM_IPA,
    START_BARRIER_IPA,
};
use mte_suites::host_mm::Advice;
use mte_suites::race_plan::{HostPart, RaceLog, RacePlan, StallLog};
use mte_suites::steps::bulk::NOT_WRITTEN;
use mte_suites::vmm::{Reply, VmmError};
use mte_vmm::Vcpu;

use crate::held_copy::HeldCopy;
use crate::memory::page_size;
use crate::migration_engine::fill::Filler;
use crate::mte_view::MteView;
use crate::vm::{io_error, Vm};
use crate::{copy_tags, KvmGuest, KvmTransport};

/// How long a post-copy page server waits for a fault before it looks whether the vCPUs are
/// done.
const POSTCOPY_POLL_MS: i32 = 1;

/// At most this many page reads in a race: the host's bound when the vCPUs are slow.
const MAX_READS: usize = 4096;

/// How long the host waits for a held copy to reach its page before it lets the vCPUs go
/// anyway.
const HOLD_REACHED_WITHIN: Duration = Duration::from_secs(2);

/// How long the vCPUs may stand at the held page's first granule before the copy goes on:
/// long against a first touch nothing holds (a fraction of a millisecond in the emulated
/// machine), short against the hold. On a kernel with PG_mte_lock the vCPU spins for the copy
/// in the kernel with preemption off, and the longer it spins the likelier another CPU's MMU
/// notifier spins with it (a fork of the VMM; DAMON's aging on 7.3) and the thread that
/// releases the copy never runs.
const WAITED_AT_HELD_PAGE: Duration = Duration::from_millis(5);

/// Run `plan` on `guest`.
pub fn race(guest: &mut KvmGuest, plan: &RacePlan) -> Result<RaceLog, VmmError> {
    check(guest, plan)?;
    let vm = Arc::clone(&guest.transport().vm);
    let deadline = guest.deadline();
    let host = HostSide::prepare(&vm, plan)?;
    let barrier = Barrier::reset(&vm, plan);
    let mut parts: Vec<(&mut Vcpu<KvmTransport>, &_)> = Vec::new();
    let mut vcpus: Vec<Option<&mut Vcpu<KvmTransport>>> =
        guest.vcpus_mut().iter_mut().map(Some).collect();
    for part in &plan.vcpus {
        let vcpu = vcpus[part.vcpu].take().expect("checked: one part a vCPU");
        vcpu.post(part.command, &part.args, true)?;
        parts.push((vcpu, part));
    }
    let go: OnceLock<Instant> = OnceLock::new();
    let done = AtomicUsize::new(0);
    let last_done_us = AtomicU64::new(0);
    let (replies, host_log) = std::thread::scope(|scope| {
        let threads: Vec<_> = parts
            .into_iter()
            .map(|(vcpu, part)| {
                let (go, done, last_done_us) = (&go, &done, &last_done_us);
                scope.spawn(move || {
                    let reply = vcpu.complete(part.command, deadline);
                    let at = go.get().map_or(0, |go| go.elapsed().as_micros() as u64);
                    last_done_us.fetch_max(at, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Release);
                    reply
                })
            })
            .collect();
        let vcpus = Vcpus {
            count: plan.vcpus.len(),
            done: &done,
            go: &go,
            barrier: &barrier,
        };
        let host_log = host.run(&vm, plan, &vcpus, deadline);
        // Whatever the host's side did, the vCPUs must not wait at the barrier for ever.
        vcpus.let_go();
        let replies: Vec<Result<Reply, VmmError>> = threads
            .into_iter()
            .map(|t| t.join().expect("a vCPU thread does not panic"))
            .collect();
        (replies, host_log)
    });
    let mut log = host_log?;
    log.replies = replies.into_iter().collect::<Result<_, _>>()?;
    log.vcpus_finished_us = last_done_us.load(Ordering::Relaxed);
    Ok(log)
}

/// The plan's vCPUs exist, once each, and its pages lie in the range, page aligned.
fn check(guest: &KvmGuest, plan: &RacePlan) -> Result<(), VmmError> {
    let count = guest.vcpu_count();
    let mut seen = vec![false; count];
    for part in &plan.vcpus {
        if part.vcpu >= count || std::mem::replace(&mut seen[part.vcpu], true) {
            return Err(VmmError::Host(format!(
                "race plan names vCPU {} twice or of a guest of {count}",
                part.vcpu
            )));
        }
    }
    let page = page_size() as u64;
    let inside = |p: u64| p % page == 0 && p >= plan.base && p + page <= plan.base + plan.len;
    if !plan.host.order().iter().all(|&p| inside(p)) {
        return Err(VmmError::Host(
            "race plan pages must be page aligned inside the range".into(),
        ));
    }
    let host = &plan.host;
    if let HostPart::WriteTags { tags, .. } | HostPart::StoreTagsMapped { tags, .. } = host {
        if tags.len() != granules(plan.len) {
            return Err(VmmError::Host(format!(
                "race plan has {} tags for {} granules",
                tags.len(),
                granules(plan.len)
            )));
        }
    }
    if let HostPart::WriteTags {
        stall: Some(stall), ..
    } = host
    {
        // A vCPU that touches the held page on a kernel with PG_mte_lock waits for the copy
        // in the kernel, without being preempted: a CPU must stay for the thread that
        // releases it.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if plan.vcpus.len() >= cpus {
            return Err(VmmError::Host(format!(
                "a held copy races {} vCPUs on {cpus} CPUs: one CPU must stay free for the \
                 host thread that releases it",
                plan.vcpus.len()
            )));
        }
        if !inside(stall.page) || !host.order().contains(&stall.page) {
            return Err(VmmError::Host(
                "a held copy's page must be one the host copies".into(),
            ));
        }
    }
    Ok(())
}

/// The guest's start barrier, through the VMM's mapping of RAM.
struct Barrier<'a> {
    vm: &'a Vm,
}

impl<'a> Barrier<'a> {
    const OFFSET: usize = (START_BARRIER_IPA - RAM_IPA) as usize;

    /// Nobody arrived, no go, each vCPU's spins as the plan says.
    fn reset(vm: &'a Vm, plan: &RacePlan) -> Self {
        let mut barrier = StartBarrier::default();
        for part in &plan.vcpus {
            barrier.spins[part.vcpu] = part.spins;
        }
        // SAFETY: StartBarrier is repr(C) of integers without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&barrier as *const StartBarrier).cast::<u8>(),
                std::mem::size_of::<StartBarrier>(),
            )
        };
        vm.ram.write(Self::OFFSET, bytes);
        Barrier { vm }
    }

    fn arrived(&self) -> usize {
        self.vm
            .ram
            .load_u32(Self::OFFSET + barrier_offsets::ARRIVED) as usize
    }

    fn go(&self) {
        self.vm.ram.store_u32(Self::OFFSET + barrier_offsets::GO, 1);
    }
}

/// The racing vCPUs as the host side sees them.
struct Vcpus<'a> {
    count: usize,
    done: &'a AtomicUsize,
    go: &'a OnceLock<Instant>,
    barrier: &'a Barrier<'a>,
}

impl Vcpus<'_> {
    fn done(&self) -> bool {
        self.done.load(Ordering::Acquire) >= self.count
    }

    /// Wait until every vCPU waits at the barrier (or one is done: it failed to get there).
    fn wait_for_arrivals(&self, deadline: Duration) -> Result<(), VmmError> {
        let until = Instant::now() + deadline;
        while self.barrier.arrived() < self.count {
            if self.done.load(Ordering::Acquire) > 0 || Instant::now() > until {
                return Err(VmmError::Guest(format!(
                    "{} of {} vCPUs reached the start barrier",
                    self.barrier.arrived(),
                    self.count
                )));
            }
            // The vCPU threads need the CPUs more than this one does.
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Let the vCPUs go (once); the race's clock starts.
    fn let_go(&self) -> Instant {
        let at = *self.go.get_or_init(Instant::now);
        self.barrier.go();
        at
    }

    fn since_go(&self) -> u64 {
        self.go
            .get()
            .map_or(0, |go| go.elapsed().as_micros() as u64)
    }

    /// Wait until the vCPUs are done, at most `hold`, or until those `watch` follows have stood
    /// at the held page for [`WAITED_AT_HELD_PAGE`]: whether they were done, and whether they
    /// waited there.
    fn wait_done_or_at(&self, hold: Duration, watch: &HeldPageWatch) -> (bool, bool) {
        let until = Instant::now() + hold;
        let mut standing_since: Option<Instant> = None;
        while !self.done() {
            let now = Instant::now();
            if now >= until {
                return (false, false);
            }
            match watch.all_at_held_page() {
                true => {
                    let since = *standing_since.get_or_insert(now);
                    if now - since >= WAITED_AT_HELD_PAGE {
                        return (false, true);
                    }
                }
                false => standing_since = None,
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        (true, false)
    }
}

/// For each part of `plan` that reports one byte a granule as it goes and touches the page
/// at `held_page`: the RAM offsets of its report byte for the granule before its first on the
/// page (none when that is its first granule) and of its byte for that one.
fn report_bytes_at(plan: &RacePlan, held_page: u64, page: u64) -> Vec<(Option<usize>, usize)> {
    (plan.vcpus.iter())
        .filter(|part| matches!(part.command, Command::ReadTags | Command::TagRandom))
        .filter_map(|part| {
            let (start, len) = (part.args[0], part.args[1]);
            if held_page + page <= start || held_page >= start + len {
                return None;
            }
            let first = (held_page.saturating_sub(start) / GRANULE) as usize;
            let report = (bulk(part.vcpu).0 - RAM_IPA) as usize;
            Some((first.checked_sub(1).map(|b| report + b), report + first))
        })
        .collect()
}

/// Where the racing vCPUs stand against a held copy's page, read from their bulk buffers:
/// `ReadTags` and `TagRandom` write one byte a granule as they go, over bytes poisoned with
/// [`NOT_WRITTEN`] before the race, so a vCPU whose byte for the granule before the page is
/// written and whose byte for the page's first is not is in its first touch of the page.
struct HeldPageWatch<'a> {
    vm: &'a Vm,
    /// See [`report_bytes_at`].
    parts: Vec<(Option<usize>, usize)>,
}

impl<'a> HeldPageWatch<'a> {
    fn new(vm: &'a Vm, plan: &RacePlan, held_page: u64) -> Self {
        HeldPageWatch {
            vm,
            parts: report_bytes_at(plan, held_page, page_size() as u64),
        }
    }

    fn byte(&self, offset: usize) -> u8 {
        let mut byte = [0u8];
        self.vm.ram.read(offset, &mut byte);
        byte[0]
    }

    /// Whether every part it follows is in its first touch of the page; false when it follows
    /// none (then only the hold's time limit or the vCPUs' end releases the copy).
    fn all_at_held_page(&self) -> bool {
        !self.parts.is_empty()
            && self.parts.iter().all(|&(before, first)| {
                self.byte(first) == NOT_WRITTEN
                    && before.is_none_or(|before| self.byte(before) != NOT_WRITTEN)
            })
    }
}

/// What the host side needs, made before the vCPUs are posted.
enum HostSide {
    Plain,
    Held(HeldCopy),
    Mapped(MteView),
    PostCopy(RefCell<Filler>),
}

impl HostSide {
    fn prepare(vm: &Vm, plan: &RacePlan) -> Result<Self, VmmError> {
        Ok(match &plan.host {
            HostPart::WriteTags {
                tags,
                stall: Some(stall),
                ..
            } => {
                let at = granules(stall.page - plan.base);
                let per_page = granules(page_size() as u64);
                HostSide::Held(HeldCopy::new(
                    &tags[at..at + per_page],
                    stall.after_granules,
                )?)
            }
            HostPart::StoreTagsMapped { .. } | HostPart::LoadTagsMapped { .. } => {
                let offset = (plan.base - RAM_IPA) as usize;
                HostSide::Mapped(MteView::of(&vm.ram, offset, plan.len as usize)?)
            }
            HostPart::PostCopy { .. } => {
                let offset = (plan.base - RAM_IPA) as usize;
                HostSide::PostCopy(RefCell::new(Filler::register(
                    vm,
                    offset,
                    plan.len as usize,
                )?))
            }
            _ => HostSide::Plain,
        })
    }

    /// The host's part, letting the vCPUs go when its side is ready.
    fn run(
        &self,
        vm: &Vm,
        plan: &RacePlan,
        vcpus: &Vcpus,
        deadline: Duration,
    ) -> Result<RaceLog, VmmError> {
        vcpus.wait_for_arrivals(deadline)?;
        let mut log = RaceLog::default();
        if let HostSide::Held(held) = self {
            return held_copy(vm, plan, held, vcpus, log);
        }
        vcpus.let_go();
        spin_or_sleep(plan.host_delay);
        log.host_started_us = vcpus.since_go();
        let page = page_size() as u64;
        let per_page = granules(page);
        let vm_fd = vm.raw_fd();
        let offset = |ipa: u64| (ipa - RAM_IPA) as usize;
        match (&plan.host, self) {
            (HostPart::Nothing, _) => {}
            (HostPart::WriteTags { order, tags, .. }, _) => {
                for &ipa in order {
                    let at = granules(ipa - plan.base);
                    copy_tags::write(vm_fd, ipa, &tags[at..at + per_page])?;
                    log.host_pages += 1;
                }
            }
            (HostPart::ReadTags { order }, _) => sweep(vcpus, order, &mut log, |ipa| {
                copy_tags::read(vm_fd, ipa, page)
            })?,
            (HostPart::StoreTagsMapped { order, tags }, HostSide::Mapped(view)) => {
                log.how = format!("LDG and STG through {}", view.describe());
                for &ipa in order {
                    let at = granules(ipa - plan.base);
                    view.store_tags(offset(ipa), &tags[at..at + per_page]);
                    log.host_pages += 1;
                }
            }
            (HostPart::LoadTagsMapped { order }, HostSide::Mapped(view)) => {
                log.how = format!("LDG and STG through {}", view.describe());
                sweep(vcpus, order, &mut log, |ipa| {
                    let mut tags = vec![0; per_page];
                    view.load_tags(offset(ipa), &mut tags);
                    Ok(tags)
                })?
            }
            (
                HostPart::PostCopy {
                    order,
                    tags,
                    data_seed,
                    hold,
                },
                HostSide::PostCopy(filler),
            ) => {
                let mut filler = filler.borrow_mut();
                log.how = format!("post-copy of each page: {}", filler.order().describe());
                let hva_of = |ipa: u64| vm.ram.host_address() + (ipa - RAM_IPA);
                let mut fill = |filler: &mut Filler, hva: u64| -> Result<(), VmmError> {
                    let ipa = RAM_IPA + (hva - vm.ram.host_address());
                    let at = ipa - plan.base;
                    let data: Vec<u8> = (0..page)
                        .step_by(8)
                        .flat_map(|o| pattern_word(*data_seed, at + o).to_le_bytes())
                        .collect();
                    let granule = granules(at);
                    let tags = &tags[granule..granule + per_page];
                    if filler.fill(hva, &data, Some(tags), *hold, false)? {
                        log.host_pages += 1;
                    }
                    Ok(())
                };
                while !vcpus.done() {
                    if let Some(hva) = filler.next_fault(POSTCOPY_POLL_MS)? {
                        fill(&mut filler, hva)?;
                    }
                }
                // Pages nobody touched come the way post-copy's background push brings them.
                for &ipa in order {
                    fill(&mut filler, hva_of(ipa))?;
                }
            }
            (HostPart::PageOut { order }, _) => loop {
                for &ipa in order {
                    vm.ram
                        .madvise(offset(ipa), page as usize, Advice::PageOut.value())
                        .map_err(|e| io_error("madvise(MADV_PAGEOUT)", e))?;
                    log.host_pages += 1;
                }
                if vcpus.done() {
                    break;
                }
            },
            (part, _) => unreachable!("prepared for {part:?}"),
        }
        log.host_finished_us = vcpus.since_go();
        Ok(log)
    }
}

/// Reads of each page of `order`, sweep after sweep, until the vCPUs are done.
fn sweep(
    vcpus: &Vcpus,
    order: &[u64],
    log: &mut RaceLog,
    mut read: impl FnMut(u64) -> Result<Vec<u8>, VmmError>,
) -> Result<(), VmmError> {
    loop {
        for &ipa in order {
            log.reads.push((ipa, read(ipa)?));
            log.host_pages += 1;
        }
        if vcpus.done() || log.reads.len() >= MAX_READS {
            return Ok(());
        }
    }
}

/// The host's tag copies with one of them held: a thread makes the copies in order; once the
/// held one waits on its buffer, the vCPUs go; once they are done (or the hold is over), the
/// copy goes on.
fn held_copy(
    vm: &Vm,
    plan: &RacePlan,
    held: &HeldCopy,
    vcpus: &Vcpus,
    mut log: RaceLog,
) -> Result<RaceLog, VmmError> {
    let HostPart::WriteTags {
        order,
        tags,
        stall: Some(stall),
    } = &plan.host
    else {
        unreachable!("a held copy is prepared for a stalled write only")
    };
    let per_page = granules(page_size() as u64);
    let vm_fd = vm.raw_fd();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| -> Result<u64, VmmError> {
            for &ipa in order {
                if ipa == stall.page {
                    // SAFETY: the held copy's buffer holds a page's tags from `user_tags`,
                    // mapped (its second page is filled on release).
                    unsafe { copy_tags::write_from(vm_fd, ipa, held.user_tags(), per_page)? };
                } else {
                    let at = granules(ipa - plan.base);
                    copy_tags::write(vm_fd, ipa, &tags[at..at + per_page])?;
                }
            }
            Ok(order.len() as u64)
        });
        let reached = held.wait_until_held(HOLD_REACHED_WITHIN);
        // The copies began before the go: the host's clock starts at it too.
        let go = vcpus.let_go();
        log.host_started_us = 0;
        let watch = HeldPageWatch::new(vm, plan, stall.page);
        let (vcpus_done_first, vcpus_waited_at_page) = vcpus.wait_done_or_at(stall.hold, &watch);
        let held_us = go.elapsed().as_micros() as u64;
        let released = held.release();
        let written = writer.join().expect("the copy thread does not panic");
        log.stall = Some(StallLog {
            reached: *reached.as_ref().unwrap_or(&false),
            held_us,
            vcpus_done_first,
            vcpus_waited_at_page,
        });
        log.host_pages = written?;
        log.host_finished_us = vcpus.since_go();
        reached?;
        released?;
        Ok(log)
    })
}

/// Wait `delay`: spun when short, so that it is as short as drawn.
fn spin_or_sleep(delay: Duration) {
    let started = Instant::now();
    while started.elapsed() < delay {
        if delay > Duration::from_millis(1) {
            std::thread::sleep(Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mte_suites::race_plan::VcpuPart;

    fn part(vcpu: usize, command: Command, start: u64, len: u64) -> VcpuPart {
        VcpuPart {
            vcpu,
            command,
            args: vec![start, len],
            spins: 0,
        }
    }

    #[test]
    fn the_watch_reads_the_report_bytes_around_the_held_pages_first_granule() {
        const PAGE: u64 = 4096;
        let base = RAM_IPA + 0x100_0000;
        let plan = |parts| RacePlan {
            base,
            len: 3 * PAGE,
            vcpus: parts,
            host: HostPart::Nothing,
            host_delay: Duration::ZERO,
        };
        let report = |vcpu| (bulk(vcpu).0 - RAM_IPA) as usize;
        let per_page = (PAGE / GRANULE) as usize;
        // From the range's start: the held second page begins at its 257th granule.
        let from_start = plan(vec![part(0, Command::ReadTags, base, 3 * PAGE)]);
        assert_eq!(
            report_bytes_at(&from_start, base + PAGE, PAGE),
            [(Some(report(0) + per_page - 1), report(0) + per_page)]
        );
        // Starting inside the held page: its first granule there is the part's first.
        let inside = plan(vec![part(1, Command::TagRandom, base + 16 * GRANULE, PAGE)]);
        assert_eq!(report_bytes_at(&inside, base, PAGE), [(None, report(1))]);
        // A part that never reaches the page, or reports nothing as it goes, is not watched.
        let elsewhere = plan(vec![
            part(0, Command::ReadTags, base + 2 * PAGE, PAGE),
            part(1, Command::TagFromBulk, base, 3 * PAGE),
        ]);
        assert!(report_bytes_at(&elsewhere, base, PAGE).is_empty());
    }
}
