//! A VM's creation and teardown against the size of its IPA space (40, 48 and 52 bits, where
//! the host's KVM gives them): a kernel whose stage-2 teardown walks the whole IPA space makes
//! a large one cost its size at every VM's end. Each iteration creates a VM with a one-page
//! memslot at the top of its IPA space and closes it, and counts one of the two.

use std::time::Duration;

use mte_suites::vmm::{IpaProbe, Vmm, VmmError};
use mte_vmm_kvm::KvmVmm;

use super::measure::Bench;
use super::Declared;

const GROUP: &str = "vm_ipa_size";
/// KVM's default, against which the larger sizes are set.
const BASE_BITS: u32 = 40;
const SIZES: [u32; 3] = [BASE_BITS, 48, 52];

/// A step of the VM's short life, and where [`IpaProbe`] keeps its time.
struct Step {
    name: &'static str,
    what: &'static str,
    time: fn(&IpaProbe) -> Duration,
}

const STEPS: [Step; 2] = [
    Step {
        name: "create_vm",
        what: "KVM_CREATE_VM with the IPA size as its type",
        time: |p| p.create,
    },
    Step {
        name: "teardown",
        what: "closing the VM's fd (a one-page memslot at the top of its IPA space)",
        time: |p| p.teardown,
    },
];

fn parameter(bits: u32) -> String {
    format!("{bits} bits")
}

/// The step's benchmarks, one an IPA size, each larger one set against 40 bits.
fn of_step(step: &Step) -> Vec<(Declared, u32)> {
    let declared = |bits| {
        let summary = format!("{} of a VM with a {bits}-bit IPA space", step.what);
        Declared::new(GROUP, step.name, &parameter(bits), summary)
    };
    let base = declared(BASE_BITS);
    let mut all: Vec<(Declared, u32)> = SIZES[1..]
        .iter()
        .map(|&bits| {
            let ratio = format!("{bits} bits / {BASE_BITS} bits");
            (declared(bits).against(&base, &ratio), bits)
        })
        .collect();
    all.push((base, BASE_BITS));
    all
}

pub fn declared() -> Vec<Declared> {
    STEPS
        .iter()
        .flat_map(of_step)
        .map(|(declared, _)| declared)
        .collect()
}

pub fn run(bench: &mut Bench, vmm: &KvmVmm) {
    let limit = vmm.ipa_sizes().map(|sizes| sizes.host_limit);
    for step in &STEPS {
        for (declared, bits) in of_step(step) {
            match limit {
                Ok(Some(limit)) if bits > limit => {
                    let why = format!(
                        "this host's KVM gives a VM at most {limit} bits of IPA space \
                         (KVM_CAP_ARM_VM_IPA_SIZE)"
                    );
                    bench.unable(&[declared], &VmmError::Unsupported(why));
                }
                Ok(None) if bits != BASE_BITS => {
                    let why = "this host's KVM has no KVM_CAP_ARM_VM_IPA_SIZE: every VM has \
                               KVM's default IPA size";
                    bench.unable(&[declared], &VmmError::Unsupported(why.into()));
                }
                _ => bench.measure(&declared, |iterations, _| {
                    let mut counted = Duration::ZERO;
                    for _ in 0..iterations {
                        counted += (step.time)(&vmm.ipa_probe(bits, 1 << bits)?);
                    }
                    Ok::<_, VmmError>(counted)
                }),
            }
        }
    }
}
