//! The tag instructions per 4 KiB page, timed inside the guest with its virtual counter
//! (CNTVCT_EL0; the VMM gives the guest no PMU, so PMCCNTR_EL0 is not there to read), with
//! tag checking off (TCF none) and synchronous (TCF sync). The tag stores are Tag Unchecked
//! themselves; the checked data stores (STR) show what synchronous checking costs an access.

use std::time::Duration;

use mte_protocol::{tcf, timed, Command, PAGE_SIZE, TEST_RAM_IPA};
use mte_results::bench::{Quantity, GUEST_COUNTER_FREQUENCY};
use mte_suites::steps::command::{require_mte, run as exec};
use mte_suites::vmm::{BootOptions, Guest, Vmm, VmmError};
use mte_vmm_kvm::KvmVmm;

use super::measure::Bench;
use super::Declared;

const GROUP: &str = "tag_instructions";
/// The page the instructions run over.
const PAGE: u64 = TEST_RAM_IPA;
const MODES: [(u64, &str); 2] = [(tcf::NONE, "TCF none"), (tcf::SYNC, "TCF sync")];

/// What one pass of a family does over the page.
fn pass_of(family: u64) -> &'static str {
    match family {
        timed::STG => "256 STG (a tag per granule)",
        timed::ST2G => "128 ST2G (a tag per two granules)",
        timed::STZG => "256 STZG (a tag and zero data per granule)",
        timed::DC_GZVA => "DC GZVA over every DCZID_EL0.BS block (tags and zero data)",
        timed::STGM => "STGM over every GMID_EL1.BS block (tags only; EL1)",
        _ => "512 STR of 64 bits through a pointer whose tag matches (tag-checked data stores)",
    }
}

/// A family's two benchmarks: TCF sync set against TCF none.
fn of_family(family: u64, name: &str) -> [Declared; 2] {
    let summary = |mode: &str| {
        format!(
            "one pass of {} over a 4 KiB page with SCTLR_EL1.TCF = {}, timed in the guest with \
             CNTVCT_EL0",
            pass_of(family),
            mode.trim_start_matches("TCF ")
        )
    };
    let [(_, none), (_, sync)] = MODES;
    let unchecked = Declared::new(GROUP, name, none, summary(none)).covering(PAGE_SIZE);
    let checked = Declared::new(GROUP, name, sync, summary(sync))
        .covering(PAGE_SIZE)
        .against(&unchecked, "TCF sync / TCF none");
    [unchecked, checked]
}

pub fn declared() -> Vec<Declared> {
    timed::ALL
        .iter()
        .flat_map(|&(family, name)| of_family(family, name))
        .collect()
}

pub fn run(bench: &mut Bench, vmm: &KvmVmm) {
    let all = declared();
    if !bench.wants_any(&all) {
        return;
    }
    let mut guest = match boot(vmm) {
        Ok(guest) => guest,
        Err(error) => return bench.unable(&all, &error),
    };
    for &(family, name) in &timed::ALL {
        for (declared, (mode, _)) in of_family(family, name).iter().zip(MODES) {
            bench.measure(declared, |iterations, figures| {
                let reply = exec(
                    guest.as_mut(),
                    Command::TimeInstructions,
                    &[family, PAGE, iterations, mode],
                )?;
                let (ticks, frequency) = (reply.result[0], reply.result[1]);
                if frequency == 0 {
                    return Err(VmmError::Guest("the guest reads CNTFRQ_EL0 as 0".into()));
                }
                *figures = vec![Quantity {
                    what: GUEST_COUNTER_FREQUENCY.into(),
                    value: frequency as f64,
                    unit: "Hz".into(),
                }];
                Ok(ticks_to_time(ticks, frequency))
            });
        }
    }
}

fn boot(vmm: &KvmVmm) -> Result<Box<dyn Guest>, VmmError> {
    let guest = vmm.boot(&BootOptions::default())?;
    require_mte(&guest.ids())?;
    Ok(guest)
}

/// `ticks` of a counter running at `frequency` Hz, as time.
fn ticks_to_time(ticks: u64, frequency: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / frequency as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_ticks_become_time_at_the_counter_s_frequency() {
        assert_eq!(
            ticks_to_time(62_500_000, 62_500_000),
            Duration::from_secs(1)
        );
        assert_eq!(
            ticks_to_time(1_000, 1_000_000_000),
            Duration::from_micros(1)
        );
    }

    #[test]
    fn every_family_is_set_against_itself_without_checks() {
        let all = declared();
        assert_eq!(all.len(), 2 * timed::ALL.len());
        for checked in all.iter().filter(|d| d.parameter == "TCF sync") {
            let versus = checked.versus.as_ref().unwrap();
            assert_eq!(
                versus.baseline,
                format!("{GROUP}/{}/TCF none", checked.function)
            );
        }
    }
}
