//! The host's view of a guest's tags against the guest's own: first touch, guest-written and
//! host-written tags.

use mte_protocol::{granules, PAGE_SIZE, TEST_RAM_IPA};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::tags::guest_tag_random;
use crate::vmm::{Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tags::guest_tags_seen_by_host",
        summary: "Tags the guest stores with IRG+STG read back the same through the guest's LDG \
                  and through the host's KVM_ARM_MTE_COPY_TAGS (KVM_ARM_TAGS_FROM_GUEST)",
        why: "A VMM saves guest tags with KVM_ARM_MTE_COPY_TAGS (api.rst); migration and \
              snapshots are only as right as this view",
        proven_by: &[
            Injection::CorruptTag,
            Injection::MisreadReport,
            Injection::KernelWarn,
        ],
        run: guest_tags_seen_by_host,
    },
    Scenario {
        name: "tags::host_tags_seen_by_guest",
        summary: "Tags the host writes with KVM_ARM_MTE_COPY_TAGS (KVM_ARM_TAGS_TO_GUEST) are \
                  what the guest's LDG reads, granule by granule",
        why: "A VMM restores guest tags with KVM_ARM_TAGS_TO_GUEST on the destination of a \
              migration (api.rst)",
        proven_by: &[
            Injection::CorruptTag,
            Injection::MisreadReport,
            Injection::KernelWarn,
        ],
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

fn guest_tags_seen_by_host(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let guest = guest.as_mut();
    let range = (TEST_RAM_IPA, LEN);
    let chosen = guest_tag_random(guest, range.0, LEN)?;

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
    let stored = ("tags the guest stored (IRG)", &chosen[..]);
    let ldg = checks.expect_guest_tags(guest, range, stored, "guest LDG")?;
    let ldg = ("guest LDG", &ldg[..]);
    checks.expect_host_tags(guest, range, ldg, "host KVM_ARM_TAGS_FROM_GUEST")?;
    Ok(checks.finish())
}

/// A pattern that uses every tag value and differs between neighbouring granules and pages.
fn host_pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + i / 256 + 3) % 16) as u8).collect()
}

fn host_tags_seen_by_guest(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let ipa = TEST_RAM_IPA + 8 * PAGE_SIZE;
    let pattern = host_pattern(granules(LEN));
    guest.host_write_tags(ipa, &pattern)?;
    let mut checks = Checks::new();
    let written = ("host KVM_ARM_TAGS_TO_GUEST", &pattern[..]);
    checks.expect_guest_tags(guest.as_mut(), (ipa, LEN), written, "guest LDG")?;
    Ok(checks.finish())
}

fn untouched_pages_read_zero(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let guest = guest.as_mut();
    let host_first = (TEST_RAM_IPA + 16 * PAGE_SIZE, LEN);
    let guest_first = (TEST_RAM_IPA + 24 * PAGE_SIZE, LEN);
    let zeros = vec![0u8; granules(LEN)];
    let zeros = ("zero tags", &zeros[..]);

    let mut checks = Checks::new();
    // The host looks first, then the guest looks at the same pages.
    checks.expect_host_tags(guest, host_first, zeros, "host read of untouched pages")?;
    checks.expect_guest_tags(guest, host_first, zeros, "guest LDG after the host's read")?;
    // Pages nobody looked at before the guest's own LDG.
    checks.expect_guest_tags(guest, guest_first, zeros, "guest LDG of fresh pages")?;
    checks.expect_host_tags(guest, guest_first, zeros, "host read after the guest's LDG")?;
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
