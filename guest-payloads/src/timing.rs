//! Tag instructions timed inside the guest: passes of one instruction family over a 4 KiB page,
//! between two reads of the virtual counter, so that what is measured is the instructions and
//! not the doorbell round trips around them.
//!
//! Each pass stores a tag that differs from the previous pass's (1 to 15, in turn), so no pass
//! finds its work already done. The checked stores (`STR`) go through a pointer whose tag the
//! page was given first, untimed, so that they pass their tag checks.

use core::arch::asm;
use mte_protocol::{GRANULE, PAGE_SIZE, id, timed, with_tag};

use crate::args::{PROHIBITED, Refusal, require_tag_storage, tcf_mode, test_range, untagged};
use crate::mte::{dc_tags_insn, tag_store_insn};
use crate::{mailbox, mte, sysreg};

/// The virtual counter, after every earlier instruction (`isb`) and store (`dsb`) completed.
fn counter() -> u64 {
    let value: u64;
    // SAFETY: barriers and a counter read only.
    unsafe {
        asm!(
            "dsb sy",
            "isb",
            "mrs {v}, cntvct_el0",
            v = out(reg) value,
            options(nostack, preserves_flags),
        )
    };
    value
}

/// The tag pass `pass` stores: 1 to 15 in turn, never 0 (the tag of untouched memory).
fn tag_of_pass(pass: u64) -> u8 {
    1 + (pass % 15) as u8
}

/// `$insn ptr, [ptr]` at every `$step` bytes of the page, the tag in `ptr`.
macro_rules! over_page {
    ($page:expr, $tag:expr, $step:expr, $insn:literal) => {
        for offset in (0..PAGE_SIZE).step_by($step as usize) {
            let ptr = with_tag($page + offset, $tag);
            // SAFETY: the page is test RAM (checked), Normal-Tagged, given over by the host;
            // the tag stores are Tag Unchecked.
            unsafe { tag_store_insn!($insn, ptr) };
        }
    };
}

/// One pass of `family` over the page with `tag`. `block` is the bytes one DC GZVA or STGM
/// covers (checked by the caller).
fn pass(family: u64, page: u64, tag: u8, block: u64) {
    match family {
        timed::STG => over_page!(page, tag, GRANULE, "stg"),
        timed::ST2G => over_page!(page, tag, 2 * GRANULE, "st2g"),
        timed::STZG => over_page!(page, tag, GRANULE, "stzg"),
        timed::DC_GZVA => {
            for offset in (0..PAGE_SIZE).step_by(block as usize) {
                let ptr = with_tag(page + offset, tag);
                // SAFETY: as in `over_page!`; DC GZVA is not tag checked.
                unsafe { dc_tags_insn!("gzva", ptr) };
            }
        }
        timed::STGM => {
            // The same tag for every granule of the block: its nibble in each position.
            let tags = u64::from(tag) * 0x1111_1111_1111_1111;
            for offset in (0..PAGE_SIZE).step_by(block as usize) {
                // SAFETY: as in `over_page!`.
                unsafe { mte::store_tags_block(page + offset, tags) };
            }
        }
        _ => {
            // STR: the page already carries `tag`, so every store passes its check.
            let ptr = with_tag(page, tag);
            for offset in (0..PAGE_SIZE).step_by(8) {
                // SAFETY: inside the page, through a pointer whose tag matches its granules.
                unsafe {
                    asm!(
                        "str {v}, [{p}, {o}]",
                        v = in(reg) offset,
                        p = in(reg) ptr,
                        o = in(reg) offset,
                        options(nostack, preserves_flags),
                    )
                };
            }
        }
    }
}

/// The bytes one instruction of `family` covers where that depends on the CPU (DC GZVA,
/// STGM); `PROHIBITED` where the ID registers forbid it.
fn block_bytes(family: u64) -> Result<u64, Refusal> {
    match family {
        timed::DC_GZVA => {
            let dczid = sysreg::read!("dczid_el0");
            let bytes = id::dczid_block_bytes(dczid);
            if id::dczid_prohibited(dczid) || !(GRANULE..=PAGE_SIZE).contains(&bytes) {
                return Err(PROHIBITED);
            }
            Ok(bytes)
        }
        timed::STGM => id::gmid_block_bytes(sysreg::read!("gmid_el1")).ok_or(PROHIBITED),
        _ => Ok(GRANULE),
    }
}

pub fn time_instructions(family: u64, addr: u64, passes: u64, mode: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    if family > timed::STR {
        return Err(0);
    }
    let page = untagged(addr);
    if !page.is_multiple_of(PAGE_SIZE) {
        return Err(1);
    }
    test_range(page, PAGE_SIZE).map_err(|_| 1u64)?;
    let mode = tcf_mode(mode, 3)?;
    let block = block_bytes(family)?;
    let previous = mte::set_tcf(mode);
    let (started, ended) = if family == timed::STR {
        let tag = tag_of_pass(0);
        pass(timed::STG, page, tag, GRANULE);
        let started = counter();
        for _ in 0..passes {
            pass(timed::STR, page, tag, GRANULE);
        }
        (started, counter())
    } else {
        let started = counter();
        for n in 0..passes {
            pass(family, page, tag_of_pass(n), block);
        }
        (started, counter())
    };
    mte::set_tcf(previous);
    mailbox::set_result(0, ended.wrapping_sub(started));
    mailbox::set_result(1, sysreg::read!("cntfrq_el0"));
    Ok(())
}
