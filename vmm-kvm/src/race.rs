//! Host tag copies racing the guest: a host thread issues KVM_ARM_MTE_COPY_TAGS on the guest's
//! pages while the vCPU thread runs one guest command over the same pages.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use mte_protocol::{granules, GRANULE};
use mte_suites::host_mm::{HostTagOp, RaceLog, RacePlan};
use mte_suites::vmm::{Reply, VmmError};

use crate::copy_tags;
use crate::memory::page_size;

/// At most this many page reads per race: the host thread's bound when the guest is slow.
const MAX_READS: usize = 4096;

/// What the host thread did, before it becomes a [`RaceLog`].
struct HostSide {
    reads: Vec<(u64, Vec<u8>)>,
    started: Duration,
    finished: Duration,
    copies: u64,
}

/// Run `exec` (one guest command) while a host thread copies tags on `vm` as `plan` says.
pub fn race(
    vm: RawFd,
    plan: &RacePlan,
    exec: impl FnOnce() -> Result<Reply, VmmError>,
) -> Result<(Reply, RaceLog), VmmError> {
    let page = page_size() as u64;
    if plan
        .order
        .iter()
        .any(|&p| p % page != 0 || p < plan.base || p + page > plan.base + plan.len)
    {
        return Err(VmmError::Host(
            "race plan pages must be page aligned inside the range".into(),
        ));
    }
    if let HostTagOp::Write(tags) = &plan.op {
        if tags.len() != granules(plan.len) {
            return Err(VmmError::Host(format!(
                "race plan has {} tags for {} granules",
                tags.len(),
                granules(plan.len)
            )));
        }
    }
    let barrier = Barrier::new(2);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let host = scope.spawn(|| {
            barrier.wait();
            let origin = Instant::now();
            host_side(vm, plan, page, origin, &stop)
        });
        barrier.wait();
        let origin = Instant::now();
        let reply = exec();
        let guest_finished = origin.elapsed();
        stop.store(true, Ordering::Relaxed);
        let host = host
            .join()
            .expect("the host side of a race does not panic")?;
        let reply = reply?;
        Ok((
            reply,
            RaceLog {
                reads: host.reads,
                host_started_us: host.started.as_micros() as u64,
                host_finished_us: host.finished.as_micros() as u64,
                guest_finished_us: guest_finished.as_micros() as u64,
                copies: host.copies,
            },
        ))
    })
}

fn host_side(
    vm: RawFd,
    plan: &RacePlan,
    page: u64,
    origin: Instant,
    stop: &AtomicBool,
) -> Result<HostSide, VmmError> {
    // Short delays are spun, so that they are as short as drawn.
    while origin.elapsed() < plan.delay {
        if plan.delay > Duration::from_millis(1) {
            std::thread::sleep(Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
    let started = origin.elapsed();
    let mut side = HostSide {
        reads: Vec::new(),
        started,
        finished: started,
        copies: 0,
    };
    let per_page = (page / GRANULE) as usize;
    match &plan.op {
        HostTagOp::Write(tags) => {
            for &ipa in &plan.order {
                let at = granules(ipa - plan.base);
                copy_tags::write(vm, ipa, &tags[at..at + per_page])?;
                side.copies += 1;
            }
        }
        HostTagOp::Read => loop {
            for &ipa in &plan.order {
                side.reads.push((ipa, copy_tags::read(vm, ipa, page)?));
                side.copies += 1;
            }
            if stop.load(Ordering::Relaxed) || side.reads.len() >= MAX_READS {
                break;
            }
        },
    }
    side.finished = origin.elapsed();
    Ok(side)
}
