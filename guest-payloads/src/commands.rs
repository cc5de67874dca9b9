//! The command interpreter: which module runs each `mte_protocol::Command`, and the loop that
//! answers the host.
//!
//! A command reports `Done` with its results, or `BadCommand` with `result[0]` naming what was
//! wrong (see `args`): the index of the bad argument, `NO_MTE` for a tag command on a CPU
//! without tag storage (or asymmetric checking without MTE3), `PROHIBITED` where the ID
//! registers forbid an instruction, or `UNKNOWN_COMMAND`.

use mte_protocol::{Command, START_TOGETHER, Status};

use crate::args::{Refusal, UNKNOWN_COMMAND};
use crate::{
    access, data, el0, exception_entry, instructions, mailbox, no_mte, power, precopy_workload,
    priority, smp, sve, tags, timing,
};

/// Answer the host forever: doorbell, command, doorbell, ...
pub fn serve() -> ! {
    loop {
        mailbox::ring();
        run_one();
    }
}

/// Run the command in the mailbox and write its results and status there; a command posted
/// with `START_TOGETHER` first waits at the start barrier.
pub fn run_one() {
    mailbox::begin_command();
    let (code, args) = mailbox::command();
    if code & START_TOGETHER != 0 {
        smp::wait_at_start();
    }
    let code = code & !START_TOGETHER;
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
        Command::TagRandom => tags::tag_random(args[0], args[1]),
        Command::TagFromBulk => tags::tag_from_bulk(args[0], args[1]),
        Command::ReadTags => tags::read_tags(args[0], args[1]),
        Command::Load => access::load(args[0]),
        Command::Store => access::store(args[0], args[1]),
        Command::SetTcf => access::set_tcf(args[0]),
        Command::FillPattern => data::fill_pattern(args[0], args[1], args[2]),
        Command::CheckPattern => data::check_pattern(args[0], args[1], args[2]),
        Command::ReadTfsr => access::read_tfsr(),
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
        Command::ReadData => data::read_data(args[0], args[1]),
        Command::RetagUntilStopped => precopy_workload::retag_until_stopped(args[0], args[1]),
        Command::TimeInstructions => timing::time_instructions(args[0], args[1], args[2], args[3]),
        Command::CpuOn => smp::cpu_on(args[0]),
        Command::AccessRange => access::access_range(args[0], args[1], args[2], args[3]),
        Command::ProbeTagAccess => no_mte::probe_tag_access(args[0]),
        Command::SetTcf0 => el0::set_tcf0(args[0]),
        Command::El0Access => el0::el0_access(args[0], args[1], args[2]),
        Command::UnprivilegedAccess => el0::unprivileged_access(args[0], args[1], args[2]),
        Command::ReadMteRegisters => el0::read_mte_registers(),
        Command::PriorityAccess => priority::access(args[0], args[1], args[2]),
        Command::SveEnable => sve::enable(args[0]),
        Command::SveAccess => sve::access(args[0], args[1]),
        Command::ExceptionTco => exception_entry::exception_tco(args[0], args[1]),
    }
}
