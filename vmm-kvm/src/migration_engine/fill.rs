//! How post-copy puts a page in place where a thread faulted on it, so that its data and its
//! tags are both there before any vCPU can touch it (the rule `models/`'s post-copy model
//! checks), in the best order the destination's RAM allows:
//!
//! - [`Order::BeforeMapping`]: RAM is a memfd mapped MAP_SHARED (KVM takes such a memslot with
//!   MTE from 6.2), registered with userfaultfd for missing and minor faults. The page's data
//!   and then its tags go in through a second, PROT_MTE mapping of the memfd, where nothing
//!   faults on it; only then does UFFDIO_CONTINUE map it in the guest's mapping, and wake the
//!   faulting thread. No thread can find the page present in the guest's mapping before its
//!   tags: `handle_userfault()` re-reading the PTE after queueing a fault, a second vCPU, a
//!   signal that ends the wait early, all find it absent or whole.
//! - [`Order::DontWake`], where the kernel refuses a shared memslot with MTE (before 6.2):
//!   private RAM registered for missing pages; UFFDIO_COPY with UFFDIO_COPY_MODE_DONTWAKE
//!   fills the page, KVM_ARM_MTE_COPY_TAGS(TO_GUEST) writes its tags, UFFDIO_WAKE lets the
//!   faulting thread go on. The page is present in the guest's mapping from UFFDIO_COPY on, so
//!   this holds only while nothing else touches it before the wake: the faulting thread must be
//!   the only one that could, and it must stay asleep until the wake. The kernel does not
//!   promise the second: `handle_userfault()` goes on without sleeping when it finds the PTE
//!   installed as it re-checks after queueing the fault (the model's counterexample), and a
//!   guest with a second vCPU breaks the first.

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::time::Duration;

use mte_protocol::RAM_IPA;
use mte_suites::host_mm::Backing;
use mte_suites::vmm::VmmError;

use crate::copy_tags;
use crate::memory::page_size;
use crate::mte_view::MteView;
use crate::uffd::{Faults, Filled, Userfaultfd};
use crate::vm::Vm;

/// The order in which a page's data and tags go in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    BeforeMapping,
    DontWake,
}

impl Order {
    /// In words, for the migration's report and the races' evidence.
    pub fn describe(self) -> &'static str {
        match self {
            Order::BeforeMapping => {
                "data, then tags through a second PROT_MTE MAP_SHARED mapping of the memfd \
                 behind RAM, then UFFDIO_CONTINUE maps the page and wakes (minor faults): the \
                 page is absent from the guest's mapping until its tags are in"
            }
            Order::DontWake => {
                "UFFDIO_COPY(DONTWAKE), KVM_ARM_MTE_COPY_TAGS(TO_GUEST), UFFDIO_WAKE (missing \
                 pages of private RAM, the kernel refusing a shared memslot with MTE): the page \
                 is present from the copy on, and its tags are safe only while the faulting \
                 thread alone could touch it and sleeps until the wake"
            }
        }
    }
}

/// A range of a VM's RAM whose pages come on demand, and how they are filled.
pub struct Filler {
    uffd: Userfaultfd,
    order: Order,
    /// The second mapping of [`Order::BeforeMapping`].
    view: Option<MteView>,
    vm: RawFd,
    /// The guest's mapping of RAM (the VM's memslot).
    hva: u64,
    page: u64,
    /// Pages put in place, by offset into RAM: a second fault on one only needs a wake.
    filled: HashSet<u64>,
}

impl Filler {
    /// Register `[offset, offset + len)` of `vm`'s RAM for userfaultfd, in the order its
    /// backing allows.
    pub fn register(vm: &Vm, offset: usize, len: usize) -> Result<Self, VmmError> {
        let order = match vm.ram.backing() {
            Backing::PrivateAnonymous => Order::DontWake,
            _ => Order::BeforeMapping,
        };
        let (uffd, view) = match order {
            Order::DontWake => (Userfaultfd::open(Faults::Missing)?, None),
            Order::BeforeMapping => {
                let view = MteView::of(&vm.ram, offset, len)?;
                if !view.is_second_mapping() {
                    return Err(VmmError::Host(format!(
                        "RAM on {} has no second mapping to fill pages through",
                        vm.ram.backing().describe()
                    )));
                }
                (Userfaultfd::open(Faults::MissingAndMinor)?, Some(view))
            }
        };
        let faults = match order {
            Order::DontWake => Faults::Missing,
            Order::BeforeMapping => Faults::MissingAndMinor,
        };
        let hva = vm.ram.host_address();
        uffd.register(hva + offset as u64, len as u64, faults)?;
        Ok(Filler {
            uffd,
            order,
            view,
            vm: vm.raw_fd(),
            hva,
            page: page_size() as u64,
            filled: HashSet::new(),
        })
    }

    pub fn order(&self) -> Order {
        self.order
    }

    /// The page (its address in the guest's mapping) of the next fault, waiting at most
    /// `timeout_ms`.
    pub fn next_fault(&self, timeout_ms: i32) -> Result<Option<u64>, VmmError> {
        Ok(self
            .uffd
            .next_fault(timeout_ms)?
            .map(|address| address & !(self.page - 1)))
    }

    /// Put the page at `hva` in place with `data` (a page) and `tags` (its granules', or none:
    /// left zero), and wake whoever waits for it. `hold` waits between the data and the tags
    /// (a page server whose tags come later than the data); `late` wakes before the tags and
    /// leaves them to the caller (the `migrate-late-tags` fault): then they are returned.
    /// Returns whether the page was put in place now (not by an earlier fault).
    pub fn fill(
        &mut self,
        hva: u64,
        data: &[u8],
        tags: Option<&[u8]>,
        hold: Duration,
        late: bool,
    ) -> Result<bool, VmmError> {
        let offset = hva - self.hva;
        if self.filled.contains(&offset) {
            self.uffd.wake(hva, self.page)?;
            return Ok(false);
        }
        let ipa = RAM_IPA + offset;
        match (self.order, &self.view) {
            (Order::BeforeMapping, Some(view)) => {
                view.write_data(offset as usize, data);
                std::thread::sleep(hold);
                if let (Some(tags), false) = (tags, late) {
                    view.store_tags(offset as usize, tags);
                }
                if let Filled::AlreadyThere = self.uffd.continue_mapping(hva, self.page, true)? {
                    self.uffd.wake(hva, self.page)?;
                }
                self.filled.insert(offset);
            }
            _ => {
                // The late-tags fault wakes with the copy; the right order waits for the tags.
                if let Filled::AlreadyThere = self.uffd.copy(hva, data, late)? {
                    self.uffd.wake(hva, self.page)?;
                    return Ok(false);
                }
                self.filled.insert(offset);
                std::thread::sleep(hold);
                if let (Some(tags), false) = (tags, late) {
                    copy_tags::write(self.vm, ipa, tags)?;
                }
                if !late {
                    self.uffd.wake(hva, self.page)?;
                }
            }
        }
        Ok(true)
    }

    /// Let a waiting thread go on with a page of zeros, after an error: it must not hang.
    pub fn give_up(&mut self, hva: u64) {
        self.filled.remove(&(hva - self.hva));
        let zeros = vec![0u8; self.page as usize];
        let _ = self.fill(hva, &zeros, None, Duration::ZERO, true);
        let _ = self.uffd.wake(hva, self.page);
    }
}
