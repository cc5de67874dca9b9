//! The tag instructions, run by the guest and checked against what the host computes from the
//! Arm ARM pseudocode ([`crate::pseudocode`]): IRG under exclude masks, ADDG/SUBG, GMI, the tag
//! stores (STG, STZG, ST2G, STZ2G, STGP), STGM/LDGM and DC GVA/GZVA.
//!
//! The guest reports what it observed in its bulk buffer and the host reads it from there, so
//! a misread report turns these checks red; those that also read tags through the host's view
//! (KVM_ARM_MTE_COPY_TAGS) turn red when that view is corrupted.

use mte_protocol::{
    dc_tags, granules, id, pattern_word, tag_of, tag_store, with_tag, Command, ADDSUBG_ENCODINGS,
    GMI_MASKS, GRANULE, PAGE_SIZE, TEST_RAM_IPA,
};

use crate::check::{Checks, Finding};
use crate::inject::Injection;
use crate::pseudocode::{addg, gmi, ldgm_tags, ldgm_unused_bits, stgm_register, subg};
use crate::scenario::Scenario;
use crate::steps::boot::boot;
use crate::steps::bulk::{bulk_report, NOT_WRITTEN};
use crate::steps::command::run;
use crate::steps::data::guest_fill;
use crate::steps::tags::guest_store_tags;
use crate::vmm::{Guest, Vmm, VmmError};

const REPORT: &[Injection] = &[Injection::MisreadReport];
const REPORT_AND_HOST_TAGS: &[Injection] = &[Injection::MisreadReport, Injection::CorruptTag];

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tag_instructions::irg_honours_gcr_exclude",
        summary: "IRG never chooses a tag GCR_EL1.Exclude excludes, chooses more than one tag \
                  when two or more are allowed, and always the one tag left when one is",
        why: "Arm ARM: IRG picks from the tags GCR_EL1.Exclude leaves (ChooseNonExcludedTag); \
              guest kernels exclude tags they reserve (KASAN's match-all tag, tag 0 for \
              untagged memory), so KVM must keep the guest's GCR_EL1",
        proven_by: REPORT,
        run: |vmm| irg_cases(vmm, &IRG_GCR_CASES),
    },
    Scenario {
        name: "tag_instructions::irg_honours_the_xm_exclude_operand",
        summary: "IRG never chooses a tag that its Xm operand or GCR_EL1.Exclude excludes (the \
                  two are combined)",
        why: "Arm ARM: IRG's exclude set is Xm<15:0> OR GCR_EL1.Exclude",
        proven_by: REPORT,
        run: |vmm| irg_cases(vmm, &IRG_XM_CASES),
    },
    Scenario {
        name: "tag_instructions::irg_with_every_tag_excluded_gives_tag_0",
        summary: "With every tag excluded (by GCR_EL1.Exclude alone, or with Xm), IRG gives tag \
                  0 every time",
        why: "Arm ARM: ChooseNonExcludedTag returns 0b0000 when the exclude mask is all ones",
        proven_by: REPORT,
        run: |vmm| irg_cases(vmm, &IRG_NONE_LEFT_CASES),
    },
    Scenario {
        name: "tag_instructions::addg_subg_follow_choose_non_excluded_tag",
        summary: "ADDG and SUBG, for every start tag and a set of (uimm6, uimm4) encodings, give \
                  the address plus or minus uimm6 × 16 and the tag ChooseNonExcludedTag(tag, \
                  uimm4, GCR_EL1.Exclude), under the default and two other masks",
        why: "Arm ARM: ADDG/SUBG pseudocode; compilers derive neighbouring objects' tags with \
              them and rely on the exclusion of reserved tags",
        proven_by: REPORT,
        run: addg_subg_follow_choose_non_excluded_tag,
    },
    Scenario {
        name: "tag_instructions::gmi_inserts_the_pointer_tag_into_the_mask",
        summary: "GMI gives its mask operand with the bit of the pointer's tag (bits 59:56) set, \
                  for every tag and a table of masks",
        why: "Arm ARM: GMI Xd, Xn, Xm = Xm OR (1 << Xn<59:56>)",
        proven_by: REPORT,
        run: gmi_inserts_the_pointer_tag_into_the_mask,
    },
    Scenario {
        name: "tag_instructions::stg_sets_tags_and_keeps_data",
        summary: "STG over a range that crosses a page sets exactly its granules' tags (LDG and \
                  the host agree with the expected map) and keeps every byte of data",
        why: "Arm ARM: STG stores an Allocation Tag only; the host's KVM_ARM_MTE_COPY_TAGS view \
              must show what the guest stored",
        proven_by: REPORT_AND_HOST_TAGS,
        run: stg_sets_tags_and_keeps_data,
    },
    Scenario {
        name: "tag_instructions::stzg_sets_tags_and_zeroes_data",
        summary: "STZG over a range sets exactly its granules' tags and zeroes exactly their \
                  data; the neighbours keep tags and data",
        why: "Arm ARM: STZG stores the tag and zeroes the granule",
        proven_by: REPORT_AND_HOST_TAGS,
        run: stzg_sets_tags_and_zeroes_data,
    },
    Scenario {
        name: "tag_instructions::st2g_sets_tags_of_granule_pairs_and_keeps_data",
        summary: "ST2G gives both granules of each pair the pointer's tag, and keeps the data",
        why: "Arm ARM: ST2G stores the tag to two consecutive granules",
        proven_by: REPORT_AND_HOST_TAGS,
        run: st2g_sets_tags_of_granule_pairs_and_keeps_data,
    },
    Scenario {
        name: "tag_instructions::stz2g_sets_tags_of_granule_pairs_and_zeroes_data",
        summary: "STZ2G gives both granules of each pair the pointer's tag and zeroes exactly \
                  their 32 bytes",
        why: "Arm ARM: STZ2G stores the tag to two granules and zeroes them",
        proven_by: REPORT_AND_HOST_TAGS,
        run: stz2g_sets_tags_of_granule_pairs_and_zeroes_data,
    },
    Scenario {
        name: "tag_instructions::stgp_stores_tag_and_data_pair",
        summary: "STGP sets each granule's tag and stores its two data words; the neighbours \
                  keep tags and data",
        why: "Arm ARM: STGP stores an Allocation Tag and a pair of registers (Tag Unchecked)",
        proven_by: REPORT_AND_HOST_TAGS,
        run: stgp_stores_tag_and_data_pair,
    },
    Scenario {
        name: "tag_instructions::stgm_sets_the_tags_of_one_gmid_block",
        summary: "STGM sets the tags of exactly the GMID_EL1.BS block holding its address from \
                  the address-indexed nibbles of its register; LDG, LDGM and the host agree",
        why: "Arm ARM: STGM/LDGM cover 4 << GMID_EL1.BS bytes, aligned; guest kernels use them \
              to save and restore tags (mte_save_tags, mte_restore_tags)",
        proven_by: REPORT_AND_HOST_TAGS,
        run: stgm_sets_the_tags_of_one_gmid_block,
    },
    Scenario {
        name: "tag_instructions::ldgm_reads_the_tags_of_one_gmid_block",
        summary: "LDGM of a block whose tags the host wrote returns them in the address-indexed \
                  nibbles, and zero where no granule of the block is",
        why: "Arm ARM: LDGM pseudocode; a guest that swaps or hibernates reads tags with it \
              after a migration restored them with KVM_ARM_TAGS_TO_GUEST",
        proven_by: REPORT_AND_HOST_TAGS,
        run: ldgm_reads_the_tags_of_one_gmid_block,
    },
    Scenario {
        name: "tag_instructions::dc_gva_sets_the_tags_of_one_block_and_keeps_data",
        summary: "DC GVA sets the tags of exactly the DCZID_EL0.BS block holding its address to \
                  the pointer's tag and leaves every byte of data",
        why: "Arm ARM: DC GVA sets Allocation Tags by VA over the DC ZVA block size; guest \
              kernels may tag whole pages with it",
        proven_by: REPORT_AND_HOST_TAGS,
        run: dc_gva_sets_the_tags_of_one_block_and_keeps_data,
    },
    Scenario {
        name: "tag_instructions::dc_gzva_sets_the_tags_of_one_block_and_zeroes_it",
        summary: "DC GZVA sets the tags of exactly the DCZID_EL0.BS block holding its address \
                  and zeroes exactly its data",
        why: "Arm ARM: DC GZVA zeroes a block and sets its tags; Linux clears and tags pages \
              with it (mte_zero_clear_page_tags)",
        proven_by: REPORT_AND_HOST_TAGS,
        run: dc_gzva_sets_the_tags_of_one_block_and_zeroes_it,
    },
];

/// Each check's pages of test RAM, apart from the other families'.
fn page(n: u64) -> u64 {
    TEST_RAM_IPA + (128 + 4 * n) * PAGE_SIZE
}

fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("eight bytes")))
        .collect()
}

/// How often each value was seen, for evidence: `tag×count` for every value seen.
fn histogram(samples: &[u8]) -> String {
    let mut counts = [0usize; 256];
    samples.iter().for_each(|&s| counts[s as usize] += 1);
    (0..256)
        .filter(|&v| counts[v] > 0)
        .map(|v| format!("{v:#x}×{}", counts[v]))
        .collect::<Vec<_>>()
        .join(" ")
}

// --- IRG ---------------------------------------------------------------------------------

const IRG_SAMPLES: usize = 256;

/// Sample IRG with GCR_EL1.Exclude = `gcr` and Xm = `xm`; check the samples against the
/// allowed set. Every case's allowed set lies on one side of bit 3, so a sample whose bit 3
/// flipped is an excluded tag.
fn irg_case(checks: &mut Checks, guest: &mut dyn Guest, gcr: u16, xm: u16) -> Result<(), VmmError> {
    let case = format!("GCR_EL1.Exclude {gcr:#06x}, Xm {xm:#06x}");
    guest.write_bulk(&[NOT_WRITTEN; IRG_SAMPLES])?;
    let reply = run(
        guest,
        Command::IrgSample,
        &[gcr as u64, IRG_SAMPLES as u64, xm as u64],
    )?;
    let samples = guest.read_bulk(IRG_SAMPLES)?;
    let seen = histogram(&samples);
    checks.equal(
        &format!("{case}: GCR_EL1 restored after sampling"),
        guest.ids().gcr_el1,
        reply.result[0],
    );

    let allowed = !(gcr | xm);
    let allowed_tags: Vec<u8> = (0..16).filter(|t| allowed & (1 << t) != 0).collect();
    match allowed_tags.as_slice() {
        [] => {
            checks.holds(
                &format!("{case}: every tag excluded, IRG gives tag 0"),
                samples.iter().all(|&t| t == 0),
                format!("{IRG_SAMPLES} × tag 0"),
                seen,
            );
        }
        [only] => {
            checks.holds(
                &format!("{case}: IRG gives the one allowed tag"),
                samples.iter().all(|t| t == only),
                format!("{IRG_SAMPLES} × tag {only:#x}"),
                seen,
            );
        }
        several => {
            checks.holds(
                &format!("{case}: IRG chooses only allowed tags"),
                samples.iter().all(|t| several.contains(t)),
                format!("tags from {several:x?}"),
                seen.clone(),
            );
            let mut distinct = samples.clone();
            distinct.sort_unstable();
            distinct.dedup();
            checks.holds(
                &format!("{case}: IRG is random (more than one tag)"),
                distinct.len() > 1,
                "two or more distinct tags",
                seen,
            );
        }
    }
    Ok(())
}

/// (GCR_EL1.Exclude, Xm) of each IRG check. Tags 1..=7 allowed; tags 8..=15; only tag 5.
const IRG_GCR_CASES: [(u16, u16); 3] = [(0xff01, 0), (0x00ff, 0), (!(1 << 5), 0)];
/// Xm alone: tags 0..=7 allowed; the union, GCR excluding 0 and Xm 1..=7, leaves 8..=15; the
/// union leaving one, GCR excluding 8..=15 and Xm all of 0..=7 but 6.
const IRG_XM_CASES: [(u16, u16); 3] = [(0, 0xff00), (0x0001, 0x00fe), (0xff00, 0x00bf)];
/// Every tag excluded: by GCR_EL1 alone, by the two together, by Xm alone.
const IRG_NONE_LEFT_CASES: [(u16, u16); 3] = [(0xffff, 0), (0x0001, 0xfffe), (0, 0xffff)];

fn irg_cases(vmm: &dyn Vmm, cases: &[(u16, u16)]) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let mut checks = Checks::new();
    for &(gcr, xm) in cases {
        irg_case(&mut checks, guest.as_mut(), gcr, xm)?;
    }
    Ok(checks.finish())
}

// --- ADDG, SUBG, GMI ---------------------------------------------------------------------

fn addg_subg_follow_choose_non_excluded_tag(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    // Far enough from test RAM's start that SUBG's largest offset stays above it; ADDG and SUBG
    // only compute addresses.
    let base = page(0) + 0x400;
    let count = ADDSUBG_ENCODINGS.len() * 16 * 2;
    let mut checks = Checks::new();
    for exclude in [0x0001u16, 0x5a5a, 0xffff] {
        let report = bulk_report(
            guest.as_mut(),
            count * 8,
            Command::AddSubTag,
            &[base, exclude as u64],
        )?;
        let observed = words(&report);
        let mut expected = Vec::with_capacity(count);
        for &(offset, tag_offset) in &ADDSUBG_ENCODINGS {
            for tag in 0..16 {
                let ptr = with_tag(base, tag);
                expected.push(addg(ptr, offset, tag_offset as u8, exclude));
                expected.push(subg(ptr, offset, tag_offset as u8, exclude));
            }
        }
        let tags = |results: &[u64]| results.iter().map(|&r| tag_of(r)).collect::<Vec<_>>();
        checks.tags_equal(
            base,
            (
                &format!(
                    "ChooseNonExcludedTag, exclude {exclude:#06x} (per encoding, start tag, ADDG then SUBG)"
                ),
                &tags(&expected),
            ),
            ("tags of the guest's ADDG/SUBG results", &tags(&observed)),
        );
        let wrong: Vec<String> = expected
            .iter()
            .zip(&observed)
            .enumerate()
            .filter(|(_, (e, o))| e != o)
            .take(4)
            .map(|(i, (e, o))| format!("result {i}: {o:#x} (expected {e:#x})"))
            .collect();
        checks.holds(
            &format!("ADDG/SUBG results, address and tag, exclude {exclude:#06x}"),
            wrong.is_empty() && observed.len() == expected.len(),
            format!("{count} results: base ± uimm6 × 16, tag as computed"),
            if wrong.is_empty() {
                format!("{} results as expected", observed.len())
            } else {
                wrong.join("; ")
            },
        );
    }
    Ok(checks.finish())
}

const GMI_TABLE: [u64; GMI_MASKS] = [
    0,
    0x0001,
    0x8000,
    0xa5a5,
    0xffff,
    0xffff_0000_0000_0000,
    0x1234_5678_9abc_def0,
];

fn gmi_inserts_the_pointer_tag_into_the_mask(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    // Bits 63:60 set as well: only bits 59:56 are the tag.
    let addr = 0xb000_0000_0000_0000 | page(1);
    let mut args = vec![addr];
    args.extend_from_slice(&GMI_TABLE);
    let report = bulk_report(guest.as_mut(), 16 * GMI_MASKS * 8, Command::Gmi, &args)?;
    let observed = words(&report);
    let mut checks = Checks::new();
    let mut wrong = Vec::new();
    for tag in 0..16u8 {
        for (k, &mask) in GMI_TABLE.iter().enumerate() {
            let expected = gmi(with_tag(addr, tag), mask);
            match observed.get(tag as usize * GMI_MASKS + k) {
                Some(&got) if got == expected => {}
                Some(&got) => wrong.push(format!(
                    "GMI(tag {tag:#x}, mask {mask:#x}) = {got:#x} (expected {expected:#x})"
                )),
                None => wrong.push(format!("GMI(tag {tag:#x}, mask {mask:#x}) not reported")),
            }
        }
    }
    checks.holds(
        "GMI results for 16 tags × 7 masks",
        wrong.is_empty(),
        "mask | 1 << tag for every pair",
        if wrong.is_empty() {
            format!("{} results as expected", observed.len())
        } else {
            format!(
                "{} wrong: {}",
                wrong.len(),
                wrong.iter().take(4).cloned().collect::<Vec<_>>().join("; ")
            )
        },
    );
    Ok(checks.finish())
}

// --- Tag stores --------------------------------------------------------------------------

/// The tags a prepared region starts with: every value, neighbours different.
fn background(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + 3) % 16) as u8).collect()
}

/// New tags for granules that had `old`: always different from it, and varied.
fn retag(old: &[u8]) -> Vec<u8> {
    old.iter()
        .enumerate()
        .map(|(i, &t)| (t + 1 + (i % 5) as u8) % 16)
        .collect()
}

/// What each granule's data is, one letter a granule: `p` the region's pattern, `z` zero,
/// `s` the STGP pattern, `?` anything else.
fn data_classes(data: &[u8], seed: u64, stgp_seed: u64, stgp_from: usize) -> String {
    data.chunks(GRANULE as usize)
        .enumerate()
        .map(|(g, granule)| {
            let is = |seed: u64, base: usize| {
                granule.chunks_exact(8).enumerate().all(|(w, word)| {
                    let offset = ((g - base) * GRANULE as usize + w * 8) as u64;
                    word == pattern_word(seed, offset).to_le_bytes()
                })
            };
            if is(seed, 0) {
                'p'
            } else if granule.iter().all(|&b| b == 0) {
                'z'
            } else if g >= stgp_from && is(stgp_seed, stgp_from) {
                's'
            } else {
                '?'
            }
        })
        .collect()
}

/// The region's seed, and the seed STGP stores with.
const REGION_SEED: u64 = 0x7461_6773;
const STGP_SEED: u64 = 0x7374_6770;

/// The guest's LDG, then the host's read, of `[ipa, ipa + len)` must equal `expected`.
fn expect_tags_both_ways(
    checks: &mut Checks,
    guest: &mut dyn Guest,
    range: (u64, u64),
    expected: &[u8],
) -> Result<(), VmmError> {
    let expected = ("expected tags", expected);
    checks.expect_guest_tags(guest, range, expected, "guest LDG")?;
    checks.expect_host_tags(guest, range, expected, "host KVM_ARM_TAGS_FROM_GUEST")?;
    Ok(())
}

/// Fill `[ipa, ipa + len)` with the region's pattern and give it the background tags, which
/// it returns.
fn prepare_region(guest: &mut dyn Guest, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
    guest_fill(guest, ipa, len, REGION_SEED)?;
    let tags = background(granules(len));
    guest_store_tags(guest, ipa, &tags)?;
    Ok(tags)
}

/// The data classes of [`data_classes`] a region of `total` granules must show: `inside`
/// over `changed`, the pattern elsewhere.
fn classes_with(total: usize, changed: std::ops::Range<usize>, inside: char) -> String {
    (0..total)
        .map(|g| if changed.contains(&g) { inside } else { 'p' })
        .collect()
}

/// Compare the tags of a region (LDG, then the host) with `expected`, and its data classes
/// with `expected_data`.
fn check_region(
    checks: &mut Checks,
    guest: &mut dyn Guest,
    ipa: u64,
    expected: &[u8],
    expected_data: &str,
    stgp_from: usize,
) -> Result<(), VmmError> {
    let len = expected.len() as u64 * GRANULE;
    expect_tags_both_ways(checks, guest, (ipa, len), expected)?;
    let data = bulk_report(guest, len as usize, Command::ReadData, &[ipa, len])?;
    checks.equal(
        "data of each granule (p pattern kept, z zeroed, s stored by STGP, ? other)",
        expected_data.to_string(),
        data_classes(&data, REGION_SEED, STGP_SEED, stgp_from),
    );
    Ok(())
}

/// Two pages with a pattern and background tags; `form` over granules [246, 266), which
/// crosses the page boundary at granule 256.
fn store_form(vmm: &dyn Vmm, n: u64, form: u64) -> Result<Finding, VmmError> {
    const FIRST: usize = 246;
    const COUNT: usize = 20;
    let mut guest = boot(vmm)?;
    let ipa = page(2 + n);
    let len = 2 * PAGE_SIZE;
    let mut expected = prepare_region(guest.as_mut(), ipa, len)?;

    let mut new = retag(&expected[FIRST..FIRST + COUNT]);
    let pairs = form == tag_store::ST2G || form == tag_store::STZ2G;
    if pairs {
        // The pair forms store the even granule's tag to both.
        for i in (0..COUNT).step_by(2) {
            new[i + 1] = new[i];
        }
    }
    guest.write_bulk(&new)?;
    let target = ipa + FIRST as u64 * GRANULE;
    run(
        guest.as_mut(),
        Command::StoreTags,
        &[form, target, COUNT as u64 * GRANULE, STGP_SEED],
    )?;
    expected[FIRST..FIRST + COUNT].copy_from_slice(&new);

    let inside = match form {
        tag_store::STZG | tag_store::STZ2G => 'z',
        tag_store::STGP => 's',
        _ => 'p',
    };
    let data = classes_with(granules(len), FIRST..FIRST + COUNT, inside);
    let mut checks = Checks::new();
    check_region(&mut checks, guest.as_mut(), ipa, &expected, &data, FIRST)?;
    Ok(checks.finish())
}

fn stg_sets_tags_and_keeps_data(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    store_form(vmm, 0, tag_store::STG)
}

fn stzg_sets_tags_and_zeroes_data(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    store_form(vmm, 1, tag_store::STZG)
}

fn st2g_sets_tags_of_granule_pairs_and_keeps_data(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    store_form(vmm, 2, tag_store::ST2G)
}

fn stz2g_sets_tags_of_granule_pairs_and_zeroes_data(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    store_form(vmm, 3, tag_store::STZ2G)
}

fn stgp_stores_tag_and_data_pair(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    store_form(vmm, 4, tag_store::STGP)
}

// --- STGM, LDGM --------------------------------------------------------------------------

/// The LDGM/STGM block size from GMID_EL1, or a finding that says why there is none.
fn gmid_block(guest: &dyn Guest) -> Result<u64, VmmError> {
    let gmid = guest.ids().gmid_el1;
    id::gmid_block_bytes(gmid).ok_or_else(|| {
        VmmError::Guest(format!(
            "GMID_EL1 = {gmid:#x}: BS = {} is no block size the architecture allows (2..=6)",
            gmid & 0xf
        ))
    })
}

/// LDGM of the block at `block` (any address in it), its register read from the bulk buffer.
fn ldgm(guest: &mut dyn Guest, addr: u64) -> Result<u64, VmmError> {
    let report = bulk_report(guest, 8, Command::LoadTagsBlock, &[addr])?;
    Ok(words(&report)[0])
}

/// Check an LDGM register against the expected tags of the block at `base`.
fn check_ldgm(checks: &mut Checks, base: u64, expected: &[u8], value: u64) {
    checks.tags_equal(
        base,
        ("the block's tags", expected),
        (
            "LDGM register nibbles",
            &ldgm_tags(value, base, expected.len()),
        ),
    );
    let unused = ldgm_unused_bits(base, expected.len());
    checks.holds(
        "LDGM: bits of no granule of the block are zero",
        value & unused == 0,
        format!("{:#018x} & {unused:#018x} = 0", value),
        format!("{:#018x}", value & unused),
    );
    checks.equal(
        "LDGM register",
        format!("{:#018x}", stgm_register(base, expected, 0)),
        format!("{value:#018x}"),
    );
}

fn stgm_sets_the_tags_of_one_gmid_block(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let block = gmid_block(guest.as_ref())?;
    let per_block = granules(block);
    // Three blocks; STGM on the middle one. One page, or three blocks if they are longer.
    let ipa = page(7);
    let len = (3 * block).max(PAGE_SIZE);
    let middle = ipa + block;
    let mut expected = background(granules(len));
    guest_store_tags(guest.as_mut(), ipa, &expected)?;

    let new = retag(&expected[per_block..2 * per_block]);
    // Nibbles of no granule of the block hold 0xf, which STGM must ignore.
    let register = stgm_register(middle, &new, 0xf);
    // An address inside the block, not at its start: STGM aligns it down.
    let inside = middle + block / 2 / GRANULE * GRANULE;
    run(guest.as_mut(), Command::StoreTagsBlock, &[inside, register])?;
    expected[per_block..2 * per_block].copy_from_slice(&new);

    let mut checks = Checks::new();
    checks.note(format!(
        "GMID_EL1 = {:#x}: {block}-byte blocks; STGM {register:#018x} at {inside:#x}",
        guest.ids().gmid_el1
    ));
    expect_tags_both_ways(&mut checks, guest.as_mut(), (ipa, len), &expected)?;
    let value = ldgm(guest.as_mut(), inside)?;
    check_ldgm(&mut checks, middle, &new, value);
    Ok(checks.finish())
}

fn ldgm_reads_the_tags_of_one_gmid_block(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let block = gmid_block(guest.as_ref())?;
    let per_block = granules(block);
    // The host writes a page (KVM_ARM_MTE_COPY_TAGS takes whole pages); LDGM reads the block
    // at its middle, which holds the page's middle granule.
    let ipa = page(8);
    let tags = retag(&background(granules(PAGE_SIZE)));
    guest.host_write_tags(ipa, &tags)?;
    let base = ipa + PAGE_SIZE / 2;
    let first = granules(PAGE_SIZE / 2);

    let mut checks = Checks::new();
    checks.note(format!(
        "GMID_EL1 = {:#x}: {block}-byte blocks; LDGM of the block at {base:#x}",
        guest.ids().gmid_el1
    ));
    let written = ("tags the host wrote (KVM_ARM_TAGS_TO_GUEST)", &tags[..]);
    checks.expect_guest_tags(guest.as_mut(), (ipa, PAGE_SIZE), written, "guest LDG")?;
    let value = ldgm(guest.as_mut(), base + GRANULE)?;
    check_ldgm(&mut checks, base, &tags[first..first + per_block], value);
    Ok(checks.finish())
}

// --- DC GVA, DC GZVA ---------------------------------------------------------------------

fn dc_tags_block(vmm: &dyn Vmm, n: u64, op: u64) -> Result<Finding, VmmError> {
    let mut guest = boot(vmm)?;
    let dczid = guest.ids().dczid_el0;
    if id::dczid_prohibited(dczid) {
        return Err(VmmError::Unsupported(format!(
            "DC GVA and DC GZVA are prohibited here (DCZID_EL0 = {dczid:#x}: DZP = 1)"
        )));
    }
    let block = id::dczid_block_bytes(dczid);
    if block < GRANULE {
        return Err(VmmError::Unsupported(format!(
            "DCZID_EL0 = {dczid:#x}: a {block}-byte block is smaller than a tag granule"
        )));
    }
    let per_block = granules(block);
    let ipa = page(9 + n);
    let len = (3 * block).max(PAGE_SIZE);
    let target = ipa + block;
    let mut expected = prepare_region(guest.as_mut(), ipa, len)?;

    // A non-zero tag that none of the block's granules has yet, through an address inside the
    // block.
    let tag = (1..16u8)
        .find(|t| !expected[per_block..2 * per_block].contains(t))
        .unwrap_or(expected[per_block] ^ 0x8);
    let ptr = with_tag(target + block / 2 / GRANULE * GRANULE, tag);
    run(guest.as_mut(), Command::DcTags, &[op, ptr])?;
    expected[per_block..2 * per_block].fill(tag);

    let inside = if op == dc_tags::GZVA { 'z' } else { 'p' };
    let data = classes_with(granules(len), per_block..2 * per_block, inside);
    let mut checks = Checks::new();
    checks.note(format!(
        "DCZID_EL0 = {dczid:#x}: {block}-byte blocks; DC at {ptr:#x}"
    ));
    check_region(
        &mut checks,
        guest.as_mut(),
        ipa,
        &expected,
        &data,
        usize::MAX,
    )?;
    Ok(checks.finish())
}

fn dc_gva_sets_the_tags_of_one_block_and_keeps_data(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    dc_tags_block(vmm, 0, dc_tags::GVA)
}

fn dc_gzva_sets_the_tags_of_one_block_and_zeroes_it(vmm: &dyn Vmm) -> Result<Finding, VmmError> {
    dc_tags_block(vmm, 1, dc_tags::GZVA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retagging_changes_every_granule() {
        let old = background(512);
        let new = retag(&old);
        assert!(old.iter().zip(&new).all(|(o, n)| o != n && *n < 16));
    }

    #[test]
    fn data_classes_tell_pattern_zero_and_stgp_apart() {
        let mut data: Vec<u8> = (0..8u64)
            .flat_map(|w| pattern_word(REGION_SEED, w * 8).to_le_bytes())
            .collect();
        data[16..32].fill(0);
        for w in 0..2u64 {
            let bytes = pattern_word(STGP_SEED, w * 8).to_le_bytes();
            data[32 + 8 * w as usize..40 + 8 * w as usize].copy_from_slice(&bytes);
        }
        data[63] ^= 1;
        assert_eq!(data_classes(&data, REGION_SEED, STGP_SEED, 2), "pzs?");
    }

    #[test]
    fn every_irg_case_puts_its_allowed_tags_on_one_side_of_bit_3() {
        // What the misread-report proof relies on: a flipped bit 3 makes an excluded tag.
        let cases = [IRG_GCR_CASES, IRG_XM_CASES, IRG_NONE_LEFT_CASES];
        for (gcr, xm) in cases.into_iter().flatten() {
            let allowed = !(gcr | xm);
            let expected: Vec<u8> = if allowed == 0 {
                vec![0]
            } else {
                (0..16).filter(|t| allowed & (1 << t) != 0).collect()
            };
            assert!(
                expected.iter().all(|t| !expected.contains(&(t ^ 8))),
                "{gcr:#x} {xm:#x}"
            );
        }
    }
}
