//! The receiving half of the engine: a stream into a new VM with MTE: its RAM, each page's data
//! and tags, and the vCPU registers to restore.

use std::io::Read;
use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;
use mte_protocol::{GRANULE, RAM_IPA, RAM_SIZE};
use mte_suites::migration_plan::StreamFault;
use mte_suites::vmm::VmmError;

use super::send::in_transit;
use super::stream::{Decoder, Page, Record, Register, StreamError};
use crate::copy_tags;
use crate::memory::{page_size, GuestRam};
use crate::vm::Vm;

/// What the destination did with the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReceiveStats {
    pub pages: u64,
    pub rounds: u32,
    /// Time writing tags with KVM_ARM_MTE_COPY_TAGS, and the guest RAM it covered.
    pub tag_write_time: Duration,
    pub tag_write_bytes: u64,
    pub bytes: u64,
}

/// A VM that has received memory and is ready for its vCPU.
pub struct Arrival {
    pub vm: Vm,
    pub registers: Vec<Register>,
    pub stats: ReceiveStats,
}

pub fn stream_error(e: StreamError) -> VmmError {
    VmmError::Host(e.to_string())
}

/// Check that the stream's page size is this host's: tags are copied a host page at a time.
pub fn check_page_size<R: Read>(decoder: &Decoder<R>) -> Result<(), VmmError> {
    let stream = decoder.header().page_size as usize;
    if stream != page_size() {
        return Err(VmmError::Host(format!(
            "the migration stream has {stream}-byte pages, this host {}",
            page_size()
        )));
    }
    Ok(())
}

/// A new VM with MTE for the stream's `Memory` record, its RAM made by `make_ram`.
pub fn vm_for(
    ipa: u64,
    size: u64,
    mte: bool,
    make_ram: impl FnOnce(usize) -> Result<GuestRam, VmmError>,
) -> Result<Vm, VmmError> {
    if ipa != RAM_IPA {
        return Err(VmmError::Host(format!(
            "the migration stream's RAM starts at {ipa:#x}, this VMM's at {RAM_IPA:#x}"
        )));
    }
    // The RAM this VMM gives a guest, which every source of this engine has: the stream's
    // figure sizes the mapping and the destination's page bookkeeping.
    if size != RAM_SIZE {
        return Err(VmmError::Host(format!(
            "the migration stream's RAM is {size:#x} bytes, this VMM's guests have {RAM_SIZE:#x}"
        )));
    }
    if !mte {
        return Err(VmmError::Host(
            "the migration stream is of a VM without MTE; this engine moves MTE guests".into(),
        ));
    }
    let kvm = Kvm::new().map_err(|e| VmmError::Sys {
        call: "open /dev/kvm for the destination".into(),
        errno: e.errno(),
    })?;
    Vm::new(&kvm, true, make_ram(size as usize)?)
}

/// Read a whole stream (up to its `End`) into a new VM. With `alone`, nothing may follow the
/// stream on `input`.
pub fn receive<R: Read>(input: R, alone: bool) -> Result<Arrival, VmmError> {
    receive_broken(input, alone, None)
}

/// As [`receive`], each page broken by `fault` as it is read (fault injection on the receiving
/// side, for a stream whose bytes must stay whole).
pub fn receive_broken<R: Read>(
    input: R,
    alone: bool,
    fault: Option<StreamFault>,
) -> Result<Arrival, VmmError> {
    let mut decoder = Decoder::new(input).map_err(stream_error)?;
    check_page_size(&decoder)?;
    let mut destination: Option<Destination> = None;
    let mut registers = Vec::new();
    let mut rounds = 0;
    while let Some(record) = decoder.next_record().map_err(stream_error)? {
        match record {
            Record::Memory { ipa, size, mte } => {
                let vm = vm_for(ipa, size, mte, |size| {
                    GuestRam::new(size).map_err(|e| VmmError::Sys {
                        call: "mmap of the destination's RAM".into(),
                        errno: e.raw_os_error().unwrap_or(0),
                    })
                })?;
                destination = Some(Destination::new(vm));
            }
            Record::Page(mut page) => {
                if let Some(fault) = fault {
                    in_transit(fault, &mut page, None);
                }
                destination
                    .as_mut()
                    .expect("the decoder refuses pages before Memory")
                    .apply(&page)?
            }
            Record::Registers(r) => registers = r,
            Record::RoundEnd { .. } => rounds += 1,
            Record::End { .. } => {}
        }
    }
    if alone {
        decoder.expect_eof().map_err(stream_error)?;
    }
    let Some(destination) = destination else {
        return Err(VmmError::Host(
            "the migration stream ended without a Memory record".into(),
        ));
    };
    if registers.is_empty() {
        return Err(VmmError::Host(
            "the migration stream ended without the vCPU's registers".into(),
        ));
    }
    let mut stats = destination.stats;
    stats.rounds = rounds;
    stats.bytes = decoder.offset();
    Ok(Arrival {
        vm: destination.vm,
        registers,
        stats,
    })
}

/// The destination VM as pages arrive. It remembers which pages it wrote data or tags to, so
/// that a page that later arrives as zeros (no data, no tags) is cleared, while pages never
/// written keep what a fresh page has: zero data, and tags KVM zeroes when it first maps the
/// page for the guest.
struct Destination {
    vm: Vm,
    written: Vec<bool>,
    tagged: Vec<bool>,
    stats: ReceiveStats,
}

impl Destination {
    fn new(vm: Vm) -> Self {
        let pages = vm.ram.size() / page_size();
        Destination {
            vm,
            written: vec![false; pages],
            tagged: vec![false; pages],
            stats: ReceiveStats::default(),
        }
    }

    fn apply(&mut self, page: &Page) -> Result<(), VmmError> {
        let size = page_size();
        let index = ((page.ipa - RAM_IPA) as usize) / size;
        let host = self.vm.ram.host_address() as usize + index * size;
        match &page.data {
            Some(data) => {
                // SAFETY: a page of the destination's own mapping (the decoder checked the IPA
                // against the RAM it announced); no vCPU runs yet.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), host as *mut u8, size) };
                self.written[index] = true;
            }
            None if self.written[index] => {
                // SAFETY: as above.
                unsafe { std::ptr::write_bytes(host as *mut u8, 0, size) };
            }
            None => {}
        }
        let zeros;
        let tags = match &page.tags {
            Some(tags) => Some(tags.as_slice()),
            None if self.tagged[index] => {
                zeros = vec![0u8; size / GRANULE as usize];
                Some(zeros.as_slice())
            }
            None => None,
        };
        if let Some(tags) = tags {
            let started = Instant::now();
            copy_tags::write(self.vm.raw_fd(), page.ipa, tags)?;
            self.stats.tag_write_time += started.elapsed();
            self.stats.tag_write_bytes += size as u64;
            self.tagged[index] = page.tags.is_some();
        }
        self.stats.pages += 1;
        Ok(())
    }
}
