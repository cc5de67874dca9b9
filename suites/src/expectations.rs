//! What the kernel under test is expected to do where the answer depends on its version: a
//! table of data, one entry per check, case and range of kernel versions, each with the
//! behaviour, the verdict it earns and the kernel change that explains it. Checks look their
//! cases up with the kernel release ([`crate::vmm::Vmm::kernel_release`]); an older kernel's
//! documented behaviour is an xfail that names the version and the change, never a pass or a
//! fail.

use mte_results::Outcome;

use crate::error::errno_name;

pub const EINVAL: i32 = 22;

/// `major.minor` of a kernel release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        KernelVersion { major, minor }
    }

    /// From a release such as `6.1.0-54-arm64` or `6.12.95+deb12-arm64`.
    pub fn parse(release: &str) -> Option<Self> {
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .take(2)
            .map(|n| n.parse::<u32>().ok());
        Some(KernelVersion::new(numbers.next()??, numbers.next()??))
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What a step of a check does on a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// KVM_SET_USER_MEMORY_REGION accepts the memslot and the guest runs on it.
    Accepted,
    /// KVM_SET_USER_MEMORY_REGION fails with this errno.
    MemslotRefused { errno: i32 },
    /// The memslot is accepted, and KVM_RUN fails with this errno at the guest's first access
    /// to RAM.
    RunFails { errno: i32 },
    /// A page's tags are initialised by whichever path finds PG_mte_tagged clear, tested then
    /// set apart: two paths racing on a fresh page can both initialise it, and one clear the
    /// tags the other just wrote.
    TagInitRacy,
    /// PG_mte_lock lets one path initialise a page's tags while the others wait for
    /// PG_mte_tagged: no tags are lost.
    TagInitLocked,
    /// No MAP_SHARED memslot with MTE: post-copy fills a page of private memory with
    /// UFFDIO_COPY(DONTWAKE) and writes its tags after, so a second vCPU can find the page
    /// before its tags.
    PostCopyDontWake,
    /// A MAP_SHARED memslot with MTE: post-copy writes a page's data and tags through a
    /// second mapping, then maps it (UFFDIO_CONTINUE).
    PostCopyBeforeMapping,
}

impl std::fmt::Display for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Behaviour::Accepted => write!(f, "the memslot is accepted and the guest runs"),
            Behaviour::MemslotRefused { errno } => write!(
                f,
                "KVM_SET_USER_MEMORY_REGION fails with {}",
                errno_name(*errno)
            ),
            Behaviour::RunFails { errno } => write!(
                f,
                "the memslot is accepted, then KVM_RUN fails with {} at the guest's first access",
                errno_name(*errno)
            ),
            Behaviour::TagInitRacy => write!(
                f,
                "a page's tag initialisation tests PG_mte_tagged and sets it apart, so a racing \
                 path's tags can be cleared"
            ),
            Behaviour::TagInitLocked => write!(
                f,
                "one path initialises a page's tags under PG_mte_lock, the others wait for \
                 PG_mte_tagged"
            ),
            Behaviour::PostCopyDontWake => write!(
                f,
                "no MAP_SHARED memslot with MTE, so post-copy maps a page (UFFDIO_COPY, \
                 DONTWAKE) before its tags are in"
            ),
            Behaviour::PostCopyBeforeMapping => write!(
                f,
                "post-copy puts a page's data and tags in through a second mapping before \
                 UFFDIO_CONTINUE maps it"
            ),
        }
    }
}

/// One entry of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub check: &'static str,
    /// Which step of the check, when it probes several (e.g. one per mapping).
    pub case: &'static str,
    /// The first kernel this entry covers (inclusive); `None` for all older ones.
    pub since: Option<KernelVersion>,
    /// The first kernel it no longer covers; `None` for all newer ones.
    pub before: Option<KernelVersion>,
    pub behaviour: Behaviour,
    /// Pass for what the kernel must do; xfail for an older kernel's documented behaviour.
    pub outcome: Outcome,
    /// The kernel change that explains the behaviour.
    pub change: &'static str,
}

impl Expectation {
    pub fn covers(&self, version: KernelVersion) -> bool {
        self.since.is_none_or(|since| version >= since)
            && self.before.is_none_or(|before| version < before)
    }

    /// The range in words, e.g. `before 6.2` or `6.2 and later`.
    pub fn kernels(&self) -> String {
        match (self.since, self.before) {
            (None, None) => "every kernel".into(),
            (None, Some(b)) => format!("kernels before {b}"),
            (Some(s), None) => format!("{s} and later"),
            (Some(s), Some(b)) => format!("{s} up to (not including) {b}"),
        }
    }
}

const V6_2: KernelVersion = KernelVersion::new(6, 2);

/// Commit c911f0d46879 (kvmarm, merged for 6.2).
pub const MAP_SHARED_CHANGE: &str = "\"KVM: arm64: permit all VM_MTE_ALLOWED mappings with MTE \
    enabled\" (c911f0d46879, 6.2), which allows MAP_SHARED mappings with MTE enabled \
    (anonymous shared memory, memfd, shmem/tmpfs); before it KVM refused any VM_SHARED memslot \
    of an MTE VM with EINVAL";

/// Commits 2dbf12ae132c and d89585fbb308 (kvmarm, merged for 6.2).
pub const UNIFY_CHANGE: &str = "\"KVM: arm64: unify the tests for VMAs in memslots when MTE is \
    enabled\" (d89585fbb308, 6.2), after \"KVM: arm64: Simplify the sanitise_mte_tags() \
    logic\" (2dbf12ae132c, 6.2): a mapping without VM_MTE_ALLOWED is refused when the memslot is \
    created; before them KVM looked only for VM_SHARED, so a MAP_PRIVATE ramfs mapping was \
    accepted and the guest ran on page cache that cannot keep tags";

/// Commit d77e59a8fccd (arm64, merged for 6.2).
pub const TAG_LOCK_CHANGE: &str = "\"arm64: mte: Lock a page for MTE tag initialisation\" \
    (d77e59a8fccd, 6.2), which adds PG_mte_lock: the first path to take it initialises the \
    page's tags and sets PG_mte_tagged, and the others wait for that; before it \
    sanitise_mte_tags(), mte_sync_tags() and KVM_ARM_MTE_COPY_TAGS(TO_GUEST) each tested \
    PG_mte_tagged and set it later, so a vCPU's first touch could clear tags the VMM had just \
    written";

/// Why a ramfs mapping is refused from 6.2 on.
pub const NOT_MTE_ALLOWED: &str = "kvm_arch_prepare_memory_region() refuses a VMA without \
    VM_MTE_ALLOWED (kvm_vma_mte_allowed()); arm64 sets VM_MTE_ALLOWED only for anonymous \
    memory, shmem files and hugetlbfs, so page cache such as ramfs cannot hold tags";

/// Why a MAP_SHARED ramfs mapping is refused before 6.2.
pub const SHARED_REFUSED: &str = "before 6.2, kvm_arch_prepare_memory_region() refused every \
    VM_SHARED VMA of an MTE VM with EINVAL (so a shared ramfs mapping is refused for that \
    reason, whatever its backing)";

const fn entry(
    check: &'static str,
    case: &'static str,
    since: Option<KernelVersion>,
    before: Option<KernelVersion>,
    behaviour: Behaviour,
    outcome: Outcome,
    change: &'static str,
) -> Expectation {
    Expectation {
        check,
        case,
        since,
        before,
        behaviour,
        outcome,
        change,
    }
}

/// A shared memslot: refused before 6.2 (xfail), accepted from 6.2 (pass).
macro_rules! shared_memslot {
    ($check:literal, $case:literal) => {
        [
            entry(
                $check,
                $case,
                None,
                Some(V6_2),
                Behaviour::MemslotRefused { errno: EINVAL },
                Outcome::Xfail,
                MAP_SHARED_CHANGE,
            ),
            entry(
                $check,
                $case,
                Some(V6_2),
                None,
                Behaviour::Accepted,
                Outcome::Pass,
                MAP_SHARED_CHANGE,
            ),
        ]
    };
}

const ANON_SHARED: [Expectation; 2] =
    shared_memslot!("shared::anonymous_shared_ram_keeps_tags", "memslot");
const MEMFD: [Expectation; 2] =
    shared_memslot!("shared::memfd_tags_seen_by_a_second_vm", "memslot");
const TMPFS: [Expectation; 2] = shared_memslot!("shared::tmpfs_file_ram_keeps_tags", "memslot");
const DONTNEED: [Expectation; 2] =
    shared_memslot!("shared::dontneed_keeps_tags_of_shared_ram", "memslot");
const CONTROL: [Expectation; 2] = shared_memslot!(
    "shared::non_ram_backed_mapping_is_refused",
    "control: memfd"
);

/// The case of every race check's entries.
pub const TAG_INIT: &str = "tag initialisation";

/// A race check on the tag initialisation: racy before 6.2 (xfail when it loses tags), locked
/// from 6.2 (pass).
macro_rules! tag_init_race {
    ($check:literal) => {
        [
            entry(
                $check,
                TAG_INIT,
                None,
                Some(V6_2),
                Behaviour::TagInitRacy,
                Outcome::Xfail,
                TAG_LOCK_CHANGE,
            ),
            entry(
                $check,
                TAG_INIT,
                Some(V6_2),
                None,
                Behaviour::TagInitLocked,
                Outcome::Pass,
                TAG_LOCK_CHANGE,
            ),
        ]
    };
}

/// The case of the post-copy race's entries.
pub const POSTCOPY_ORDER: &str = "post-copy order";

/// The post-copy race: the engine's order before 6.2 lets a second vCPU in early (xfail), its
/// order from 6.2 does not (pass).
const POSTCOPY: [Expectation; 2] = [
    entry(
        "races::postcopy_pages_reach_every_vcpu_with_their_tags",
        POSTCOPY_ORDER,
        None,
        Some(V6_2),
        Behaviour::PostCopyDontWake,
        Outcome::Xfail,
        MAP_SHARED_CHANGE,
    ),
    entry(
        "races::postcopy_pages_reach_every_vcpu_with_their_tags",
        POSTCOPY_ORDER,
        Some(V6_2),
        None,
        Behaviour::PostCopyBeforeMapping,
        Outcome::Pass,
        MAP_SHARED_CHANGE,
    ),
];

/// Every race check of the tag initialisation.
const RACES: [[Expectation; 2]; 9] = [
    tag_init_race!("races::host_tag_writes_vs_guest_first_read"),
    tag_init_race!("races::host_tag_reads_vs_guest_first_tagging"),
    tag_init_race!("races::host_tag_writes_vs_guest_first_tagging"),
    tag_init_race!("races::vcpus_first_touch_the_same_pages"),
    tag_init_race!("races::host_mapping_tag_stores_vs_guest_first_read"),
    tag_init_race!("races::host_mapping_tag_loads_vs_guest_first_tagging"),
    tag_init_race!("races::guest_tag_writes_vs_swap"),
    tag_init_race!("races::guest_tag_writes_vs_cow_break"),
    tag_init_race!("races::guest_tag_writes_vs_ksm_scanning"),
];

const RAMFS: [Expectation; 4] = [
    entry(
        "shared::non_ram_backed_mapping_is_refused",
        "ramfs MAP_SHARED",
        None,
        Some(V6_2),
        Behaviour::MemslotRefused { errno: EINVAL },
        Outcome::Pass,
        SHARED_REFUSED,
    ),
    entry(
        "shared::non_ram_backed_mapping_is_refused",
        "ramfs MAP_SHARED",
        Some(V6_2),
        None,
        Behaviour::MemslotRefused { errno: EINVAL },
        Outcome::Pass,
        NOT_MTE_ALLOWED,
    ),
    entry(
        "shared::non_ram_backed_mapping_is_refused",
        "ramfs MAP_PRIVATE",
        None,
        Some(V6_2),
        Behaviour::Accepted,
        Outcome::Xfail,
        UNIFY_CHANGE,
    ),
    entry(
        "shared::non_ram_backed_mapping_is_refused",
        "ramfs MAP_PRIVATE",
        Some(V6_2),
        None,
        Behaviour::MemslotRefused { errno: EINVAL },
        Outcome::Pass,
        NOT_MTE_ALLOWED,
    ),
];

/// The table.
pub fn table() -> impl Iterator<Item = &'static Expectation> {
    [
        &ANON_SHARED[..],
        &MEMFD[..],
        &TMPFS[..],
        &DONTNEED[..],
        &CONTROL[..],
        &RAMFS[..],
        &POSTCOPY[..],
    ]
    .into_iter()
    .chain(RACES.iter().map(|pair| &pair[..]))
    .flatten()
}

/// The entry for `check`'s `case` on the kernel `release`, or why there is none.
pub fn lookup(
    check: &str,
    case: &str,
    release: &str,
) -> Result<(&'static Expectation, KernelVersion), String> {
    let version = KernelVersion::parse(release)
        .ok_or_else(|| format!("the kernel release {release:?} has no major.minor version"))?;
    table()
        .find(|e| e.check == check && e.case == case && e.covers(version))
        .map(|e| (e, version))
        .ok_or_else(|| format!("no expectation for {check} ({case}) on kernel {version}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_to_major_minor() {
        assert_eq!(
            KernelVersion::parse("6.1.0-54-arm64"),
            Some(KernelVersion::new(6, 1))
        );
        assert_eq!(
            KernelVersion::parse("6.12.95+deb12-arm64"),
            Some(KernelVersion::new(6, 12))
        );
        assert_eq!(KernelVersion::parse("7.3"), Some(KernelVersion::new(7, 3)));
        assert_eq!(KernelVersion::parse("unknown"), None);
        assert_eq!(KernelVersion::parse("6"), None);
        assert!(KernelVersion::new(6, 12) > KernelVersion::new(6, 2));
    }

    #[test]
    fn each_case_has_exactly_one_entry_for_every_kernel() {
        let probes = [(4, 19), (5, 15), (6, 1), (6, 2), (6, 12), (7, 3)]
            .map(|(a, b)| KernelVersion::new(a, b));
        for e in table() {
            for v in probes {
                let n = table()
                    .filter(|o| o.check == e.check && o.case == e.case && o.covers(v))
                    .count();
                assert_eq!(n, 1, "{} ({}) on {v}", e.check, e.case);
            }
            assert!(matches!(e.outcome, Outcome::Pass | Outcome::Xfail));
            // An xfail is an older kernel's behaviour: it must end at a version.
            if e.outcome == Outcome::Xfail {
                assert!(e.before.is_some(), "{} ({})", e.check, e.case);
            }
        }
    }

    #[test]
    fn every_entry_names_a_check_of_the_suite() {
        let names: Vec<&str> = crate::all().iter().map(|s| s.name).collect();
        for e in table() {
            assert!(names.contains(&e.check), "{} is not a check", e.check);
        }
    }

    #[test]
    fn the_tag_initialisation_races_are_known_on_6_1_and_fixed_on_6_12() {
        let check = "races::host_tag_writes_vs_guest_first_read";
        let (old, _) = lookup(check, TAG_INIT, "6.1.0-54-arm64").unwrap();
        assert_eq!(
            (old.behaviour, old.outcome),
            (Behaviour::TagInitRacy, Outcome::Xfail)
        );
        assert!(old.change.contains("d77e59a8fccd"));
        let (new, _) = lookup(check, TAG_INIT, "6.12.95+deb12-arm64").unwrap();
        assert_eq!(new.behaviour, Behaviour::TagInitLocked);
    }

    #[test]
    fn shared_memory_is_an_xfail_on_6_1_and_a_pass_on_6_12() {
        let (old, _) = lookup(
            "shared::memfd_tags_seen_by_a_second_vm",
            "memslot",
            "6.1.0-54-arm64",
        )
        .unwrap();
        assert_eq!(old.outcome, Outcome::Xfail);
        assert_eq!(old.behaviour, Behaviour::MemslotRefused { errno: EINVAL });
        assert!(old.change.contains("6.2"));
        let (new, _) = lookup(
            "shared::memfd_tags_seen_by_a_second_vm",
            "memslot",
            "6.12.95+deb12-arm64",
        )
        .unwrap();
        assert_eq!(new.behaviour, Behaviour::Accepted);
        assert!(lookup("shared::nope", "memslot", "6.12").is_err());
        assert!(lookup("shared::memfd_tags_seen_by_a_second_vm", "memslot", "weird").is_err());
    }
}
