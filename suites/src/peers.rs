//! Where the suite's checks meet a peer's: kvm-unit-tests' arm/mte.c, which checks the three
//! tag-check fault modes with one read and one write each (six report lines). Each of its lines
//! names the conditions it reports on; the checks listed here compare every one of them (and
//! more), so on the same QEMU both must agree. The table is data for the run's closing lines,
//! which say how this suite's own checks fared, mapped to the peer's lines: kvm-unit-tests does
//! not run, and none of its code is used.

/// One report line of the peer and the checks of this suite that cover it.
pub struct PeerCheck {
    /// The peer's report line, e.g. `mte: sync: read`.
    pub peer: &'static str,
    /// What the peer's line requires, in words.
    pub requires: &'static str,
    /// This suite's checks that compare the same conditions.
    pub ours: &'static [&'static str],
}

/// kvm-unit-tests arm/mte.c (`-g mte`: entries mte-sync, mte-async, mte-asymm).
pub const KVM_UNIT_TESTS_MTE: &[PeerCheck] = &[
    PeerCheck {
        peer: "mte: sync: read",
        requires: "a load through a mismatched tag raises DFSC 0b010001, its destination is not \
                   written, TFSR_EL1 is 0",
        ours: &["faults::sync_mismatched_load_faults"],
    },
    PeerCheck {
        peer: "mte: sync: write",
        requires: "a store through a mismatched tag raises DFSC 0b010001, memory keeps its old \
                   value, TFSR_EL1 is 0",
        ours: &["faults::sync_mismatched_store_faults_and_writes_nothing"],
    },
    PeerCheck {
        peer: "mte: async: read",
        requires: "a load through a mismatched tag returns the data, and TFSR_EL1 is TF0 alone",
        ours: &["faults::async_mismatch_sets_tfsr_without_exception"],
    },
    PeerCheck {
        peer: "mte: async: write",
        requires: "a store through a mismatched tag is performed (memory holds the stored \
                   value), and TFSR_EL1 is TF0 alone",
        ours: &["faults::async_mismatch_sets_tfsr_without_exception"],
    },
    PeerCheck {
        peer: "mte: asymm: read",
        requires: "a load through a mismatched tag raises DFSC 0b010001, its destination is not \
                   written, TFSR_EL1 is 0",
        ours: &["faults::asymmetric_mismatched_load_faults"],
    },
    PeerCheck {
        peer: "mte: asymm: write",
        requires: "a store through a mismatched tag is performed (memory holds the stored \
                   value), and TFSR_EL1 is TF0 alone",
        ours: &["faults::asymmetric_mismatched_store_sets_tfsr"],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_line_is_covered_by_checks_that_exist() {
        let names: Vec<&str> = crate::all().iter().map(|s| s.name).collect();
        for line in KVM_UNIT_TESTS_MTE {
            assert!(!line.ours.is_empty(), "{} is not covered", line.peer);
            for check in line.ours {
                assert!(
                    names.contains(check),
                    "{} names unknown check {check}",
                    line.peer
                );
            }
        }
    }
}
