//! The host's view of a guest's tags against the guest's own: first touch, guest-written and
//! host-written tags.

use mte_protocol::{esr, granules, Command, PAGE_SIZE, PROBE_TAG, TEST_RAM_IPA};
use mte_results::Lane;

use crate::check::{Checks, Finding};
use crate::esr::describe_esr;
use crate::inject::Injection;
use crate::scenario::Scenario;
use crate::steps::boot::{boot, boot_untagged};
use crate::steps::bulk::bulk_report;
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
    Scenario {
        name: "tags::vm_without_mte_has_no_tag_storage",
        summary: "A guest of a VM given no MTE (no KVM_CAP_ARM_MTE; QEMU's mte=off) sees none: \
                  ID_AA64PFR1_EL1.MTE is 0 under KVM (at most 1, the instructions alone, under \
                  QEMU's TCG), GCR_EL1 is UNDEFINED, and a tag it stores with STG is never read \
                  back by LDG (both UNDEFINED, or tag accesses read as zero and ignored)",
        why: "api.rst (KVM_CAP_ARM_MTE): MTE is exposed to a guest only once the VMM enables the \
              capability; KVM hides ID_AA64PFR1_EL1.MTE otherwise, and keeps HCR_EL2.ATA clear, \
              so that the guest's tag accesses read as zero and GCR_EL1 traps (UNDEFINED). QEMU \
              9.2's mte=off under KVM leaves the guest's view to KVM; QEMU's TCG keeps FEAT_MTE's \
              instructions without tag storage (MTE = 1, as a Cortex-A710 with BROADCASTMTE low)",
        proven_by: &[Injection::MisreadReport],
        run: vm_without_mte_has_no_tag_storage,
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
    checks.note_host_view(guest.as_ref());
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

/// An exception a probe step raised, in words, or that it raised none.
fn raised(esr_value: u64) -> String {
    match esr_value {
        0 => "no exception".into(),
        value => describe_esr(value),
    }
}

fn vm_without_mte_has_no_tag_storage(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot_untagged(vmm)?;
    let level = guest.ids().mte_level();
    let mut checks = Checks::new();
    // Under KVM the guest's ID registers are KVM's; only QEMU's TCG decides them itself.
    let (highest, whose) = match vmm.lane() {
        Lane::Qemu => (
            1,
            "QEMU's TCG: FEAT_MTE's instructions without tag storage, or none",
        ),
        _ => (0, "KVM hides MTE from a VM without KVM_CAP_ARM_MTE"),
    };
    checks.holds(
        "ID_AA64PFR1_EL1.MTE of the guest of a VM without MTE",
        level <= highest,
        format!("at most {highest} ({whose})"),
        format!(
            "{level} (ID_AA64PFR1_EL1 = {:#x})",
            guest.ids().id_aa64pfr1_el1
        ),
    );
    let report = bulk_report(guest.as_mut(), 32, Command::ProbeTagAccess, &[TEST_RAM_IPA])?;
    let word = |i: usize| u64::from_le_bytes(report[i * 8..i * 8 + 8].try_into().expect("8"));
    let (stg, ldg, tag, gcr) = (word(0), word(1), word(2), word(3));
    let undefined = |value: u64| value != 0 && esr::ec(value) == esr::EC_UNKNOWN;
    checks.holds(
        "GCR_EL1, a register of MTE's tag storage, is UNDEFINED",
        undefined(gcr),
        "an UNDEFINED exception (EC 0x00)",
        raised(gcr),
    );
    checks.holds(
        &format!("a tag stored with STG ({PROBE_TAG:#x}) is not read back by LDG"),
        undefined(ldg) || (ldg == 0 && tag == 0),
        "LDG reads tag 0, or is UNDEFINED",
        match ldg {
            0 => format!("LDG read tag {tag:#x}"),
            value => format!("LDG raised {}", raised(value)),
        },
    );
    checks.value("STG in the guest of a VM without MTE", "", raised(stg));
    checks.value("LDG in the guest of a VM without MTE", "", raised(ldg));
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
