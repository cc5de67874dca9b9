//! What a run produces: one [`Verdict`] per check, with its evidence, and the [`Environment`]
//! it ran in. Tag maps, the evidence most checks carry, are read in [`crate::tag_map`].

use serde::{Deserialize, Serialize};

use crate::tag_map::{differing_granules, tag_map_summary, write_text_lines, Comparison};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Expected and observed agreed, in a comparison that could have failed.
    Pass,
    /// They differed, or the check could not complete (timeout, guest panic, host error).
    Fail,
    /// The check cannot run here (no MTE, no KVM capability, a lane that lacks the step).
    Skip,
    /// A documented behaviour of an older kernel or VMM; the reason names the version that
    /// changed it.
    Xfail,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
            Outcome::Xfail => "xfail",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the VMM under test runs (see README.md); records keep the lane's name.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Lane {
    /// KVM inside an emulated arm64 machine (QEMU TCG with EL2 and MTE) running the kernel
    /// under test: the suite's default lane.
    #[default]
    Emulated,
    /// QEMU itself as the VMM: the payloads boot directly in qemu-system-aarch64.
    Qemu,
    /// QEMU with `-accel kvm` as the VMM, inside the emulated machine: Debian's arm64 QEMU
    /// on the kernel under test's KVM, driven by the runner there (the production pairing).
    QemuKvm,
    /// The runner natively on this machine, on its own KVM: an arm64 host with MTE.
    Host,
}

impl Lane {
    /// Every lane, in the order runs take them and reports list them.
    pub const ALL: [Lane; 4] = [Lane::Emulated, Lane::Qemu, Lane::QemuKvm, Lane::Host];

    /// The lane's name, as `--lane` takes it and records keep it.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Emulated => "emulated",
            Lane::Qemu => "qemu",
            Lane::QemuKvm => "qemu-kvm",
            Lane::Host => "host",
        }
    }

    /// Whether the suite's runner is the VMM (on a KVM) in this lane, rather than QEMU.
    pub fn runner_is_vmm(self) -> bool {
        match self {
            Lane::Emulated | Lane::Host => true,
            Lane::Qemu | Lane::QemuKvm => false,
        }
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Lane {
    type Err = String;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        Lane::ALL
            .into_iter()
            .find(|lane| lane.name() == word)
            .ok_or_else(|| {
                let names: Vec<_> = Lane::ALL.iter().map(|l| l.name()).collect();
                format!("unknown lane `{word}`; lanes: {}", names.join(", "))
            })
    }
}

/// The host fact that holds the SHA-256 of the kernel image a boot started from.
pub const KERNEL_IMAGE_SHA256: &str = "kernel.image_sha256";

/// Name prefix of the runner's fault-injection proofs (`fault_injection::MODE::CHECK`), which
/// pass only when the injection turned their check red; the test gate looks for them.
pub const FAULT_INJECTION_PROOFS: &str = "fault_injection::";

/// One line of `results.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub schema: u32,
    /// The check's full name, e.g. `tags::guest_stg_matches_host_fetch`.
    pub test: String,
    pub lane: Lane,
    /// The release of the kernel under test (`uname -r` where the VMM ran).
    pub kernel: String,
    /// Which boot of its lane in the run it came from, counted from 1 (`--kernel 6.1,6.12,6.1`
    /// boots the emulated lane three times; the qemu and host lanes boot once). With the lane
    /// it tells the same kernel booted twice apart. The runner does not know it: xtask stamps
    /// it on what arrives. 0 until stamped, and in files written before boots were recorded
    /// (loading numbers those: see [`crate::boot::number_unstamped`]).
    #[serde(default)]
    pub boot: u32,
    pub outcome: Outcome,
    /// One line a person reads first: what held, what differed, or why it was skipped.
    pub reason: String,
    /// The evidence behind the outcome.
    pub detail: Vec<Evidence>,
    /// Wall time of the check, in milliseconds.
    pub duration_ms: f64,
}

impl Verdict {
    /// Whether this verdict is a fault-injection proof (`fault_injection::MODE::CHECK`).
    pub fn is_fault_injection_proof(&self) -> bool {
        self.test.starts_with(FAULT_INJECTION_PROOFS)
    }

    /// The outcome as the result formats count it. A fault-injection proof whose check was
    /// xfail proved nothing, so it counts as a skip, never as the pass an xfail counts as
    /// elsewhere; runners now send it as a skip, older runs recorded it as xfail.
    pub fn counted_outcome(&self) -> Outcome {
        match self.outcome {
            Outcome::Xfail if self.is_fault_injection_proof() => Outcome::Skip,
            outcome => outcome,
        }
    }
}

/// A planned check that never reported a verdict: its boot stopped (a hung or panicked kernel,
/// a killed machine) before it ran or while it ran. Kept beside the verdicts, never as one:
/// it has no outcome, and every format lists it as not run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotRun {
    pub test: String,
    pub lane: Lane,
    pub boot: u32,
    pub kernel: String,
    /// It had started when its boot stopped: what was running then.
    pub was_running: bool,
}

impl NotRun {
    /// Why it has no verdict, in words.
    pub fn reason(&self) -> &'static str {
        if self.was_running {
            "did not finish: it was running when its machine stopped"
        } else {
            "did not run: its machine stopped before it started"
        }
    }
}

/// Evidence kept with a verdict, enough to judge it without rerunning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// Two tag maps of the same range, one hex digit per 16-byte granule.
    TagMaps {
        /// What each side is, e.g. "guest LDG" against "host KVM_ARM_MTE_COPY_TAGS".
        expected_from: String,
        observed_from: String,
        /// Guest physical address of the first granule.
        ipa: u64,
        expected: String,
        observed: String,
        /// Indices of the granules that differ.
        mismatches: Vec<usize>,
    },
    /// An exception the guest took (or was expected to take).
    Fault {
        esr: u64,
        far: u64,
        elr: u64,
        /// ESR decoded into words, e.g. "data abort, same EL: synchronous tag check fault, read".
        decoded: String,
    },
    /// A system call's result against the expected one.
    Errno {
        call: String,
        expected: String,
        observed: String,
    },
    /// Any other expected-against-observed pair.
    Values {
        what: String,
        expected: String,
        observed: String,
    },
    /// Free text: the guest console, a reason, a seed to replay.
    Note { text: String },
    /// The lines the kernel logged (/dev/kmsg) while the check ran.
    KernelLog { lines: Vec<KernelLine> },
}

/// One line of the kernel's log, as a check's evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLine {
    /// `[seconds.micros] text`, as dmesg prints it.
    pub text: String,
    /// Other checks that were running when the kernel logged it: the line is theirs too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_running: Vec<String>,
}

impl std::fmt::Display for KernelLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)?;
        if !self.also_running.is_empty() {
            write!(f, "  (also running: {})", self.also_running.join(", "))?;
        }
        Ok(())
    }
}

/// Where a run happened; written once per run to `run.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub lane: Lane,
    /// The boot of the lane this environment is of, as [`Verdict::boot`].
    #[serde(default)]
    pub boot: u32,
    /// `uname -r` of the kernel under test.
    pub kernel_release: String,
    /// `uname -v`: with the image's hash (the host fact [`KERNEL_IMAGE_SHA256`]), what tells
    /// two builds of one release apart.
    pub kernel_version: String,
    /// `uname -m`.
    pub machine: String,
    pub runner_version: String,
    /// What the runner found: MTE level, KVM API version and capabilities, MIDR, ...
    pub features: Vec<Feature>,
    /// Filled in by the host side: QEMU's version, the kernel package, the run's command line.
    pub host: Vec<Feature>,
}

/// A named fact about the environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    pub value: String,
}

impl Feature {
    pub fn new(name: impl Into<String>, value: impl ToString) -> Self {
        Feature {
            name: name.into(),
            value: value.to_string(),
        }
    }
}

/// Counts of outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
    pub xfail: usize,
}

impl Tally {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Pass => self.pass += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Skip => self.skip += 1,
            Outcome::Xfail => self.xfail += 1,
        }
    }

    pub fn of<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>) -> Self {
        let mut tally = Tally::default();
        for v in verdicts {
            tally.add(v.outcome);
        }
        tally
    }

    pub fn total(&self) -> usize {
        self.pass + self.fail + self.skip + self.xfail
    }
}

/// The totals line, `N passed, N failed, N skipped, N xfailed`, in the form test harnesses print.
impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped, {} xfailed",
            self.pass, self.fail, self.skip, self.xfail
        )
    }
}

/// Evidence as plain text, for the terminal, JUnit and TAP: several lines for a tag map, one otherwise.
impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Evidence::TagMaps {
                expected_from,
                observed_from,
                ipa,
                expected,
                observed,
                mismatches,
            } => {
                let compared = Comparison::of(expected, observed, mismatches);
                let (granules, differing) = (compared.granules, &compared.differing);
                if differing.is_empty() {
                    writeln!(
                        f,
                        "tag maps agree over {granules} granules from IPA {ipa:#x}"
                    )?;
                } else {
                    let count = compared.differing_count();
                    writeln!(
                        f,
                        "tag maps differ in {count} of {granules} granules from IPA {ipa:#x}"
                    )?;
                }
                writeln!(f, "  E = {expected_from}")?;
                write!(f, "  O = {observed_from}")?;
                write_text_lines(f, *ipa, expected, observed, differing)
            }
            Evidence::Fault {
                esr,
                far,
                elr,
                decoded,
            } => {
                write!(
                    f,
                    "fault: ESR {esr:#010x} FAR {far:#018x} ELR {elr:#018x}: {decoded}"
                )
            }
            Evidence::Errno {
                call,
                expected,
                observed,
            } => {
                write!(f, "{call}: expected {expected}, observed {observed}")
            }
            Evidence::Values {
                what,
                expected,
                observed,
            } => {
                write!(f, "{what}: expected {expected}, observed {observed}")
            }
            Evidence::Note { text } => f.write_str(text),
            Evidence::KernelLog { lines } => {
                let shared = lines.iter().filter(|l| !l.also_running.is_empty()).count();
                write!(f, "kernel log while it ran: {} lines", lines.len())?;
                if shared > 0 {
                    write!(f, " ({shared} logged while other checks ran too)")?;
                }
                for line in lines {
                    write!(f, "\n  {line}")?;
                }
                Ok(())
            }
        }
    }
}

/// Tag maps of at most this many granules (16 KiB of memory) are kept whole in evidence. Longer
/// ones are kept in brief where their digits tell nothing more: maps that agree, and the maps
/// of an injected failure that a fault-injection proof caught. Megabytes of digits would only
/// slow the emulated machine's console, which carries every record at a few hundred KiB/s.
pub const TAG_MAP_KEPT_WHOLE: usize = 1024;

impl Evidence {
    /// This evidence, with tag maps longer than [`TAG_MAP_KEPT_WHOLE`] granules kept as a
    /// summary of each side ([`tag_map_summary`]) and where they differ.
    pub fn with_long_tag_maps_in_brief(self) -> Evidence {
        match self {
            Evidence::TagMaps {
                expected_from,
                observed_from,
                ipa,
                expected,
                observed,
                mismatches,
            } if expected.len().max(observed.len()) > TAG_MAP_KEPT_WHOLE => {
                let differing = differing_granules(&expected, &observed, &mismatches);
                let mut observed_summary = tag_map_summary(&observed);
                match differing.first() {
                    Some(first) => observed_summary.push_str(&format!(
                        "; differs in {} granules, the first at granule {first}",
                        differing.len()
                    )),
                    None => observed_summary.push_str("; agrees in every granule"),
                }
                Evidence::Values {
                    what: format!(
                        "tag maps from IPA {ipa:#x} in brief (longer than {TAG_MAP_KEPT_WHOLE} \
                         granules): {observed_from} against {expected_from}"
                    ),
                    expected: tag_map_summary(&expected),
                    observed: observed_summary,
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lane;

    #[test]
    fn long_tag_maps_are_kept_in_brief_and_short_ones_whole() {
        let maps = |expected: &str, observed: &str, mismatches: Vec<usize>| Evidence::TagMaps {
            expected_from: "guest STG".into(),
            observed_from: "host".into(),
            ipa: 0x4100_0000,
            expected: expected.into(),
            observed: observed.into(),
            mismatches,
        };
        let short = maps("0123", "0123", vec![]);
        assert_eq!(short.clone().with_long_tag_maps_in_brief(), short);
        let long = "12".repeat(TAG_MAP_KEPT_WHOLE);
        match maps(&long, &long, vec![]).with_long_tag_maps_in_brief() {
            Evidence::Values {
                what,
                expected,
                observed,
            } => {
                assert!(
                    what.starts_with("tag maps from IPA 0x41000000 in brief"),
                    "{what}"
                );
                assert!(what.ends_with("host against guest STG"), "{what}");
                assert!(expected.starts_with("2048 granules; tag 1 ×1024, tag 2 ×1024; CRC-32 0x"));
                assert_eq!(observed, format!("{expected}; agrees in every granule"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let zeros = "0".repeat(2 * TAG_MAP_KEPT_WHOLE);
        let all: Vec<usize> = (0..2 * TAG_MAP_KEPT_WHOLE).collect();
        match maps(&long, &zeros, all).with_long_tag_maps_in_brief() {
            Evidence::Values { observed, .. } => assert!(
                observed.ends_with("differs in 2048 granules, the first at granule 0"),
                "{observed}"
            ),
            other => panic!("unexpected {other:?}"),
        }
        assert_ne!(tag_map_summary("12"), tag_map_summary("21"));
    }

    #[test]
    fn verdict_json_has_the_promised_fields() {
        let v = Verdict {
            schema: crate::SCHEMA_VERSION,
            test: "t".into(),
            lane: Lane::Emulated,
            kernel: "6.12".into(),
            boot: 2,
            outcome: Outcome::Xfail,
            reason: "r".into(),
            detail: vec![Evidence::Note { text: "n".into() }],
            duration_ms: 1.5,
        };
        let json: serde_json::Value = serde_json::to_value(&v).unwrap();
        for key in ["test", "lane", "kernel", "boot", "outcome", "detail"] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        assert_eq!(json["outcome"], "xfail");
        assert_eq!(json["detail"][0]["kind"], "note");
        let back: Verdict = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn tally_prints_the_totals_line() {
        let tally = Tally {
            pass: 3,
            fail: 1,
            skip: 2,
            xfail: 0,
        };
        assert_eq!(
            tally.to_string(),
            "3 passed, 1 failed, 2 skipped, 0 xfailed"
        );
    }

    #[test]
    fn tag_map_text_points_at_the_differences() {
        let evidence = Evidence::TagMaps {
            expected_from: "guest LDG".into(),
            observed_from: "host copy".into(),
            ipa: 0x4000_1000,
            expected: "0123".into(),
            observed: "0f23".into(),
            mismatches: vec![1],
        };
        let text = evidence.to_string();
        assert!(
            text.starts_with("tag maps differ in 1 of 4 granules from IPA 0x40001000"),
            "{text}"
        );
        assert!(text.contains("0x0000000040001000 E 0123\n"), "{text}");
        assert!(text.contains(" O 0f23\n"), "{text}");
        assert!(text.ends_with("    ^"), "{text}");
    }

    #[test]
    fn long_tag_maps_show_only_the_lines_that_differ() {
        let expected = "0".repeat(64 * 10);
        let mut observed = expected.clone();
        observed.replace_range(64 * 7 + 3..64 * 7 + 4, "5");
        let evidence = Evidence::TagMaps {
            expected_from: "a".into(),
            observed_from: "b".into(),
            ipa: 0,
            expected,
            observed,
            mismatches: vec![64 * 7 + 3],
        };
        let text = evidence.to_string();
        assert_eq!(text.matches(" E 0").count(), 1, "{text}");
        assert!(text.contains(&format!("{:#018x} E", 64 * 7 * 16)), "{text}");
    }
}
