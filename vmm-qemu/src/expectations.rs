//! What a QEMU version is known to do with MTE, as data: one entry per step QEMU may refuse or
//! get wrong, with the accelerator and the range of QEMU versions it covers, QEMU's own words
//! for it, the verdict it earns and where QEMU does it. A documented refusal (QEMU blocks the
//! migration of a KVM guest with MTE) is an xfail that quotes QEMU and names its version; a
//! known defect stays a fail, and its entry is the explanation the verdict gives.

use mte_results::Outcome;

use crate::binary::Version;
use crate::machine::Accel;

/// A step QEMU is asked to take for a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// QMP `migrate` of the guest (to a file).
    Migrate,
    /// The gdbstub's memory-tag packets (`qMemTags`, `QMemTags`, `qIsAddressTagged`).
    StubTagPackets,
}

/// One entry of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QemuExpectation {
    pub step: Step,
    pub accel: Accel,
    /// The first QEMU version it covers (inclusive).
    pub since: Version,
    /// The first version it no longer covers; `None` for every newer one.
    pub before: Option<Version>,
    /// What QEMU says, as it says it (a QMP error's description), or what happens.
    pub message: &'static str,
    /// Xfail for a documented refusal; fail for a defect.
    pub outcome: Outcome,
    /// Where QEMU does it, and why.
    pub source: &'static str,
}

const fn version(major: u32, minor: u32) -> Version {
    Version {
        major,
        minor,
        patch: 0,
    }
}

/// QEMU gained MTE for KVM guests in 9.2.
const KVM_MTE: Version = version(9, 2);

const TABLE: &[QemuExpectation] = &[
    QemuExpectation {
        step: Step::Migrate,
        accel: Accel::Kvm,
        since: KVM_MTE,
        before: None,
        message: "Live migration disabled due to MTE enabled",
        outcome: Outcome::Xfail,
        source: "target/arm/kvm.c, kvm_arm_enable_mte(): QEMU adds a migration blocker for every \
                 KVM guest with MTE, since it does not yet save or restore the guest's tags \
                 (KVM_ARM_MTE_COPY_TAGS); query-migrate lists it in blocked-reasons",
    },
    QemuExpectation {
        step: Step::StubTagPackets,
        accel: Accel::Kvm,
        since: KVM_MTE,
        before: None,
        message: "QEMU is killed by SIGSEGV",
        outcome: Outcome::Fail,
        source: "target/arm/gdbstub64.c: aarch64_cpu_register_gdb_commands() advertises \
                 memory-tagging+ whenever the CPU has MTE, and the handlers of qMemTags, \
                 QMemTags and qIsAddressTagged find the tags with allocation_tag_mem_probe() \
                 (target/arm/tcg/mte_helper.c), TCG's softmmu lookup, which a KVM guest does not \
                 have: QEMU dies of SIGSEGV",
    },
];

impl QemuExpectation {
    pub fn covers(&self, qemu: Version) -> bool {
        qemu >= self.since && self.before.is_none_or(|before| qemu < before)
    }

    /// The versions it covers, in words.
    pub fn versions(&self) -> String {
        match self.before {
            None => format!("QEMU {} and later", short(self.since)),
            Some(before) => format!("QEMU {} up to {}", short(self.since), short(before)),
        }
    }
}

fn short(version: Version) -> String {
    format!("{}.{}", version.major, version.minor)
}

/// The table.
pub fn table() -> &'static [QemuExpectation] {
    TABLE
}

/// The entry for `step` under `accel` on QEMU `qemu`, if the table has one.
pub fn lookup(step: Step, accel: Accel, qemu: Version) -> Option<&'static QemuExpectation> {
    TABLE
        .iter()
        .find(|e| e.step == step && e.accel == accel && e.covers(qemu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_under_kvm_is_refused_from_9_2_and_tcg_is_not_in_the_table() {
        let v10 = Version {
            major: 10,
            minor: 0,
            patch: 2,
        };
        let refused = lookup(Step::Migrate, Accel::Kvm, v10).unwrap();
        assert_eq!(refused.outcome, Outcome::Xfail);
        assert!(refused.message.contains("MTE enabled"));
        assert_eq!(refused.versions(), "QEMU 9.2 and later");
        assert!(lookup(Step::Migrate, Accel::Tcg, v10).is_none());
        assert!(lookup(Step::Migrate, Accel::Kvm, version(9, 1)).is_none());
    }

    #[test]
    fn each_step_has_at_most_one_entry_for_any_version() {
        for e in table() {
            for probe in [version(9, 2), version(10, 0), version(11, 1)] {
                let n = table()
                    .iter()
                    .filter(|o| o.step == e.step && o.accel == e.accel && o.covers(probe))
                    .count();
                assert!(n <= 1, "{:?} under {:?} on {probe}", e.step, e.accel);
            }
            assert!(matches!(e.outcome, Outcome::Xfail | Outcome::Fail));
        }
    }
}
