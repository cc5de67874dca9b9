//! The guest half of the suite as every backend drives it: a payload stopped at its doorbell,
//! spoken to through the mailbox over a [`Transport`], and the host steps a backend adds on top
//! ([`HostSteps`]).

use std::time::Duration;

use mte_protocol::{offsets, Command, GuestIds, Mailbox, Status, BULK_IPA, BULK_SIZE, MAILBOX_IPA};
use mte_suites::host_mm::{
    Advice, Backing, ForkPlan, ForkedChild, KsmKnob, KsmState, PageState, Protection, RaceLog,
    RacePlan, SwapDevice, TagPeer,
};
use mte_suites::migration_plan::{MigrationPlan, MigrationReport, SavedStream, StreamFault};
use mte_suites::vmm::{BootOptions, Guest, Reply, StubTagPackets, VmmError, VmmMigration};

use crate::boot_check::booted_ids;
use crate::transport::{Stop, Transport};

/// The most arguments a command takes: the mailbox's argument words.
const MAX_ARGS: usize = 8;

/// A booted payload behind transport `T`, stopped at a doorbell.
pub struct MailboxGuest<T> {
    transport: T,
    deadline: Duration,
    ids: GuestIds,
    /// Why the guest takes no more steps, once it takes none (it powered off, it ended).
    ended: Option<String>,
}

/// Where a run stopped, for the guest that goes on.
enum Rang {
    Doorbell,
    PoweredOff,
}

impl<T: Transport> MailboxGuest<T> {
    /// Run a fresh guest, booted as `options` say, to its first doorbell, and check that it
    /// booted and speaks this protocol. Every step may take `options.deadline`, else
    /// `default_deadline`. `mte_on` says how the backend enabled MTE (e.g. "KVM_CAP_ARM_MTE is
    /// enabled"), for a guest given MTE that does not see it.
    pub fn boot(
        transport: T,
        options: &BootOptions,
        default_deadline: Duration,
        mte_on: &str,
    ) -> Result<Self, VmmError> {
        let deadline = options.deadline.unwrap_or(default_deadline);
        let mut guest = Self::resumed(transport, deadline, GuestIds::default());
        if let Rang::PoweredOff = guest.run("boot")? {
            return Err(VmmError::Guest(
                "the payload powered off before its first doorbell".into(),
            ));
        }
        guest.ids = booted_ids(&guest.mailbox()?, options.payload)?;
        if options.mte && guest.ids.mte_level() < 2 {
            return Err(VmmError::Guest(format!(
                "{mte_on}, yet the guest sees ID_AA64PFR1_EL1 = {:#x} (MTE field {})",
                guest.ids.id_aa64pfr1_el1,
                guest.ids.mte_level()
            )));
        }
        Ok(guest)
    }

    /// A guest already past its boot, stopped at a doorbell (a migration's destination), whose
    /// ID registers were read as `ids`.
    pub fn resumed(transport: T, deadline: Duration, ids: GuestIds) -> Self {
        MailboxGuest {
            transport,
            deadline,
            ids,
            ended: None,
        }
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// The transport, for a backend that takes the guest apart (to move it elsewhere).
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// How long each step may take.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Why the guest takes no more steps, once it takes none.
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    /// Refuse `step` once the guest has ended.
    pub fn still_running(&self, step: &str) -> Result<(), VmmError> {
        match &self.ended {
            Some(why) => Err(VmmError::Guest(format!("{step} after {why}"))),
            None => Ok(()),
        }
    }

    /// Let the guest run to its next doorbell, keeping track of whether it can go on.
    fn run(&mut self, what: &str) -> Result<Rang, VmmError> {
        self.still_running(what)?;
        match self.transport.run_to_doorbell(what, self.deadline)? {
            Stop::Doorbell => Ok(Rang::Doorbell),
            Stop::PoweredOff => {
                self.ended = Some("it powered off".into());
                Ok(Rang::PoweredOff)
            }
            Stop::Ended { error, why } => {
                self.ended = Some(why);
                Err(error)
            }
        }
    }

    fn mailbox(&mut self) -> Result<Mailbox, VmmError> {
        let bytes = self
            .transport
            .read(MAILBOX_IPA, std::mem::size_of::<Mailbox>())?;
        Ok(Mailbox::from_bytes(&bytes).expect("read to size"))
    }

    /// Post `command` with `args`, run the guest to its next doorbell and read its reply.
    pub fn exec(&mut self, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        let what = format!("{command:?}");
        self.still_running(&what)?;
        assert!(
            args.len() <= MAX_ARGS,
            "at most {MAX_ARGS} command arguments"
        );
        // Status, command and arguments are neighbours in the mailbox: one write posts all.
        const _: () = assert!(
            offsets::COMMAND == offsets::STATUS + 4 && offsets::ARGS == offsets::COMMAND + 4
        );
        let mut post = Vec::with_capacity(8 + 8 * MAX_ARGS);
        post.extend_from_slice(&(Status::Empty as u32).to_le_bytes());
        post.extend_from_slice(&(command as u32).to_le_bytes());
        let mut words = [0u64; MAX_ARGS];
        words[..args.len()].copy_from_slice(args);
        post.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        self.transport
            .write(MAILBOX_IPA + offsets::STATUS as u64, &post)?;
        match self.run(&what)? {
            // The guest's memory may be gone with it (QEMU exits): no mailbox to read.
            Rang::PoweredOff if command == Command::PowerOff => Ok(Reply {
                status: Status::Done,
                result: [0; 8],
                fault: Default::default(),
            }),
            Rang::PoweredOff => Err(VmmError::Guest(format!(
                "the guest powered off during {command:?}"
            ))),
            Rang::Doorbell => {
                let mailbox = self.mailbox()?;
                let status = Status::from_u32(mailbox.status).ok_or_else(|| {
                    VmmError::Guest(format!(
                        "status {} is not a protocol status",
                        mailbox.status
                    ))
                })?;
                Ok(Reply {
                    status,
                    result: mailbox.result,
                    fault: mailbox.fault,
                })
            }
        }
    }

    /// The first `len` bytes of the bulk buffer.
    pub fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError> {
        assert!(
            len as u64 <= BULK_SIZE,
            "bulk reads stay inside the bulk buffer"
        );
        self.still_running("reading the bulk buffer")?;
        self.transport.read(BULK_IPA, len)
    }

    /// Write the start of the bulk buffer.
    pub fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError> {
        assert!(
            bytes.len() as u64 <= BULK_SIZE,
            "bulk writes stay inside the bulk buffer"
        );
        self.still_running("writing the bulk buffer")?;
        self.transport.write(BULK_IPA, bytes)
    }

    pub fn ids(&self) -> GuestIds {
        self.ids
    }

    pub fn console(&self) -> String {
        self.transport.console()
    }
}

/// The host steps a backend offers beyond the mailbox protocol, each given the whole guest.
/// The host's tag reads and writes are required; a step a backend leaves out answers as
/// [`Guest`]'s own default does (a skip that names the lanes that have it).
pub trait HostSteps: Transport + Sized + 'static {
    fn host_read_tags(
        guest: &mut MailboxGuest<Self>,
        ipa: u64,
        len: u64,
    ) -> Result<Vec<u8>, VmmError>;

    fn host_write_tags(
        guest: &mut MailboxGuest<Self>,
        ipa: u64,
        tags: &[u8],
    ) -> Result<(), VmmError>;

    fn host_tag_view(_guest: &MailboxGuest<Self>) -> Option<String> {
        None
    }

    fn stub_tag_packets(
        _guest: &mut MailboxGuest<Self>,
        probe: Option<(u64, u8)>,
    ) -> Result<StubTagPackets, VmmError> {
        NoHostSteps.stub_tag_packets(probe)
    }

    fn ram_backing(_guest: &MailboxGuest<Self>) -> Result<Backing, VmmError> {
        NoHostSteps.ram_backing()
    }

    fn madvise(
        _guest: &mut MailboxGuest<Self>,
        ipa: u64,
        len: u64,
        advice: Advice,
    ) -> Result<(), VmmError> {
        NoHostSteps.madvise(ipa, len, advice)
    }

    fn protect(
        _guest: &mut MailboxGuest<Self>,
        ipa: u64,
        len: u64,
        prot: Protection,
    ) -> Result<(), VmmError> {
        NoHostSteps.protect(ipa, len, prot)
    }

    fn page_states(
        _guest: &mut MailboxGuest<Self>,
        ipa: u64,
        len: u64,
    ) -> Result<Vec<PageState>, VmmError> {
        NoHostSteps.page_states(ipa, len)
    }

    fn swap_devices(_guest: &MailboxGuest<Self>) -> Result<Vec<SwapDevice>, VmmError> {
        NoHostSteps.swap_devices()
    }

    fn vmstat(_guest: &MailboxGuest<Self>) -> Result<Vec<(String, u64)>, VmmError> {
        NoHostSteps.vmstat()
    }

    fn ksm_state(_guest: &MailboxGuest<Self>) -> Result<KsmState, VmmError> {
        NoHostSteps.ksm_state()
    }

    fn ksm_set(_guest: &mut MailboxGuest<Self>, knob: KsmKnob, value: u64) -> Result<(), VmmError> {
        NoHostSteps.ksm_set(knob, value)
    }

    fn fork(
        _guest: &mut MailboxGuest<Self>,
        plan: &ForkPlan,
    ) -> Result<Box<dyn ForkedChild>, VmmError> {
        NoHostSteps.fork(plan)
    }

    fn tag_peer(_guest: &mut MailboxGuest<Self>) -> Result<Box<dyn TagPeer>, VmmError> {
        NoHostSteps.tag_peer()
    }

    fn race(
        _guest: &mut MailboxGuest<Self>,
        plan: &RacePlan,
        command: Command,
        args: &[u64],
    ) -> Result<(Reply, RaceLog), VmmError> {
        NoHostSteps.race(plan, command, args)
    }

    fn migrate(
        _guest: MailboxGuest<Self>,
        plan: &MigrationPlan,
    ) -> Result<Box<dyn Guest>, VmmError> {
        Box::new(NoHostSteps).migrate(plan)
    }

    fn migration_report(_guest: &mut MailboxGuest<Self>) -> Result<MigrationReport, VmmError> {
        NoHostSteps.migration_report()
    }

    fn save(
        _guest: MailboxGuest<Self>,
        fault: Option<StreamFault>,
    ) -> Result<SavedStream, VmmError> {
        Box::new(NoHostSteps).save(fault)
    }

    fn migrate_by_vmm(
        _guest: MailboxGuest<Self>,
    ) -> Result<(Box<dyn Guest>, VmmMigration), VmmError> {
        Box::new(NoHostSteps).migrate_by_vmm()
    }
}

/// [`Guest`]'s own answers for the host steps a backend does not offer, so that they read the
/// same in every lane: a guest that has nothing but those defaults. Its protocol methods are
/// never called.
struct NoHostSteps;

impl Guest for NoHostSteps {
    fn ids(&self) -> GuestIds {
        unreachable!("only the default host steps are asked of NoHostSteps")
    }
    fn exec(&mut self, _: Command, _: &[u64]) -> Result<Reply, VmmError> {
        unreachable!("only the default host steps are asked of NoHostSteps")
    }
    fn read_bulk(&mut self, _: usize) -> Result<Vec<u8>, VmmError> {
        unreachable!("only the default host steps are asked of NoHostSteps")
    }
    fn write_bulk(&mut self, _: &[u8]) -> Result<(), VmmError> {
        unreachable!("only the default host steps are asked of NoHostSteps")
    }
    fn host_read_tags(&mut self, _: u64, _: u64) -> Result<Vec<u8>, VmmError> {
        unreachable!("only the default host steps are asked of NoHostSteps")
    }
    fn host_write_tags(&mut self, _: u64, _: &[u8]) -> Result<(), VmmError> {
        unreachable!("only the default host steps are asked of NoHostSteps")
    }
    fn console(&self) -> String {
        unreachable!("only the default host steps are asked of NoHostSteps")
    }
}

impl<T: HostSteps> Guest for MailboxGuest<T> {
    fn ids(&self) -> GuestIds {
        MailboxGuest::ids(self)
    }

    fn exec(&mut self, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        MailboxGuest::exec(self, command, args)
    }

    fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError> {
        MailboxGuest::read_bulk(self, len)
    }

    fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError> {
        MailboxGuest::write_bulk(self, bytes)
    }

    fn console(&self) -> String {
        MailboxGuest::console(self)
    }

    fn host_read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        T::host_read_tags(self, ipa, len)
    }

    fn host_write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        T::host_write_tags(self, ipa, tags)
    }

    fn host_tag_view(&self) -> Option<String> {
        T::host_tag_view(self)
    }

    fn stub_tag_packets(&mut self, probe: Option<(u64, u8)>) -> Result<StubTagPackets, VmmError> {
        T::stub_tag_packets(self, probe)
    }

    fn ram_backing(&self) -> Result<Backing, VmmError> {
        T::ram_backing(self)
    }

    fn madvise(&mut self, ipa: u64, len: u64, advice: Advice) -> Result<(), VmmError> {
        T::madvise(self, ipa, len, advice)
    }

    fn protect(&mut self, ipa: u64, len: u64, prot: Protection) -> Result<(), VmmError> {
        T::protect(self, ipa, len, prot)
    }

    fn page_states(&mut self, ipa: u64, len: u64) -> Result<Vec<PageState>, VmmError> {
        T::page_states(self, ipa, len)
    }

    fn swap_devices(&self) -> Result<Vec<SwapDevice>, VmmError> {
        T::swap_devices(self)
    }

    fn vmstat(&self) -> Result<Vec<(String, u64)>, VmmError> {
        T::vmstat(self)
    }

    fn ksm_state(&self) -> Result<KsmState, VmmError> {
        T::ksm_state(self)
    }

    fn ksm_set(&mut self, knob: KsmKnob, value: u64) -> Result<(), VmmError> {
        T::ksm_set(self, knob, value)
    }

    fn fork(&mut self, plan: &ForkPlan) -> Result<Box<dyn ForkedChild>, VmmError> {
        T::fork(self, plan)
    }

    fn tag_peer(&mut self) -> Result<Box<dyn TagPeer>, VmmError> {
        T::tag_peer(self)
    }

    fn race(
        &mut self,
        plan: &RacePlan,
        command: Command,
        args: &[u64],
    ) -> Result<(Reply, RaceLog), VmmError> {
        T::race(self, plan, command, args)
    }

    fn migrate(self: Box<Self>, plan: &MigrationPlan) -> Result<Box<dyn Guest>, VmmError> {
        T::migrate(*self, plan)
    }

    fn migration_report(&mut self) -> Result<MigrationReport, VmmError> {
        T::migration_report(self)
    }

    fn save(self: Box<Self>, fault: Option<StreamFault>) -> Result<SavedStream, VmmError> {
        T::save(*self, fault)
    }

    fn migrate_by_vmm(self: Box<Self>) -> Result<(Box<dyn Guest>, VmmMigration), VmmError> {
        T::migrate_by_vmm(*self)
    }
}

#[cfg(test)]
mod tests {
    use mte_protocol::{MAILBOX_MAGIC, PROTOCOL_VERSION, RAM_IPA};

    use super::*;

    /// Guest RAM from `RAM_IPA` up to the end of the bulk buffer, and a guest that answers
    /// `Nop` with its first argument plus one, powers off on `PowerOff` and hangs its VMM on
    /// `Spin`.
    struct FakeVcpu {
        ram: Vec<u8>,
        runs: usize,
    }

    impl FakeVcpu {
        fn booted() -> Self {
            let mut mailbox = Mailbox {
                magic: MAILBOX_MAGIC,
                version: PROTOCOL_VERSION,
                status: Status::Booted as u32,
                ..Mailbox::zeroed()
            };
            mailbox.ids.id_aa64pfr1_el1 = 0x200;
            let mut ram = vec![0; (BULK_IPA + BULK_SIZE - RAM_IPA) as usize];
            ram[..mailbox.as_bytes().len()].copy_from_slice(mailbox.as_bytes());
            FakeVcpu { ram, runs: 0 }
        }

        fn mailbox(&self) -> Mailbox {
            Mailbox::from_bytes(&self.ram[..std::mem::size_of::<Mailbox>()]).unwrap()
        }
    }

    impl Transport for FakeVcpu {
        fn read(&mut self, ipa: u64, len: usize) -> Result<Vec<u8>, VmmError> {
            let at = (ipa - RAM_IPA) as usize;
            Ok(self.ram[at..at + len].to_vec())
        }

        fn write(&mut self, ipa: u64, bytes: &[u8]) -> Result<(), VmmError> {
            let at = (ipa - RAM_IPA) as usize;
            self.ram[at..at + bytes.len()].copy_from_slice(bytes);
            Ok(())
        }

        fn run_to_doorbell(&mut self, what: &str, _: Duration) -> Result<Stop, VmmError> {
            self.runs += 1;
            if self.runs == 1 {
                return Ok(Stop::Doorbell);
            }
            let mut mailbox = self.mailbox();
            match Command::from_u32(mailbox.command) {
                Some(Command::PowerOff) => return Ok(Stop::PoweredOff),
                Some(Command::Spin) => {
                    return Ok(Stop::Ended {
                        error: VmmError::Guest(format!("gone during {what}")),
                        why: "the VMM went away".into(),
                    })
                }
                _ => {}
            }
            mailbox.status = Status::Done as u32;
            mailbox.result[0] = mailbox.args[0] + 1;
            let bytes = mailbox.as_bytes().to_vec();
            self.ram[..bytes.len()].copy_from_slice(&bytes);
            Ok(Stop::Doorbell)
        }

        fn console(&self) -> String {
            "hello".into()
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn booted() -> MailboxGuest<FakeVcpu> {
        MailboxGuest::boot(FakeVcpu::booted(), &BootOptions::default(), SECOND, "on").unwrap()
    }

    #[test]
    fn a_command_is_posted_and_its_reply_read() {
        let mut guest = booted();
        assert_eq!(guest.ids().mte_level(), 2);
        let reply = guest.exec(Command::Nop, &[41, 7]).unwrap();
        assert_eq!((reply.status, reply.result[0]), (Status::Done, 42));
        let posted = guest.transport().mailbox();
        assert_eq!(posted.command, Command::Nop as u32);
        assert_eq!(posted.args[..3], [41, 7, 0]);
        assert_eq!(guest.console(), "hello");
    }

    #[test]
    fn the_bulk_buffer_round_trips() {
        let mut guest = booted();
        guest.write_bulk(&[1, 2, 3]).unwrap();
        assert_eq!(guest.read_bulk(4).unwrap(), [1, 2, 3, 0]);
    }

    #[test]
    fn a_guest_without_the_mte_it_was_given_does_not_boot() {
        let mut vcpu = FakeVcpu::booted();
        let mut mailbox = vcpu.mailbox();
        mailbox.ids.id_aa64pfr1_el1 = 0;
        vcpu.ram[..mailbox.as_bytes().len()].copy_from_slice(mailbox.as_bytes());
        let options = BootOptions::default();
        let why = MailboxGuest::boot(vcpu, &options, SECOND, "MTE is on")
            .err()
            .unwrap()
            .to_string();
        assert!(why.contains("MTE is on, yet the guest sees"), "{why}");
    }

    #[test]
    fn no_step_follows_a_power_off_or_an_end() {
        let mut guest = booted();
        assert_eq!(
            guest.exec(Command::PowerOff, &[]).unwrap().status,
            Status::Done
        );
        let why = guest.exec(Command::Nop, &[]).unwrap_err().to_string();
        assert!(why.contains("Nop after it powered off"), "{why}");
        assert!(guest.read_bulk(1).is_err());

        let mut guest = booted();
        let why = guest.exec(Command::Spin, &[]).unwrap_err().to_string();
        assert!(why.contains("gone during Spin"), "{why}");
        let why = guest.write_bulk(&[0]).unwrap_err().to_string();
        assert!(why.contains("after the VMM went away"), "{why}");
        assert_eq!(guest.ended(), Some("the VMM went away"));
    }
}
