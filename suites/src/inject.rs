//! Fault injection: a wrapper around a VMM that corrupts the host's tag path, so that the suite
//! can show its tag comparisons turn red when tags go wrong.

use mte_protocol::{Command, GuestIds};
use mte_results::{Evidence, Outcome};

use crate::check::Finding;
use crate::vmm::{AbiVm, BootOptions, Guest, Reply, Vmm, VmmError};

/// What to break. Each injection breaks one path a verdict rests on; a check names the ones
/// that must turn it red ([`crate::Scenario::proven_by`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// The host's tag path: flip one tag (bit 3 of the middle granule's tag) in every tag map
    /// that crosses it, both when the host reads tags and when it writes them.
    CorruptTag,
    /// The guest's report: flip bit 3 of the middle byte of everything the host reads from the
    /// guest's bulk buffer (the tag maps and samples the guest wrote there).
    MisreadReport,
    /// The tag-check mode: every SCTLR_EL1.TCF the host asks for becomes the next one (none ->
    /// sync -> async -> asymmetric -> none), so the guest checks tags otherwise than the check
    /// believes.
    WrongTcf,
}

impl Injection {
    pub const ALL: [Injection; 3] = [
        Injection::CorruptTag,
        Injection::MisreadReport,
        Injection::WrongTcf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Injection::CorruptTag => "corrupt-tag",
            Injection::MisreadReport => "misread-report",
            Injection::WrongTcf => "wrong-tcf",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether a failed finding failed because of this injection: on a comparison the
    /// injection breaks, not on an error that would fail the check anyway. A corrupt tag must
    /// show as a differing tag map; the others as any comparison that went wrong.
    pub fn caught_by(self, finding: &Finding) -> bool {
        if finding.outcome != Outcome::Fail || !finding.refuted {
            return false;
        }
        match self {
            Injection::CorruptTag => finding.detail.iter().any(
                |evidence| matches!(evidence, Evidence::TagMaps { mismatches, .. } if !mismatches.is_empty()),
            ),
            Injection::MisreadReport | Injection::WrongTcf => true,
        }
    }

    /// Flip bit 3 of the middle byte: a tag (or a tag-sized report) that differs from the
    /// original in every case.
    fn flip_middle(bytes: &mut [u8]) {
        if let Some(byte) = bytes.get_mut(bytes.len() / 2) {
            *byte ^= 0x8;
        }
    }

    fn host_tags(self, tags: &mut [u8]) {
        if self == Injection::CorruptTag {
            Self::flip_middle(tags);
        }
    }

    fn guest_report(self, bytes: &mut [u8]) {
        if self == Injection::MisreadReport {
            Self::flip_middle(bytes);
        }
    }

    fn command_args(self, command: Command, args: &mut [u64]) {
        if self == Injection::WrongTcf && command == Command::SetTcf {
            if let Some(mode) = args.first_mut() {
                *mode = (*mode + 1) % 4;
            }
        }
    }
}

/// A VMM whose guests' host tag path is broken as `injection` says.
pub struct Injecting<'a> {
    pub inner: &'a dyn Vmm,
    pub injection: Injection,
}

impl Vmm for Injecting<'_> {
    fn lane(&self) -> &str {
        self.inner.lane()
    }

    fn boot(&self, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
        let inner = self.inner.boot(options)?;
        Ok(Box::new(InjectingGuest {
            inner,
            injection: self.injection,
        }))
    }

    fn abi_vm(&self, mte: bool) -> Result<Box<dyn AbiVm>, VmmError> {
        self.inner.abi_vm(mte)
    }

    fn kernel_release(&self) -> &str {
        self.inner.kernel_release()
    }

    fn mte_capable(&self) -> Result<(), VmmError> {
        self.inner.mte_capable()
    }
}

struct InjectingGuest {
    inner: Box<dyn Guest>,
    injection: Injection,
}

impl Guest for InjectingGuest {
    fn ids(&self) -> GuestIds {
        self.inner.ids()
    }
    fn exec(&mut self, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        let mut args = args.to_vec();
        self.injection.command_args(command, &mut args);
        self.inner.exec(command, &args)
    }
    fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError> {
        let mut bytes = self.inner.read_bulk(len)?;
        self.injection.guest_report(&mut bytes);
        Ok(bytes)
    }
    fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError> {
        self.inner.write_bulk(bytes)
    }
    fn host_read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        let mut tags = self.inner.host_read_tags(ipa, len)?;
        self.injection.host_tags(&mut tags);
        Ok(tags)
    }
    fn host_write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        let mut tags = tags.to_vec();
        self.injection.host_tags(&mut tags);
        self.inner.host_write_tags(ipa, &tags)
    }
    fn console(&self) -> String {
        self.inner.console()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupting_changes_exactly_one_tag() {
        let mut tags = vec![3u8; 9];
        Injection::CorruptTag.host_tags(&mut tags);
        assert_eq!(tags.iter().filter(|&&t| t != 3).count(), 1);
        // Each injection breaks its own path only.
        Injection::CorruptTag.guest_report(&mut tags);
        Injection::MisreadReport.host_tags(&mut tags);
        assert_eq!(tags.iter().filter(|&&t| t != 3).count(), 1);
        for injection in Injection::ALL {
            assert_eq!(Injection::parse(injection.name()), Some(injection));
        }
        assert_eq!(Injection::parse("nope"), None);
    }

    #[test]
    fn a_wrong_tcf_is_the_next_mode() {
        let mut args = [mte_protocol::tcf::ASYMMETRIC];
        Injection::WrongTcf.command_args(Command::SetTcf, &mut args);
        assert_eq!(args, [mte_protocol::tcf::NONE]);
        let mut load = [mte_protocol::tcf::SYNC];
        Injection::WrongTcf.command_args(Command::Load, &mut load);
        assert_eq!(load, [mte_protocol::tcf::SYNC]);
    }

    #[test]
    fn only_a_differing_tag_map_counts_as_caught() {
        let maps = |mismatches: Vec<usize>| Evidence::TagMaps {
            expected_from: "guest".into(),
            observed_from: "host".into(),
            ipa: 0,
            expected: "12".into(),
            observed: "12".into(),
            mismatches,
        };
        let caught = Finding {
            refuted: true,
            ..Finding::fail("differs").with(maps(vec![1]))
        };
        assert!(Injection::CorruptTag.caught_by(&caught));
        assert!(Injection::WrongTcf.caught_by(&caught));
        // A check that failed for another reason (no KVM, a timeout) proves nothing.
        assert!(!Injection::CorruptTag.caught_by(&Finding::fail("timeout")));
        let agreeing = Finding {
            refuted: true,
            ..Finding::fail("other").with(maps(vec![]))
        };
        assert!(!Injection::CorruptTag.caught_by(&agreeing));
        assert!(Injection::MisreadReport.caught_by(&agreeing));
    }
}
