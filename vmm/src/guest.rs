//! The guest half of the suite as every backend drives it: a payload stopped at its doorbell,
//! spoken to through the mailbox over a [`Transport`], and the host steps a backend adds on top
//! ([`HostSteps`]).

use std::time::Duration;

use mte_protocol::{
    bulk, mailbox_ipa, offsets, Command, GuestIds, Mailbox, Status, MAX_VCPUS, START_TOGETHER,
};
use mte_suites::host_mm::{
    Advice, Backing, ForkPlan, ForkedChild, KsmKnob, KsmState, PageState, Protection, SwapDevice,
    TagPeer,
};
use mte_suites::migration_plan::{MigrationPlan, MigrationReport, SavedStream, StreamFault};
use mte_suites::race_plan::{RaceLog, RacePlan};
use mte_suites::vmm::{
    BootOptions, CopyTagsArgs, Guest, Reply, StubTagPackets, VmmError, VmmMigration,
};

use crate::boot_check::booted_ids;
use crate::transport::{Stop, Transport};

/// The most arguments a command takes: the mailbox's argument words.
const MAX_ARGS: usize = 8;

/// One vCPU of a guest: its transport, its number (which picks its mailbox and bulk buffer)
/// and, once it takes no more steps, why. A vCPU may run on a thread of its own while the
/// guest's other vCPUs run on theirs.
pub struct Vcpu<T> {
    transport: T,
    index: usize,
    ended: Option<String>,
}

/// Where a run stopped, for the vCPU that goes on.
enum Rang {
    Doorbell,
    PoweredOff,
}

impl<T: Transport> Vcpu<T> {
    fn new(transport: T, index: usize) -> Self {
        Vcpu {
            transport,
            index,
            ended: None,
        }
    }

    /// The vCPU's number: 0 boots the guest, the others are started by it.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Why the vCPU takes no more steps, once it takes none.
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    fn still_running(&self, step: &str) -> Result<(), VmmError> {
        match &self.ended {
            Some(why) => Err(VmmError::Guest(format!("{step} after {why}"))),
            None => Ok(()),
        }
    }

    /// Let the vCPU run to its next doorbell, keeping track of whether it can go on.
    fn run(&mut self, what: &str, deadline: Duration) -> Result<Rang, VmmError> {
        self.still_running(what)?;
        match self.transport.run_to_doorbell(what, deadline)? {
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
            .read(mailbox_ipa(self.index), std::mem::size_of::<Mailbox>())?;
        Ok(Mailbox::from_bytes(&bytes).expect("read to size"))
    }

    /// Post `command` with `args` to the vCPU's mailbox; `together` makes it wait at the
    /// guest's start barrier before it runs ([`START_TOGETHER`]).
    pub fn post(&mut self, command: Command, args: &[u64], together: bool) -> Result<(), VmmError> {
        self.still_running(&format!("{command:?}"))?;
        assert!(
            args.len() <= MAX_ARGS,
            "at most {MAX_ARGS} command arguments"
        );
        // Status, command and arguments are neighbours in the mailbox: one write posts all.
        const _: () = assert!(
            offsets::COMMAND == offsets::STATUS + 4 && offsets::ARGS == offsets::COMMAND + 4
        );
        let code = command as u32 | if together { START_TOGETHER } else { 0 };
        let mut post = Vec::with_capacity(8 + 8 * MAX_ARGS);
        post.extend_from_slice(&(Status::Empty as u32).to_le_bytes());
        post.extend_from_slice(&code.to_le_bytes());
        let mut words = [0u64; MAX_ARGS];
        words[..args.len()].copy_from_slice(args);
        post.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        self.transport
            .write(mailbox_ipa(self.index) + offsets::STATUS as u64, &post)
    }

    /// Run the vCPU to its next doorbell and read its answer to `command`, posted before.
    pub fn complete(&mut self, command: Command, deadline: Duration) -> Result<Reply, VmmError> {
        let what = match self.index {
            0 => format!("{command:?}"),
            n => format!("{command:?} on vCPU {n}"),
        };
        match self.run(&what, deadline)? {
            // The guest's memory may be gone with it (QEMU exits): no mailbox to read.
            Rang::PoweredOff if command == Command::PowerOff => Ok(Reply {
                status: Status::Done,
                result: [0; 8],
                fault: Default::default(),
            }),
            Rang::PoweredOff => Err(VmmError::Guest(format!(
                "the guest powered off during {what}"
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

    /// Post `command` with `args`, run the vCPU to its next doorbell and read its reply.
    pub fn exec(
        &mut self,
        command: Command,
        args: &[u64],
        deadline: Duration,
    ) -> Result<Reply, VmmError> {
        self.post(command, args, false)?;
        self.complete(command, deadline)
    }

    /// The first `len` bytes of the vCPU's bulk buffer.
    pub fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError> {
        let (ipa, size) = bulk(self.index);
        assert!(len as u64 <= size, "bulk reads stay inside the bulk buffer");
        self.still_running("reading the bulk buffer")?;
        self.transport.read(ipa, len)
    }

    /// Write the start of the vCPU's bulk buffer.
    pub fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError> {
        let (ipa, size) = bulk(self.index);
        assert!(
            bytes.len() as u64 <= size,
            "bulk writes stay inside the bulk buffer"
        );
        self.still_running("writing the bulk buffer")?;
        self.transport.write(ipa, bytes)
    }
}

/// A booted payload behind transport `T`, stopped at a doorbell: vCPU 0, and the others it
/// started if it was booted with several.
pub struct MailboxGuest<T> {
    vcpus: Vec<Vcpu<T>>,
    deadline: Duration,
    ids: GuestIds,
}

impl<T: Transport> MailboxGuest<T> {
    /// Run a fresh guest, booted as `options` say, to its first doorbell, and check that it
    /// booted and speaks this protocol; with several vCPUs, have vCPU 0 start the others and
    /// check each of them the same way. Every step may take `options.deadline`, else
    /// `default_deadline`. `mte_on` says how the backend enabled MTE (e.g. "KVM_CAP_ARM_MTE is
    /// enabled"), for a guest given MTE that does not see it.
    pub fn boot(
        mut transport: T,
        options: &BootOptions,
        default_deadline: Duration,
        mte_on: &str,
    ) -> Result<Self, VmmError> {
        if options.vcpus == 0 || options.vcpus > MAX_VCPUS {
            return Err(VmmError::Host(format!(
                "a guest has 1 to {MAX_VCPUS} vCPUs, not {}",
                options.vcpus
            )));
        }
        // Every vCPU exists before the first one runs.
        let others = (1..options.vcpus)
            .map(|index| transport.other_vcpu(index))
            .collect::<Result<Vec<T>, VmmError>>()?;
        let deadline = options.deadline.unwrap_or(default_deadline);
        let mut guest = Self::resumed(transport, deadline, GuestIds::default());
        guest.ids = guest.vcpus[0].boot(deadline, options.payload)?;
        if options.mte && guest.ids.mte_level() < 2 {
            return Err(VmmError::Guest(format!(
                "{mte_on}, yet the guest sees ID_AA64PFR1_EL1 = {:#x} (MTE field {})",
                guest.ids.id_aa64pfr1_el1,
                guest.ids.mte_level()
            )));
        }
        if !others.is_empty() {
            guest.start_others(others, options.payload)?;
        }
        Ok(guest)
    }

    /// vCPU 0 starts the others with PSCI CPU_ON; each runs to its first doorbell, where it
    /// must have booted as vCPU 0 did.
    fn start_others(&mut self, transports: Vec<T>, payload: &str) -> Result<(), VmmError> {
        let count = transports.len() + 1;
        let reply = self.exec(Command::CpuOn, &[count as u64])?;
        if reply.status != Status::Done {
            return Err(VmmError::Guest(format!(
                "vCPU 0 refused to start {} more vCPUs: {:?} (argument {:#x})",
                count - 1,
                reply.status,
                reply.result[0]
            )));
        }
        for (transport, index) in transports.into_iter().zip(1..) {
            let psci = reply.result[index - 1] as i64;
            if psci != 0 {
                return Err(VmmError::Guest(format!(
                    "PSCI CPU_ON of vCPU {index} returned {psci}"
                )));
            }
            let mut vcpu = Vcpu::new(transport, index);
            let ids = vcpu.boot(self.deadline, payload)?;
            if ids.id_aa64pfr1_el1 != self.ids.id_aa64pfr1_el1 {
                return Err(VmmError::Guest(format!(
                    "vCPU {index} sees ID_AA64PFR1_EL1 = {:#x}, vCPU 0 {:#x}",
                    ids.id_aa64pfr1_el1, self.ids.id_aa64pfr1_el1
                )));
            }
            self.vcpus.push(vcpu);
        }
        Ok(())
    }

    /// A guest of one vCPU already past its boot, stopped at a doorbell (a migration's
    /// destination), whose ID registers were read as `ids`.
    pub fn resumed(transport: T, deadline: Duration, ids: GuestIds) -> Self {
        MailboxGuest {
            vcpus: vec![Vcpu::new(transport, 0)],
            deadline,
            ids,
        }
    }

    /// vCPU 0's transport, which every guest has.
    pub fn transport(&self) -> &T {
        self.vcpus[0].transport()
    }

    pub fn transport_mut(&mut self) -> &mut T {
        self.vcpus[0].transport_mut()
    }

    /// vCPU 0's transport, for a backend that takes a guest of one vCPU apart (to move it
    /// elsewhere); the other vCPUs, if any, are let go.
    pub fn into_transport(self) -> T {
        self.vcpus
            .into_iter()
            .next()
            .expect("a guest has vCPU 0")
            .transport
    }

    /// Every vCPU, vCPU 0 first, each to be run on a thread of its own if need be.
    pub fn vcpus_mut(&mut self) -> &mut [Vcpu<T>] {
        &mut self.vcpus
    }

    /// vCPU `index`, or the error for a vCPU the guest does not have.
    fn vcpu(&mut self, index: usize) -> Result<&mut Vcpu<T>, VmmError> {
        let count = self.vcpus.len();
        self.vcpus.get_mut(index).ok_or_else(|| {
            VmmError::Host(format!("vCPU {index} asked of a guest of {count} vCPU(s)"))
        })
    }

    /// How many vCPUs serve commands.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// How long each step may take.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Why the guest takes no more steps, once one of its vCPUs takes none.
    pub fn ended(&self) -> Option<&str> {
        self.vcpus.iter().find_map(Vcpu::ended)
    }

    /// Refuse `step` once the guest has ended.
    pub fn still_running(&self, step: &str) -> Result<(), VmmError> {
        match self.ended() {
            Some(why) => Err(VmmError::Guest(format!("{step} after {why}"))),
            None => Ok(()),
        }
    }

    /// Post `command` with `args` to vCPU 0, run it to its next doorbell and read its reply.
    pub fn exec(&mut self, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        self.exec_on(0, command, args)
    }

    /// The same on vCPU `vcpu`.
    pub fn exec_on(
        &mut self,
        vcpu: usize,
        command: Command,
        args: &[u64],
    ) -> Result<Reply, VmmError> {
        self.still_running(&format!("{command:?}"))?;
        let deadline = self.deadline;
        self.vcpu(vcpu)?.exec(command, args, deadline)
    }

    /// The first `len` bytes of vCPU 0's bulk buffer.
    pub fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError> {
        self.read_bulk_on(0, len)
    }

    /// Write the start of vCPU 0's bulk buffer.
    pub fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError> {
        self.write_bulk_on(0, bytes)
    }

    pub fn read_bulk_on(&mut self, vcpu: usize, len: usize) -> Result<Vec<u8>, VmmError> {
        self.still_running("reading the bulk buffer")?;
        self.vcpu(vcpu)?.read_bulk(len)
    }

    pub fn write_bulk_on(&mut self, vcpu: usize, bytes: &[u8]) -> Result<(), VmmError> {
        self.still_running("writing the bulk buffer")?;
        self.vcpu(vcpu)?.write_bulk(bytes)
    }

    pub fn ids(&self) -> GuestIds {
        self.ids
    }

    /// What the guest printed on its console so far, every vCPU's in turn.
    pub fn console(&self) -> String {
        let mut text = self.vcpus[0].transport.console();
        for vcpu in &self.vcpus[1..] {
            let more = vcpu.transport.console();
            if !more.is_empty() {
                text.push_str(&format!("\n[vCPU {}]\n{more}", vcpu.index));
            }
        }
        text
    }
}

impl<T: Transport> Vcpu<T> {
    /// Run a vCPU that has just been started to its first doorbell; its ID registers, or why
    /// payload `payload` did not boot on it.
    fn boot(&mut self, deadline: Duration, payload: &str) -> Result<GuestIds, VmmError> {
        let what = match self.index {
            0 => "boot".to_string(),
            n => format!("boot of vCPU {n}"),
        };
        if let Rang::PoweredOff = self.run(&what, deadline)? {
            return Err(VmmError::Guest(format!(
                "the payload powered off during the {what}, before its first doorbell"
            )));
        }
        booted_ids(&self.mailbox()?, payload)
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

    fn copy_tags_raw(
        _guest: &mut MailboxGuest<Self>,
        args: CopyTagsArgs,
        buffer: &mut [u8],
        readable: Option<usize>,
    ) -> Result<Result<i64, i32>, VmmError> {
        NoHostSteps.copy_tags_raw(args, buffer, readable)
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

    fn swap_off_and_on(
        _guest: &mut MailboxGuest<Self>,
        device: &SwapDevice,
    ) -> Result<Duration, VmmError> {
        NoHostSteps.swap_off_and_on(device)
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

    fn race(_guest: &mut MailboxGuest<Self>, plan: &RacePlan) -> Result<RaceLog, VmmError> {
        NoHostSteps.race(plan)
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

    fn vcpus(&self) -> usize {
        self.vcpu_count()
    }

    fn exec_on(&mut self, vcpu: usize, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        MailboxGuest::exec_on(self, vcpu, command, args)
    }

    fn read_bulk_on(&mut self, vcpu: usize, len: usize) -> Result<Vec<u8>, VmmError> {
        MailboxGuest::read_bulk_on(self, vcpu, len)
    }

    fn write_bulk_on(&mut self, vcpu: usize, bytes: &[u8]) -> Result<(), VmmError> {
        MailboxGuest::write_bulk_on(self, vcpu, bytes)
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

    fn copy_tags_raw(
        &mut self,
        args: CopyTagsArgs,
        buffer: &mut [u8],
        readable: Option<usize>,
    ) -> Result<Result<i64, i32>, VmmError> {
        T::copy_tags_raw(self, args, buffer, readable)
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

    fn swap_off_and_on(&mut self, device: &SwapDevice) -> Result<Duration, VmmError> {
        T::swap_off_and_on(self, device)
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

    fn race(&mut self, plan: &RacePlan) -> Result<RaceLog, VmmError> {
        T::race(self, plan)
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
    use std::sync::{Arc, Mutex};

    use mte_protocol::{MAILBOX_MAGIC, PROTOCOL_VERSION, RAM_IPA, TEST_RAM_IPA};

    use super::*;

    /// Guest RAM from `RAM_IPA` up to test RAM, shared by the vCPUs of a guest whose vCPUs
    /// answer `Nop` with their first argument plus their number plus one, power off on
    /// `PowerOff` and hang their VMM on `Spin`; vCPU 0 starts the others on `CpuOn`.
    struct FakeVcpu {
        ram: Arc<Mutex<Vec<u8>>>,
        index: usize,
        runs: usize,
        /// Whether this backend lends more vCPUs.
        smp: bool,
    }

    fn booted_mailbox() -> Mailbox {
        let mut mailbox = Mailbox {
            magic: MAILBOX_MAGIC,
            version: PROTOCOL_VERSION,
            status: Status::Booted as u32,
            ..Mailbox::zeroed()
        };
        mailbox.ids.id_aa64pfr1_el1 = 0x200;
        mailbox
    }

    impl FakeVcpu {
        fn booted() -> Self {
            let ram = vec![0; (TEST_RAM_IPA - RAM_IPA) as usize];
            let mut vcpu = FakeVcpu {
                ram: Arc::new(Mutex::new(ram)),
                index: 0,
                runs: 0,
                smp: false,
            };
            vcpu.set_mailbox(&booted_mailbox());
            vcpu
        }

        fn at(&self) -> usize {
            (mailbox_ipa(self.index) - RAM_IPA) as usize
        }

        fn mailbox(&self) -> Mailbox {
            let ram = self.ram.lock().unwrap();
            let at = self.at();
            Mailbox::from_bytes(&ram[at..at + std::mem::size_of::<Mailbox>()]).unwrap()
        }

        fn set_mailbox(&mut self, mailbox: &Mailbox) {
            let at = self.at();
            let bytes = mailbox.as_bytes();
            self.ram.lock().unwrap()[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }

    impl Transport for FakeVcpu {
        fn read(&mut self, ipa: u64, len: usize) -> Result<Vec<u8>, VmmError> {
            let at = (ipa - RAM_IPA) as usize;
            Ok(self.ram.lock().unwrap()[at..at + len].to_vec())
        }

        fn write(&mut self, ipa: u64, bytes: &[u8]) -> Result<(), VmmError> {
            let at = (ipa - RAM_IPA) as usize;
            self.ram.lock().unwrap()[at..at + bytes.len()].copy_from_slice(bytes);
            Ok(())
        }

        fn run_to_doorbell(&mut self, what: &str, _: Duration) -> Result<Stop, VmmError> {
            self.runs += 1;
            if self.runs == 1 {
                if self.index > 0 {
                    self.set_mailbox(&booted_mailbox());
                }
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
                Some(Command::CpuOn) => mailbox.result = [0; 8],
                _ => mailbox.result[0] = mailbox.args[0] + self.index as u64 + 1,
            }
            mailbox.status = Status::Done as u32;
            self.set_mailbox(&mailbox);
            Ok(Stop::Doorbell)
        }

        fn console(&self) -> String {
            format!("hello from {}", self.index)
        }

        fn other_vcpu(&mut self, index: usize) -> Result<Self, VmmError> {
            if !self.smp {
                return Err(VmmError::Unsupported("one vCPU here".into()));
            }
            Ok(FakeVcpu {
                ram: Arc::clone(&self.ram),
                index,
                runs: 0,
                smp: true,
            })
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
        assert_eq!(guest.console(), "hello from 0");
    }

    #[test]
    fn each_vcpu_answers_in_its_own_mailbox_and_bulk_buffer() {
        let mut vcpu = FakeVcpu::booted();
        vcpu.smp = true;
        let options = BootOptions {
            vcpus: 3,
            ..BootOptions::default()
        };
        let mut guest = MailboxGuest::boot(vcpu, &options, SECOND, "on").unwrap();
        assert_eq!(guest.vcpu_count(), 3);
        assert_eq!(guest.exec_on(2, Command::Nop, &[40]).unwrap().result[0], 43);
        assert_eq!(guest.exec_on(1, Command::Nop, &[40]).unwrap().result[0], 42);
        assert_eq!(guest.exec(Command::Nop, &[40]).unwrap().result[0], 41);
        guest.write_bulk_on(1, &[7, 7]).unwrap();
        guest.write_bulk_on(2, &[9]).unwrap();
        assert_eq!(guest.read_bulk_on(1, 2).unwrap(), [7, 7]);
        assert_eq!(guest.read_bulk_on(2, 2).unwrap(), [9, 0]);
        assert_eq!(guest.read_bulk(1).unwrap(), [0]);
        assert!(guest.exec_on(3, Command::Nop, &[]).is_err());
        assert!(guest.console().contains("[vCPU 2]\nhello from 2"));
    }

    #[test]
    fn a_backend_of_one_vcpu_says_so_before_anything_runs() {
        let options = BootOptions {
            vcpus: 2,
            ..BootOptions::default()
        };
        let why = MailboxGuest::boot(FakeVcpu::booted(), &options, SECOND, "on")
            .err()
            .unwrap();
        assert!(matches!(why, VmmError::Unsupported(_)), "{why}");
        let none = BootOptions {
            vcpus: 0,
            ..BootOptions::default()
        };
        assert!(MailboxGuest::boot(FakeVcpu::booted(), &none, SECOND, "on").is_err());
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
        vcpu.set_mailbox(&mailbox);
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
