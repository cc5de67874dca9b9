//! What migration costs with and without tags: the KVM backend's reference migration engine
//! moves a guest's 64 MiB of RAM by stop-and-copy to a new VM of the same process, once with a
//! region of random tags and once with the same data and no tags (memory the guest never
//! tagged: its pages travel without tag bytes and the destination writes none). Time and the
//! stream's bytes, side by side.

use std::time::{Duration, Instant};

use mte_protocol::{Command, RAM_SIZE, TEST_RAM_IPA};
use mte_results::bench::{Quantity, BYTES};
use mte_suites::migration_plan::{Method, MigrationPlan, MigrationReport};
use mte_suites::steps::command::{require_mte, run as exec};
use mte_suites::vmm::{BootOptions, Guest, Vmm, VmmError};
use mte_vmm_kvm::KvmVmm;

use super::measure::Bench;
use super::Declared;

/// The region the guest fills with data (and, for the tagged guest, with random tags).
const REGION: u64 = TEST_RAM_IPA;
const REGION_BYTES: u64 = 4 << 20;
const SEED: u64 = 0x3c;

fn declared_pair() -> [Declared; 2] {
    let summary = |tags: &str| {
        format!(
            "stop-and-copy of a paused guest (64 MiB of RAM, {} MiB of it data) through a pipe \
             to a new VM of the same process, {tags}",
            REGION_BYTES >> 20
        )
    };
    let without = Declared::new(
        "migration",
        "stop_and_copy",
        "without tags",
        summary("the tags all zero (pages travel without tag bytes)"),
    )
    .covering(RAM_SIZE);
    let with = Declared::new(
        "migration",
        "stop_and_copy",
        "with tags",
        summary("the data region carrying random tags"),
    )
    .covering(RAM_SIZE)
    .against(&without, "with tags / without tags");
    [with, without]
}

pub fn declared() -> Vec<Declared> {
    declared_pair().to_vec()
}

pub fn run(bench: &mut Bench, vmm: &KvmVmm) {
    for (declared, tagged) in declared_pair().iter().zip([true, false]) {
        if !bench.wants(declared) {
            continue;
        }
        let mut guest = match boot(vmm, tagged) {
            Ok(guest) => Some(guest),
            Err(error) => {
                bench.unable(std::slice::from_ref(declared), &error);
                continue;
            }
        };
        let plan = MigrationPlan::new(Method::StopAndCopy);
        bench.measure(declared, |iterations, figures| {
            let mut counted = Duration::ZERO;
            for _ in 0..iterations {
                let source = guest.take().ok_or_else(|| {
                    VmmError::Host("the guest was lost in an earlier migration".into())
                })?;
                let started = Instant::now();
                let mut destination = source.migrate(&plan)?;
                counted += started.elapsed();
                *figures = stream_figures(&destination.migration_report()?);
                guest = Some(destination);
            }
            Ok(counted)
        });
    }
}

/// A guest with MTE whose region holds the data and, if `tagged`, random tags.
fn boot(vmm: &KvmVmm, tagged: bool) -> Result<Box<dyn Guest>, VmmError> {
    let mut guest = vmm.boot(&BootOptions::default())?;
    require_mte(&guest.ids())?;
    exec(
        guest.as_mut(),
        Command::FillPattern,
        &[REGION, REGION_BYTES, SEED],
    )?;
    if tagged {
        exec(guest.as_mut(), Command::TagRandom, &[REGION, REGION_BYTES])?;
    }
    Ok(guest)
}

/// What the stream carried.
fn stream_figures(report: &MigrationReport) -> Vec<Quantity> {
    let tag_bytes: u64 = report.pages.iter().map(|p| u64::from(p.tag_bytes)).sum();
    vec![
        Quantity {
            what: "stream bytes".into(),
            value: report.stream_bytes as f64,
            unit: BYTES.into(),
        },
        Quantity {
            what: "tag bytes in the stream".into(),
            value: tag_bytes as f64,
            unit: BYTES.into(),
        },
        Quantity {
            what: "page records".into(),
            value: report.pages.len() as f64,
            unit: "records".into(),
        },
    ]
}
