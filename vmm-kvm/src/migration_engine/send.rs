//! The sending half of the engine: pages (data and tags) of the source into the stream, as
//! records, with what they cost; and the faults a stream may suffer on the way.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use mte_suites::migration_plan::{SentPage, StreamFault};
use mte_suites::vmm::VmmError;

use super::source::SourceMemory;
use super::stream::{Encoder, Page, Record, Register};

/// Pages are read (data and tags) this many at a time when every page goes.
const BATCH_PAGES: u64 = 256;

pub struct Sender<W: Write> {
    encoder: Encoder<W>,
    fault: Option<StreamFault>,
    /// The tags each page had when first sent (kept only to send them stale).
    first_tags: HashMap<u64, Vec<u8>>,
    pub sent: Vec<SentPage>,
    /// Time reading tags at the source, and the guest RAM it covered.
    pub tag_read_time: Duration,
    pub tag_read_bytes: u64,
    /// Pages with neither data nor tags are not sent: for a stream restored into a fresh VM,
    /// whose pages are zero until written.
    leave_out_zero_pages: bool,
}

const WRITE_CALL: &str = "write of the migration stream";

fn write_error(e: std::io::Error) -> VmmError {
    VmmError::Sys {
        call: WRITE_CALL.into(),
        errno: e.raw_os_error().unwrap_or(0),
    }
}

/// Whether sending failed because the stream could not be written: the receiving side gave up,
/// and its own error says why.
pub fn is_write_error(e: &VmmError) -> bool {
    matches!(e, VmmError::Sys { call, .. } if call == WRITE_CALL)
}

impl<W: Write> Sender<W> {
    pub fn new(out: W, page_size: u64, fault: Option<StreamFault>) -> Result<Self, VmmError> {
        Ok(Sender {
            encoder: Encoder::new(out, page_size as u32).map_err(write_error)?,
            fault,
            first_tags: HashMap::new(),
            sent: Vec::new(),
            tag_read_time: Duration::ZERO,
            tag_read_bytes: 0,
            leave_out_zero_pages: false,
        })
    }

    /// The same sender, sending no record for a page of zeros with tags 0.
    pub fn leaving_out_zero_pages(mut self) -> Self {
        self.leave_out_zero_pages = true;
        self
    }

    pub fn record(&mut self, record: &Record) -> Result<(), VmmError> {
        self.encoder.write(record).map_err(write_error)
    }

    pub fn memory(&mut self, ipa: u64, size: u64) -> Result<(), VmmError> {
        self.record(&Record::Memory {
            ipa,
            size,
            mte: true,
        })
    }

    pub fn registers(&mut self, registers: Vec<Register>) -> Result<(), VmmError> {
        self.record(&Record::Registers(registers))
    }

    pub fn round_end(&mut self, round: u32, pages: u64) -> Result<(), VmmError> {
        self.record(&Record::RoundEnd { round, pages })
    }

    pub fn end(&mut self) -> Result<(), VmmError> {
        self.encoder.end().map_err(write_error)
    }

    pub fn bytes(&self) -> u64 {
        self.encoder.bytes()
    }

    /// Every page of guest RAM, in batches (one tag read a batch). A page never mapped goes as
    /// zeros without being read: on a guest's RAM most pages are, and reading them would fault
    /// each in to find zeros. Returns the records sent.
    pub fn send_all(
        &mut self,
        memory: &SourceMemory,
        base: u64,
        round: u32,
    ) -> Result<u64, VmmError> {
        let batch = BATCH_PAGES * memory.page_size;
        let mut at = 0;
        while at < memory.size {
            let len = batch.min(memory.size - at);
            let never_mapped = memory.never_mapped(base + at, len);
            let started = Instant::now();
            let (tags, read) = memory.tags_except(base + at, len, &never_mapped)?;
            self.count_tag_read(started, read);
            let per_page = (memory.page_size / 16) as usize;
            for (i, page_tags) in tags.chunks(per_page).enumerate() {
                let ipa = base + at + i as u64 * memory.page_size;
                let page = if never_mapped[i] {
                    Page::zeros(ipa)
                } else {
                    Page::new(ipa, &memory.data(ipa), page_tags)
                };
                self.send(page, round)?;
            }
            at += len;
        }
        Ok(memory.pages() as u64)
    }

    /// The pages at `ipas`, each with its own tag read.
    pub fn send_pages(
        &mut self,
        memory: &SourceMemory,
        ipas: &[u64],
        round: u32,
    ) -> Result<u64, VmmError> {
        for &ipa in ipas {
            let page = self.read_page(memory, ipa)?;
            self.send(page, round)?;
        }
        Ok(ipas.len() as u64)
    }

    /// One page as it is now: its data and its tags.
    pub fn read_page(&mut self, memory: &SourceMemory, ipa: u64) -> Result<Page, VmmError> {
        let started = Instant::now();
        let tags = memory.tags(ipa, memory.page_size)?;
        self.count_tag_read(started, memory.page_size);
        Ok(Page::new(ipa, &memory.data(ipa), &tags))
    }

    fn count_tag_read(&mut self, started: Instant, len: u64) {
        self.tag_read_time += started.elapsed();
        self.tag_read_bytes += len;
    }

    /// Put a page on its way, as the stream's fault (if any) has it arrive.
    pub fn send(&mut self, mut page: Page, round: u32) -> Result<(), VmmError> {
        if self.leave_out_zero_pages && page.data.is_none() && page.tags.is_none() {
            return Ok(());
        }
        if self.fault == Some(StreamFault::StaleTags) {
            let first = self
                .first_tags
                .entry(page.ipa)
                .or_insert_with(|| page.tags.clone().unwrap_or_default());
            in_transit(StreamFault::StaleTags, &mut page, Some(first));
        } else if let Some(fault) = self.fault {
            in_transit(fault, &mut page, None);
        }
        self.sent.push(SentPage {
            ipa: page.ipa,
            round,
            data_bytes: page.data_bytes() as u32,
            tag_bytes: page.tag_bytes() as u32,
        });
        self.record(&Record::Page(page))
    }

    pub fn into_inner(self) -> W {
        self.encoder.into_inner()
    }
}

/// What `fault` does to a page on its way. `first_tags` are the tags the page had when first
/// sent (empty for tags that were all 0).
pub fn in_transit(fault: StreamFault, page: &mut Page, first_tags: Option<&Vec<u8>>) {
    match fault {
        StreamFault::DropTags => page.tags = None,
        StreamFault::ZeroTags => {
            if let Some(tags) = &mut page.tags {
                tags.fill(0);
            }
        }
        StreamFault::ShiftTags => {
            if let Some(tags) = &mut page.tags {
                tags.rotate_right(1);
            }
        }
        StreamFault::StaleTags => {
            if let Some(first) = first_tags {
                page.tags = (!first.is_empty()).then(|| first.clone());
            }
        }
        // Post-copy's receiving side applies it: nothing changes on the way.
        StreamFault::LateTags => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration_engine::stream::Decoder;

    fn tagged(ipa: u64, seed: u8) -> Page {
        let tags: Vec<u8> = (0..256u32)
            .map(|i| (i as u8).wrapping_add(seed) % 15 + 1)
            .collect();
        Page::new(ipa, &[7; 4096], &tags)
    }

    #[test]
    fn each_fault_changes_the_tags_as_named() {
        let page = tagged(0, 0);
        let original = page.tags.clone().unwrap();

        let mut dropped = page.clone();
        in_transit(StreamFault::DropTags, &mut dropped, None);
        assert_eq!((dropped.tags, dropped.data), (None, page.data.clone()));

        let mut zeroed = page.clone();
        in_transit(StreamFault::ZeroTags, &mut zeroed, None);
        assert_eq!(zeroed.tags, Some(vec![0; 256]));

        let mut shifted = page.clone();
        in_transit(StreamFault::ShiftTags, &mut shifted, None);
        let shifted = shifted.tags.unwrap();
        assert_eq!(&shifted[1..], &original[..255]);
        assert_eq!(shifted[0], original[255]);

        let first = tagged(0, 5).tags.unwrap();
        let mut stale = page.clone();
        in_transit(StreamFault::StaleTags, &mut stale, Some(&first));
        assert_eq!(stale.tags, Some(first));
        let mut was_untagged = page.clone();
        in_transit(StreamFault::StaleTags, &mut was_untagged, Some(&Vec::new()));
        assert_eq!(was_untagged.tags, None);

        let mut late = page.clone();
        in_transit(StreamFault::LateTags, &mut late, None);
        assert_eq!(late, page);
    }

    #[test]
    fn pages_of_zeros_can_be_left_out() {
        let mut sender = Sender::new(Vec::new(), 4096, None)
            .unwrap()
            .leaving_out_zero_pages();
        sender.memory(0, 1 << 20).unwrap();
        sender.send(Page::new(0, &[0; 4096], &[0; 256]), 0).unwrap();
        sender
            .send(Page::new(0x1000, &[0; 4096], &[1; 256]), 0)
            .unwrap();
        sender
            .send(Page::new(0x2000, &[1; 4096], &[0; 256]), 0)
            .unwrap();
        let ipas: Vec<u64> = sender.sent.iter().map(|p| p.ipa).collect();
        assert_eq!(ipas, [0x1000, 0x2000]);
    }

    #[test]
    fn stale_tags_are_those_of_the_first_send() {
        let mut sender = Sender::new(Vec::new(), 4096, Some(StreamFault::StaleTags)).unwrap();
        sender.memory(0, 1 << 20).unwrap();
        sender.send(tagged(0x1000, 1), 0).unwrap();
        sender.send(tagged(0x1000, 2), 1).unwrap();
        sender.send(tagged(0x2000, 3), 1).unwrap();
        sender.end().unwrap();
        assert_eq!(sender.sent.len(), 3);
        assert!(sender
            .sent
            .iter()
            .all(|p| p.tag_bytes == 128 && p.data_bytes == 4096));
        let bytes = sender.into_inner();
        let mut decoder = Decoder::new(&bytes[..]).unwrap();
        let mut pages = Vec::new();
        while let Some(record) = decoder.next_record().unwrap() {
            if let Record::Page(page) = record {
                pages.push(page);
            }
        }
        assert_eq!(pages[1].tags, tagged(0x1000, 1).tags);
        assert_eq!(pages[2].tags, tagged(0x2000, 3).tags);
    }
}
