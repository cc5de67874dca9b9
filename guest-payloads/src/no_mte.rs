//! What a guest can do with tags whatever its ID registers say: the probe of a VM given no MTE,
//! where tag storage must be out of reach (the instructions UNDEFINED, or their tag accesses
//! read as zero and ignored) and the MTE system registers UNDEFINED.

use mte_protocol::{GRANULE, PROBE_TAG, with_tag};

use crate::args::{Refusal, test_range};
use crate::vectors::catching_undefined;
use crate::{bulk, mte, sysreg};

/// SCTLR_EL1.ATA: EL1 may access allocation tags (RES0 without tag storage).
const SCTLR_ATA: u64 = 1 << 43;

/// `ProbeTagAccess`: STG, LDG and a read of GCR_EL1, each allowed to be UNDEFINED, with
/// SCTLR_EL1.ATA set meanwhile so that nothing of the guest's own holds tag access back.
pub fn probe_tag_access(addr: u64) -> Result<(), Refusal> {
    let (addr, _) = test_range(addr, GRANULE)?;
    let sctlr = sysreg::read!("sctlr_el1");
    // SAFETY: ATA only lets EL1 reach allocation tags; no access of the runtime is checked.
    unsafe { sysreg::write!("sctlr_el1", sctlr | SCTLR_ATA) };
    // SAFETY: a granule of test RAM, which the host gave over; STG changes only its tag.
    let ((), stg) = catching_undefined(|| unsafe { mte::store_tag(with_tag(addr, PROBE_TAG)) });
    // SAFETY: test RAM is mapped; LDG only reads its tag.
    let (tag, ldg) = catching_undefined(|| unsafe { mte::load_tag(addr) });
    let (_, gcr) = catching_undefined(|| sysreg::read!("gcr_el1"));
    // SAFETY: SCTLR_EL1 as it was.
    unsafe { sysreg::write!("sctlr_el1", sctlr) };
    let words = [
        stg.unwrap_or(0),
        ldg.unwrap_or(0),
        if ldg.is_some() { 0 } else { u64::from(tag) },
        gcr.unwrap_or(0),
    ];
    for (i, word) in words.into_iter().enumerate() {
        bulk::set_word(i, word);
    }
    Ok(())
}
