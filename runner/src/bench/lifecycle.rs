//! A VM's life, step by step, with MTE and without: create, MTE capability, memslot, vCPU,
//! first run to the guest's first doorbell, teardown. Each iteration lives a whole life and
//! counts one step of it.

use mte_suites::vmm::VmmError;
use mte_vmm_kvm::timing::LifeSteps;
use mte_vmm_kvm::KvmVmm;

use super::measure::Bench;
use super::Declared;

const GROUP: &str = "vm_lifecycle";
const WITH: &str = "with MTE";
const WITHOUT: &str = "without MTE";

/// A step of the life: its name, what it is, whether only a VM with MTE takes it, and where
/// [`LifeSteps`] keeps its time.
struct Step {
    name: &'static str,
    what: &'static str,
    mte_only: bool,
    time: fn(&LifeSteps) -> std::time::Duration,
}

const STEPS: [Step; 6] = [
    Step {
        name: "create_vm",
        what: "KVM_CREATE_VM",
        mte_only: false,
        time: |s| s.create,
    },
    Step {
        name: "enable_mte_cap",
        what: "KVM_ENABLE_CAP(KVM_CAP_ARM_MTE)",
        mte_only: true,
        time: |s| s.mte_cap,
    },
    Step {
        name: "memslot",
        what: "mmap of 64 MiB of guest RAM and KVM_SET_USER_MEMORY_REGION",
        mte_only: false,
        time: |s| s.memslot,
    },
    Step {
        name: "create_vcpu",
        what: "KVM_CREATE_VCPU, KVM_ARM_VCPU_INIT and the entry point",
        mte_only: false,
        time: |s| s.vcpu,
    },
    Step {
        name: "first_doorbell",
        what: "KVM_RUN from the payload's entry to its first doorbell: its boot, MMU and MTE set \
               up, the pages it touches faulted in",
        mte_only: false,
        time: |s| s.first_doorbell,
    },
    Step {
        name: "teardown",
        what: "closing the vCPU and the VM and unmapping guest RAM",
        mte_only: false,
        time: |s| s.teardown,
    },
];

/// The step's benchmarks: with MTE, then without (unless only a VM with MTE takes it).
fn of_step(step: &Step) -> Vec<(Declared, bool)> {
    let summary = |with: &str| {
        format!(
            "{} of a VM {with}, in a whole life of the VM (the other steps are not counted)",
            step.what
        )
    };
    let with = Declared::new(GROUP, step.name, WITH, summary(WITH));
    if step.mte_only {
        return vec![(with, true)];
    }
    let without = Declared::new(GROUP, step.name, WITHOUT, summary(WITHOUT));
    vec![
        (with.against(&without, "with MTE / without MTE"), true),
        (without, false),
    ]
}

pub fn declared() -> Vec<Declared> {
    STEPS
        .iter()
        .flat_map(of_step)
        .map(|(declared, _)| declared)
        .collect()
}

pub fn run(bench: &mut Bench, vmm: &KvmVmm) {
    for step in &STEPS {
        for (declared, mte) in of_step(step) {
            bench.measure(&declared, |iterations, _| {
                let mut counted = std::time::Duration::ZERO;
                for _ in 0..iterations {
                    counted += (step.time)(&vmm.timed_life(mte)?);
                }
                Ok::<_, VmmError>(counted)
            });
        }
    }
}
