//! Post-copy: the destination runs before its memory is there. Its RAM is registered with
//! userfaultfd, and a page server thread answers each fault with the page from the (paused)
//! source, through the stream like any other page record.
//!
//! The guarantee that a page's data and tags are both in place before anything touches it is
//! [`super::fill`]'s: where the kernel takes a MAP_SHARED memslot with MTE (6.2 on), the
//! destination's RAM is a memfd, and each page's data and tags go in through a second,
//! PROT_MTE mapping before UFFDIO_CONTINUE maps it where the guest faulted (`models/`: tags
//! before the PTE, which holds on the kernel's fault path). Where it does not, the page is
//! filled with UFFDIO_COPY(DONTWAKE), its tags written with KVM_ARM_MTE_COPY_TAGS(TO_GUEST)
//! (the page is present, so the ioctl's own access takes no fault and cannot wait on the
//! server that issues it), then UFFDIO_WAKE: that relies on the faulting thread (this engine's
//! one vCPU, or the VMM reading the mailbox) sleeping until the wake, which
//! `handle_userfault()` does not promise: it goes on when it finds the PTE installed as it
//! re-checks after queueing the fault, and the model finds the vCPU reading zero tags then.
//! The report says which order ran.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mte_protocol::RAM_IPA;
use mte_suites::host_mm::Backing;
use mte_suites::migration_plan::{MigrationReport, SentPage, StreamFault};
use mte_suites::vmm::VmmError;

use super::arrived::MigratedGuest;
use super::fill::Filler;
use super::in_process::{pause, resume, Carried};
use super::receive::{check_page_size, stream_error, vm_for};
use super::send::Sender;
use super::source::SourceMemory;
use super::stream::{Decoder, Record};
use crate::copy_tags;
use crate::memory::GuestRam;
use crate::vm::Vm;
use crate::KvmGuest;

/// How long the server waits for a fault before it looks at its stop flag again.
const POLL_MS: i32 = 20;

/// Post-copy from a paused source: the destination guest, its vCPU state restored and its
/// memory to come on demand.
pub fn post_copy(
    mut source: KvmGuest,
    fault: Option<StreamFault>,
) -> Result<MigratedGuest, VmmError> {
    let paused = pause(&mut source)?;
    let memory = SourceMemory::of(&source.transport().vm);
    let (writer, reader) = loopback();
    let mut sender = Sender::new(writer, memory.page_size, fault)?;
    sender.memory(RAM_IPA, memory.size)?;
    sender.registers(paused.registers.clone())?;
    let mut decoder = Decoder::new(reader).map_err(stream_error)?;
    check_page_size(&decoder)?;
    let Some(Record::Memory { ipa, size, mte }) = decoder.next_record().map_err(stream_error)?
    else {
        return Err(VmmError::Host(
            "post-copy stream without its Memory record".into(),
        ));
    };
    let (vm, shared_refused) = destination(ipa, size, mte)?;
    let filler = Filler::register(&vm, 0, size as usize)?;
    let Some(Record::Registers(registers)) = decoder.next_record().map_err(stream_error)? else {
        return Err(VmmError::Host(
            "post-copy stream without the vCPU's registers".into(),
        ));
    };
    let (dest_vm, dest_hva) = (vm.raw_fd(), vm.ram.host_address());
    let how = format!(
        "post-copy: vCPU state first, then each page when the destination first touches it \
         (userfaultfd): {}{}",
        filler.order().describe(),
        shared_refused.map_or(String::new(), |why| format!(
            " (a memfd mapped MAP_SHARED was refused: {why})"
        ))
    );
    let (inner, differing) = resume(vm, &registers, Carried::from(&source))?;
    let mut report = MigrationReport {
        how,
        downtime: paused.at.elapsed(),
        registers_differing: differing,
        ..Default::default()
    };
    paused.add_to(&mut report);
    let server = PageServer::start(
        Context {
            filler,
            sender,
            decoder,
            source: memory,
            dest_vm,
            dest_hva,
            late_tags: fault == Some(StreamFault::LateTags),
        },
        source,
    )?;
    Ok(MigratedGuest {
        server: Some(server),
        inner,
        report,
    })
}

/// The destination's VM: on a memfd mapped MAP_SHARED where the kernel takes one with MTE (so
/// that pages can be filled before they are mapped), else on private memory, with why not.
fn destination(ipa: u64, size: u64, mte: bool) -> Result<(Vm, Option<VmmError>), VmmError> {
    match vm_for(ipa, size, mte, |size| {
        GuestRam::with_backing(size, Backing::Memfd)
    }) {
        Ok(vm) => Ok((vm, None)),
        Err(refused) => {
            let vm = vm_for(ipa, size, mte, |size| {
                GuestRam::new(size).map_err(|e| VmmError::Sys {
                    call: "mmap of the destination's RAM".into(),
                    errno: e.raw_os_error().unwrap_or(0),
                })
            })?;
            Ok((vm, Some(refused)))
        }
    }
}

/// An in-memory byte channel: the server thread writes a page record and reads it back, so
/// that on-demand pages go through the stream's encoding and checks too.
#[derive(Clone, Default)]
pub struct Loopback(Arc<Mutex<VecDeque<u8>>>);

fn loopback() -> (Loopback, Loopback) {
    let channel = Loopback::default();
    (channel.clone(), channel)
}

impl Write for Loopback {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Read for Loopback {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut queue = self.0.lock().unwrap();
        let n = buf.len().min(queue.len());
        for (slot, byte) in buf.iter_mut().zip(queue.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

/// What the server did, shared with the guest's thread.
#[derive(Default)]
struct Served {
    pages: Vec<SentPage>,
    on_demand: Vec<u64>,
    tags_before_wake: u64,
    /// Tags held back by the late-tags fault, by IPA.
    late: Vec<(u64, Vec<u8>)>,
    tag_read_time: Duration,
    tag_read_bytes: u64,
    tag_write_time: Duration,
    tag_write_bytes: u64,
    stream_bytes: u64,
    error: Option<VmmError>,
}

/// What the server thread works with.
struct Context {
    filler: Filler,
    sender: Sender<Loopback>,
    decoder: Decoder<Loopback>,
    source: SourceMemory,
    dest_vm: RawFd,
    dest_hva: u64,
    late_tags: bool,
}

/// The page server and the source it serves from. Dropping it stops the thread, closes the
/// userfaultfd and lets the source go.
pub struct PageServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    served: Arc<Mutex<Served>>,
    dest_vm: RawFd,
    _source: KvmGuest,
}

impl PageServer {
    fn start(context: Context, source: KvmGuest) -> Result<Self, VmmError> {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Served::default()));
        let dest_vm = context.dest_vm;
        let thread = {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            std::thread::Builder::new()
                .name("postcopy-pages".into())
                .spawn(move || serve(context, &stop, &served))
                .map_err(|e| VmmError::Host(format!("cannot start the page server: {e}")))?
        };
        Ok(PageServer {
            stop,
            thread: Some(thread),
            served,
            dest_vm,
            _source: source,
        })
    }

    fn served(&self) -> std::sync::MutexGuard<'_, Served> {
        self.served.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server's first error, if it had one.
    pub fn healthy(&self) -> Result<(), VmmError> {
        match &self.served().error {
            Some(e) => Err(VmmError::Host(format!("post-copy page server: {e}"))),
            None => Ok(()),
        }
    }

    /// Write the tags the late-tags fault held back.
    pub fn deliver_late_tags(&self) -> Result<(), VmmError> {
        let late = std::mem::take(&mut self.served().late);
        for (ipa, tags) in late {
            copy_tags::write(self.dest_vm, ipa, &tags)?;
        }
        Ok(())
    }

    pub fn add_to(&self, report: &mut MigrationReport) {
        let served = self.served();
        report.pages.extend_from_slice(&served.pages);
        report.on_demand.extend_from_slice(&served.on_demand);
        report.tags_before_wake += served.tags_before_wake;
        report.tag_read_time += served.tag_read_time;
        report.tag_read_bytes += served.tag_read_bytes;
        report.tag_write_time += served.tag_write_time;
        report.tag_write_bytes += served.tag_write_bytes;
        report.stream_bytes += served.stream_bytes;
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut context: Context, stop: &AtomicBool, served: &Mutex<Served>) {
    while !stop.load(Ordering::Relaxed) {
        let outcome = match context.filler.next_fault(POLL_MS) {
            Ok(None) => continue,
            Ok(Some(page)) => context.bring(page, served).inspect_err(|_| {
                // Let whoever waits go on (with zeros) rather than hang; every later step of
                // the guest reports the error.
                context.filler.give_up(page);
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            let mut served = served.lock().unwrap_or_else(PoisonError::into_inner);
            served.error.get_or_insert(e);
        }
    }
}

impl Context {
    /// Bring the page at `hva` (destination address) from the source: data, tags, wake.
    fn bring(&mut self, hva: u64, served: &Mutex<Served>) -> Result<(), VmmError> {
        let page_size = self.source.page_size;
        let ipa = RAM_IPA + (hva - self.dest_hva);
        let page = self.sender.read_page(&self.source, ipa)?;
        self.sender.send(page, 0)?;
        let Some(Record::Page(page)) = self.decoder.next_record().map_err(stream_error)? else {
            return Err(VmmError::Host(format!("no Page record came for {ipa:#x}")));
        };
        let zeros;
        let data = match &page.data {
            Some(data) => data.as_slice(),
            None => {
                zeros = vec![0u8; page_size as usize];
                &zeros
            }
        };
        // The late-tags fault wakes before the tags; the right order puts them in first.
        let started = Instant::now();
        let tags = page.tags.as_deref();
        if !self
            .filler
            .fill(hva, data, tags, Duration::ZERO, self.late_tags)?
        {
            return Ok(());
        }
        let mut served_now = Served::default();
        if let Some(tags) = page.tags {
            if self.late_tags {
                served_now.late.push((ipa, tags));
            } else {
                served_now.tag_write_time = started.elapsed();
                served_now.tag_write_bytes = page_size;
                served_now.tags_before_wake = 1;
            }
        }
        let mut served = served.lock().unwrap_or_else(PoisonError::into_inner);
        served.pages.append(&mut self.sender.sent);
        served.on_demand.push(ipa);
        served.tags_before_wake += served_now.tags_before_wake;
        served.late.append(&mut served_now.late);
        served.tag_write_time += served_now.tag_write_time;
        served.tag_write_bytes += served_now.tag_write_bytes;
        served.tag_read_time = self.sender.tag_read_time;
        served.tag_read_bytes = self.sender.tag_read_bytes;
        served.stream_bytes = self.sender.bytes();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_gives_back_what_was_written_in_order() {
        let (mut writer, mut reader) = loopback();
        writer.write_all(b"abc").unwrap();
        writer.write_all(b"de").unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(reader.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(reader.read(&mut buf).unwrap(), 1);
        assert_eq!(reader.read(&mut buf).unwrap(), 0);
    }
}
