//! The tag instructions, each run as the host asks and its result reported in the bulk buffer:
//! IRG (with GCR_EL1.Exclude and the Xm exclude operand), ADDG/SUBG, GMI, the tag stores (STG,
//! STZG, ST2G, STZ2G, STGP), STGM/LDGM and DC GVA/GZVA.
//!
//! The guest only runs the instructions; what they should have produced is computed by the host
//! from the Arm ARM pseudocode, so the two sides stay independent.

use core::arch::asm;
use mte_protocol::{
    ADDSUBG_ENCODINGS, GMI_MASKS, GRANULE, TEST_RAM_IPA, dc_tags, granules, id, pattern_word,
    tag_of, tag_store, with_tag,
};

use crate::args::{PROHIBITED, Refusal, bulk_range, require_tag_storage, test_range, untagged};
use crate::mte::{dc_tags_insn, tag_store_insn};
use crate::{bulk, mailbox, mte, sysreg};

pub fn irg_sample(exclude: u64, count: u64, xm: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    if exclude > 0xffff {
        return Err(0);
    }
    if count > bulk::size() {
        return Err(1);
    }
    let gcr = mte::set_exclude(exclude);
    for i in 0..count as usize {
        bulk::set_byte(i, tag_of(mte::random_tag_excluding(TEST_RAM_IPA, xm)));
    }
    mte::restore_gcr(gcr);
    mailbox::set_result(0, sysreg::read!("gcr_el1"));
    Ok(())
}

/// ADDG and SUBG of `ptr` with encoding `$e` of `ADDSUBG_ENCODINGS`, assembled as immediates.
macro_rules! addsubg {
    ($e:literal, $ptr:expr) => {{
        let (added, subtracted): (u64, u64);
        // SAFETY: ADDG and SUBG only compute values.
        unsafe {
            asm!(
                ".arch_extension memtag",
                "addg {a}, {p}, #{offset}, #{tag}",
                "subg {s}, {p}, #{offset}, #{tag}",
                a = out(reg) added,
                s = out(reg) subtracted,
                p = in(reg) $ptr,
                offset = const ADDSUBG_ENCODINGS[$e].0,
                tag = const ADDSUBG_ENCODINGS[$e].1,
                options(nomem, nostack, preserves_flags),
            )
        };
        (added, subtracted)
    }};
}

const _: () = assert!(
    ADDSUBG_ENCODINGS.len() == 6,
    "one addsubg! arm per encoding"
);

fn addsubg(encoding: usize, ptr: u64) -> (u64, u64) {
    match encoding {
        0 => addsubg!(0, ptr),
        1 => addsubg!(1, ptr),
        2 => addsubg!(2, ptr),
        3 => addsubg!(3, ptr),
        4 => addsubg!(4, ptr),
        _ => addsubg!(5, ptr),
    }
}

pub fn add_sub_tag(addr: u64, exclude: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    if exclude > 0xffff {
        return Err(1);
    }
    let gcr = mte::set_exclude(exclude);
    let mut words = 0;
    for encoding in 0..ADDSUBG_ENCODINGS.len() {
        for tag in 0..16u8 {
            let (added, subtracted) = addsubg(encoding, with_tag(addr, tag));
            bulk::set_word(words, added);
            bulk::set_word(words + 1, subtracted);
            words += 2;
        }
    }
    mte::restore_gcr(gcr);
    mailbox::set_result(0, words as u64);
    Ok(())
}

pub fn gmi(args: &[u64; 8]) -> Result<(), Refusal> {
    require_tag_storage()?;
    let (addr, masks) = (args[0], &args[1..=GMI_MASKS]);
    for tag in 0..16u8 {
        for (k, &mask) in masks.iter().enumerate() {
            let result: u64;
            // SAFETY: GMI only computes a value.
            unsafe {
                asm!(
                    ".arch_extension memtag",
                    "gmi {d}, {n}, {m}",
                    d = out(reg) result,
                    n = in(reg) with_tag(addr, tag),
                    m = in(reg) mask,
                    options(nomem, nostack, preserves_flags),
                )
            };
            bulk::set_word(tag as usize * GMI_MASKS + k, result);
        }
    }
    Ok(())
}

pub fn store_tags(form: u64, addr: u64, len: u64, seed: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    let (addr, len) = bulk_range(addr, len)?;
    let pairs = form == tag_store::ST2G || form == tag_store::STZ2G;
    if form > tag_store::STGP {
        return Err(0);
    }
    if pairs && len % (2 * GRANULE) != 0 {
        return Err(2);
    }
    let step = if pairs { 2 } else { 1 };
    for i in (0..granules(len)).step_by(step) {
        let offset = i as u64 * GRANULE;
        let ptr = with_tag(addr + offset, bulk::byte(i));
        // SAFETY: the granules are test RAM (checked), Normal-Tagged, given over by the host;
        // the stores are Tag Unchecked.
        unsafe {
            match form {
                tag_store::STG => tag_store_insn!("stg", ptr),
                tag_store::STZG => tag_store_insn!("stzg", ptr),
                tag_store::ST2G => tag_store_insn!("st2g", ptr),
                tag_store::STZ2G => tag_store_insn!("stz2g", ptr),
                _ => asm!(
                    ".arch_extension memtag",
                    "stgp {x}, {y}, [{p}]",
                    x = in(reg) pattern_word(seed, offset),
                    y = in(reg) pattern_word(seed, offset + 8),
                    p = in(reg) ptr,
                    options(nostack, preserves_flags),
                ),
            }
        }
    }
    Ok(())
}

/// The GMID_EL1.BS block holding `addr`, if it lies in test RAM.
fn gmid_block(addr: u64) -> Result<u64, Refusal> {
    let bytes = id::gmid_block_bytes(sysreg::read!("gmid_el1")).ok_or(PROHIBITED)?;
    let base = untagged(addr) & !(bytes - 1);
    test_range(base, bytes)?;
    Ok(base)
}

pub fn store_tags_block(addr: u64, tags: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    gmid_block(addr)?;
    // SAFETY: the block is test RAM (checked), given over by the host.
    unsafe { mte::store_tags_block(addr, tags) };
    Ok(())
}

pub fn load_tags_block(addr: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    gmid_block(addr)?;
    let tags: u64;
    // SAFETY: the block is test RAM (checked); LDGM reads tags only.
    unsafe {
        asm!(
            ".arch_extension memtag",
            "ldgm {t}, [{a}]",
            t = out(reg) tags,
            a = in(reg) addr,
            options(nostack, preserves_flags, readonly),
        )
    };
    bulk::set_word(0, tags);
    Ok(())
}

pub fn dc_tags(op: u64, ptr: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    let dczid = sysreg::read!("dczid_el0");
    let bytes = id::dczid_block_bytes(dczid);
    if id::dczid_prohibited(dczid) || bytes < GRANULE {
        return Err(PROHIBITED);
    }
    test_range(untagged(ptr) & !(bytes - 1), bytes).map_err(|_| 1u64)?;
    // SAFETY: the block is test RAM (checked), given over by the host; neither instruction is
    // tag checked.
    unsafe {
        match op {
            dc_tags::GVA => dc_tags_insn!("gva", ptr),
            dc_tags::GZVA => dc_tags_insn!("gzva", ptr),
            _ => return Err(0),
        }
    }
    Ok(())
}
