//! The command interpreter: the guest side of every `mte_protocol::Command`.
//!
//! A command reports `Done` with its results, or `BadCommand` with `result[0]` naming what was
//! wrong: the index of the bad argument, [`NO_MTE`] for a tag command on a CPU without tag
//! storage (or asymmetric checking without MTE3), or [`UNKNOWN_COMMAND`].
//!
//! Ranges (`addr`, `len`) must be granule aligned and inside test RAM; their pointer tag is
//! ignored. Bulk commands take at most `BULK_SIZE` granules (one byte each). Load and Store take
//! any pointer whose 8 bytes lie in RAM or in its untagged alias, with any tag. The pattern
//! commands use `pattern_word(seed, offset)` with `offset` the byte offset of each 8-byte word
//! from `addr`, and go through the untagged alias, so they neither check nor change tags.
//!
//! The access forms beyond a plain load and store live in `access`, the tag instructions in
//! `instructions`, their timing in `timing`; this module dispatches and keeps the argument
//! checks they share.

use core::arch::asm;
use mte_protocol::{
    BULK_IPA, BULK_SIZE, Command, GRANULE, RAM_IPA, RAM_SIZE, Status, TEST_RAM_IPA, TEST_RAM_SIZE,
    UNTAGGED_ALIAS_VA, granules, pattern_word, tag_of, tcf, with_tag,
};

use crate::{access, instructions, mailbox, migrate, mte, power, timing, vectors};

pub use mte_protocol::refusal::{NO_MTE, PROHIBITED, UNKNOWN_COMMAND};

/// Why a command was refused: an argument index, [`NO_MTE`], [`PROHIBITED`] or
/// [`UNKNOWN_COMMAND`].
pub type Refusal = u64;

/// Answer the host forever: doorbell, command, doorbell, ...
#[cfg(not(feature = "selftest"))]
pub fn serve() -> ! {
    loop {
        mailbox::ring();
        run_one();
    }
}

/// Run the command in the mailbox and write its results and status there.
pub fn run_one() {
    mailbox::begin_command();
    let (code, args) = mailbox::command();
    let status = match Command::from_u32(code)
        .ok_or(UNKNOWN_COMMAND)
        .and_then(|command| execute(command, &args))
    {
        Ok(()) => Status::Done,
        Err(refusal) => {
            mailbox::set_result(0, refusal);
            Status::BadCommand
        }
    };
    mailbox::set_status(status);
}

fn execute(command: Command, args: &[u64; 8]) -> Result<(), Refusal> {
    match command {
        Command::Nop => Ok(()),
        Command::TagRandom => tag_random(args[0], args[1]),
        Command::TagFromBulk => tag_from_bulk(args[0], args[1]),
        Command::ReadTags => read_tags(args[0], args[1]),
        Command::Load => load(args[0]),
        Command::Store => store(args[0], args[1]),
        Command::SetTcf => set_tcf(args[0]),
        Command::FillPattern => fill_pattern(args[0], args[1], args[2]),
        Command::CheckPattern => check_pattern(args[0], args[1], args[2]),
        Command::ReadTfsr => read_tfsr(),
        Command::PowerOff => power::system_off(),
        Command::Spin => loop {
            core::hint::spin_loop();
        },
        Command::SetTagTcr => access::set_tag_tcr(args[0], args[1]),
        Command::LoadViaSp => access::load_via_sp(args[0], args[1]),
        Command::StoreViaSp => access::store_via_sp(args[0], args[1], args[2]),
        Command::IrgSample => instructions::irg_sample(args[0], args[1], args[2]),
        Command::AddSubTag => instructions::add_sub_tag(args[0], args[1]),
        Command::Gmi => instructions::gmi(args),
        Command::StoreTags => instructions::store_tags(args[0], args[1], args[2], args[3]),
        Command::StoreTagsBlock => instructions::store_tags_block(args[0], args[1]),
        Command::LoadTagsBlock => instructions::load_tags_block(args[0]),
        Command::DcTags => instructions::dc_tags(args[0], args[1]),
        Command::ReadData => read_data(args[0], args[1]),
        Command::RetagUntilStopped => migrate::retag_until_stopped(args[0], args[1]),
        Command::TimeInstructions => {
            timing::time_instructions(args[0], args[1], args[2], args[3])
        }
    }
}

fn tag_random(addr: u64, len: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    let (addr, len) = bulk_range(addr, len)?;
    for i in 0..granules(len) {
        let ptr = mte::random_tag(addr + i as u64 * GRANULE);
        // SAFETY: test RAM (checked), Normal-Tagged; the bulk index is within BULK_SIZE.
        unsafe {
            mte::store_tag(ptr);
            bulk().add(i).write_volatile(tag_of(ptr));
        }
    }
    Ok(())
}

fn tag_from_bulk(addr: u64, len: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    let (addr, len) = bulk_range(addr, len)?;
    for i in 0..granules(len) {
        // SAFETY: as in `tag_random`.
        unsafe {
            let tag = bulk().add(i).read_volatile();
            mte::store_tag(with_tag(addr + i as u64 * GRANULE, tag));
        }
    }
    Ok(())
}

fn read_tags(addr: u64, len: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    let (addr, len) = bulk_range(addr, len)?;
    for i in 0..granules(len) {
        // SAFETY: as in `tag_random`.
        unsafe {
            let tag = mte::load_tag(addr + i as u64 * GRANULE);
            bulk().add(i).write_volatile(tag);
        }
    }
    Ok(())
}

fn load(ptr: u64) -> Result<(), Refusal> {
    check_access(ptr)?;
    let (value, faulted) = vectors::catching_aborts(|| {
        let mut value = 0u64;
        // SAFETY: 8 bytes of RAM (checked); an abort is caught and skipped.
        unsafe { asm!("ldr {v}, [{p}]", v = inout(reg) value, p = in(reg) ptr, options(nostack)) };
        value
    });
    mailbox::set_result(0, value);
    mailbox::set_result(1, faulted as u64);
    Ok(())
}

fn store(ptr: u64, value: u64) -> Result<(), Refusal> {
    check_access(ptr)?;
    let ((), faulted) = vectors::catching_aborts(|| {
        // SAFETY: 8 bytes of RAM (checked) that the host gave over; an abort is caught.
        unsafe { asm!("str {v}, [{p}]", v = in(reg) value, p = in(reg) ptr, options(nostack)) };
    });
    mailbox::set_result(0, faulted as u64);
    Ok(())
}

fn set_tcf(mode: u64) -> Result<(), Refusal> {
    require_tag_storage()?;
    if mode > tcf::ASYMMETRIC {
        return Err(0);
    }
    if mode == tcf::ASYMMETRIC && mte::level() < 3 {
        return Err(NO_MTE);
    }
    mailbox::set_result(0, mte::set_tcf(mode));
    Ok(())
}

fn fill_pattern(addr: u64, len: u64, seed: u64) -> Result<(), Refusal> {
    let (addr, len) = test_range(addr, len)?;
    let alias = untagged_alias(addr);
    for offset in (0..len).step_by(8) {
        // SAFETY: test RAM (checked) through its untagged alias.
        unsafe { ((alias + offset) as *mut u64).write_volatile(pattern_word(seed, offset)) };
    }
    Ok(())
}

fn check_pattern(addr: u64, len: u64, seed: u64) -> Result<(), Refusal> {
    let (addr, len) = test_range(addr, len)?;
    let alias = untagged_alias(addr);
    let (mut mismatches, mut first) = (0u64, u64::MAX);
    for offset in (0..len).step_by(8) {
        // SAFETY: as in `fill_pattern`.
        let word = unsafe { ((alias + offset) as *const u64).read_volatile() };
        if word != pattern_word(seed, offset) {
            mismatches += 1;
            first = first.min(offset);
        }
    }
    mailbox::set_result(0, mismatches);
    mailbox::set_result(1, first);
    Ok(())
}

fn read_data(addr: u64, len: u64) -> Result<(), Refusal> {
    let (addr, len) = test_range(addr, len)?;
    if len > BULK_SIZE {
        return Err(1);
    }
    let alias = untagged_alias(addr);
    for offset in (0..len).step_by(8) {
        // SAFETY: test RAM (checked) through its untagged alias; the bulk buffer holds `len`.
        unsafe {
            let word = ((alias + offset) as *const u64).read_volatile();
            (bulk().add(offset as usize) as *mut u64).write_volatile(word);
        }
    }
    Ok(())
}

fn read_tfsr() -> Result<(), Refusal> {
    require_tag_storage()?;
    mailbox::set_result(0, mte::take_tfsr());
    Ok(())
}

pub fn require_tag_storage() -> Result<(), Refusal> {
    if mte::has_tag_storage() {
        Ok(())
    } else {
        Err(NO_MTE)
    }
}

/// The address without its top byte (pointer tag and the rest of what TBI ignores).
pub fn untagged(ptr: u64) -> u64 {
    ptr & 0x00ff_ffff_ffff_ffff
}

pub fn untagged_alias(addr: u64) -> u64 {
    addr - RAM_IPA + UNTAGGED_ALIAS_VA
}

/// A granule-aligned range inside test RAM, untagged.
pub fn test_range(addr: u64, len: u64) -> Result<(u64, u64), Refusal> {
    let addr = untagged(addr);
    let end = TEST_RAM_IPA + TEST_RAM_SIZE;
    if addr % GRANULE != 0 || !(TEST_RAM_IPA..end).contains(&addr) {
        return Err(0);
    }
    if len % GRANULE != 0 || len > end - addr {
        return Err(1);
    }
    Ok((addr, len))
}

/// A [`test_range`] whose tag map fits the bulk buffer.
pub fn bulk_range(addr: u64, len: u64) -> Result<(u64, u64), Refusal> {
    let (addr, len) = test_range(addr, len)?;
    if granules(len) as u64 > BULK_SIZE {
        return Err(1);
    }
    Ok((addr, len))
}

/// An 8-byte access inside RAM or its untagged alias.
pub fn check_access(ptr: u64) -> Result<(), Refusal> {
    let addr = untagged(ptr);
    let inside = |base: u64| addr >= base && addr - base <= RAM_SIZE - 8;
    if inside(RAM_IPA) || inside(UNTAGGED_ALIAS_VA) {
        Ok(())
    } else {
        Err(0)
    }
}

/// The bulk buffer: tag maps (one byte per granule), data and instruction results.
pub fn bulk() -> *mut u8 {
    BULK_IPA as *mut u8
}
