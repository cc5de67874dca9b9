//! The performance suite (`--bench`): criterion benchmarks of what MTE costs a KVM guest, run
//! by the runner as the VMM, in the emulated machine or on an MTE host.
//!
//! Families of benchmarks, each sharing its set-up: tag copies against plain copies
//! ([`copy_tags`]), a VM's life step by step ([`lifecycle`]), a VM's creation and teardown
//! against the size of its IPA space ([`ipa_size`]), first touch, copy-on-write and
//! swap of tagged against untagged pages ([`memory`]), migration with and without tags
//! ([`migration_cost`]) and the tag instructions timed inside the guest ([`instructions`]).
//! [`measure`] runs each benchmark under criterion and sends what criterion found as a record,
//! criterion's files included: inside the emulated machine the console is the only way out.

mod copy_tags;
mod criterion_files;
mod instructions;
mod ipa_size;
mod lifecycle;
mod measure;
mod memory;
mod migration_cost;

use std::time::Instant;

use mte_results::bench::Versus;
use mte_results::stream::Record;
use mte_results::{Environment, Feature, Lane, SCHEMA_VERSION};
use mte_suites::vmm::{Vmm, VmmError};

use crate::emit;
use crate::environment;
use crate::harness::Options;
use measure::{Bench, Selection};
use mte_vmm_kvm::KvmVmm;

/// One benchmark as declared: `group/function/parameter`, what an iteration does, the bytes it
/// covers and the benchmark it is set against.
#[derive(Clone, Debug, PartialEq)]
pub struct Declared {
    pub group: &'static str,
    pub function: String,
    pub parameter: String,
    pub summary: String,
    pub bytes: Option<u64>,
    pub versus: Option<Versus>,
}

impl Declared {
    pub fn new(group: &'static str, function: &str, parameter: &str, summary: String) -> Self {
        Declared {
            group,
            function: function.into(),
            parameter: parameter.into(),
            summary,
            bytes: None,
            versus: None,
        }
    }

    /// criterion's id: `group/function/parameter`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.group, self.function, self.parameter)
    }

    /// Throughput: each iteration covers `bytes` of guest memory.
    pub fn covering(mut self, bytes: u64) -> Self {
        self.bytes = Some(bytes);
        self
    }

    /// Set against `baseline` as the ratio `ratio`.
    pub fn against(mut self, baseline: &Declared, ratio: &str) -> Self {
        self.versus = Some(Versus {
            baseline: baseline.id(),
            ratio: ratio.into(),
        });
        self
    }
}

/// Every benchmark of the suite, in the order they run.
pub fn declared() -> Vec<Declared> {
    [
        copy_tags::declared(),
        lifecycle::declared(),
        ipa_size::declared(),
        memory::declared(),
        migration_cost::declared(),
        instructions::declared(),
    ]
    .concat()
}

/// Lanes whose VMM is promised to have KVM with MTE: there its absence fails the benchmarks.
const LANES_PROMISING_KVM: &[Lane] = &[Lane::Emulated];

/// Run the benchmarks the libtest arguments select; returns whether none failed.
pub fn run(options: &Options) -> bool {
    let started = Instant::now();
    let args = options
        .libtest_arguments()
        .expect("validated by Options::parse");
    let selection = Selection::from_arguments(&args);
    let all = declared();
    let planned: Vec<&Declared> = all.iter().filter(|d| selection.selects(&d.id())).collect();
    let (kernel_release, _, _) = environment::uname();
    let mut facts = crate::machine_setup::features();
    let vmm = open(options, &kernel_release, &mut facts);
    emit::record(&Record::Hello {
        schema: SCHEMA_VERSION,
        environment: Environment {
            kernel_release: kernel_release.clone(),
            ..environment::probe(options.lane, facts)
        },
        planned: if args.list { 0 } else { planned.len() },
        available: all.len(),
        list: args.list,
        selection: selection.describe(),
        bench: true,
        setup_error: None,
        checks: Vec::new(),
    });
    if args.list {
        for d in &planned {
            emit::log(format!("{}: benchmark", d.id()));
        }
        emit::record(&Record::Done {
            tally: Default::default(),
            wall_ms: started.elapsed().as_secs_f64() * 1e3,
        });
        return true;
    }
    let mut bench = Bench::new(options.lane, &kernel_release, selection);
    match vmm {
        Ok(vmm) => {
            copy_tags::run(&mut bench, &vmm);
            lifecycle::run(&mut bench, &vmm);
            ipa_size::run(&mut bench, &vmm);
            memory::run(&mut bench, &vmm);
            migration_cost::run(&mut bench, &vmm);
            instructions::run(&mut bench, &vmm);
        }
        Err(error) => bench.unable(&all, &error),
    }
    let tally = bench.finish();
    emit::record(&Record::Done {
        tally,
        wall_ms: started.elapsed().as_secs_f64() * 1e3,
    });
    tally.fail == 0
}

/// The lane's KVM with MTE, or why there is none: unsupported where the lane may lack it,
/// a host error where the lane promised it.
fn open(options: &Options, kernel: &str, facts: &mut Vec<Feature>) -> Result<KvmVmm, VmmError> {
    let promised = LANES_PROMISING_KVM.contains(&options.lane);
    let opened = KvmVmm::open(
        options.lane,
        kernel,
        options.payload_dir.clone(),
        options.deadline,
    )
    .and_then(|kvm| {
        facts.push(Feature::new("KVM API version", kvm.api_version()));
        facts.push(Feature::new("KVM_CAP_ARM_MTE", kvm.has_mte_cap()));
        facts.push(Feature::new(
            crate::harness::IPA_SIZE_FEATURE,
            kvm.describe_ipa_size(),
        ));
        kvm.mte_capable().map(|()| kvm)
    });
    match opened {
        Err(VmmError::Unsupported(why)) if promised => Err(VmmError::Host(format!(
            "the {} lane promises KVM with MTE, yet {why}",
            options.lane
        ))),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_every_baseline_is_declared() {
        let all = declared();
        let ids: Vec<String> = all.iter().map(Declared::id).collect();
        for (i, id) in ids.iter().enumerate() {
            assert!(!ids[..i].contains(id), "{id} declared twice");
            assert_eq!(
                id.split('/').count(),
                3,
                "{id} is not group/function/parameter"
            );
        }
        for d in &all {
            if let Some(versus) = &d.versus {
                assert!(
                    ids.contains(&versus.baseline),
                    "{} against {}",
                    d.id(),
                    versus.baseline
                );
                assert_ne!(versus.baseline, d.id());
            }
        }
    }
}
