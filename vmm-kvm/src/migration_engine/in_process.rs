//! The engine's in-process methods: the source guest, paused at its doorbell (or running its
//! pre-copy workload), into a stream through a pipe, and out of it on a receiving thread into a
//! destination VM whose vCPU resumes after the same doorbell.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use mte_protocol::{GuestIds, Status, RAM_IPA, STOP_ARG};
use mte_suites::migration_plan::{MigrationReport, Round, SentPage, StreamFault, Workload};
use mte_suites::vmm::{Reply, VmmError};

use super::dirty;
use super::receive::{receive, Arrival, ReceiveStats};
use super::send::{is_write_error, Sender};
use super::source::{SourceMemory, WorkloadMailbox};
use super::stream::Register;
use super::vcpu_state::{self, MTE_REGISTERS, PC};
use crate::vcpu;
use crate::vm::Vm;
use crate::{KvmGuest, KvmTransport};

/// A pre-copy round that finds at most this many dirty pages ends the rounds: the rest goes in
/// the final, paused round.
const CONVERGED_PAGES: usize = 8;

/// The source's vCPU as it was when it stopped, and after its exit was completed.
pub struct Paused {
    pub at: Instant,
    pub pc_at_exit: u64,
    pub registers: Vec<Register>,
}

impl Paused {
    /// The report's vCPU part, from the source's side.
    pub fn add_to(&self, report: &mut MigrationReport) {
        report.pc_at_exit = self.pc_at_exit;
        report.pc_after_completion = vcpu_state::value_of(&self.registers, PC).unwrap_or(0);
        report.registers = self.registers.len();
        report.mte_registers = MTE_REGISTERS
            .iter()
            .filter_map(|&(name, id)| {
                vcpu_state::value_of(&self.registers, id).map(|v| (name.to_string(), v))
            })
            .collect();
        report.sctlr_el1 = vcpu_state::value_of(&self.registers, vcpu_state::SCTLR_EL1);
    }
}

/// Complete the doorbell's exit and read every register of the paused source.
pub fn pause(source: &mut KvmGuest) -> Result<Paused, VmmError> {
    if let Some(why) = source.ended() {
        return Err(VmmError::Guest(format!("nothing to migrate: {why}")));
    }
    let at = Instant::now();
    let vcpu = &mut source.transport_mut().vcpu;
    let mut pc = [0u8; 8];
    vcpu.get_one_reg(PC, &mut pc).map_err(|e| VmmError::Sys {
        call: "KVM_GET_ONE_REG(PC)".into(),
        errno: e.errno(),
    })?;
    vcpu_state::complete_pending_exit(vcpu)?;
    Ok(Paused {
        at,
        pc_at_exit: u64::from_le_bytes(pc),
        registers: vcpu_state::save(vcpu)?,
    })
}

/// What the destination guest takes over from the source besides memory and registers: the
/// runner's own knowledge of it.
pub struct Carried {
    pub deadline: Duration,
    pub console: Vec<u8>,
    pub ids: GuestIds,
}

impl Carried {
    pub fn from(source: &KvmGuest) -> Self {
        Carried {
            deadline: source.deadline(),
            console: source.transport().console.clone(),
            ids: source.ids(),
        }
    }
}

/// The destination's vCPU with the source's registers, as a guest of this thread. Returns the
/// registers read back otherwise than written.
pub fn resume(
    vm: Vm,
    registers: &[Register],
    carried: Carried,
) -> Result<(KvmGuest, Vec<String>), VmmError> {
    resume_with(vm, carried, |vcpu| vcpu_state::restore(vcpu, registers))
}

/// The destination's vCPU, its registers written by `restore`, as a guest of this thread; with
/// what `restore` returned.
pub fn resume_with<T>(
    vm: Vm,
    carried: Carried,
    restore: impl FnOnce(&kvm_ioctls::VcpuFd) -> Result<T, VmmError>,
) -> Result<(KvmGuest, T), VmmError> {
    let vcpu_fd = vm.fd.create_vcpu(0).map_err(|e| VmmError::Sys {
        call: "KVM_CREATE_VCPU on the destination".into(),
        errno: e.errno(),
    })?;
    vcpu::init(&vm.fd, &vcpu_fd, 0, false, false).map_err(|(call, errno)| VmmError::Sys {
        call: format!("{call} on the destination"),
        errno,
    })?;
    let restored = restore(&vcpu_fd)?;
    let transport = KvmTransport::new(vcpu_fd, vm, carried.console);
    let guest = KvmGuest::resumed(transport, carried.deadline, carried.ids);
    Ok((guest, restored))
}

/// A pipe, both ends close-on-exec.
pub fn pipe() -> Result<(File, File), VmmError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, which become ours.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(VmmError::Sys {
            call: "pipe2".into(),
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    // SAFETY: fresh descriptors nobody else owns.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// What the sending side did.
pub struct Sent {
    pub pages: Vec<SentPage>,
    pub rounds: Vec<Round>,
    pub bytes: u64,
    pub tag_read_time: Duration,
    pub tag_read_bytes: u64,
}

impl Sent {
    /// End the stream that `sender` wrote in `rounds`; what it sent.
    pub fn finish<W: std::io::Write>(
        sender: &mut Sender<W>,
        rounds: Vec<Round>,
    ) -> Result<Sent, VmmError> {
        sender.end()?;
        Ok(Sent {
            rounds,
            bytes: sender.bytes(),
            tag_read_time: sender.tag_read_time,
            tag_read_bytes: sender.tag_read_bytes,
            pages: std::mem::take(&mut sender.sent),
        })
    }
}

/// Run `send` (which writes the records between the header and `End`) on this thread, and
/// receive what it writes on another, through a pipe.
fn transfer(
    page_size: u64,
    fault: Option<StreamFault>,
    send: impl FnOnce(&mut Sender<BufWriter<File>>) -> Result<Vec<Round>, VmmError>,
) -> Result<(Sent, Arrival), VmmError> {
    let (reader, writer) = pipe()?;
    std::thread::scope(|scope| {
        let receiving = scope.spawn(move || receive(BufReader::new(reader), true));
        let sent = (|| {
            let mut sender = Sender::new(BufWriter::new(writer), page_size, fault)?;
            let rounds = send(&mut sender)?;
            Sent::finish(&mut sender, rounds)
            // The sender drops here, closing the pipe: the receiver sees the stream's end.
        })();
        let arrived = receiving
            .join()
            .unwrap_or_else(|_| Err(VmmError::Host("the receiving thread panicked".into())));
        match (sent, arrived) {
            (Ok(sent), Ok(arrival)) => Ok((sent, arrival)),
            // A write that failed because the receiver gave up: the receiver says why.
            (Err(sent), Err(received)) if is_write_error(&sent) => Err(received),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        }
    })
}

/// The report of a migration from both sides.
pub fn report(
    how: String,
    sent: Sent,
    received: &ReceiveStats,
    paused: &Paused,
    differing: Vec<String>,
) -> MigrationReport {
    let mut report = MigrationReport {
        how,
        rounds: sent.rounds,
        downtime: paused.at.elapsed(),
        pages: sent.pages,
        stream_bytes: sent.bytes,
        tag_read_time: sent.tag_read_time,
        tag_read_bytes: sent.tag_read_bytes,
        tag_write_time: received.tag_write_time,
        tag_write_bytes: received.tag_write_bytes,
        registers_differing: differing,
        ..Default::default()
    };
    paused.add_to(&mut report);
    report
}

/// Stop-and-copy to a VM of this process.
pub fn stop_and_copy(
    mut source: KvmGuest,
    fault: Option<StreamFault>,
) -> Result<(KvmGuest, MigrationReport), VmmError> {
    let paused = pause(&mut source)?;
    let memory = SourceMemory::of(&source.transport().vm);
    let (sent, arrival) = transfer(memory.page_size, fault, |sender| {
        send_stopped(sender, &memory, &paused.registers)
    })?;
    let carried = Carried::from(&source);
    drop(source);
    let (guest, differing) = resume(arrival.vm, &arrival.registers, carried)?;
    let how = "stop-and-copy through a pipe to a VM of the same process".to_string();
    let report = report(how, sent, &arrival.stats, &paused, differing);
    Ok((guest, report))
}

/// The whole stream of a paused guest but its header and `End`: memory, every page, registers.
pub fn send_stopped<W: std::io::Write>(
    sender: &mut Sender<W>,
    memory: &SourceMemory,
    registers: &[Register],
) -> Result<Vec<Round>, VmmError> {
    sender.memory(RAM_IPA, memory.size)?;
    let started = Instant::now();
    let pages = sender.send_all(memory, RAM_IPA, 0)?;
    sender.round_end(0, pages)?;
    sender.registers(registers.to_vec())?;
    Ok(vec![Round {
        dirty: Vec::new(),
        pages_sent: pages,
        duration: started.elapsed(),
        paused: true,
    }])
}

/// Iterative pre-copy: dirty logging on, the guest runs `workload` while rounds copy what it
/// dirtied, then it is stopped and the last dirty pages go with the vCPU state.
pub fn pre_copy(
    mut source: KvmGuest,
    workload: &Workload,
    max_rounds: u32,
    fault: Option<StreamFault>,
) -> Result<(KvmGuest, MigrationReport), VmmError> {
    assert!(
        workload.args.len() <= STOP_ARG,
        "the workload's arguments leave the stop argument free"
    );
    log_dirty_pages(&source.transport().vm)?;
    let memory = SourceMemory::of(&source.transport().vm);
    let mailbox = memory.mailbox();
    mailbox.reset();
    let patience = source.deadline();
    let mut stopped: Option<(Paused, Reply)> = None;
    let (sent, arrival) = transfer(memory.page_size, fault, |sender| {
        sender.memory(RAM_IPA, memory.size)?;
        let abort = AtomicBool::new(false);
        let (reply, rounds) = std::thread::scope(|scope| {
            let copying = {
                let (sender, abort) = (&mut *sender, &abort);
                scope.spawn(move || {
                    let rounds = copy_rounds(sender, &memory, mailbox, max_rounds, patience, abort);
                    // Whatever happened, the guest must stop looping.
                    mailbox.request_stop();
                    rounds
                })
            };
            let reply = source.exec(workload.command, &workload.args);
            abort.store(true, Ordering::Relaxed);
            let rounds = copying
                .join()
                .unwrap_or_else(|_| Err(VmmError::Host("the copying thread panicked".into())));
            (reply, rounds)
        });
        let reply = reply?;
        if reply.status != Status::Done {
            return Err(VmmError::Guest(format!(
                "the pre-copy workload {:?} answered {:?} (result {:x?})",
                workload.command, reply.status, reply.result
            )));
        }
        let mut rounds = rounds?;
        // The final round: the guest is paused at its doorbell.
        let started = Instant::now();
        let paused = pause(&mut source)?;
        let dirty = dirty::dirty_pages(
            &dirty::fetch(memory.vm_fd(), 0, memory.pages())?,
            RAM_IPA,
            memory.page_size,
            memory.pages(),
        );
        let round = rounds.len() as u32;
        let pages = sender.send_pages(&memory, &dirty, round)?;
        sender.round_end(round, pages)?;
        sender.registers(paused.registers.clone())?;
        rounds.push(Round {
            dirty,
            pages_sent: pages,
            duration: started.elapsed(),
            paused: true,
        });
        stopped = Some((paused, reply));
        Ok(rounds)
    })?;
    let (paused, reply) = stopped.expect("set by a transfer that succeeded");
    let carried = Carried::from(&source);
    drop(source);
    let (guest, differing) = resume(arrival.vm, &arrival.registers, carried)?;
    let how = format!(
        "iterative pre-copy ({}) through a pipe to a VM of the same process",
        dirty::INTERFACE
    );
    let mut report = report(how, sent, &arrival.stats, &paused, differing);
    report.workload = Some(reply);
    Ok((guest, report))
}

/// Turn on dirty logging of the RAM memslot.
fn log_dirty_pages(vm: &Vm) -> Result<(), VmmError> {
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        guest_phys_addr: RAM_IPA,
        memory_size: vm.ram.size() as u64,
        userspace_addr: vm.ram.host_address(),
    };
    // SAFETY: the same live mapping the slot already has; only its flags change.
    unsafe { vm.fd.set_user_memory_region(region) }.map_err(|e| VmmError::Sys {
        call: "KVM_SET_USER_MEMORY_REGION(KVM_MEM_LOG_DIRTY_PAGES)".into(),
        errno: e.errno(),
    })
}

/// The rounds that run with the guest: a full copy, then the dirty pages of each round, each
/// round waiting until the guest has done a whole pass of its workload after the previous
/// round's look at the dirty log.
fn copy_rounds<W: std::io::Write>(
    sender: &mut Sender<W>,
    memory: &SourceMemory,
    mailbox: WorkloadMailbox,
    max_rounds: u32,
    patience: Duration,
    abort: &AtomicBool,
) -> Result<Vec<Round>, VmmError> {
    let fetch = || dirty::fetch(memory.vm_fd(), 0, memory.pages());
    wait_for_pass(mailbox, 0, patience, abort)?;
    let started = Instant::now();
    // Clear the log: the first round sends every page anyway.
    fetch()?;
    let mut seen = mailbox.passes();
    let pages = sender.send_all(memory, RAM_IPA, 0)?;
    sender.round_end(0, pages)?;
    let mut rounds = vec![Round {
        dirty: Vec::new(),
        pages_sent: pages,
        duration: started.elapsed(),
        paused: false,
    }];
    for round in 1..=max_rounds {
        // A pass that was under way when the log was read may have written some pages before
        // it: wait for the one after, which ran wholly since.
        wait_for_pass(mailbox, seen + 1, patience, abort)?;
        let started = Instant::now();
        let dirty = dirty::dirty_pages(&fetch()?, RAM_IPA, memory.page_size, memory.pages());
        seen = mailbox.passes();
        let pages = sender.send_pages(memory, &dirty, round)?;
        sender.round_end(round, pages)?;
        let converged = dirty.len() <= CONVERGED_PAGES;
        rounds.push(Round {
            dirty,
            pages_sent: pages,
            duration: started.elapsed(),
            paused: false,
        });
        if converged {
            break;
        }
    }
    Ok(rounds)
}

/// Wait until the workload has finished more than `after` passes.
fn wait_for_pass(
    mailbox: WorkloadMailbox,
    after: u64,
    patience: Duration,
    abort: &AtomicBool,
) -> Result<u64, VmmError> {
    let started = Instant::now();
    loop {
        let passes = mailbox.passes();
        if passes > after {
            return Ok(passes);
        }
        if abort.load(Ordering::Relaxed) {
            return Err(VmmError::Guest(
                "the pre-copy workload ended before the rounds did".into(),
            ));
        }
        if started.elapsed() > patience {
            return Err(VmmError::Timeout {
                what: format!("the pre-copy workload's pass {}", after + 1),
                seconds: patience.as_secs_f64(),
            });
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}
