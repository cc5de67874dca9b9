//! The host's memory management of a guest's RAM, as the scenarios see it: what backs the RAM
//! memslot, what the VMM may do to that mapping (madvise, mprotect, fork), what the host kernel
//! says about its pages (mincore, /proc/self/pagemap, /proc/kpageflags), swap and KSM, and a
//! second VM on the same memory. Races of the host against the guest are
//! [`crate::race_plan`]'s.
//!
//! These are the types of the [`crate::vmm::Guest`] steps; the KVM backend implements them,
//! other lanes answer [`crate::vmm::VmmError::Unsupported`].

use crate::error::VmmError;

/// What backs a VM's RAM memslot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backing {
    /// `MAP_PRIVATE | MAP_ANONYMOUS`: what VMMs use by default.
    #[default]
    PrivateAnonymous,
    /// `MAP_SHARED | MAP_ANONYMOUS` (shmem underneath, without a file to map again).
    SharedAnonymous,
    /// A memfd (`memfd_create`, shmem), mapped `MAP_SHARED`; it can be mapped again.
    Memfd,
    /// A file on a tmpfs mount, mapped `MAP_SHARED`.
    TmpfsFile,
    /// A file on a ramfs mount: page cache that is not shmem, so the kernel does not let it
    /// hold tags (no `VM_MTE_ALLOWED`).
    RamfsFile { shared: bool },
}

impl Backing {
    /// In words, for evidence.
    pub fn describe(self) -> &'static str {
        match self {
            Backing::PrivateAnonymous => "MAP_PRIVATE|MAP_ANONYMOUS",
            Backing::SharedAnonymous => "MAP_SHARED|MAP_ANONYMOUS",
            Backing::Memfd => "a memfd mapped MAP_SHARED",
            Backing::TmpfsFile => "a tmpfs file mapped MAP_SHARED",
            Backing::RamfsFile { shared: true } => "a ramfs file mapped MAP_SHARED",
            Backing::RamfsFile { shared: false } => "a ramfs file mapped MAP_PRIVATE",
        }
    }

    /// Whether a second mapping of the same memory can be made (there is a file to map).
    pub fn has_file(self) -> bool {
        matches!(
            self,
            Backing::Memfd | Backing::TmpfsFile | Backing::RamfsFile { .. }
        )
    }
}

/// madvise(2) advice the scenarios give on guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// MADV_PAGEOUT (21): reclaim the pages now (to swap, for anonymous memory).
    PageOut,
    /// MADV_DONTNEED (4): drop the mappings; private anonymous memory reads zero-filled after.
    DontNeed,
    /// MADV_MERGEABLE (12): let KSM merge identical pages.
    Mergeable,
    /// MADV_UNMERGEABLE (13): undo it, unmerging what KSM merged.
    Unmergeable,
    /// MADV_NOHUGEPAGE (15): no transparent huge pages here; pages fault one by one.
    NoHugePage,
    /// MADV_REMOVE (9): free the pages of shared memory behind the range (a hole in its
    /// file); the next touch finds fresh pages.
    Remove,
}

impl Advice {
    /// The value madvise(2) takes (identical on every Linux architecture for these).
    pub fn value(self) -> i32 {
        match self {
            Advice::PageOut => 21,
            Advice::DontNeed => 4,
            Advice::Mergeable => 12,
            Advice::Unmergeable => 13,
            Advice::NoHugePage => 15,
            Advice::Remove => 9,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Advice::PageOut => "MADV_PAGEOUT",
            Advice::DontNeed => "MADV_DONTNEED",
            Advice::Mergeable => "MADV_MERGEABLE",
            Advice::Unmergeable => "MADV_UNMERGEABLE",
            Advice::NoHugePage => "MADV_NOHUGEPAGE",
            Advice::Remove => "MADV_REMOVE",
        }
    }
}

/// mprotect(2) of guest RAM in the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    ReadOnly,
    ReadWrite,
}

/// What the host kernel says about one page of the VMM's mapping of guest RAM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageState {
    /// mincore(2): the page is in memory (page cache or swap cache included).
    pub resident: bool,
    /// /proc/self/pagemap bit 63: a page table entry maps a page.
    pub present: bool,
    /// /proc/self/pagemap bit 62: the entry is a swap entry.
    pub swapped: bool,
    /// /proc/self/pagemap bit 56: the page is mapped by this process only.
    pub exclusive: bool,
    /// The page frame (0 when not present, or without CAP_SYS_ADMIN). Pages KSM merged share
    /// one frame. (/proc/kpageflags' KPF_KSM is no help: since the folio rewrite
    /// of stable_page_flags() in 2024 it is set for every anonymous page.)
    pub pfn: u64,
    /// /proc/kpageflags KPF_ZERO_PAGE: the shared zero page (only known with a pfn).
    pub zero_page: bool,
    /// /proc/kpageflags KPF_THP: part of a transparent huge page.
    pub huge: bool,
}

impl PageState {
    /// A short rendering for evidence: `S` swapped, `R` resident, `-` neither; `z` the zero
    /// page, `h` huge.
    pub fn letter(&self) -> char {
        match (self.swapped, self.present || self.resident) {
            (true, _) => 'S',
            (false, true) if self.zero_page => 'z',
            (false, true) if self.huge => 'h',
            (false, true) => 'R',
            (false, false) => '-',
        }
    }
}

/// One line of /proc/swaps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapDevice {
    pub name: String,
    pub kind: String,
    pub size_kib: u64,
    pub used_kib: u64,
    pub priority: i64,
}

impl SwapDevice {
    pub fn free_kib(&self) -> u64 {
        self.size_kib.saturating_sub(self.used_kib)
    }
}

/// Parse /proc/swaps (a header line, then `name type size used priority`).
pub fn parse_proc_swaps(text: &str) -> Vec<SwapDevice> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 5 {
                return None;
            }
            Some(SwapDevice {
                name: fields[0].into(),
                kind: fields[1].into(),
                size_kib: fields[2].parse().ok()?,
                used_kib: fields[3].parse().ok()?,
                priority: fields[4].parse().ok()?,
            })
        })
        .collect()
}

/// The KSM knobs and counters of /sys/kernel/mm/ksm; `None` where the kernel has no such file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KsmState {
    pub run: u64,
    pub pages_to_scan: u64,
    pub sleep_millisecs: u64,
    pub full_scans: u64,
    pub pages_shared: u64,
    pub pages_sharing: u64,
    pub use_zero_pages: Option<u64>,
}

/// A KSM knob a scenario may set (and must put back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KsmKnob {
    Run,
    PagesToScan,
    SleepMillisecs,
    UseZeroPages,
}

impl KsmKnob {
    /// The file under /sys/kernel/mm/ksm.
    pub fn file(self) -> &'static str {
        match self {
            KsmKnob::Run => "run",
            KsmKnob::PagesToScan => "pages_to_scan",
            KsmKnob::SleepMillisecs => "sleep_millisecs",
            KsmKnob::UseZeroPages => "use_zero_pages",
        }
    }
}

/// What the forked child writes to a range of its copy of guest RAM, through the VMM's mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Zero words: breaks copy-on-write while the data stays zero.
    Zeros,
    /// `mte_protocol::pattern_word(seed, offset)` at each 8-byte offset from the range's start.
    Pattern(u64),
}

/// A write the child makes: `[ipa, ipa + len)`, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildWrite {
    pub ipa: u64,
    pub len: u64,
    pub fill: Fill,
}

/// What a forked VMM process does with its copy of guest RAM. Before its writes it creates its
/// own VM on its copy of the mapping (KVM ties a VM to the mm that created it) and reads the
/// tags of `watch` with KVM_ARM_MTE_COPY_TAGS; it reads them again after its writes, then waits
/// for the parent, reads them a third time and copies the data of `watch` out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForkPlan {
    /// Whether the child's VM enables KVM_CAP_ARM_MTE. Without it, or without `watch`, the
    /// child creates no VM and only waits (what a cost measurement needs).
    pub mte: bool,
    /// Page-aligned ranges whose tags (and, at the end, data) the child reports.
    pub watch: Vec<(u64, u64)>,
    /// The child's writes, made after its first look.
    pub writes: Vec<ChildWrite>,
}

/// What the child saw; tag maps and data concatenated over [`ForkPlan::watch`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildReport {
    pub pid: u32,
    /// Tags just after the fork, before the child wrote anything.
    pub tags_at_fork: Vec<u8>,
    /// Tags after the child's own writes (its copies broke).
    pub tags_after_own_writes: Vec<u8>,
    /// Tags after the parent's guest wrote to its side.
    pub tags_after_parent: Vec<u8>,
    /// The child's data at the end.
    pub data_at_end: Vec<u8>,
}

/// A forked VMM process, waiting for the parent after its first look.
pub trait ForkedChild {
    fn pid(&self) -> u32;
    /// Let the child take its last look and exit; wait for it with a deadline (it is killed
    /// if it does not exit in time).
    fn finish(self: Box<Self>) -> Result<ChildReport, VmmError>;
}

/// A second VM whose RAM memslot is a second mapping of the same memory as a guest's.
pub trait TagPeer {
    /// What the peer is, in words.
    fn describe(&self) -> String;
    /// KVM_ARM_MTE_COPY_TAGS(FROM_GUEST) on the peer VM.
    fn read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError>;
    /// KVM_ARM_MTE_COPY_TAGS(TO_GUEST) on the peer VM.
    fn write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError>;
    /// The data of `[ipa, ipa + len)` through the peer's mapping.
    fn read_data(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_swaps_parses_devices_and_skips_the_header() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/zram0                              partition\t262140\t\t1024\t\t100\n";
        let devices = parse_proc_swaps(text);
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].name, "/dev/zram0");
        assert_eq!(devices[0].kind, "partition");
        assert_eq!(devices[0].free_kib(), 262140 - 1024);
        assert_eq!(devices[0].priority, 100);
        assert!(parse_proc_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    #[test]
    fn advice_values_are_the_uapi_ones() {
        assert_eq!(Advice::PageOut.value(), 21);
        assert_eq!(Advice::DontNeed.value(), 4);
        assert_eq!(Advice::Mergeable.value(), 12);
        assert_eq!(Advice::Unmergeable.value(), 13);
        assert_eq!(Advice::NoHugePage.value(), 15);
        assert_eq!(Advice::Remove.value(), 9);
    }
}
