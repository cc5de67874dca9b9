//! Fault injection: a wrapper around a VMM that corrupts the host's tag path, so that the suite
//! can show its tag comparisons turn red when tags go wrong.

use mte_protocol::{Command, GuestIds};
use mte_results::{Evidence, Lane, Outcome};

use crate::check::Finding;
use crate::host_mm::{
    Advice, Backing, ChildReport, ForkPlan, ForkedChild, KsmKnob, KsmState, PageState, Protection,
    SwapDevice, TagPeer,
};
use crate::migration_plan::{
    IncomingStream, MigrationPlan, MigrationReport, SavedStream, StreamFault,
};
use crate::race_plan::{RaceLog, RacePlan};
use crate::vmm::{
    AbiVm, BootOptions, CopyTagsArgs, Guest, HostMte, IpaProbe, IpaSizes, Reply, StubTagPackets,
    SveOffer, Vmm, VmmError, VmmMigration,
};

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
    /// The tag-check mode: every SCTLR_EL1.TCF and TCF0 the host asks for becomes the next one
    /// (none -> sync -> async -> asymmetric -> none), so the guest checks tags otherwise than
    /// the check believes.
    WrongTcf,
    /// Migration: page records travel without their tags.
    MigrateDropTags,
    /// Migration: page records carry all-zero tag bytes.
    MigrateZeroTags,
    /// Migration: each page's tags travel shifted by one granule.
    MigrateShiftTags,
    /// Pre-copy: a page resent in a later round carries the tags of its first round.
    MigrateStaleTags,
    /// Post-copy: the guest is woken before a page's tags are in place.
    MigrateLateTags,
    /// The ABI path: every KVM_ARM_MTE_COPY_TAGS reaches the kernel with half its length,
    /// KVM_ENABLE_CAP(KVM_CAP_ARM_MTE) answers success whatever the kernel said, and a VM asked
    /// for an IPA size gets 4 bits fewer: a VMM that gets its requests and its errors wrong.
    TamperAbi,
    /// The VMM's deadline: a guest given a deadline runs under five times that.
    LateDeadline,
    /// The kernel's voice: the runner writes a line with `WARNING:` into the kernel's log
    /// (/dev/kmsg) while the check runs, as a kernel WARN_ON would print.
    KernelWarn,
    /// The guest's ID registers as the host reads them: ID_AA64PFR1_EL1.MTE one lower (MTE3
    /// shown as MTE2), as a kernel that hides a level of MTE from its guests would show it.
    LowerMteLevel,
    /// The guest's EL0 MTE state: before every `Nop` (the exits a check makes on purpose) and
    /// after every migration, SCTLR_EL1.TCF0 is set to none and TFSRE0_EL1 cleared, as a KVM
    /// that lost them across an exit, a vcpu_put/vcpu_load or a migration would leave them.
    ResetEl0State,
    /// The fault-priority accesses: every `PriorityAccess` pointer is rounded down to its
    /// 8-byte access size, so the access is aligned and within one granule, as a VMM or CPU
    /// that realigned it would make it.
    AlignedAccess,
}

impl Injection {
    pub const ALL: [Injection; 14] = [
        Injection::CorruptTag,
        Injection::MisreadReport,
        Injection::WrongTcf,
        Injection::MigrateDropTags,
        Injection::MigrateZeroTags,
        Injection::MigrateShiftTags,
        Injection::MigrateStaleTags,
        Injection::MigrateLateTags,
        Injection::TamperAbi,
        Injection::LateDeadline,
        Injection::KernelWarn,
        Injection::LowerMteLevel,
        Injection::ResetEl0State,
        Injection::AlignedAccess,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Injection::CorruptTag => "corrupt-tag",
            Injection::MisreadReport => "misread-report",
            Injection::WrongTcf => "wrong-tcf",
            Injection::MigrateDropTags => "migrate-drop-tags",
            Injection::MigrateZeroTags => "migrate-zero-tags",
            Injection::MigrateShiftTags => "migrate-shift-tags",
            Injection::MigrateStaleTags => "migrate-stale-tags",
            Injection::MigrateLateTags => "migrate-late-tags",
            Injection::TamperAbi => "tamper-abi",
            Injection::LateDeadline => "late-deadline",
            Injection::KernelWarn => "kernel-warn",
            Injection::LowerMteLevel => "lower-mte-level",
            Injection::ResetEl0State => "reset-el0-state",
            Injection::AlignedAccess => "aligned-access",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The fault a migration stream suffers under this injection.
    pub fn stream_fault(self) -> Option<StreamFault> {
        Some(match self {
            Injection::MigrateDropTags => StreamFault::DropTags,
            Injection::MigrateZeroTags => StreamFault::ZeroTags,
            Injection::MigrateShiftTags => StreamFault::ShiftTags,
            Injection::MigrateStaleTags => StreamFault::StaleTags,
            Injection::MigrateLateTags => StreamFault::LateTags,
            Injection::CorruptTag
            | Injection::MisreadReport
            | Injection::WrongTcf
            | Injection::TamperAbi
            | Injection::LateDeadline
            | Injection::KernelWarn
            | Injection::LowerMteLevel
            | Injection::ResetEl0State
            | Injection::AlignedAccess => return None,
        })
    }

    /// Whether a failed finding failed because of this injection: on a comparison the
    /// injection breaks, not on an error that would fail the check anyway. A corrupt tag, or
    /// tags broken on their way through a migration, must show as a differing tag map; the
    /// others as any comparison that went wrong.
    pub fn caught_by(self, finding: &Finding) -> bool {
        if finding.outcome != Outcome::Fail || !finding.refuted {
            return false;
        }
        match self {
            Injection::MisreadReport
            | Injection::WrongTcf
            | Injection::TamperAbi
            | Injection::LateDeadline
            | Injection::LowerMteLevel
            | Injection::ResetEl0State
            | Injection::AlignedAccess => true,
            // The kernel's warning, heard while the check ran, must be what failed it.
            Injection::KernelWarn => finding.detail.iter().any(|evidence| {
                matches!(evidence, Evidence::KernelLog { lines }
                    if lines.iter().any(|l| mte_results::kernel_log::is_warning(&l.text)))
            }),
            _ => finding.detail.iter().any(
                |evidence| matches!(evidence, Evidence::TagMaps { mismatches, .. } if !mismatches.is_empty()),
            ),
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

    /// Tags as the host's tag path reads them.
    fn host_read(self, tags: Result<Vec<u8>, VmmError>) -> Result<Vec<u8>, VmmError> {
        let mut tags = tags?;
        self.host_tags(&mut tags);
        Ok(tags)
    }

    /// Tags as the host's tag path writes them.
    fn host_written(self, tags: &[u8]) -> Vec<u8> {
        let mut tags = tags.to_vec();
        self.host_tags(&mut tags);
        tags
    }

    fn guest_report(self, bytes: &mut [u8]) {
        if self == Injection::MisreadReport {
            Self::flip_middle(bytes);
        }
    }

    fn guest_ids(self, mut ids: GuestIds) -> GuestIds {
        if self == Injection::LowerMteLevel && ids.mte_level() > 0 {
            ids.id_aa64pfr1_el1 -= 1 << 8;
        }
        ids
    }

    /// Under `reset-el0-state`: reset the guest's EL0 MTE state (TCF0 none, TFSRE0_EL1 0) as
    /// a VMM that lost it would. What the guest answers is of no concern: a guest without MTE
    /// refuses, and has no such state to lose.
    fn reset_el0_state(self, guest: &mut dyn Guest) -> Result<(), VmmError> {
        if self == Injection::ResetEl0State {
            guest.exec(Command::SetTcf0, &[mte_protocol::tcf::NONE])?;
        }
        Ok(())
    }

    fn command_args(self, command: Command, args: &mut [u64]) {
        if self == Injection::WrongTcf && matches!(command, Command::SetTcf | Command::SetTcf0) {
            if let Some(mode) = args.first_mut() {
                *mode = (*mode + 1) % 4;
            }
        }
        if self == Injection::AlignedAccess && command == Command::PriorityAccess {
            if let Some(ptr) = args.first_mut() {
                *ptr &= !7;
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
    fn lane(&self) -> Lane {
        self.inner.lane()
    }

    fn boot(&self, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
        let mut options = options.clone();
        if self.injection == Injection::LateDeadline {
            options.deadline = options.deadline.map(|d| d * 5);
        }
        let inner = self.inner.boot(&options)?;
        Ok(Box::new(InjectingGuest {
            inner,
            injection: self.injection,
        }))
    }

    fn abi_vm(&self, mte: bool) -> Result<Box<dyn AbiVm>, VmmError> {
        let inner = self.inner.abi_vm(mte)?;
        Ok(match self.injection {
            Injection::TamperAbi => Box::new(TamperingAbiVm { inner }),
            _ => inner,
        })
    }

    fn kernel_release(&self) -> &str {
        self.inner.kernel_release()
    }

    fn mte_capable(&self) -> Result<(), VmmError> {
        self.inner.mte_capable()
    }

    /// The stream's fault, if any, breaks the tags as the stream is read: the restoring side
    /// breaks its own copy, and the stream another kernel saved stays whole.
    fn restore(
        &self,
        stream: &[u8],
        fault: Option<StreamFault>,
    ) -> Result<Box<dyn Guest>, VmmError> {
        let fault = self.injection.stream_fault().or(fault);
        Ok(Box::new(InjectingGuest {
            inner: self.inner.restore(stream, fault)?,
            injection: self.injection,
        }))
    }

    /// Nothing made under an injection leaves the run's kernel: the next kernel must find the
    /// artifact of the run without one.
    fn keep_artifact(&self, _name: &str, _bytes: &[u8]) -> Result<bool, VmmError> {
        Ok(false)
    }

    fn incoming_stream(&self, name: &str) -> Result<Option<IncomingStream>, VmmError> {
        self.inner.incoming_stream(name)
    }

    fn ipa_sizes(&self) -> Result<IpaSizes, VmmError> {
        self.inner.ipa_sizes()
    }

    fn host_mte(&self) -> Result<HostMte, VmmError> {
        self.inner.host_mte()
    }

    fn sve_offer(&self) -> Result<SveOffer, VmmError> {
        self.inner.sve_offer()
    }

    fn under_injection(&self) -> bool {
        true
    }

    fn without_injection(&self) -> &dyn Vmm {
        self.inner.without_injection()
    }

    /// Under `tamper-abi` the VM gets an IPA space a sixteenth of the one asked for (4 bits
    /// fewer, never under KVM's minimum of 32): a VMM that gets its request wrong.
    fn ipa_probe(&self, bits: u32, top: u64) -> Result<IpaProbe, VmmError> {
        let bits = match self.injection {
            Injection::TamperAbi => bits.saturating_sub(4).max(32),
            _ => bits,
        };
        self.inner.ipa_probe(bits, top)
    }
}

struct InjectingGuest {
    inner: Box<dyn Guest>,
    injection: Injection,
}

impl Guest for InjectingGuest {
    fn ids(&self) -> GuestIds {
        self.injection.guest_ids(self.inner.ids())
    }
    fn exec(&mut self, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        if command == Command::Nop {
            self.injection.reset_el0_state(self.inner.as_mut())?;
        }
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
        self.injection
            .host_read(self.inner.host_read_tags(ipa, len))
    }
    fn host_write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        self.inner
            .host_write_tags(ipa, &self.injection.host_written(tags))
    }
    fn console(&self) -> String {
        self.inner.console()
    }
    fn host_tag_view(&self) -> Option<String> {
        self.inner.host_tag_view()
    }
    fn copy_tags_raw(
        &mut self,
        mut args: CopyTagsArgs,
        buffer: &mut [u8],
        readable: Option<usize>,
    ) -> Result<Result<i64, i32>, VmmError> {
        if self.injection == Injection::TamperAbi {
            args.length /= 2;
        }
        self.inner.copy_tags_raw(args, buffer, readable)
    }
    /// The tag the stub is asked to write goes through the broken host tag path.
    fn stub_tag_packets(&mut self, probe: Option<(u64, u8)>) -> Result<StubTagPackets, VmmError> {
        let probe = probe.map(|(ipa, tag)| (ipa, self.injection.host_written(&[tag])[0]));
        self.inner.stub_tag_packets(probe)
    }
    fn vcpus(&self) -> usize {
        self.inner.vcpus()
    }
    fn exec_on(&mut self, vcpu: usize, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        let mut args = args.to_vec();
        self.injection.command_args(command, &mut args);
        self.inner.exec_on(vcpu, command, &args)
    }
    fn read_bulk_on(&mut self, vcpu: usize, len: usize) -> Result<Vec<u8>, VmmError> {
        let mut bytes = self.inner.read_bulk_on(vcpu, len)?;
        self.injection.guest_report(&mut bytes);
        Ok(bytes)
    }
    fn write_bulk_on(&mut self, vcpu: usize, bytes: &[u8]) -> Result<(), VmmError> {
        self.inner.write_bulk_on(vcpu, bytes)
    }
    fn ram_backing(&self) -> Result<Backing, VmmError> {
        self.inner.ram_backing()
    }
    fn madvise(&mut self, ipa: u64, len: u64, advice: Advice) -> Result<(), VmmError> {
        self.inner.madvise(ipa, len, advice)
    }
    fn protect(&mut self, ipa: u64, len: u64, prot: Protection) -> Result<(), VmmError> {
        self.inner.protect(ipa, len, prot)
    }
    fn page_states(&mut self, ipa: u64, len: u64) -> Result<Vec<PageState>, VmmError> {
        self.inner.page_states(ipa, len)
    }
    fn swap_devices(&self) -> Result<Vec<SwapDevice>, VmmError> {
        self.inner.swap_devices()
    }
    fn vmstat(&self) -> Result<Vec<(String, u64)>, VmmError> {
        self.inner.vmstat()
    }
    fn swap_off_and_on(&mut self, device: &SwapDevice) -> Result<std::time::Duration, VmmError> {
        self.inner.swap_off_and_on(device)
    }
    fn ksm_state(&self) -> Result<KsmState, VmmError> {
        self.inner.ksm_state()
    }
    fn ksm_set(&mut self, knob: KsmKnob, value: u64) -> Result<(), VmmError> {
        self.inner.ksm_set(knob, value)
    }
    fn fork(&mut self, plan: &ForkPlan) -> Result<Box<dyn ForkedChild>, VmmError> {
        Ok(Box::new(InjectingChild {
            inner: self.inner.fork(plan)?,
            injection: self.injection,
        }))
    }
    fn tag_peer(&mut self) -> Result<Box<dyn TagPeer>, VmmError> {
        Ok(Box::new(InjectingPeer {
            inner: self.inner.tag_peer()?,
            injection: self.injection,
        }))
    }
    fn race(&mut self, plan: &RacePlan) -> Result<RaceLog, VmmError> {
        let mut plan = plan.clone();
        for part in &mut plan.vcpus {
            self.injection.command_args(part.command, &mut part.args);
        }
        if let Some(tags) = plan.host.tags_mut() {
            self.injection.host_tags(tags);
        }
        let mut log = self.inner.race(&plan)?;
        for (_, tags) in &mut log.reads {
            self.injection.host_tags(tags);
        }
        Ok(log)
    }
    fn migrate(self: Box<Self>, plan: &MigrationPlan) -> Result<Box<dyn Guest>, VmmError> {
        let mut plan = plan.clone();
        if let Some(fault) = self.injection.stream_fault() {
            plan.fault = Some(fault);
        }
        // The destination's host tag path and reports stay broken as the source's were.
        let mut inner = self.inner.migrate(&plan)?;
        self.injection.reset_el0_state(inner.as_mut())?;
        Ok(Box::new(InjectingGuest {
            inner,
            injection: self.injection,
        }))
    }
    fn migration_report(&mut self) -> Result<MigrationReport, VmmError> {
        self.inner.migration_report()
    }
    fn save(self: Box<Self>, fault: Option<StreamFault>) -> Result<SavedStream, VmmError> {
        self.inner.save(self.injection.stream_fault().or(fault))
    }
    fn migrate_by_vmm(self: Box<Self>) -> Result<(Box<dyn Guest>, VmmMigration), VmmError> {
        let (inner, migration) = self.inner.migrate_by_vmm()?;
        Ok((
            Box::new(InjectingGuest {
                inner,
                injection: self.injection,
            }),
            migration,
        ))
    }
}

/// A VM whose ABI calls a broken VMM makes: half the length asked for, and every
/// KVM_ENABLE_CAP reported done.
struct TamperingAbiVm {
    inner: Box<dyn AbiVm>,
}

impl AbiVm for TamperingAbiVm {
    fn copy_tags_raw(&mut self, mut args: CopyTagsArgs, buffer: &mut [u8]) -> Result<i64, i32> {
        args.length /= 2;
        self.inner.copy_tags_raw(args, buffer)
    }
    fn enable_mte(&mut self) -> Result<(), i32> {
        let _ = self.inner.enable_mte();
        Ok(())
    }
    fn create_vcpu(&mut self) -> Result<(), i32> {
        self.inner.create_vcpu()
    }
    fn ram(&self) -> (u64, u64) {
        self.inner.ram()
    }
    fn page_size(&self) -> u64 {
        self.inner.page_size()
    }
}

/// A forked child whose tag reports come through the broken host tag path.
struct InjectingChild {
    inner: Box<dyn ForkedChild>,
    injection: Injection,
}

impl ForkedChild for InjectingChild {
    fn pid(&self) -> u32 {
        self.inner.pid()
    }
    fn finish(self: Box<Self>) -> Result<ChildReport, VmmError> {
        let mut report = self.inner.finish()?;
        for tags in [
            &mut report.tags_at_fork,
            &mut report.tags_after_own_writes,
            &mut report.tags_after_parent,
        ] {
            self.injection.host_tags(tags);
        }
        Ok(report)
    }
}

/// A second VM whose tag copies go through the broken host tag path.
struct InjectingPeer {
    inner: Box<dyn TagPeer>,
    injection: Injection,
}

impl TagPeer for InjectingPeer {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        self.injection.host_read(self.inner.read_tags(ipa, len))
    }
    fn write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        self.inner
            .write_tags(ipa, &self.injection.host_written(tags))
    }
    fn read_data(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        self.inner.read_data(ipa, len)
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
    fn only_migration_injections_break_the_stream() {
        let faulting: Vec<_> = Injection::ALL
            .into_iter()
            .filter_map(Injection::stream_fault)
            .collect();
        assert_eq!(faulting.len(), 5);
        assert_eq!(Injection::CorruptTag.stream_fault(), None);
        assert_eq!(
            Injection::parse("migrate-late-tags").and_then(Injection::stream_fault),
            Some(StreamFault::LateTags)
        );
    }

    #[test]
    fn a_wrong_tcf_is_the_next_mode() {
        let mut args = [mte_protocol::tcf::ASYMMETRIC];
        Injection::WrongTcf.command_args(Command::SetTcf, &mut args);
        assert_eq!(args, [mte_protocol::tcf::NONE]);
        let mut tcf0 = [mte_protocol::tcf::ASYNC];
        Injection::WrongTcf.command_args(Command::SetTcf0, &mut tcf0);
        assert_eq!(tcf0, [mte_protocol::tcf::ASYMMETRIC]);
        let mut load = [mte_protocol::tcf::SYNC];
        Injection::WrongTcf.command_args(Command::Load, &mut load);
        assert_eq!(load, [mte_protocol::tcf::SYNC]);
    }

    #[test]
    fn an_aligned_access_rounds_only_priority_pointers_down() {
        let mut args = [
            0x0a00_0000_4110_000c,
            mte_protocol::priority_form::LOAD_EXCLUSIVE,
        ];
        Injection::AlignedAccess.command_args(Command::PriorityAccess, &mut args);
        assert_eq!(args[0], 0x0a00_0000_4110_0008);
        assert_eq!(args[1], mte_protocol::priority_form::LOAD_EXCLUSIVE);
        let mut load = [0x4110_000c];
        Injection::AlignedAccess.command_args(Command::Load, &mut load);
        assert_eq!(load, [0x4110_000c]);
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
