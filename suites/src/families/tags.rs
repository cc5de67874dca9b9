//! The host's view of a guest's tags against the guest's own: first touch, guest-written and
//! host-written tags.

use mte_protocol::{granules, Command, PAGE_SIZE, TEST_RAM_IPA};

use crate::check::{boot_tagged, tag_map_report, Checks, Finding};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::vmm::{BootOptions, Guest, Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tags::guest_tags_seen_by_host",
        summary: "Tags the guest stores with IRG+STG read back the same through the guest's LDG \
                  and through the host's KVM_ARM_MTE_COPY_TAGS (KVM_ARM_TAGS_FROM_GUEST)",
        why: "A VMM saves guest tags with KVM_ARM_MTE_COPY_TAGS (api.rst); migration and \
              snapshots are only as right as this view",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: guest_tags_seen_by_host,
    },
    Scenario {
        name: "tags::host_tags_seen_by_guest",
        summary: "Tags the host writes with KVM_ARM_MTE_COPY_TAGS (KVM_ARM_TAGS_TO_GUEST) are \
                  what the guest's LDG reads, granule by granule",
        why: "A VMM restores guest tags with KVM_ARM_TAGS_TO_GUEST on the destination of a \
              migration (api.rst)",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: host_tags_seen_by_guest,
    },
    Scenario {
        name: "tags::untouched_pages_read_zero",
        summary: "Pages the guest never touched read as tag 0 from the host, and the guest's LDG \
                  of a fresh page reads 0",
        why: "Tags of a page are initialised (zeroed) when KVM first maps it for an MTE guest \
              (PG_mte_tagged); stale tags would leak between VMs",
        proven_by: &[Injection::CorruptTag, Injection::MisreadReport],
        run: untouched_pages_read_zero,
    },
];

/// Pages each check tags: enough to cross page boundaries, few enough to stay quick.
const PAGES: u64 = 4;
const LEN: u64 = PAGES * PAGE_SIZE;

fn guest_ldg(guest: &mut dyn Guest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
    tag_map_report(guest, Command::ReadTags, ipa, len)
}

fn guest_tags_seen_by_host(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot_tagged(vmm, &BootOptions::default())?;
    let ipa = TEST_RAM_IPA;
    let chosen = tag_map_report(guest.as_mut(), Command::TagRandom, ipa, LEN)?;
    let ldg = guest_ldg(guest.as_mut(), ipa, LEN)?;
    let host = guest.host_read_tags(ipa, LEN)?;

    let mut checks = Checks::new();
    // Random tags that were all alike would make the comparison weak: say so rather than pass.
    let distinct = {
        let mut seen = [false; 16];
        chosen
            .iter()
            .filter(|&&t| t < 16)
            .for_each(|&t| seen[t as usize] = true);
        seen.iter().filter(|&&s| s).count()
    };
    checks.holds(
        "IRG chose varied tags",
        distinct >= 8,
        "at least 8 distinct tags",
        format!("{distinct} distinct tags"),
    );
    checks.tags_equal(
        ipa,
        ("tags the guest stored (IRG)", &chosen),
        ("guest LDG", &ldg),
    );
    checks.tags_equal(
        ipa,
        ("guest LDG", &ldg),
        ("host KVM_ARM_TAGS_FROM_GUEST", &host),
    );
    Ok(checks.finish())
}

/// A pattern that uses every tag value and differs between neighbouring granules and pages.
fn host_pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + i / 256 + 3) % 16) as u8).collect()
}

fn host_tags_seen_by_guest(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot_tagged(vmm, &BootOptions::default())?;
    let ipa = TEST_RAM_IPA + 8 * PAGE_SIZE;
    let pattern = host_pattern(granules(LEN));
    guest.host_write_tags(ipa, &pattern)?;
    let ldg = guest_ldg(guest.as_mut(), ipa, LEN)?;

    let mut checks = Checks::new();
    checks.tags_equal(
        ipa,
        ("host KVM_ARM_TAGS_TO_GUEST", &pattern),
        ("guest LDG", &ldg),
    );
    Ok(checks.finish())
}

fn untouched_pages_read_zero(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot_tagged(vmm, &BootOptions::default())?;
    let host_first = TEST_RAM_IPA + 16 * PAGE_SIZE;
    let guest_first = TEST_RAM_IPA + 24 * PAGE_SIZE;
    let zeros = vec![0u8; granules(LEN)];

    let mut checks = Checks::new();
    // The host looks first, then the guest looks at the same pages.
    let host = guest.host_read_tags(host_first, LEN)?;
    checks.tags_equal(
        host_first,
        ("zero tags", &zeros),
        ("host read of untouched pages", &host),
    );
    let ldg = guest_ldg(guest.as_mut(), host_first, LEN)?;
    checks.tags_equal(
        host_first,
        ("zero tags", &zeros),
        ("guest LDG after the host's read", &ldg),
    );
    // Pages nobody looked at before the guest's own LDG.
    let ldg = guest_ldg(guest.as_mut(), guest_first, LEN)?;
    checks.tags_equal(
        guest_first,
        ("zero tags", &zeros),
        ("guest LDG of fresh pages", &ldg),
    );
    let host = guest.host_read_tags(guest_first, LEN)?;
    checks.tags_equal(
        guest_first,
        ("zero tags", &zeros),
        ("host read after the guest's LDG", &host),
    );
    Ok(checks.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_pattern_uses_every_tag_and_varies_between_neighbours() {
        let p = host_pattern(granules(LEN));
        for tag in 0..16u8 {
            assert!(p.contains(&tag));
        }
        assert!(p.windows(2).all(|w| w[0] != w[1]));
    }
}
