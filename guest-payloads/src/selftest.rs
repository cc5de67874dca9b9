//! A smoke test of the runtime without a host: play the host's part through the mailbox, run a
//! fixed script of commands, print a PASS or FAIL line per check and power off.
//!
//! With tag storage the script exercises random tags and their read-back, tags from the bulk
//! buffer, tag-checked loads and stores (matching and mismatching tags, sync and async checks),
//! the SP-based access forms, TCR_EL1.TCMA0 and TBI0, a few tag instructions (IRG with every tag
//! excluded, STGM/LDGM, DC GVA) and data patterns through the untagged alias; without it, that
//! tag commands are refused as "no MTE" while the rest works.

use mte_protocol::{
    Command, GRANULE, Mailbox, PAGE_SIZE, RAM_IPA, Status, TEST_RAM_IPA, UNTAGGED_ALIAS_VA, esr,
    tcf, with_tag,
};

use crate::args::{NO_MTE, UNKNOWN_COMMAND};
use crate::commands::run_one;
use crate::{bulk, mailbox, mte, power};

const BASE: u64 = TEST_RAM_IPA;
const LEN: u64 = 4 * PAGE_SIZE;
const GRANULES: usize = (LEN / GRANULE) as usize;
/// A word inside the range, in granule [`WORD_GRANULE`].
const WORD_GRANULE: usize = 4;
const WORD: u64 = BASE + WORD_GRANULE as u64 * GRANULE;
const SEED: u64 = 0x5eed;
/// From a RAM address to the same memory through the untagged alias.
const UNTAGGED_OFFSET: u64 = UNTAGGED_ALIAS_VA - RAM_IPA;

struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    fn check(&mut self, name: &str, held: bool, detail: core::fmt::Arguments) {
        if held {
            self.passed += 1;
            println!("PASS {name}: {detail}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {detail}");
        }
    }
}

pub fn run() -> ! {
    let mut report = Report {
        passed: 0,
        failed: 0,
    };
    if mte::has_tag_storage() {
        println!("selftest: MTE level {}", mte::level());
        with_tags(&mut report);
        access_forms(&mut report);
        tag_instructions(&mut report);
    } else {
        println!("selftest: no MTE (ID_AA64PFR1_EL1.MTE = {})", mte::level());
        without_tags(&mut report);
    }
    patterns(&mut report);
    refusals(&mut report);
    println!(
        "selftest: {} passed, {} failed",
        report.passed, report.failed
    );
    power::system_off()
}

/// Post a command, run it as after a doorbell, return the mailbox.
fn exec(command: Command, args: &[u64]) -> Mailbox {
    exec_raw(command as u32, args)
}

fn exec_raw(code: u32, args: &[u64]) -> Mailbox {
    mailbox::post(code, args);
    run_one();
    mailbox::snapshot()
}

fn done(reply: &Mailbox) -> bool {
    reply.status == Status::Done as u32
}

fn refused(reply: &Mailbox, why: u64) -> bool {
    reply.status == Status::BadCommand as u32 && reply.result[0] == why
}

fn bulk_tags() -> [u8; GRANULES] {
    core::array::from_fn(bulk::byte)
}

fn set_bulk_tags(tags: &[u8; GRANULES]) {
    for (i, &tag) in tags.iter().enumerate() {
        bulk::set_byte(i, tag);
    }
}

/// Read the range's tags back with LDG.
fn read_tags() -> Option<[u8; GRANULES]> {
    set_bulk_tags(&[0xff; GRANULES]);
    done(&exec(Command::ReadTags, &[BASE, LEN])).then(bulk_tags)
}

fn with_tags(report: &mut Report) {
    let chosen = tag_maps(report);
    let tag = chosen[WORD_GRANULE];
    let bad = with_tag(WORD, tag + 1);
    tag_checked_accesses(report, tag);
    tag_check_modes(report, bad);
}

/// Random tags, their read-back, tags from the bulk buffer; returns the tags stored last.
fn tag_maps(report: &mut Report) -> [u8; GRANULES] {
    let reply = exec(Command::TagRandom, &[BASE, LEN]);
    let random = bulk_tags();
    let mut seen = 0u16;
    random.iter().for_each(|tag| seen |= 1 << (tag & 0xf));
    report.check(
        "tag-random",
        done(&reply) && seen & 1 == 0 && seen.count_ones() > 1 && random.iter().all(|t| *t < 16),
        format_args!("{GRANULES} granules, tag set {seen:#06x} (tag 0 excluded)"),
    );
    report.check(
        "read-tags",
        read_tags() == Some(random),
        format_args!("LDG reads back the IRG tags"),
    );

    // Every granule gets a different non-zero tag than IRG gave it.
    let chosen = random.map(|tag| tag % 15 + 1);
    set_bulk_tags(&chosen);
    let reply = exec(Command::TagFromBulk, &[BASE, LEN]);
    report.check(
        "tag-from-bulk",
        done(&reply) && read_tags() == Some(chosen),
        format_args!("LDG reads back the tags stored from the bulk buffer"),
    );
    chosen
}

/// Loads and stores through the word's granule tag (`tag`) and another, with sync checks.
fn tag_checked_accesses(report: &mut Report, tag: u8) {
    let good = with_tag(WORD, tag);
    let bad = with_tag(WORD, tag + 1);
    let reply = exec(Command::Store, &[good, 0x1234_5678]);
    let stored = done(&reply) && reply.result[0] == 0 && reply.fault.count == 0;
    let reply = exec(Command::Load, &[good]);
    report.check(
        "access-matching-tag",
        stored && done(&reply) && reply.result == [0x1234_5678, 0, 0, 0, 0, 0, 0, 0],
        format_args!("store and load through {good:#x}: no fault"),
    );

    let reply = exec(Command::Load, &[bad]);
    let fault = reply.fault;
    report.check(
        "load-mismatching-tag",
        done(&reply)
            && reply.result[1] == 1
            && fault.count == 1
            && fault.vector == 0
            && esr::ec(fault.esr) == esr::EC_DABT_CUR
            && esr::dfsc(fault.esr) == esr::DFSC_TAG_CHECK
            && !esr::is_write(fault.esr)
            && fault.far & 0x0fff_ffff_ffff_ffff == bad,
        format_args!(
            "ESR {:#x} FAR {:#x} ELR {:#x}",
            fault.esr, fault.far, fault.elr
        ),
    );

    let reply = exec(Command::Store, &[bad, 0xdead]);
    let fault = reply.fault;
    let kept = exec(Command::Load, &[good]).result[0] == 0x1234_5678;
    report.check(
        "store-mismatching-tag",
        done(&reply)
            && reply.result[0] == 1
            && esr::dfsc(fault.esr) == esr::DFSC_TAG_CHECK
            && esr::is_write(fault.esr)
            && kept,
        format_args!("ESR {:#x}, memory unchanged: {kept}", fault.esr),
    );
}

/// No checks, then asynchronous checks, through the mismatched pointer `bad`.
fn tag_check_modes(report: &mut Report, bad: u64) {
    let off = exec(Command::SetTcf, &[tcf::NONE]);
    let unchecked = exec(Command::Load, &[bad]);
    let on = exec(Command::SetTcf, &[tcf::SYNC]);
    report.check(
        "tcf-none",
        off.result[0] == tcf::SYNC
            && done(&unchecked)
            && unchecked.result[1] == 0
            && on.result[0] == tcf::NONE,
        format_args!("no fault with tag checks off"),
    );

    exec(Command::SetTcf, &[tcf::ASYNC]);
    let unchecked = exec(Command::Store, &[bad, 0x1234_5678]);
    let tfsr = exec(Command::ReadTfsr, &[]).result[0];
    exec(Command::SetTcf, &[tcf::SYNC]);
    report.check(
        "tcf-async",
        unchecked.result[0] == 0 && tfsr & 1 == 1,
        format_args!("no fault, TFSR_EL1 {tfsr:#x} (TF0)"),
    );
}

/// A granule of its own, tagged `tag`, for the access forms.
fn tagged_granule(index: usize, tag: u8) -> u64 {
    let addr = BASE + index as u64 * GRANULE;
    let mut tags = bulk_tags();
    tags[0] = tag;
    set_bulk_tags(&tags);
    exec(Command::TagFromBulk, &[addr, GRANULE]);
    addr
}

fn access_forms(report: &mut Report) {
    exec(Command::SetTcf, &[tcf::SYNC]);
    let addr = tagged_granule(8, 0x5);
    let bad = with_tag(addr, 0xa);

    let unchecked = exec(Command::LoadViaSp, &[bad, 0]);
    let checked = exec(Command::LoadViaSp, &[bad, 1]);
    let after = exec(Command::Load, &[with_tag(addr, 0x5)]);
    report.check(
        "sp-forms",
        done(&unchecked)
            && unchecked.result[1] == 0
            && checked.result[1] == 1
            && checked.fault.vector == 4
            && esr::dfsc(checked.fault.esr) == esr::DFSC_TAG_CHECK
            && done(&after)
            && after.result[1] == 0,
        format_args!(
            "ldr [sp, #8] unchecked, ldr [sp, #8]! faults from SP_EL0 (vector {}), runtime intact",
            checked.fault.vector
        ),
    );

    let tag0 = with_tag(addr, 0);
    let before = exec(Command::Load, &[tag0]).result[1];
    exec(Command::SetTagTcr, &[1, 1]);
    let tcma = exec(Command::Load, &[tag0]).result[1];
    exec(Command::SetTagTcr, &[0, 0]);
    let no_tbi = exec(Command::Load, &[tag0]).result[1];
    exec(Command::SetTagTcr, &[1, 0]);
    let again = exec(Command::Load, &[tag0]).result[1];
    report.check(
        "tcr-tag-bits",
        [before, tcma, no_tbi, again] == [1, 0, 0, 1],
        format_args!("tag-0 load faulted: {before}, TCMA0 {tcma}, TBI0 off {no_tbi}, back {again}"),
    );
}

fn tag_instructions(report: &mut Report) {
    let reply = exec(Command::IrgSample, &[0xffff, 64, 0]);
    let tags = bulk_tags();
    report.check(
        "irg-all-excluded",
        done(&reply) && tags[..64].iter().all(|&t| t == 0),
        format_args!(
            "IRG with every tag excluded gives 0; GCR_EL1 back to {:#x}",
            reply.result[0]
        ),
    );

    // STGM a block of distinct tags, LDGM it back.
    let block = mte_protocol::id::gmid_block_bytes(crate::sysreg::read!("gmid_el1")).unwrap_or(0);
    let addr = BASE + 2 * PAGE_SIZE;
    let value = 0x0123_4567_89ab_cdef_u64;
    exec(Command::StoreTagsBlock, &[addr, value]);
    let reply = exec(Command::LoadTagsBlock, &[addr]);
    let loaded = bulk::word(0);
    let mask = if block >= 256 {
        u64::MAX
    } else {
        (1u64 << (4 * (block / GRANULE))) - 1
    };
    report.check(
        "stgm-ldgm",
        done(&reply) && block != 0 && loaded == value & mask,
        format_args!("{block}-byte block: STGM {value:#x}, LDGM {loaded:#x}"),
    );

    let addr = BASE + 3 * PAGE_SIZE;
    let reply = exec(
        Command::DcTags,
        &[mte_protocol::dc_tags::GVA, with_tag(addr, 0x9)],
    );
    let tags = read_tags().unwrap_or([0xff; GRANULES]);
    let first = (3 * PAGE_SIZE / GRANULE) as usize;
    report.check(
        "dc-gva",
        done(&reply) && tags[first] == 0x9,
        format_args!("DC GVA tagged the block at {addr:#x}: {}", tags[first]),
    );
}

fn without_tags(report: &mut Report) {
    let tagging = exec(Command::TagRandom, &[BASE, LEN]);
    let checks = exec(Command::SetTcf, &[tcf::SYNC]);
    report.check(
        "no-mte-refused",
        refused(&tagging, NO_MTE) && refused(&checks, NO_MTE),
        format_args!("tag commands answer BadCommand {NO_MTE:#x}"),
    );
    exec(Command::Store, &[WORD, 0x1234_5678]);
    let reply = exec(Command::Load, &[with_tag(WORD, 3)]);
    report.check(
        "no-mte-access",
        done(&reply) && reply.result[..2] == [0x1234_5678, 0],
        format_args!("any pointer tag reaches untagged RAM"),
    );
}

fn patterns(report: &mut Report) {
    let before = mte::has_tag_storage().then(read_tags).flatten();
    let fill = exec(Command::FillPattern, &[BASE, LEN, SEED]);
    let check = exec(Command::CheckPattern, &[BASE, LEN, SEED]);
    let tags_kept = before == mte::has_tag_storage().then(read_tags).flatten();
    report.check(
        "pattern",
        done(&fill) && done(&check) && check.result[..2] == [0, u64::MAX] && tags_kept,
        format_args!("written and checked through the untagged alias, tags unchanged"),
    );

    let offset = 2 * PAGE_SIZE + 8;
    exec(Command::Store, &[BASE + offset + UNTAGGED_OFFSET, !0]);
    let check = exec(Command::CheckPattern, &[BASE, LEN, SEED]);
    report.check(
        "pattern-mismatch",
        check.result[..2] == [1, offset],
        format_args!("one changed word found at offset {:#x}", check.result[1]),
    );
}

fn refusals(report: &mut Report) {
    let misaligned = exec(Command::FillPattern, &[BASE + 8, LEN, SEED]);
    let too_long = exec(Command::CheckPattern, &[BASE, 1 << 40, SEED]);
    let outside = exec(Command::Load, &[0x4000_0000_0000]);
    let unknown = exec_raw(99, &[]);
    report.check(
        "refusals",
        refused(&misaligned, 0)
            && refused(&too_long, 1)
            && refused(&outside, 0)
            && refused(&unknown, UNKNOWN_COMMAND),
        format_args!("bad arguments and codes answer BadCommand with their index"),
    );
}
