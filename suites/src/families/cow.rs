//! Copy-on-write: the VMM forks while guest RAM is `MAP_PRIVATE | MAP_ANONYMOUS`, and both
//! processes write to tagged pages. Each write to a page both share breaks copy-on-write, and
//! the copy must carry the page's tags.

use mte_protocol::{granules, with_tag, GRANULE, PAGE_SIZE};

use crate::check::{Checks, Finding};
use crate::host_mm::{Advice, ChildReport, ChildWrite, Fill, ForkPlan, PageState};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::boot_private;
use crate::steps::data::{
    expect_pattern, expect_zero_data, first_difference, guest_fill, pattern_bytes,
};
use crate::steps::host_memory::{forking, letters, pages};
use crate::steps::random::nonzero_tags;
use crate::steps::tag_checks::store;
use crate::steps::tags::guest_store_tags;
use crate::vmm::{Guest, Vmm, VmmError};

const WHY: &str = "A copy-on-write fault copies a page's tags with its data when the page is \
    tagged (arm64 copy_highpage() with PG_mte_tagged); VMMs that fork (snapshots, sandboxed \
    device processes, live update) rely on it. KVM ties a VM to the mm that created it, so the \
    child reads its side through its own VM (KVM_CREATE_VM, KVM_CAP_ARM_MTE, a memslot on its \
    inherited mapping)";

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "cow::tags_survive_fork_on_both_sides",
        summary: "After the VMM forks, writes on either side break copy-on-write of tagged \
                  guest pages (pages whose data is zero and whose tags are not among them), \
                  and each side keeps every tag: the parent's guest (LDG) and host \
                  (KVM_ARM_MTE_COPY_TAGS), and the child through a VM of its own on its copy of \
                  the mapping, before and after its writes and after the parent's. Guest RAM \
                  as VMMs get it, in transparent huge pages where the host uses them (the first \
                  write splits the shared huge page mapping, then copies one page)",
        why: WHY,
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: tags_survive_fork,
    },
    Scenario {
        name: "cow::tags_survive_fork_on_both_sides_small_pages",
        summary: "The same as cow::tags_survive_fork_on_both_sides with the guest pages kept \
                  out of transparent huge pages (MADV_NOHUGEPAGE): plain 4 KiB copy-on-write",
        why: WHY,
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: tags_survive_fork_small_pages,
    },
];

/// The 16 pages of the check, by role (page offsets from [`FIRST_PAGE`]).
mod role {
    /// Data; the child writes new data.
    pub const CHILD_WRITES: (u64, u64) = (0, 4);
    /// Data; the parent's guest writes new data.
    pub const PARENT_WRITES: (u64, u64) = (4, 4);
    /// Zero data, non-zero tags; the child writes zeros.
    pub const CHILD_ZEROS: (u64, u64) = (8, 2);
    /// Zero data, non-zero tags; the parent's guest stores a zero through a tagged pointer.
    pub const PARENT_ZEROS: (u64, u64) = (10, 2);
    /// Data; both sides write new data (the child first).
    pub const BOTH_WRITE: (u64, u64) = (12, 2);
    /// Data; nobody writes after the fork (the page stays shared).
    pub const NOBODY: (u64, u64) = (14, 2);
    pub const ALL: u64 = 16;
}

const FIRST_PAGE: u64 = 64;
const SEED_BEFORE: u64 = 0xc0f0;
const SEED_CHILD: u64 = 0xc41d;
const SEED_PARENT: u64 = 0x9a7e;
const TAG_SEED: u64 = 0x7a95;

fn range((first, count): (u64, u64)) -> (u64, u64) {
    pages(FIRST_PAGE + first, count)
}

/// What each role's data must read after the fork, on each side.
struct Expected {
    role: (u64, u64),
    name: &'static str,
    parent: Option<u64>,
    child: Option<u64>,
}

/// `None` is zero data; `Some(seed)` the pattern of `seed`.
const EXPECTED: [Expected; 6] = [
    Expected {
        role: role::CHILD_WRITES,
        name: "pages the child wrote",
        parent: Some(SEED_BEFORE),
        child: Some(SEED_CHILD),
    },
    Expected {
        role: role::PARENT_WRITES,
        name: "pages the parent's guest wrote",
        parent: Some(SEED_PARENT),
        child: Some(SEED_BEFORE),
    },
    Expected {
        role: role::CHILD_ZEROS,
        name: "zero-data pages the child wrote zeros to",
        parent: None,
        child: None,
    },
    Expected {
        role: role::PARENT_ZEROS,
        name: "zero-data pages the parent's guest stored a zero to",
        parent: None,
        child: None,
    },
    Expected {
        role: role::BOTH_WRITE,
        name: "pages both sides wrote",
        parent: Some(SEED_PARENT),
        child: Some(SEED_CHILD),
    },
    Expected {
        role: role::NOBODY,
        name: "pages nobody wrote after the fork",
        parent: Some(SEED_BEFORE),
        child: Some(SEED_BEFORE),
    },
];

fn tags_survive_fork(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    on_pages(vmm, false)
}

fn tags_survive_fork_small_pages(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    on_pages(vmm, true)
}

fn on_pages(vmm: &dyn Vmm, small: bool) -> Result<Finding, VmmError> {
    let _forks = forking();
    let mut guest = boot_private(vmm)?;
    let guest = guest.as_mut();
    let (base, len) = pages(FIRST_PAGE, role::ALL);
    if small {
        guest.madvise(base, len, Advice::NoHugePage)?;
    }
    let tags = nonzero_tags(TAG_SEED, granules(len));
    let mut checks = Checks::new();
    let before = prepare(guest, &mut checks, &tags)?;

    let child = guest.fork(&ForkPlan {
        mte: true,
        watch: vec![(base, len)],
        writes: vec![
            child_write(role::CHILD_WRITES, Fill::Pattern(SEED_CHILD)),
            child_write(role::CHILD_ZEROS, Fill::Zeros),
            child_write(role::BOTH_WRITE, Fill::Pattern(SEED_CHILD)),
        ],
    })?;
    checks.note(format!(
        "forked child {} made its own VM on its copy of guest RAM and wrote to its pages \
         before the parent's guest wrote to its own",
        child.pid()
    ));

    // The parent's guest breaks copy-on-write on its pages.
    for role in [role::PARENT_WRITES, role::BOTH_WRITE] {
        let (ipa, len) = range(role);
        guest_fill(guest, ipa, len, SEED_PARENT)?;
    }
    store_zero_through_tags(guest, &mut checks, base, &tags)?;

    // The parent's view, while the child still holds its side; then the child's.
    check_parent(guest, &mut checks, &tags, &before)?;
    check_child(&mut checks, &tags, &child.finish()?);
    Ok(checks.finish())
}

/// Before the fork: every page tagged, data everywhere but on the zero-data pages. Returns the
/// page states.
fn prepare(
    guest: &mut dyn Guest,
    checks: &mut Checks,
    tags: &[u8],
) -> Result<Vec<PageState>, VmmError> {
    let (base, len) = pages(FIRST_PAGE, role::ALL);
    guest_store_tags(guest, base, tags)?;
    for e in EXPECTED.iter().filter(|e| e.parent.is_some()) {
        let (ipa, len) = range(e.role);
        guest_fill(guest, ipa, len, SEED_BEFORE)?;
    }
    let stored = ("tags the guest stored", tags);
    checks.expect_host_tags(guest, (base, len), stored, "host, before the fork")?;
    let before = guest.page_states(base, len)?;
    checks.note(format!(
        "pages before the fork: {} (h in a transparent huge page, R a small page)",
        letters(&before)
    ));
    Ok(before)
}

/// The parent's tags (host and guest), its data role by role, and which of its pages moved.
fn check_parent(
    guest: &mut dyn Guest,
    checks: &mut Checks,
    tags: &[u8],
    before: &[PageState],
) -> Result<(), VmmError> {
    let range_all = pages(FIRST_PAGE, role::ALL);
    let tags = ("tags before the fork", tags);
    let host = "parent host, after both sides wrote";
    checks.expect_host_tags(guest, range_all, tags, host)?;
    let ldg = "parent guest LDG, after both sides wrote";
    checks.expect_guest_tags(guest, range_all, tags, ldg)?;
    for e in &EXPECTED {
        let (ipa, len) = range(e.role);
        let what = format!("parent guest, {}", e.name);
        match e.parent {
            Some(seed) => expect_pattern(checks, &what, guest, ipa, len, seed)?,
            None => expect_zero_data(checks, &what, guest, ipa, len)?,
        };
    }
    let after = guest.page_states(range_all.0, range_all.1)?;
    copies_broke(checks, before, &after);
    Ok(())
}

/// What the child saw through its own VM: the tags at each of its looks, its data role by role.
fn check_child(checks: &mut Checks, tags: &[u8], report: &ChildReport) {
    let base = pages(FIRST_PAGE, role::ALL).0;
    for (seen, when) in [
        (&report.tags_at_fork, "just after the fork"),
        (&report.tags_after_own_writes, "after its own writes"),
        (&report.tags_after_parent, "after the parent's writes"),
    ] {
        checks.tags_equal(
            base,
            ("tags before the fork", tags),
            (&format!("child VM, {when}"), seen),
        );
    }
    for e in &EXPECTED {
        let (ipa, len) = range(e.role);
        let offset = (ipa - base) as usize;
        let data = report.data_at_end.get(offset..offset + len as usize);
        let expected = match e.child {
            Some(seed) => pattern_bytes(seed, len),
            None => vec![0; len as usize],
        };
        let difference = data.map_or(Some(0), |data| first_difference(data, &expected));
        checks.holds(
            &format!("child's data, {}", e.name),
            difference.is_none(),
            match e.child {
                Some(seed) => format!("the pattern of seed {seed:#x}"),
                None => "zeros".into(),
            },
            match difference {
                None => "the same".into(),
                Some(at) => format!("a difference at offset {at:#x}"),
            },
        );
    }
}

fn child_write(role: (u64, u64), fill: Fill) -> ChildWrite {
    let (ipa, len) = range(role);
    ChildWrite { ipa, len, fill }
}

/// The parent's guest stores a zero through a correctly tagged pointer at the start of each
/// zero-data page of its own: copy-on-write breaks, the data stays zero.
fn store_zero_through_tags(
    guest: &mut dyn Guest,
    checks: &mut Checks,
    base: u64,
    tags: &[u8],
) -> Result<(), VmmError> {
    let (ipa, len) = range(role::PARENT_ZEROS);
    let mut faults = 0;
    for page in (ipa..ipa + len).step_by(PAGE_SIZE as usize) {
        let tag = tags[((page - base) / GRANULE) as usize];
        faults += store(guest, with_tag(page, tag), 0)?.result[0];
    }
    checks.equal(
        "tag-check faults of the parent guest's zero stores through matching tags",
        0,
        faults,
    );
    Ok(())
}

/// Copy-on-write broke where the parent's guest wrote: those pages of the parent moved to
/// new frames; the pages only the child wrote stayed where they were. Needs the frame
/// numbers of /proc/self/pagemap (CAP_SYS_ADMIN).
fn copies_broke(checks: &mut Checks, before: &[PageState], after: &[PageState]) {
    if before.iter().chain(after).any(|s| s.pfn == 0) {
        checks.path_not_reached(
            "page frame numbers are hidden here (no CAP_SYS_ADMIN), so nothing shows that \
             copy-on-write broke where the parent's guest wrote",
        );
        return;
    }
    let moved = |(first, count): (u64, u64)| -> Vec<bool> {
        (first..first + count)
            .map(|p| before[p as usize].pfn != after[p as usize].pfn)
            .collect()
    };
    for (role, name, expected) in [
        (role::PARENT_WRITES, "pages the parent's guest wrote", true),
        (
            role::PARENT_ZEROS,
            "zero-data pages the parent's guest wrote",
            true,
        ),
        (role::CHILD_WRITES, "pages only the child wrote", false),
        (role::NOBODY, "pages nobody wrote", false),
    ] {
        let observed = moved(role);
        let what = format!("parent's frames of {name} moved: {expected}");
        let held = observed.iter().all(|&m| m == expected);
        let (expected, observed) = (format!("{expected} for each page"), format!("{observed:?}"));
        if role == role::PARENT_WRITES || role == role::PARENT_ZEROS {
            // The copy-on-write break the check is about.
            checks.path_reached(&what, held, expected, observed);
        } else {
            checks.holds(&what, held, expected, observed);
        }
    }
    checks.note(format!(
        "parent's frames of the pages both sides wrote moved: {:?} (the child copied \
         first, so the parent may reuse its page)",
        moved(role::BOTH_WRITE)
    ));
}
