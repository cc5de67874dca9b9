//! Fault injection: a wrapper around a VMM that corrupts the host's tag path, so that the suite
//! can show its tag comparisons turn red when tags go wrong.

use mte_protocol::{Command, GuestIds};
use mte_results::{Evidence, Outcome};

use crate::check::Finding;
use crate::vmm::{AbiVm, BootOptions, Guest, Reply, Vmm, VmmError};

/// What to break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// Flip one tag in every tag map that crosses the host path: the middle granule of each
    /// read (KVM_ARM_TAGS_FROM_GUEST) and of each write (KVM_ARM_TAGS_TO_GUEST).
    CorruptTag,
}

impl Injection {
    pub const ALL: [Injection; 1] = [Injection::CorruptTag];

    pub fn name(self) -> &'static str {
        match self {
            Injection::CorruptTag => "corrupt-tag",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether a failed finding failed because of this injection: on a comparison the
    /// injection breaks, not on an error that would fail the check anyway.
    pub fn caught_by(self, finding: &Finding) -> bool {
        finding.outcome == Outcome::Fail
            && finding
                .detail
                .iter()
                .any(|evidence| match (self, evidence) {
                    (Injection::CorruptTag, Evidence::TagMaps { mismatches, .. }) => {
                        !mismatches.is_empty()
                    }
                    _ => false,
                })
    }

    fn corrupt(self, tags: &mut [u8]) {
        match self {
            Injection::CorruptTag => {
                if let Some(tag) = tags.get_mut(tags.len() / 2) {
                    *tag ^= 0x8;
                }
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
        self.inner.exec(command, args)
    }
    fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError> {
        self.inner.read_bulk(len)
    }
    fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError> {
        self.inner.write_bulk(bytes)
    }
    fn host_read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        let mut tags = self.inner.host_read_tags(ipa, len)?;
        self.injection.corrupt(&mut tags);
        Ok(tags)
    }
    fn host_write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        let mut tags = tags.to_vec();
        self.injection.corrupt(&mut tags);
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
        Injection::CorruptTag.corrupt(&mut tags);
        assert_eq!(tags.iter().filter(|&&t| t != 3).count(), 1);
        assert_eq!(Injection::parse("corrupt-tag"), Some(Injection::CorruptTag));
        assert_eq!(Injection::parse("nope"), None);
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
        let caught = Finding::fail("differs").with(maps(vec![1]));
        assert!(Injection::CorruptTag.caught_by(&caught));
        // A check that failed for another reason (no KVM, a timeout) proves nothing.
        assert!(!Injection::CorruptTag.caught_by(&Finding::fail("timeout")));
        let agreeing = Finding::fail("other").with(maps(vec![]));
        assert!(!Injection::CorruptTag.caught_by(&agreeing));
    }
}
