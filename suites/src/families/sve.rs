//! SVE loads and stores on tagged memory in a KVM guest whose vCPU has SVE
//! ([`BootOptions::sve`]): contiguous LD1/ST1 across granules of different tags, first-faulting
//! and non-faulting loads, which report in the FFR instead of faulting, and gathers and
//! scatters, whose every element has a pointer, and a pointer tag, of its own.
//!
//! Each element access is tag checked on its own: the guest's vector covers several granules
//! (its vector length, asked for as 512 bits), the check tags them so that only some match the
//! pointer, and compares what happened element by element. Every check records the SVE the
//! machine offers (KVM's vector lengths, the guest's ID_AA64PFR0_EL1.SVE and ID_AA64ZFR0_EL1)
//! and, where it expects no fault, makes a control access that must fault in the same guest.
//!
//! QEMU's emulated CPU (TCG, the emulated lane's and the qemu lanes') checks the tag of a
//! contiguous SVE access's first element only: target/arm/tcg/sve_helper.c,
//! `sve_cont_ldst_mte_check`, passes the access's base address, not the element's, to
//! `mte_check` for every active element. The comparisons that only the later elements' checks
//! can satisfy are kept apart ([`Verdict`]); where they alone fail on that CPU (MIDR_EL1 of
//! QEMU's `max`), the verdict is an xfail that says so, and anywhere else a fail.

use mte_protocol::{
    refusal, sve_bulk_layout, sve_op, tcf, with_tag, Command, GuestIds, Status, GRANULE, PAGE_SIZE,
    TEST_RAM_IPA,
};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::qemu_cpu::judge_with_known_defect;
use crate::reply::Reply;
use crate::scenario::Scenario;
use crate::steps::boot::boot_tagged;
use crate::steps::bulk::{guest_data, NOT_WRITTEN};
use crate::steps::command::run;
use crate::steps::data::guest_fill;
use crate::steps::tag_checks::{
    check_no_fault, check_tag_fault, check_tf0, pattern_at, set_tcf, SEED,
};
use crate::vmm::{BootOptions, Guest, Vmm, VmmError};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "sve::contiguous_matching_access_completes",
        summary: "With SCTLR_EL1.TCF = sync, SVE LD1B, LD1D and ST1D whose vector spans several \
                  granules, every one tagged as the pointer, take no fault; every element loads \
                  the granule's data, every stored element lands; a pointer whose tag matches \
                  none of them faults",
        why: "Arm ARM (FEAT_MTE with FEAT_SVE): SVE contiguous loads and stores are tag checked \
              element by element, each element access against the allocation tag of its own \
              granule; KVM must give the vCPU SVE (KVM_ARM_VCPU_SVE, KVM_ARM_VCPU_FINALIZE) and \
              keep its Z, P and FFR state with the MTE state across exits",
        proven_by: WRONG_TCF_OR_MISREAD,
        run: contiguous_matching,
    },
    Scenario {
        name: "sve::contiguous_sync_mismatch_faults_at_its_element",
        summary: "With SCTLR_EL1.TCF = sync, an SVE LD1B, LD1D or ST1D whose pointer tag matches \
                  the first granule of its vector but not the second or fourth raises a tag \
                  check fault with FAR the first mismatching element's address (the second \
                  granule's), WnR as the access; the store leaves that granule and the later \
                  ones as they were",
        why: "Arm ARM: each element access of an SVE contiguous access is checked on its own \
              (QEMU target/arm/tcg/sve_helper.c sve_cont_ldst_mte_check runs mte_check on each \
              active element in order), and a synchronous Tag Check Fault reports the faulting \
              access's address in FAR_EL1 (bits 63:60 UNKNOWN); a store whose element fails the \
              check is not performed",
        proven_by: WRONG_TCF,
        run: contiguous_sync_mismatch,
    },
    Scenario {
        name: "sve::contiguous_async_mismatch_sets_tfsr",
        summary: "With SCTLR_EL1.TCF = async, an SVE LD1D and an ST1D over granules one of which \
                  mismatches the pointer take no exception, move every element (the mismatching \
                  granule's too) and set TFSR_EL1.TF0",
        why: "Arm ARM: with asynchronous tag checking a failing element access completes and the \
              fault is recorded in TFSR_EL1.TF0; an SVE element access is such an access",
        proven_by: WRONG_TCF_OR_MISREAD,
        run: contiguous_async_mismatch,
    },
    Scenario {
        name: "sve::first_fault_mismatch_on_first_element_faults",
        summary: "With SCTLR_EL1.TCF = sync, an SVE LDFF1D whose first active element mismatches \
                  its granule's tag raises a tag check fault at that element's address",
        why: "Arm ARM (SVE first-fault loads): the first active element is accessed as by a \
              normal load, so a fault on it, a Tag Check Fault included, is taken",
        proven_by: WRONG_TCF,
        run: first_fault_on_first_element,
    },
    Scenario {
        name: "sve::first_fault_later_mismatch_clears_ffr",
        summary: "With SCTLR_EL1.TCF = sync, an SVE LDFF1D whose mismatch is in its last granule \
                  takes no fault, loads the elements before it, and leaves the FFR true before \
                  that element and false from it on, TFSR_EL1 clear; a plain LD1D of the same \
                  vector faults",
        why: "Arm ARM (SVE first-fault loads): a fault on an element other than the first active \
              one, a Tag Check Fault included, is suppressed and clears the FFR from that \
              element on (QEMU sve_helper.c: mte_probe on the later elements, record_fault on \
              a mismatch); so a vectorised strlen under MTE stops at the tag boundary instead \
              of faulting",
        proven_by: WRONG_TCF_OR_MISREAD,
        run: first_fault_later_element,
    },
    Scenario {
        name: "sve::non_fault_mismatch_clears_ffr",
        summary: "With SCTLR_EL1.TCF = sync, an SVE LDNF1D takes no fault on a mismatch: with it \
                  in the last granule the FFR is false from that element on and the elements \
                  before it are loaded; with it in the first element the FFR is all false",
        why: "Arm ARM (SVE non-fault loads): no element access raises a fault, a Tag Check Fault \
              included; each that would clears the FFR from that element on",
        proven_by: WRONG_TCF_OR_MISREAD,
        run: non_fault,
    },
    Scenario {
        name: "sve::gather_checks_each_element_against_its_pointer",
        summary: "With SCTLR_EL1.TCF = sync, an SVE LD1D gather whose pointers, out of address \
                  order, each carry their own granule's tag (all different) loads every element; \
                  with one middle element's pointer tag wrong it faults with FAR that element's \
                  address",
        why: "Arm ARM: each element access of a gather is checked against the pointer tag of \
              its own address (bits 59:56 of that element's 64-bit address, TBI applying to \
              each), and a synchronous Tag Check Fault reports the faulting element's address",
        proven_by: WRONG_TCF_OR_MISREAD,
        run: gather,
    },
    Scenario {
        name: "sve::scatter_checks_each_element_against_its_pointer",
        summary: "With SCTLR_EL1.TCF = sync, an SVE ST1D scatter whose pointers each carry their \
                  own granule's tag stores every element; with one middle element's pointer tag \
                  wrong it faults with FAR that element's address, WnR set, and its word is not \
                  written",
        why: "Arm ARM: each element access of a scatter is checked against its own pointer's \
              tag; a store whose check fails synchronously is not performed",
        proven_by: WRONG_TCF,
        run: scatter,
    },
];

/// A wrong tag-check mode turns every check here red (each has an access that must fault in
/// the mode it selects, or must not); a misread report, those that compare data or the FFR in
/// the bytes it flips (the scatter's words lie apart in a page whose middle none of them is).
const WRONG_TCF: &[Injection] = &[Injection::WrongTcf];
const WRONG_TCF_OR_MISREAD: &[Injection] = &[Injection::WrongTcf, Injection::MisreadReport];

/// ZCR_EL1.LEN asked for: 512-bit vectors (4 granules, 8 doublewords), or the largest below.
const ZCR_LEN: u64 = 3;
/// The tag of the pointers, and one that differs.
const POINTER_TAG: u8 = 0x3;
const OTHER_TAG: u8 = 0xc;

/// Each check's page of test RAM.
fn page(n: u64) -> u64 {
    TEST_RAM_IPA + (300 + n) * PAGE_SIZE
}

/// A guest with SVE enabled at EL1, and its vector length in bytes.
struct SveGuest {
    guest: Box<dyn Guest>,
    vl: u64,
}

impl SveGuest {
    fn elements(&self) -> usize {
        (self.vl / 8) as usize
    }

    fn granules(&self) -> usize {
        (self.vl / GRANULE) as usize
    }

    /// One SVE access; the reply says whether it faulted.
    fn access(&mut self, op: u64, ptr: u64) -> Result<Reply, VmmError> {
        run(self.guest.as_mut(), Command::SveAccess, &[op, ptr])
    }

    /// Put `data` (the doublewords a store stores; none leaves the data vector poisoned, as a
    /// load must overwrite it) and `pointers` (a gather's or scatter's) in the bulk buffer, the
    /// FFR's place poisoned.
    fn stage(&mut self, data: &[u64], pointers: &[u64]) -> Result<(), VmmError> {
        let (_, pointers_at, ffr_at) = sve_bulk_layout(self.vl);
        let mut bytes = vec![NOT_WRITTEN; (ffr_at + self.vl / 8) as usize];
        for (i, word) in data.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        for (i, p) in pointers.iter().enumerate() {
            let at = pointers_at as usize + i * 8;
            bytes[at..at + 8].copy_from_slice(&p.to_le_bytes());
        }
        self.guest.write_bulk(&bytes)
    }

    /// A vector of `word(i)` for each doubleword element `i`.
    fn vector(&self, word: impl Fn(usize) -> u64) -> Vec<u64> {
        (0..self.elements()).map(word).collect()
    }

    /// The doublewords of guest memory from `ipa`, `len` bytes.
    fn memory(&mut self, ipa: u64, len: u64) -> Result<Vec<u64>, VmmError> {
        Ok(words(&guest_data(self.guest.as_mut(), ipa, len)?))
    }

    /// The data vector after the access, as doublewords.
    fn data(&mut self) -> Result<Vec<u64>, VmmError> {
        Ok(words(&self.guest.read_bulk(self.vl as usize)?))
    }

    /// The FFR after the access: one flag a doubleword element (its lowest predicate bit).
    fn ffr(&mut self) -> Result<Vec<bool>, VmmError> {
        let (_, _, ffr_at) = sve_bulk_layout(self.vl);
        let bytes = self.guest.read_bulk((ffr_at + self.vl / 8) as usize)?;
        Ok(bytes[ffr_at as usize..]
            .iter()
            .map(|b| b & 1 != 0)
            .collect())
    }
}

/// The doubleword the data pattern puts at element `i` of a vector from a page's start.
fn pattern_word(i: usize) -> u64 {
    pattern_at(i as u64 * 8)
}

/// What the stores store at element `i`: the pattern inverted, so that a store shows.
fn stored_word(i: usize) -> u64 {
    !pattern_word(i)
}

fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
        .collect()
}

/// Boot a guest whose vCPU has SVE and MTE, enable SVE at EL1, record what SVE it has, write
/// the data pattern over page `n` and give its first granules `tags`. Skips where the lane
/// cannot give SVE or the vector is too short to span two granules.
fn sve_guest(vmm: &dyn Vmm, checks: &mut Checks, n: u64) -> Result<SveGuest, VmmError> {
    let mut guest = boot_tagged(
        vmm,
        &BootOptions {
            sve: true,
            ..BootOptions::default()
        },
    )?;
    match vmm.sve_offer() {
        Ok(offer) => checks.value(
            "vector lengths the VMM offers a vCPU (bytes)",
            offer.source,
            format!("{:?}", offer.vector_lengths),
        ),
        Err(e) => checks.note(format!("the VMM's offer of SVE is not known here: {e}")),
    }
    let reply = guest.exec(Command::SveEnable, &[ZCR_LEN])?;
    if reply.status == Status::BadCommand && reply.result[0] == refusal::NO_SVE {
        return Err(VmmError::Unsupported(
            "the guest CPU has no SVE (ID_AA64PFR0_EL1.SVE = 0) although the VM was asked to \
             give it"
                .into(),
        ));
    }
    if reply.status != Status::Done {
        return Err(VmmError::Guest(format!(
            "SveEnable answered {:?} ({:#x})",
            reply.status, reply.result[0]
        )));
    }
    let [vl, pfr0, zfr0, zcr, ..] = reply.result;
    checks.value(
        "the guest's SVE (ID_AA64PFR0_EL1.SVE, ID_AA64ZFR0_EL1, ZCR_EL1, vector bytes)",
        format!("ZCR_EL1.LEN {ZCR_LEN} asked for"),
        format!(
            "SVE {}, ZFR0 {zfr0:#x}, ZCR_EL1 {zcr:#x}, VL {vl} bytes",
            (pfr0 >> 32) & 0xf
        ),
    );
    if vl < 2 * GRANULE || vl % GRANULE != 0 {
        return Err(VmmError::Unsupported(format!(
            "the guest's SVE vectors are {vl} bytes: too short to span two granules"
        )));
    }
    guest_fill(guest.as_mut(), page(n), PAGE_SIZE, SEED)?;
    Ok(SveGuest { guest, vl })
}

/// Give the granules from `ipa` on these tags.
fn tag(sve: &mut SveGuest, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
    crate::steps::tags::guest_store_tags(sve.guest.as_mut(), ipa, tags)
}

/// Compare the doubleword elements `range` of `observed` with the pattern at `offsets[i]`.
fn check_elements(
    checks: &mut Checks,
    what: &str,
    observed: &[u64],
    expected: impl Fn(usize) -> u64,
    range: std::ops::Range<usize>,
) {
    for i in range {
        let (want, got) = (expected(i), observed.get(i).copied().unwrap_or(0));
        checks.holds(
            &format!("{what}: element {i}"),
            want == got,
            format!("{want:#018x}"),
            format!("{got:#018x}"),
        );
    }
}

/// An SVE access must take a tag check fault at `far`, WnR as `write`.
fn expect_fault(checks: &mut Checks, what: &str, reply: &Reply, far: u64, write: bool) {
    // SveAccess answers `[faulted]` whatever its direction; the shared checks read a load's
    // answer from `result[1]`.
    let mut reply = *reply;
    reply.result[1] = reply.result[0];
    check_tag_fault(checks, what, &reply, far, write);
}

/// The comparisons of a check that hold on any CPU that checks tags at all (`controls`), and
/// those that need the tag of an element past the first granule of a contiguous access to be
/// checked (`later`).
#[derive(Default)]
struct Verdict {
    controls: Checks,
    later: Checks,
}

/// Why a contiguous SVE access's later elements go unchecked on QEMU's CPU.
const QEMU_CONTIGUOUS_FIRST_ELEMENT_ONLY: &str = "QEMU's emulated CPU checks the tag of a \
     contiguous SVE load or store at its first element's address only (target/arm/tcg/\
     sve_helper.c, sve_cont_ldst_mte_check: mte_check(env, mtedesc, addr, ra) for every \
     active element, the base address where addr + mem_off is meant), so a mismatch past the \
     first granule is never seen; the controls on the first element held";

impl Verdict {
    fn finish(self, ids: &GuestIds) -> Finding {
        judge_with_known_defect(
            self.controls,
            self.later,
            ids,
            QEMU_CONTIGUOUS_FIRST_ELEMENT_ONLY,
        )
    }
}

fn contiguous_matching(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut checks = Checks::new();
    let mut sve = sve_guest(vmm, &mut checks, 0)?;
    let ipa = page(0);
    let granules = sve.granules();
    tag(&mut sve, ipa, &vec![POINTER_TAG; granules])?;
    set_tcf(sve.guest.as_mut(), tcf::SYNC)?;
    let ptr = with_tag(ipa, POINTER_TAG);
    for (op, name) in [(sve_op::LD1B, "LD1B"), (sve_op::LD1D, "LD1D")] {
        sve.stage(&[], &[])?;
        let reply = sve.access(op, ptr)?;
        check_no_fault(&mut checks, name, &reply, true);
        let data = sve.data()?;
        check_elements(
            &mut checks,
            &format!("{name} loaded"),
            &data,
            pattern_word,
            0..sve.elements(),
        );
    }
    sve.stage(&sve.vector(stored_word), &[])?;
    let reply = sve.access(sve_op::ST1D, ptr)?;
    check_no_fault(&mut checks, "ST1D", &reply, true);
    let memory = sve.memory(ipa, sve.vl)?;
    check_elements(
        &mut checks,
        "ST1D stored",
        &memory,
        stored_word,
        0..sve.elements(),
    );
    // Control: the same vector through a tag no granule has faults at its first element.
    let reply = sve.access(sve_op::LD1D, with_tag(ipa, OTHER_TAG))?;
    expect_fault(
        &mut checks,
        "control: LD1D through another tag",
        &reply,
        ipa,
        false,
    );
    check_tf0(&mut checks, sve.guest.as_mut(), "the accesses", false)?;
    Ok(checks.finish())
}

/// The tags of a contiguous vector whose granules 1 and 3 (every odd one) mismatch the pointer.
fn alternating(granules: usize) -> Vec<u8> {
    (0..granules)
        .map(|g| if g % 2 == 0 { POINTER_TAG } else { OTHER_TAG })
        .collect()
}

fn contiguous_sync_mismatch(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut v = Verdict::default();
    let mut sve = sve_guest(vmm, &mut v.controls, 1)?;
    let ipa = page(1);
    let tags = alternating(sve.granules());
    tag(&mut sve, ipa, &tags)?;
    v.controls
        .value("granule tags of the vector", "", format!("{tags:x?}"));
    set_tcf(sve.guest.as_mut(), tcf::SYNC)?;
    let ptr = with_tag(ipa, POINTER_TAG);
    // The first mismatching element is the first of granule 1, whatever the element size.
    let first_mismatch = ipa + GRANULE;
    for (op, name) in [(sve_op::LD1B, "LD1B"), (sve_op::LD1D, "LD1D")] {
        let reply = sve.access(op, ptr)?;
        expect_fault(&mut v.later, name, &reply, first_mismatch, false);
    }
    sve.stage(&sve.vector(stored_word), &[])?;
    let reply = sve.access(sve_op::ST1D, ptr)?;
    expect_fault(&mut v.later, "ST1D", &reply, first_mismatch, true);
    let memory = sve.memory(ipa, sve.vl)?;
    // From the faulting element on nothing was written; before it the architecture allows
    // either, so those elements are recorded only.
    check_elements(
        &mut v.later,
        "ST1D left unwritten",
        &memory,
        pattern_word,
        2..sve.elements(),
    );
    v.later.value(
        "ST1D: the elements before the fault (either value allowed)",
        format!("{:#x} or {:#x}", pattern_word(0), stored_word(0)),
        format!("{:#x?}", &memory[..2]),
    );
    // Control: through granule 1's tag the first element mismatches, and faults.
    let reply = sve.access(sve_op::LD1D, with_tag(ipa, OTHER_TAG))?;
    let control = "control: LD1D through granule 1's tag";
    expect_fault(&mut v.controls, control, &reply, ipa, false);
    check_tf0(
        &mut v.controls,
        sve.guest.as_mut(),
        "the synchronous faults",
        false,
    )?;
    Ok(v.finish(&sve.guest.ids()))
}

fn contiguous_async_mismatch(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut v = Verdict::default();
    let mut sve = sve_guest(vmm, &mut v.controls, 2)?;
    let ipa = page(2);
    let tags = alternating(sve.granules());
    tag(&mut sve, ipa, &tags)?;
    set_tcf(sve.guest.as_mut(), tcf::ASYNC)?;
    let ptr = with_tag(ipa, POINTER_TAG);
    sve.stage(&[], &[])?;
    let reply = sve.access(sve_op::LD1D, ptr)?;
    check_no_fault(&mut v.controls, "LD1D", &reply, true);
    let data = sve.data()?;
    check_elements(
        &mut v.controls,
        "LD1D loaded",
        &data,
        pattern_word,
        0..sve.elements(),
    );
    check_tf0(&mut v.later, sve.guest.as_mut(), "the LD1D", true)?;
    sve.stage(&sve.vector(stored_word), &[])?;
    let reply = sve.access(sve_op::ST1D, ptr)?;
    check_no_fault(&mut v.controls, "ST1D", &reply, true);
    let memory = sve.memory(ipa, sve.vl)?;
    check_elements(
        &mut v.controls,
        "ST1D stored",
        &memory,
        stored_word,
        0..sve.elements(),
    );
    check_tf0(&mut v.later, sve.guest.as_mut(), "the ST1D", true)?;
    // Control: through granule 1's tag the first element mismatches: no exception, TF0 set.
    let reply = sve.access(sve_op::LD1D, with_tag(ipa, OTHER_TAG))?;
    let control = "control: LD1D through granule 1's tag";
    check_no_fault(&mut v.controls, control, &reply, true);
    check_tf0(&mut v.controls, sve.guest.as_mut(), "the control", true)?;
    Ok(v.finish(&sve.guest.ids()))
}

fn first_fault_on_first_element(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut checks = Checks::new();
    let mut sve = sve_guest(vmm, &mut checks, 3)?;
    let ipa = page(3);
    let mut tags = vec![POINTER_TAG; sve.granules()];
    tags[0] = OTHER_TAG;
    tag(&mut sve, ipa, &tags)?;
    set_tcf(sve.guest.as_mut(), tcf::SYNC)?;
    let reply = sve.access(sve_op::LDFF1D, with_tag(ipa, POINTER_TAG))?;
    expect_fault(&mut checks, "LDFF1D", &reply, ipa, false);
    check_tf0(
        &mut checks,
        sve.guest.as_mut(),
        "the synchronous fault",
        false,
    )?;
    Ok(checks.finish())
}

/// The FFR a first-fault or non-fault load must leave: true before `first_false`.
fn check_ffr(checks: &mut Checks, what: &str, ffr: &[bool], first_false: usize) {
    let expected: Vec<bool> = (0..ffr.len()).map(|i| i < first_false).collect();
    let render = |v: &[bool]| {
        v.iter()
            .map(|&b| if b { '1' } else { '0' })
            .collect::<String>()
    };
    checks.holds(
        &format!("{what}: FFR by element (element 0 first)"),
        ffr == expected,
        render(&expected),
        render(ffr),
    );
}

/// Tags whose last granule alone mismatches the pointer; the index of its first doubleword.
fn last_granule_mismatch(sve: &SveGuest) -> (Vec<u8>, usize) {
    let mut tags = vec![POINTER_TAG; sve.granules()];
    *tags.last_mut().expect("two granules at least") = OTHER_TAG;
    (tags, sve.elements() - 2)
}

fn first_fault_later_element(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut sve, mut checks, ipa, mismatch) =
        load_with_a_later_mismatch(vmm, 4, (sve_op::LDFF1D, "LDFF1D"))?;
    check_tf0(&mut checks, sve.guest.as_mut(), "the LDFF1D", false)?;
    controls_of_a_later_mismatch(sve, checks, ipa, mismatch)
}

/// On page `n` tagged so that only its vector's last granule mismatches the pointer, under
/// TCF sync: the first-fault or non-fault load `op`, named `name`, must not fault, must
/// load every element before the mismatch, and must clear FFR from it on. The guest, the
/// comparisons so far, the page and the mismatching element.
fn load_with_a_later_mismatch(
    vmm: &dyn Vmm,
    n: u64,
    (op, name): (u64, &str),
) -> Result<(SveGuest, Checks, u64, usize), VmmError> {
    let mut checks = Checks::new();
    let mut sve = sve_guest(vmm, &mut checks, n)?;
    let ipa = page(n);
    let (tags, mismatch) = last_granule_mismatch(&sve);
    tag(&mut sve, ipa, &tags)?;
    set_tcf(sve.guest.as_mut(), tcf::SYNC)?;
    sve.stage(&[], &[])?;
    let what = format!("{name}, last granule mismatching");
    let reply = sve.access(op, with_tag(ipa, POINTER_TAG))?;
    check_no_fault(&mut checks, &what, &reply, true);
    let data = sve.data()?;
    check_elements(
        &mut checks,
        &format!("{name} loaded"),
        &data,
        pattern_word,
        0..mismatch,
    );
    check_ffr(&mut checks, &what, &sve.ffr()?, mismatch);
    Ok((sve, checks, ipa, mismatch))
}

/// The controls of a first-fault or non-fault check whose mismatch is at element `mismatch`:
/// a plain LD1D of the vector faults there, and one through the mismatching granule's tag
/// faults at the first element. `checks` are the comparisons so far, none of which needs a
/// later element of a plain contiguous load checked.
fn controls_of_a_later_mismatch(
    mut sve: SveGuest,
    checks: Checks,
    ipa: u64,
    mismatch: usize,
) -> Result<Finding, VmmError> {
    let mut v = Verdict {
        controls: checks,
        later: Checks::new(),
    };
    let reply = sve.access(sve_op::LD1D, with_tag(ipa, POINTER_TAG))?;
    let far = ipa + mismatch as u64 * 8;
    expect_fault(&mut v.later, "control: LD1D", &reply, far, false);
    let reply = sve.access(sve_op::LD1D, with_tag(ipa, OTHER_TAG))?;
    let control = "control: LD1D through the last granule's tag";
    expect_fault(&mut v.controls, control, &reply, ipa, false);
    Ok(v.finish(&sve.guest.ids()))
}

fn non_fault(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let (mut sve, mut checks, ipa, mismatch) =
        load_with_a_later_mismatch(vmm, 5, (sve_op::LDNF1D, "LDNF1D"))?;
    // Through the last granule's tag every element but those of the last granule mismatch,
    // the first one included: still no fault, and nothing loaded.
    let reply = sve.access(sve_op::LDNF1D, with_tag(ipa, OTHER_TAG))?;
    check_no_fault(
        &mut checks,
        "LDNF1D, first element mismatching",
        &reply,
        true,
    );
    check_ffr(
        &mut checks,
        "LDNF1D, first element mismatching",
        &sve.ffr()?,
        0,
    );
    check_tf0(&mut checks, sve.guest.as_mut(), "the LDNF1Ds", false)?;
    controls_of_a_later_mismatch(sve, checks, ipa, mismatch)
}

/// The granule of a gather's or scatter's element `i` of `n`: all different, out of address
/// order, none of them the first of the page.
fn gather_granule(i: usize, n: usize) -> u64 {
    (((i * 3 + n / 2 + 2) % n) * 3 + 1) as u64
}

/// The tag of granule `g` of a gather's page: every granule a different one (but 0).
fn gather_tag(g: u64) -> u8 {
    (g % 15 + 1) as u8
}

/// The pointers of a gather or scatter over page `ipa` (whose granules the guest tagged with
/// [`gather_tag`]), element `wrong`'s tag off by 8 if given.
fn gather_pointers(ipa: u64, n: usize, wrong: Option<usize>) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let g = gather_granule(i, n);
            let tag = gather_tag(g) ^ if Some(i) == wrong { 0x8 } else { 0 };
            with_tag(ipa + g * GRANULE, tag)
        })
        .collect()
}

/// A guest whose page `n` has a different tag a granule, for gathers and scatters.
fn gather_guest(vmm: &dyn Vmm, checks: &mut Checks, n: u64) -> Result<SveGuest, VmmError> {
    let mut sve = sve_guest(vmm, checks, n)?;
    let tags: Vec<u8> = (0..PAGE_SIZE / GRANULE).map(gather_tag).collect();
    tag(&mut sve, page(n), &tags)?;
    set_tcf(sve.guest.as_mut(), tcf::SYNC)?;
    Ok(sve)
}

/// The element of a gather or scatter whose pointer tag the checks make wrong.
fn wrong_element(n: usize) -> usize {
    n / 2 + 1
}

fn gather(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut checks = Checks::new();
    let mut sve = gather_guest(vmm, &mut checks, 6)?;
    let (ipa, n) = (page(6), sve.elements());
    let pointers = gather_pointers(ipa, n, None);
    checks.value("gather pointers", "", format!("{pointers:#x?}"));
    sve.stage(&[], &pointers)?;
    let reply = sve.access(sve_op::GATHER_LD1D, 0)?;
    check_no_fault(&mut checks, "LD1D gather", &reply, true);
    let data = sve.data()?;
    let expected = |i: usize| pattern_at(gather_granule(i, n) * GRANULE);
    check_elements(&mut checks, "LD1D gather loaded", &data, expected, 0..n);
    let wrong = wrong_element(n);
    let pointers = gather_pointers(ipa, n, Some(wrong));
    sve.stage(&[], &pointers)?;
    let reply = sve.access(sve_op::GATHER_LD1D, 0)?;
    let what = format!("LD1D gather, element {wrong}'s tag wrong");
    expect_fault(&mut checks, &what, &reply, pointers[wrong], false);
    check_tf0(&mut checks, sve.guest.as_mut(), "the gathers", false)?;
    Ok(checks.finish())
}

fn scatter(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut checks = Checks::new();
    let mut sve = gather_guest(vmm, &mut checks, 7)?;
    let (ipa, n) = (page(7), sve.elements());
    let at = |i: usize| gather_granule(i, n) * GRANULE;
    let stored = |i: usize| !pattern_at(at(i));
    let vector = sve.vector(stored);
    let pointers = gather_pointers(ipa, n, None);
    sve.stage(&vector, &pointers)?;
    let reply = sve.access(sve_op::SCATTER_ST1D, 0)?;
    check_no_fault(&mut checks, "ST1D scatter", &reply, true);
    let memory = sve.memory(ipa, PAGE_SIZE)?;
    let word = |i: usize| memory[(at(i) / 8) as usize];
    let landed: Vec<u64> = (0..n).map(word).collect();
    check_elements(&mut checks, "ST1D scatter stored", &landed, stored, 0..n);
    // Again with the pattern put back and one element's tag wrong.
    guest_fill(sve.guest.as_mut(), ipa, PAGE_SIZE, SEED)?;
    let wrong = wrong_element(n);
    let pointers = gather_pointers(ipa, n, Some(wrong));
    sve.stage(&vector, &pointers)?;
    let reply = sve.access(sve_op::SCATTER_ST1D, 0)?;
    let what = format!("ST1D scatter, element {wrong}'s tag wrong");
    expect_fault(&mut checks, &what, &reply, pointers[wrong], true);
    let memory = sve.memory(ipa, PAGE_SIZE)?;
    checks.holds(
        &format!("ST1D scatter: element {wrong}'s word not written"),
        memory[(at(wrong) / 8) as usize] == pattern_at(at(wrong)),
        format!("{:#018x}", pattern_at(at(wrong))),
        format!("{:#018x}", memory[(at(wrong) / 8) as usize]),
    );
    check_tf0(&mut checks, sve.guest.as_mut(), "the scatters", false)?;
    Ok(checks.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_elements_hit_distinct_granules_out_of_order_with_distinct_tags() {
        for n in [4, 8, 16, 32] {
            let granules: Vec<u64> = (0..n).map(|i| gather_granule(i, n)).collect();
            let mut sorted = granules.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), n, "distinct granules for {n}");
            assert_ne!(sorted, granules, "out of address order for {n}");
            assert!(granules.iter().all(|&g| g > 0 && g * GRANULE < PAGE_SIZE));
            let wrong = wrong_element(n);
            assert!(wrong > 0 && wrong < n);
            // The wrong element is neither the lowest address nor the first element.
            assert_ne!(granules[wrong], sorted[0]);
        }
    }

    #[test]
    fn wrong_pointer_tag_differs_from_its_granule() {
        let p = gather_pointers(TEST_RAM_IPA, 8, Some(5));
        for (i, ptr) in p.iter().enumerate() {
            let g = gather_granule(i, 8);
            assert_eq!(mte_protocol::tag_of(*ptr) == gather_tag(g), i != 5);
        }
    }
}
