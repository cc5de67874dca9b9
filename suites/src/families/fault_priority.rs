//! Which data abort the guest sees when one access could raise two: misaligned and
//! tag-mismatched, untranslated and tag-mismatched, and where a tag check fault of an access
//! that straddles two granules is reported.
//!
//! The rules, from the Arm ARM (DDI 0487, L.a-era text):
//! - D1.4.5.6 (prioritization of synchronous exceptions): Data Aborts from MMU faults
//!   (priority 44) come before Data Aborts on Tag Check Faults (45 or 47). D8.15.5 (R_XCHFJ)
//!   lists the Alignment fault not caused by memory type as the first MMU fault of a stage.
//! - J1 pseudocode: `Mem[]` and `MemAtomic()` raise the Alignment fault
//!   (`AArch64.UnalignedAccessFaults`: SCTLR_ELx.A, or an exclusive or atomic not within one
//!   aligned 16-byte quantity) before any translation or tag check; `AArch64.MemSingleRead/
//!   Write` return a translation fault before `AArch64.CheckTag` runs.
//! - FAR_EL1 (D24.2.48): "It is the lower address that gave rise to the fault that is
//!   reported"; the field includes the pointer tag where address tagging is enabled; for a
//!   synchronous Tag Check Fault bits 63:60 are UNKNOWN unless FEAT_MTE_TAGGED_FAR. ESR_EL1.FnP
//!   (FAR not precise) applies to SVE and SME accesses only, so for LDR/STR the FAR is exact.
//!
//! Each check also makes a control access in the same guest that must take the plain tag check
//! fault, so a guest whose tags would not have faulted anyway cannot pass it.

use mte_protocol::{
    el0_alias, esr, priority_form as form, tcf, with_tag, Command, GRANULE, PAGE_SIZE,
    TEST_RAM_IPA, UNTRANSLATED_VA,
};

use crate::check::{Checks, Finding};
use crate::esr::fault_evidence;
use crate::host_mm::Advice;
use crate::inject::Injection;
use crate::qemu_cpu::judge_with_known_defect;
use crate::reply::Reply;
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::command::{require_mte, run};
use crate::steps::data::guest_fill;
use crate::steps::data::guest_pattern_mismatches;
use crate::steps::tag_checks::{check_one_abort, prepare, set_tcf, GRANULE_TAG, SEED, WRONG_TAG};
use crate::steps::tags::{guest_ldg, guest_store_tags};
use crate::vmm::{Guest, Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fault_priority::misaligned_load_reports_alignment_before_tag_check",
        summary: "With SCTLR_EL1.A set, a misaligned LDR through a mismatched pointer tag raises \
                  an Alignment fault (DFSC 0x21, FAR the pointer with its tag), not a tag check \
                  fault; the same load with A clear takes the tag check fault",
        why: "Arm ARM D1.4.5.6 and D8.15.5 R_XCHFJ (Alignment fault first, MMU faults before \
              Tag Check Faults); pseudocode Mem[] raises it before any access is made",
        proven_by: PROOFS,
        run: |vmm| alignment_checked(vmm, 0, false),
    },
    Scenario {
        name: "fault_priority::misaligned_store_reports_alignment_before_tag_check",
        summary: "With SCTLR_EL1.A set, a misaligned STR through a mismatched pointer tag raises \
                  an Alignment fault (DFSC 0x21, WnR, FAR the pointer) and writes nothing; with \
                  A clear it takes the tag check fault",
        why: "Arm ARM D1.4.5.6 and D8.15.5 R_XCHFJ; pseudocode Mem[] (write form) aborts before \
              any byte is written",
        proven_by: PROOFS,
        run: |vmm| alignment_checked(vmm, 1, true),
    },
    Scenario {
        name: "fault_priority::misaligned_exclusives_report_alignment_before_tag_check",
        summary: "LDXR, LDAXR and STXR whose 8 bytes cross a 16-byte granule, through a \
                  mismatched pointer tag, raise an Alignment fault whatever SCTLR_EL1.A says \
                  (STXR, its monitor open, may instead fail without an abort: IMPLEMENTATION \
                  DEFINED), and write nothing; an aligned LDXR through the same tag takes the \
                  tag check fault",
        why: "Arm ARM B2 / pseudocode AArch64.UnalignedAccessFaults: exclusives not within one \
              aligned 16-byte quantity always fault on alignment (with or without FEAT_LSE2); \
              D1.4.5.6 puts that before the Tag Check Fault",
        proven_by: PROOFS,
        run: |vmm| across_granules(vmm, 2, EXCLUSIVES),
    },
    Scenario {
        name: "fault_priority::misaligned_atomics_report_alignment_before_tag_check",
        summary: "LDADD and CAS whose 8 bytes cross a 16-byte granule, through a mismatched \
                  pointer tag, raise an Alignment fault and write nothing; an aligned LDADD \
                  through the same tag takes the tag check fault (needs FEAT_LSE)",
        why: "Pseudocode MemAtomic(): AArch64.UnalignedAccessFaults (atomics not within one \
              aligned 16-byte quantity) aborts before translation and AArch64.CheckTag; Arm ARM \
              D1.4.5.6",
        proven_by: PROOFS,
        run: |vmm| across_granules(vmm, 3, ATOMICS),
    },
    Scenario {
        name: "fault_priority::alignment_faults_of_reading_exclusives_and_atomics_clear_wnr",
        summary: "The Alignment fault of a misaligned LDXR, LDAXR, LDADD or CAS (8 bytes \
                  across a granule) reports ESR_EL1.WnR = 0: each reads the location, and a \
                  read of it raises the fault",
        why: "Arm ARM ESR_EL1.WnR: 0 for an abort caused by an instruction reading; for an \
              atomic that reads and writes, 0 if a read of the address would have generated \
              the fault. Pseudocode: AlignmentFault() takes NoFault()'s fault.write = \
              !accdesc.read && accdesc.write. QEMU's TCG (check_atomic_align passing is_write \
              = true to check_lse2_align) reports WnR = 1",
        proven_by: PROOFS,
        run: reading_alignment_faults_clear_wnr,
    },
    Scenario {
        name: "fault_priority::straddling_load_faults_at_the_second_granule",
        summary: "An LDR straddling two granules whose tag matches the first granule only takes \
                  a tag check fault with FAR bits 59:0 the second granule's first byte and the \
                  pointer tag; mismatching the first only, FAR is the pointer itself",
        why: "Arm ARM FAR_EL1: 'It is the lower address that gave rise to the fault that is \
              reported', the field including the tag (bits 63:60 UNKNOWN for a Tag Check Fault \
              without FEAT_MTE_TAGGED_FAR); ESR.FnP is for SVE/SME only, so the FAR is exact",
        proven_by: PROOFS,
        run: |vmm| straddling(vmm, 4, false),
    },
    Scenario {
        name: "fault_priority::straddling_store_faults_at_the_second_granule",
        summary: "An STR straddling two granules whose tag matches the first granule only takes \
                  a tag check fault (WnR) with FAR bits 59:0 the second granule's first byte and \
                  the pointer tag; mismatching the first only, FAR is the pointer itself",
        why: "Arm ARM FAR_EL1: 'It is the lower address that gave rise to the fault that is \
              reported'; the field includes the tag",
        proven_by: PROOFS,
        run: |vmm| straddling(vmm, 5, true),
    },
    Scenario {
        name: "fault_priority::straddling_into_an_untouched_page_faults_at_its_first_byte",
        summary: "An LDR through the tag of a page's last granule whose last 4 bytes fall on the \
                  first granule of the next page, which nothing has touched (not present in the \
                  VMM's page tables, so not mapped at stage 2): KVM maps the page with its tags \
                  zeroed, and the guest takes a tag check fault with FAR bits 59:0 the new \
                  page's first byte and the pointer tag",
        why: "KVM resolves the stage 2 fault of the access's second page (user_mem_abort, tags \
              of a new page zeroed) and the re-executed access must then raise the guest's tag \
              check fault; Arm ARM FAR_EL1: the lower address that gave rise to the fault",
        proven_by: PROOFS,
        run: into_untouched_page,
    },
    Scenario {
        name: "fault_priority::untranslated_tagged_access_reports_translation_fault",
        summary: "A load and a store through a mismatched pointer tag to a VA TTBR0 does not \
                  translate raise a level 0 translation fault (DFSC 0x04, FAR the pointer with \
                  its tag), where the same tag on mapped memory takes a tag check fault",
        why: "Arm ARM D1.4.5.6 (MMU faults before Tag Check Faults); pseudocode \
              AArch64.MemSingleRead/Write return the translation fault before AArch64.CheckTag; \
              D8.15.4: an IA outside the TTBR's range is reported as a level 0 fault",
        proven_by: &[Injection::WrongTcf],
        run: untranslated,
    },
    Scenario {
        name: "fault_priority::permission_fault_beats_tag_check",
        summary: "An EL1 load and store through a mismatched pointer tag to memory EL0 may \
                  access (RAM's EL0 alias), with PSTATE.PAN set, raise a level 1 permission \
                  fault (DFSC 0x0d, FAR the pointer with its tag), where the same load with PAN \
                  clear takes a tag check fault",
        why: "Arm ARM D1.4.5.6: Data Aborts from MMU faults (priority 44) before Data Aborts on \
              Tag Check Faults (45/47); a permission fault is an MMU fault, and with PSTATE.PAN \
              set an EL1 data access to memory EL0 may access is one (FEAT_PAN); pseudocode \
              AArch64.MemSingleRead/Write return the permission fault before AArch64.CheckTag",
        proven_by: &[Injection::WrongTcf],
        run: permission,
    },
];

/// A wrong tag-check mode breaks every control; a realigned access breaks every comparison of
/// the priority itself.
const PROOFS: &[Injection] = &[Injection::WrongTcf, Injection::AlignedAccess];

/// The tag of the second granule of the straddling checks (the first has `GRANULE_TAG`).
const SECOND_TAG: u8 = 0x9;
/// A store's value: no word of the data pattern.
const VALUE: u64 = 0x1234_5678_9abc_def0;

/// FAR_EL1 bits compared for a tag check fault: 63:60 are UNKNOWN without FEAT_MTE_TAGGED_FAR.
const TAG_CHECK_FAR_BITS: u64 = (1 << 60) - 1;
/// ... and for any other data abort: all of them, the pointer tag included.
const ALL_FAR_BITS: u64 = u64::MAX;

/// Each check's page of test RAM, apart from the other families' pages.
fn page(n: u64) -> u64 {
    TEST_RAM_IPA + (256 + n) * PAGE_SIZE
}

/// One access through the guest's `PriorityAccess`; the guest refuses the atomic forms (as
/// prohibited) on a CPU without FEAT_LSE, which is a skip.
fn access(guest: &mut dyn Guest, ptr: u64, form: u64) -> Result<Reply, VmmError> {
    run(guest, Command::PriorityAccess, &[ptr, form, VALUE]).map_err(|e| match e {
        VmmError::Unsupported(_) if matches!(form, form::ATOMIC_ADD | form::COMPARE_AND_SWAP) => {
            VmmError::Unsupported(
                "the guest CPU has no FEAT_LSE (ID_AA64ISAR0_EL1.Atomic < 2): no LDADD or CAS"
                    .into(),
            )
        }
        e => e,
    })
}

/// The abort an access must have raised, and how to name it.
struct Abort {
    dfsc: u8,
    name: &'static str,
    far: u64,
    far_bits: u64,
    /// ESR_EL1.WnR, where the architecture fixes it (plain loads and stores).
    write: Option<bool>,
}

impl Abort {
    fn alignment(ptr: u64, write: Option<bool>) -> Self {
        Abort {
            dfsc: esr::DFSC_ALIGNMENT,
            name: "alignment fault",
            far: ptr,
            far_bits: ALL_FAR_BITS,
            write,
        }
    }

    fn tag_check(far: u64, write: Option<bool>) -> Self {
        Abort {
            dfsc: esr::DFSC_TAG_CHECK,
            name: "tag check fault",
            far,
            far_bits: TAG_CHECK_FAR_BITS,
            write,
        }
    }

    fn permission(ptr: u64, write: bool) -> Self {
        Abort {
            dfsc: esr::DFSC_PERMISSION_L1,
            name: "level 1 permission fault",
            far: ptr,
            far_bits: ALL_FAR_BITS,
            write: Some(write),
        }
    }

    fn translation(ptr: u64, write: bool) -> Self {
        Abort {
            dfsc: esr::DFSC_TRANSLATION_L0,
            name: "level 0 translation fault",
            far: ptr,
            far_bits: ALL_FAR_BITS,
            write: Some(write),
        }
    }

    /// `reply` raised exactly this abort, and a load among them left its destination at 0.
    fn check(&self, checks: &mut Checks, access: &str, reply: &Reply) {
        self.check_with_wnr_apart(checks, None, access, reply)
    }

    /// As [`Self::check`], the WnR comparison into `wnr` where given.
    fn check_with_wnr_apart(
        &self,
        checks: &mut Checks,
        wnr: Option<&mut Checks>,
        access: &str,
        reply: &Reply,
    ) {
        let recorded = check_one_abort(
            checks,
            access,
            reply.result[1],
            reply,
            (esr::EC_DABT_CUR, self.dfsc),
            format!(
                "EC 0x25 (data abort, same EL), DFSC {:#04x} ({})",
                self.dfsc, self.name
            ),
        );
        if !recorded {
            return;
        }
        if let Some(write) = self.write {
            wnr.unwrap_or(checks).equal(
                &format!("{access}: ESR_EL1.WnR (write)"),
                write,
                esr::is_write(reply.fault.esr),
            );
        }
        let bits = if self.far_bits == ALL_FAR_BITS {
            "63:0"
        } else {
            "59:0"
        };
        checks.holds(
            &format!("{access}: FAR_EL1 (bits {bits})"),
            reply.fault.far & self.far_bits == self.far & self.far_bits,
            format!("{:#x}", self.far & self.far_bits),
            format!("{:#x}", reply.fault.far),
        );
        checks.equal(
            &format!("{access}: destination register after the abort"),
            0,
            reply.result[0],
        );
        checks.evidence(fault_evidence(reply));
    }
}

/// Boot, write the data pattern over page `n`, tag its first two granules `tags` and select
/// synchronous tag checks.
fn prepared(vmm: &dyn Vmm, n: u64, tags: &[u8]) -> Result<(Box<dyn Guest>, u64), VmmError> {
    let mut guest = boot(vmm)?;
    require_mte(&guest.ids())?;
    let ipa = page(n);
    prepare(guest.as_mut(), ipa, 1, ipa, tags)?;
    set_tcf(guest.as_mut(), tcf::SYNC)?;
    Ok((guest, ipa))
}

/// No word of the page changed.
fn wrote_nothing(checks: &mut Checks, guest: &mut dyn Guest, ipa: u64) -> Result<(), VmmError> {
    let (changed, _) = guest_pattern_mismatches(guest, ipa, PAGE_SIZE, SEED)?;
    checks.equal(
        "words of the page changed by the aborted accesses",
        0,
        changed,
    );
    Ok(())
}

/// An 8-byte access 4 bytes into a granule (misaligned, within one granule) through a
/// mismatched tag, with SCTLR_EL1.A set, then with it clear.
fn alignment_checked(vmm: &dyn Vmm, n: u64, write: bool) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepared(vmm, n, &[GRANULE_TAG])?;
    let guest = guest.as_mut();
    let ptr = with_tag(ipa + 4, WRONG_TAG);
    let (checked, unchecked, what) = match write {
        false => (form::LOAD_ALIGNMENT_CHECKED, form::LOAD, "load"),
        true => (form::STORE_ALIGNMENT_CHECKED, form::STORE, "store"),
    };
    let mut checks = Checks::new();
    Abort::alignment(ptr, Some(write)).check(
        &mut checks,
        &format!("misaligned {what}, SCTLR_EL1.A set"),
        &access(guest, ptr, checked)?,
    );
    if write {
        wrote_nothing(&mut checks, guest, ipa)?;
    }
    Abort::tag_check(ptr, Some(write)).check(
        &mut checks,
        &format!("control: the same {what}, SCTLR_EL1.A clear"),
        &access(guest, ptr, unchecked)?,
    );
    Ok(checks.finish())
}

/// An exclusive or atomic of the across-granule checks: its form, its name and the ESR_EL1.WnR
/// its abort must report, where the check compares it.
struct Form(u64, &'static str, Option<bool>);

const EXCLUSIVES: &[Form] = &[
    Form(form::LOAD_EXCLUSIVE, "LDXR", None),
    Form(form::LOAD_ACQUIRE_EXCLUSIVE, "LDAXR", None),
    Form(form::STORE_EXCLUSIVE, "STXR", None),
];
const ATOMICS: &[Form] = &[
    Form(form::ATOMIC_ADD, "LDADD", None),
    Form(form::COMPARE_AND_SWAP, "CAS", None),
];
/// The forms that read: WnR 0, LDADD and CAS included (they read the location too, and a read
/// of it raises the fault).
const READING: &[Form] = &[
    Form(form::LOAD_EXCLUSIVE, "LDXR", Some(false)),
    Form(form::LOAD_ACQUIRE_EXCLUSIVE, "LDAXR", Some(false)),
    Form(form::ATOMIC_ADD, "LDADD", Some(false)),
    Form(form::COMPARE_AND_SWAP, "CAS", Some(false)),
];

/// Each of `forms` 12 bytes into a granule (its 8 bytes crossing into the next), both granules
/// tagged alike and the pointer mismatched; then the first form aligned, as the control.
fn across_granules(vmm: &dyn Vmm, n: u64, forms: &[Form]) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepared(vmm, n, &[GRANULE_TAG, GRANULE_TAG])?;
    let guest = guest.as_mut();
    let ptr = with_tag(ipa + 12, WRONG_TAG);
    let mut checks = Checks::new();
    for &Form(form, name, write) in forms {
        let reply = access(guest, ptr, form)?;
        let access_name = format!("{name} across granules, SCTLR_EL1.A clear");
        if form == form::STORE_EXCLUSIVE && reply.fault.count == 0 {
            store_exclusive_failed(&mut checks, &access_name, &reply);
        } else {
            Abort::alignment(ptr, write).check(&mut checks, &access_name, &reply);
        }
    }
    wrote_nothing(&mut checks, guest, ipa)?;
    let Form(form, name, _) = forms[0];
    let aligned = with_tag(ipa, WRONG_TAG);
    Abort::tag_check(aligned, None).check(
        &mut checks,
        &format!("control: {name} aligned, same tag"),
        &access(guest, aligned, form)?,
    );
    Ok(checks.finish())
}

/// Why the WnR of those alignment faults is 1 on QEMU's CPU.
const QEMU_ATOMIC_ALIGNMENT_WNR: &str = "QEMU's emulated CPU reports WnR = 1 for the Alignment \
     fault of a misaligned exclusive or atomic, where the architecture says 0 for one that \
     reads (target/arm/tcg/translate-a64.c: check_atomic_align() passes is_write = true to \
     check_lse2_align()); the priority of the faults held";

/// The reading exclusives and atomics across granules, their WnR judged apart: on QEMU's CPU
/// a wrong WnR alone is its known defect.
fn reading_alignment_faults_clear_wnr(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepared(vmm, 7, &[GRANULE_TAG, GRANULE_TAG])?;
    let ids = guest.ids();
    let guest = guest.as_mut();
    let ptr = with_tag(ipa + 12, WRONG_TAG);
    let (mut checks, mut wnr) = (Checks::new(), Checks::new());
    for &Form(form, name, write) in READING {
        let reply = access(guest, ptr, form)?;
        let access_name = format!("{name} across granules, SCTLR_EL1.A clear");
        Abort::alignment(ptr, write).check_with_wnr_apart(
            &mut checks,
            Some(&mut wnr),
            &access_name,
            &reply,
        );
    }
    wrote_nothing(&mut checks, guest, ipa)?;
    let aligned = with_tag(ipa, WRONG_TAG);
    Abort::tag_check(aligned, None).check(
        &mut checks,
        "control: LDXR aligned, same tag",
        &access(guest, aligned, form::LOAD_EXCLUSIVE)?,
    );
    Ok(judge_with_known_defect(
        checks,
        wnr,
        &ids,
        QEMU_ATOMIC_ALIGNMENT_WNR,
    ))
}

/// The other outcome the architecture allows a misaligned STXR with the monitor open: "It is
/// IMPLEMENTATION DEFINED whether the detection of memory aborts happens before or after the
/// check on the local Exclusives monitor" (pseudocode `AArch64.ExclusiveMonitorsPass`), so it
/// may fail without an abort, status 1, writing nothing; never succeed or take a tag check
/// fault.
fn store_exclusive_failed(checks: &mut Checks, access: &str, reply: &Reply) {
    checks.note(format!(
        "{access}: failed on the open monitor without an abort (the implementation checks the \
         monitor before memory aborts)"
    ));
    checks.equal(&format!("{access}: exceptions taken"), 0, reply.fault.count);
    checks.equal(&format!("{access}: status (1 failed)"), 1, reply.result[0]);
}

/// An 8-byte access 12 bytes into a granule tagged `GRANULE_TAG`, its last 4 bytes in one
/// tagged `SECOND_TAG`: through the first granule's tag (the second mismatches), then through
/// the second's (the first mismatches).
fn straddling(vmm: &dyn Vmm, n: u64, write: bool) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepared(vmm, n, &[GRANULE_TAG, SECOND_TAG])?;
    let guest = guest.as_mut();
    let (form, what) = match write {
        false => (form::LOAD, "load"),
        true => (form::STORE, "store"),
    };
    let mut checks = Checks::new();
    let second_mismatched = with_tag(ipa + 12, GRANULE_TAG);
    Abort::tag_check(with_tag(ipa + GRANULE, GRANULE_TAG), Some(write)).check(
        &mut checks,
        &format!("straddling {what}, second granule mismatched"),
        &access(guest, second_mismatched, form)?,
    );
    let first_mismatched = with_tag(ipa + 12, SECOND_TAG);
    Abort::tag_check(first_mismatched, Some(write)).check(
        &mut checks,
        &format!("control: straddling {what}, first granule mismatched"),
        &access(guest, first_mismatched, form)?,
    );
    Ok(checks.finish())
}

/// A load and a store through a mismatched tag to RAM's EL0 alias with PSTATE.PAN set, then
/// the load with PAN clear.
fn permission(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepared(vmm, 10, &[GRANULE_TAG])?;
    let guest = guest.as_mut();
    let ptr = with_tag(ipa, WRONG_TAG);
    let alias = el0_alias(ptr);
    let pan = |e: VmmError| match e {
        VmmError::Unsupported(_) => {
            VmmError::Unsupported("the guest CPU has no FEAT_PAN (ID_AA64MMFR1_EL1.PAN = 0)".into())
        }
        e => e,
    };
    let mut checks = Checks::new();
    Abort::permission(alias, false).check(
        &mut checks,
        "load with PSTATE.PAN set",
        &access(guest, ptr, form::LOAD_PAN).map_err(pan)?,
    );
    Abort::permission(alias, true).check(
        &mut checks,
        "store with PSTATE.PAN set",
        &access(guest, ptr, form::STORE_PAN).map_err(pan)?,
    );
    wrote_nothing(&mut checks, guest, ipa)?;
    Abort::tag_check(alias, Some(false)).check(
        &mut checks,
        "control: the load with PSTATE.PAN clear",
        &access(guest, ptr, form::LOAD_EL0_ALIAS)?,
    );
    Ok(checks.finish())
}

/// A load and a store through a mismatched tag to a VA beyond TTBR0's range, then a load
/// through the same tag to the tagged granule.
fn untranslated(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut guest, ipa) = prepared(vmm, 6, &[GRANULE_TAG])?;
    let guest = guest.as_mut();
    let ptr = with_tag(UNTRANSLATED_VA + ipa, WRONG_TAG);
    let mut checks = Checks::new();
    Abort::translation(ptr, false).check(
        &mut checks,
        "untranslated load",
        &access(guest, ptr, form::LOAD)?,
    );
    Abort::translation(ptr, true).check(
        &mut checks,
        "untranslated store",
        &access(guest, ptr, form::STORE)?,
    );
    let mapped = with_tag(ipa, WRONG_TAG);
    Abort::tag_check(mapped, Some(false)).check(
        &mut checks,
        "control: the same tag on mapped memory",
        &access(guest, mapped, form::LOAD)?,
    );
    Ok(checks.finish())
}

/// The last granule of page 8 tagged `GRANULE_TAG`, page 9 untouched (neither is in a huge
/// page); an LDR 4 bytes before their boundary through `GRANULE_TAG`.
fn into_untouched_page(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    require_mte(&guest.ids())?;
    let guest = guest.as_mut();
    let (ipa, next) = (page(8), page(9));
    // Touching the first page must not map the second with it, as a huge page would.
    match guest.madvise(ipa, 2 * PAGE_SIZE, Advice::NoHugePage) {
        Ok(()) | Err(VmmError::Unsupported(_)) => {}
        Err(e) => return Err(e),
    }
    guest_fill(guest, ipa, PAGE_SIZE, SEED)?;
    guest_store_tags(guest, next - GRANULE, &[GRANULE_TAG])?;
    set_tcf(guest, tcf::SYNC)?;
    let mut checks = Checks::new();
    match guest.page_states(next, PAGE_SIZE) {
        Ok(states) => {
            let present = states.iter().any(|state| state.present);
            checks.path_reached(
                "the next page is not present in the VMM's page tables before the access",
                !present,
                "not present",
                if present { "present" } else { "not present" },
            );
        }
        Err(VmmError::Unsupported(why)) => checks.path_not_reached(format!(
            "whether the next page was ever mapped cannot be seen here ({why})"
        )),
        Err(e) => return Err(e),
    }
    let ptr = with_tag(next - 4, GRANULE_TAG);
    Abort::tag_check(with_tag(next, GRANULE_TAG), Some(false)).check(
        &mut checks,
        "load into the untouched page",
        &access(guest, ptr, form::LOAD)?,
    );
    checks.equal(
        "the new page's first granule's tag (LDG), zeroed when KVM mapped it",
        vec![0u8],
        guest_ldg(guest, next, GRANULE)?,
    );
    Ok(checks.finish())
}
