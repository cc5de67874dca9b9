//! The destination process of the engine's new-process method: the program's own executable,
//! started with [`DESTINATION_FLAG`] by [`to_new_process`](super::to_new_process). It receives
//! the stream on the socket it was given, resumes the guest in a VM of its own, and answers the
//! source's [`control`](super::control) requests until told to finish.

use std::io::BufReader;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use mte_protocol::{Command as GuestCommand, GuestIds};
use mte_suites::vmm::{Guest, VmmError};

use super::control::{ArrivedInfo, Request, Response};
use super::in_process::{resume, Carried};
use super::receive::receive;

/// The hidden mode of a program that embeds this backend: be a migration destination on the
/// descriptor that follows.
pub const DESTINATION_FLAG: &str = "--migration-destination";

/// If this process was started as a migration destination, be one; the exit code.
pub fn serve_migration_destination_if_asked() -> Option<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match destination_arguments(&args)? {
        Ok((fd, deadline)) => {
            // SAFETY: the runner that started this process passed `fd` for this and nothing
            // else.
            let socket = unsafe { UnixStream::from_raw_fd(fd) };
            Some(serve(socket, deadline))
        }
        Err(usage) => {
            eprintln!("mte-runner: {usage}");
            Some(2)
        }
    }
}

/// The descriptor and deadline of `--migration-destination FD --deadline SECS`; None for
/// other arguments.
fn destination_arguments(args: &[String]) -> Option<Result<(RawFd, Duration), String>> {
    if args.first().map(String::as_str) != Some(DESTINATION_FLAG) {
        return None;
    }
    // Not one of the standard streams, nor negative: the runner passes a socket of its own.
    let fd = (args.get(1))
        .and_then(|a| a.parse::<RawFd>().ok())
        .filter(|&fd| fd > 2);
    let deadline = match args.get(2..) {
        Some([flag, secs]) if flag == "--deadline" => secs
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        _ => None,
    };
    Some(match (fd, deadline) {
        (Some(fd), Some(deadline)) => Ok((fd, deadline)),
        _ => Err(format!(
            "usage: {DESTINATION_FLAG} FD --deadline SECS, not {args:?}"
        )),
    })
}

/// Receive the stream, resume the guest, then answer requests until told to finish.
fn serve(mut socket: UnixStream, deadline: Duration) -> i32 {
    let arrived = (|| {
        let mut input = BufReader::new(&socket);
        let arrival = receive(&mut input, false)?;
        // The runner sends nothing after the stream until it has the answer to it.
        if !input.buffer().is_empty() {
            return Err(VmmError::Host(
                "bytes follow the migration stream's End".into(),
            ));
        }
        let carried = Carried {
            deadline,
            console: Vec::new(),
            ids: GuestIds::default(),
        };
        let (guest, differing) = resume(arrival.vm, &arrival.registers, carried)?;
        let info = ArrivedInfo {
            pages: arrival.stats.pages,
            rounds: arrival.stats.rounds,
            tag_write_time: arrival.stats.tag_write_time,
            tag_write_bytes: arrival.stats.tag_write_bytes,
            registers_differing: differing,
        };
        Ok((guest, info))
    })();
    let mut guest = match arrived {
        Ok((guest, info)) => {
            if Response::Arrived(info).write(&mut socket).is_err() {
                return 1;
            }
            guest
        }
        Err(e) => {
            let _ = Response::Failed(e).write(&mut socket);
            return 1;
        }
    };
    loop {
        let Ok(request) = Request::read(&mut socket) else {
            // The runner went away: nothing left to serve.
            return 0;
        };
        let response = match request {
            Request::Finish => return 0,
            Request::Exec { command, args } => match GuestCommand::from_u32(command) {
                Some(command) => guest.exec(command, &args).map(Response::Reply),
                None => Err(VmmError::Host(format!("unknown guest command {command}"))),
            },
            Request::ReadBulk { len } => guest.read_bulk(len as usize).map(Response::Bytes),
            Request::WriteBulk(bytes) => guest.write_bulk(&bytes).map(|()| Response::Done),
            Request::ReadTags { ipa, len } => guest.host_read_tags(ipa, len).map(Response::Bytes),
            Request::WriteTags { ipa, tags } => {
                guest.host_write_tags(ipa, &tags).map(|()| Response::Done)
            }
            Request::Console => Ok(Response::Bytes(guest.console().into_bytes())),
        };
        let response = response.unwrap_or_else(Response::Failed);
        if response.write(&mut socket).is_err() {
            return 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn only_the_hidden_flag_makes_a_destination() {
        assert_eq!(destination_arguments(&args(&["tags::", "--exact"])), None);
        assert_eq!(destination_arguments(&[]), None);
        assert_eq!(
            destination_arguments(&args(&[DESTINATION_FLAG, "3", "--deadline", "2.5"])),
            Some(Ok((3, Duration::from_millis(2500))))
        );
        for bad in [
            &[DESTINATION_FLAG, "x", "--deadline", "1"][..],
            &[DESTINATION_FLAG, "-1", "--deadline", "1"],
            &[DESTINATION_FLAG, "2", "--deadline", "1"],
            &[DESTINATION_FLAG, "3"],
            &[DESTINATION_FLAG, "3", "--deadline", "-1"],
            &[DESTINATION_FLAG, "3", "--deadline", "1", "more"],
        ] {
            assert!(
                matches!(destination_arguments(&args(bad)), Some(Err(_))),
                "{bad:?}"
            );
        }
    }
}
