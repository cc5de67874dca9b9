//! Shared guest RAM: memslots on `MAP_SHARED` memory (anonymous shared memory, a memfd, a
//! tmpfs file), a second VM on the same memory, and mappings that cannot hold tags. Which
//! kernels accept what is data: [`crate::expectations`].

use mte_protocol::granules;
use mte_results::Outcome;

use crate::check::{Checks, Finding};
use crate::expectations::{lookup, Behaviour, Expectation, KernelVersion};
use crate::host_mm::{Advice, Backing};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::require_backing;
use crate::steps::command::require_mte;
use crate::steps::data::{expect_pattern, first_difference, guest_fill, pattern_bytes};
use crate::steps::host_memory::{letters, pages};
use crate::steps::random::nonzero_tags;
use crate::steps::tags::{guest_store_tags, guest_tag_random};
use crate::vmm::{BootOptions, Guest, Vmm, VmmError};

const WHY_SHARED: &str = "Since 6.2 KVM accepts MAP_SHARED memslots for MTE VMs when the \
    memory can hold tags (VM_MTE_ALLOWED: anonymous shared memory, memfd, shmem/tmpfs), which \
    VMMs need for sandboxed device processes and vhost-user; the PG_mte_lock rework that came \
    with it keeps a page's tags from being initialised twice when two mappings fault it. Before \
    6.2 these memslots were refused with EINVAL (\"KVM: arm64: permit all VM_MTE_ALLOWED \
    mappings with MTE enabled\")";

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "shared::anonymous_shared_ram_keeps_tags",
        summary: "A VM with MTE whose RAM is MAP_SHARED|MAP_ANONYMOUS runs, and the host's \
                  KVM_ARM_MTE_COPY_TAGS and the guest's LDG agree on the tags either side \
                  wrote",
        why: WHY_SHARED,
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: anonymous_shared_ram_keeps_tags,
    },
    Scenario {
        name: "shared::memfd_tags_seen_by_a_second_vm",
        summary: "With guest RAM on a memfd, a second VM whose memslot is a second MAP_SHARED \
                  mapping of the same memfd reads the tags and data the first guest wrote, and \
                  tags it writes (KVM_ARM_TAGS_TO_GUEST) are what the first guest's LDG reads",
        why: WHY_SHARED,
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: memfd_tags_seen_by_a_second_vm,
    },
    Scenario {
        name: "shared::tmpfs_file_ram_keeps_tags",
        summary: "With guest RAM on a tmpfs file mapped MAP_SHARED, host and guest agree on the \
                  tags, and a second VM on a second mapping of the file sees them too",
        why: WHY_SHARED,
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: tmpfs_file_ram_keeps_tags,
    },
    Scenario {
        name: "shared::dontneed_keeps_tags_of_shared_ram",
        summary: "MADV_DONTNEED on memfd-backed guest RAM only drops the VMM's page table \
                  entries: the pages stay in the page cache, and the guest finds its data and \
                  tags again (unlike private anonymous RAM, see mm::dontneed_*)",
        why: "madvise(2): for shared mappings MADV_DONTNEED discards the mapping, not the \
              memory; a page's tags live with the page (PG_mte_tagged), so they must survive \
              the refault",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: dontneed_keeps_tags_of_shared_ram,
    },
    Scenario {
        name: "shared::non_ram_backed_mapping_is_refused",
        summary: "A memslot on a ramfs file, which cannot hold tags, is refused for an MTE VM \
                  (KVM_SET_USER_MEMORY_REGION fails with EINVAL), mapped MAP_SHARED or \
                  MAP_PRIVATE; a memfd of the same size is accepted and keeps tags (the \
                  control)",
        why: "kvm_arch_prepare_memory_region() refuses VMAs without VM_MTE_ALLOWED \
              (kvm_vma_mte_allowed()) for MTE VMs, since tags of such page cache would be lost \
              or never initialised; api.rst, KVM_CAP_ARM_MTE",
        proven_by: &[Injection::CorruptTag],
        run: non_ram_backed_mapping_is_refused,
    },
];

/// What a case of a check came to.
enum Case {
    /// The memslot was accepted as the table says: the guest, to be checked further.
    Booted(Box<dyn Guest>),
    /// The kernel behaved as the table says, nothing more to check (a refusal).
    Settled,
    /// An older kernel's documented behaviour: the xfail's reason.
    Xfail(String),
}

/// Boot on `backing`, and compare what happened with what the table expects of this kernel.
fn boot_case(
    vmm: &dyn Vmm,
    checks: &mut Checks,
    check: &str,
    case: &str,
    backing: Backing,
) -> Result<Case, VmmError> {
    let options = BootOptions {
        backing: Some(backing),
        ..BootOptions::default()
    };
    let (observed, guest) = match vmm.boot(&options) {
        Ok(guest) => {
            // A lane whose VMM cannot choose the backing skips here, before any judgement.
            require_backing(guest.as_ref(), backing)?;
            (Behaviour::Accepted, Some(guest))
        }
        Err(VmmError::Sys { call, errno }) if call == "KVM_SET_USER_MEMORY_REGION" => {
            (Behaviour::MemslotRefused { errno }, None)
        }
        Err(VmmError::Sys { call, errno }) if call.starts_with("KVM_RUN") => {
            (Behaviour::RunFails { errno }, None)
        }
        Err(other) => return Err(other),
    };
    let (expectation, version) = lookup(check, case, vmm.kernel_release())
        .map_err(|why| VmmError::Unsupported(format!("{why}: the table cannot say")))?;
    let matches = observed == expectation.behaviour;
    checks.holds(
        &format!(
            "{case}, guest RAM on {}, kernel {version} ({})",
            backing.describe(),
            expectation.kernels()
        ),
        matches,
        expectation.behaviour.to_string(),
        observed.to_string(),
    );
    if !matches {
        checks.note(format!("the change in question: {}", expectation.change));
        return Ok(Case::Settled);
    }
    match (expectation.outcome, guest) {
        (Outcome::Xfail, _) => Ok(Case::Xfail(xfail_reason(
            case,
            backing,
            version,
            expectation,
        ))),
        (_, Some(guest)) => Ok(Case::Booted(guest)),
        (_, None) => Ok(Case::Settled),
    }
}

fn xfail_reason(
    case: &str,
    backing: Backing,
    version: KernelVersion,
    expectation: &Expectation,
) -> String {
    format!(
        "{case} (guest RAM on {}): on kernel {version} {}, as documented for {}: {}",
        backing.describe(),
        expectation.behaviour,
        expectation.kernels(),
        expectation.change
    )
}

/// The finding: a fail if any comparison failed, else an xfail if any case was an older
/// kernel's documented behaviour, else a pass.
fn conclude(checks: Checks, xfails: Vec<String>) -> Finding {
    let finding = checks.finish();
    if finding.outcome == Outcome::Fail || xfails.is_empty() {
        return finding;
    }
    Finding {
        outcome: Outcome::Xfail,
        reason: xfails.join("; "),
        ..finding
    }
}

/// One check on one shared backing: boot as the table says, then the round trips.
fn on_backing(
    vmm: &dyn Vmm,
    check: &str,
    backing: Backing,
    body: impl FnOnce(&mut dyn Guest, &mut Checks) -> Result<(), VmmError>,
) -> Result<Finding, VmmError> {
    let mut checks = Checks::new();
    match boot_case(vmm, &mut checks, check, "memslot", backing)? {
        Case::Booted(mut guest) => {
            require_mte(&guest.ids())?;
            body(guest.as_mut(), &mut checks)?;
            Ok(conclude(checks, Vec::new()))
        }
        Case::Settled => Ok(conclude(checks, Vec::new())),
        Case::Xfail(reason) => Ok(conclude(checks, vec![reason])),
    }
}

const FIRST_PAGE: u64 = 32;

/// Guest tags seen by the host, host tags seen by the guest, data kept.
fn round_trip(guest: &mut dyn Guest, checks: &mut Checks) -> Result<(), VmmError> {
    let (ipa, len) = pages(FIRST_PAGE, 4);
    let chosen = guest_tag_random(guest, ipa, len)?;
    guest_fill(guest, ipa, len, 0x5ea)?;
    let stored = ("tags the guest stored (IRG)", &chosen[..]);
    checks.expect_host_tags(guest, (ipa, len), stored, "host KVM_ARM_TAGS_FROM_GUEST")?;
    checks.expect_guest_tags(guest, (ipa, len), stored, "guest LDG")?;
    expect_pattern(checks, "guest", guest, ipa, len, 0x5ea)?;

    let (ipa, len) = pages(FIRST_PAGE + 4, 4);
    let written = nonzero_tags(0x5ea2, granules(len));
    guest.host_write_tags(ipa, &written)?;
    let written = ("host KVM_ARM_TAGS_TO_GUEST", &written[..]);
    checks.expect_guest_tags(guest, (ipa, len), written, "guest LDG")?;
    Ok(())
}

/// A second VM on the same memory reads what the guest wrote; the guest reads what it writes.
fn through_a_peer(guest: &mut dyn Guest, checks: &mut Checks) -> Result<(), VmmError> {
    let (ipa, len) = pages(FIRST_PAGE + 8, 4);
    let tags = nonzero_tags(0x9ee7, granules(len));
    guest_store_tags(guest, ipa, &tags)?;
    guest_fill(guest, ipa, len, 0x9ee7)?;
    let mut peer = guest.tag_peer()?;
    checks.note(format!("second VM: {}", peer.describe()));
    let seen = peer.read_tags(ipa, len)?;
    checks.tags_equal(
        ipa,
        ("tags the first guest stored", &tags),
        ("second VM, KVM_ARM_TAGS_FROM_GUEST", &seen),
    );
    let data = peer.read_data(ipa, len)?;
    let difference = first_difference(&data, &pattern_bytes(0x9ee7, len));
    checks.holds(
        "second VM's mapping holds the data the first guest wrote",
        difference.is_none() && data.len() == len as usize,
        "the same bytes",
        match difference {
            None => format!("{} equal bytes", data.len()),
            Some(at) => format!("a difference at offset {at:#x}"),
        },
    );

    let (ipa, len) = pages(FIRST_PAGE + 12, 4);
    let written = nonzero_tags(0x9ee8, granules(len));
    peer.write_tags(ipa, &written)?;
    let written = ("second VM, KVM_ARM_TAGS_TO_GUEST", &written[..]);
    let range = (ipa, len);
    checks.expect_guest_tags(guest, range, written, "first guest's LDG")?;
    let host = "first VM, KVM_ARM_TAGS_FROM_GUEST";
    checks.expect_host_tags(guest, range, written, host)?;
    Ok(())
}

fn anonymous_shared_ram_keeps_tags(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    on_backing(
        vmm,
        "shared::anonymous_shared_ram_keeps_tags",
        Backing::SharedAnonymous,
        round_trip,
    )
}

fn memfd_tags_seen_by_a_second_vm(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    on_backing(
        vmm,
        "shared::memfd_tags_seen_by_a_second_vm",
        Backing::Memfd,
        through_a_peer,
    )
}

fn tmpfs_file_ram_keeps_tags(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    on_backing(
        vmm,
        "shared::tmpfs_file_ram_keeps_tags",
        Backing::TmpfsFile,
        |guest, checks| {
            round_trip(guest, checks)?;
            through_a_peer(guest, checks)
        },
    )
}

fn dontneed_keeps_tags_of_shared_ram(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    on_backing(
        vmm,
        "shared::dontneed_keeps_tags_of_shared_ram",
        Backing::Memfd,
        |guest, checks| {
            let (ipa, len) = pages(FIRST_PAGE, 8);
            let tags = nonzero_tags(0xd0e5, granules(len));
            guest_store_tags(guest, ipa, &tags)?;
            guest_fill(guest, ipa, len, 0xd0e5)?;
            guest.madvise(ipa, len, Advice::DontNeed)?;
            let states = guest.page_states(ipa, len)?;
            let unmapped = states.iter().filter(|s| !s.present).count();
            let cached = states.iter().filter(|s| s.resident).count();
            checks.holds(
                "MADV_DONTNEED unmapped every page, which stays in the page cache (mincore)",
                unmapped == states.len() && cached == states.len(),
                format!("{n} pages unmapped, {n} resident", n = states.len()),
                format!(
                    "{unmapped} unmapped, {cached} resident ({})",
                    letters(&states)
                ),
            );
            let before = ("tags before MADV_DONTNEED", &tags[..]);
            let ldg = "guest LDG after MADV_DONTNEED";
            checks.expect_guest_tags(guest, (ipa, len), before, ldg)?;
            checks.expect_host_tags(guest, (ipa, len), before, "host after MADV_DONTNEED")?;
            expect_pattern(checks, "guest after MADV_DONTNEED", guest, ipa, len, 0xd0e5)?;
            Ok(())
        },
    )
}

fn non_ram_backed_mapping_is_refused(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    const CHECK: &str = "shared::non_ram_backed_mapping_is_refused";
    let mut checks = Checks::new();
    let mut xfails = Vec::new();
    let cases = [
        ("control: memfd", Backing::Memfd),
        ("ramfs MAP_SHARED", Backing::RamfsFile { shared: true }),
        ("ramfs MAP_PRIVATE", Backing::RamfsFile { shared: false }),
    ];
    for (case, backing) in cases {
        match boot_case(vmm, &mut checks, CHECK, case, backing)? {
            Case::Booted(mut guest) => {
                require_mte(&guest.ids())?;
                let range = pages(FIRST_PAGE, 1);
                let chosen = guest_tag_random(guest.as_mut(), range.0, range.1)?;
                let stored = ("tags the guest stored (IRG)", &chosen[..]);
                let host = format!("{case}: host KVM_ARM_TAGS_FROM_GUEST");
                checks.expect_host_tags(guest.as_mut(), range, stored, &host)?;
            }
            Case::Settled => {}
            Case::Xfail(reason) => xfails.push(reason),
        }
    }
    Ok(conclude(checks, xfails))
}
