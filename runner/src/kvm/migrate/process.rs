//! Stop-and-copy into a new VMM process. The runner starts itself again (fork and exec of its
//! own executable with `--migrate-incoming <fd>`), streams the paused guest into a socket that
//! the new process reads, and then drives the destination guest over the same socket with
//! [`control`](super::control) requests. A socket rather than a pipe, because the channel
//! carries the stream one way and then requests and answers both ways.

use std::io::{BufReader, BufWriter, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mte_protocol::{Command as GuestCommand, GuestIds};
use mte_suites::migrate::{MigrationReport, StreamFault};
use mte_suites::vmm::{Guest, Reply, VmmError};

use super::control::{ArrivedInfo, Request, Response};
use super::engine::{pause, report, resume, send_stopped, Carried, Sent};
use super::receive::{receive, ReceiveStats};
use super::send::{is_write_error, Sender};
use super::source::SourceMemory;
use crate::kvm::KvmGuest;

/// The runner's hidden mode: be a migration destination on the descriptor that follows.
pub const INCOMING_FLAG: &str = "--migrate-incoming";
/// Where the destination finds its end of the socket.
const INCOMING_FD: RawFd = 3;
/// How much longer than a guest command's deadline the runner waits for the destination's
/// answer (its own watchdog ends a stuck command first).
const GRACE: Duration = Duration::from_secs(5);

fn io_error(call: &str, e: &std::io::Error) -> VmmError {
    VmmError::Sys {
        call: call.into(),
        errno: e.raw_os_error().unwrap_or(0),
    }
}

/// Stop-and-copy from `source` into a new process.
pub fn stop_and_copy_to_new_process(
    mut source: KvmGuest,
    fault: Option<StreamFault>,
) -> Result<RemoteGuest, VmmError> {
    let paused = pause(&mut source)?;
    let memory = SourceMemory::of(&source.vm);
    let patience = source.deadline + GRACE;
    let (child, socket) = spawn_destination(source.deadline)?;
    let mut remote = RemoteGuest {
        child,
        socket,
        ids: source.ids,
        console_before: String::from_utf8_lossy(&source.console).into_owned(),
        report: MigrationReport::default(),
        patience,
        finished: false,
    };
    remote.set_timeouts()?;
    let sent = (|| {
        let mut sender = Sender::new(BufWriter::new(&remote.socket), memory.page_size, fault)?;
        let rounds = send_stopped(&mut sender, &memory, &paused.registers)?;
        sender.end()?;
        Ok(Sent {
            rounds,
            bytes: sender.bytes(),
            tag_read_time: sender.tag_read_time,
            tag_read_bytes: sender.tag_read_bytes,
            pages: std::mem::take(&mut sender.sent),
        })
    })();
    let sent = match sent {
        Ok(sent) => sent,
        // The destination stopped reading: its own answer says why.
        Err(e) if is_write_error(&e) => {
            return Err(match remote.answer() {
                Ok(Response::Failed(theirs)) | Err(theirs) => theirs,
                Ok(_) => e,
            })
        }
        // The source side failed: end the stream so that the destination stops waiting.
        Err(e) => {
            let _ = remote.socket.shutdown(Shutdown::Write);
            return Err(e);
        }
    };
    let info = match remote.answer()? {
        Response::Arrived(info) => info,
        Response::Failed(e) => return Err(e),
        other => {
            return Err(VmmError::Host(format!(
                "the destination process answered the stream with {other:?}"
            )))
        }
    };
    drop(source);
    let received = ReceiveStats {
        pages: info.pages,
        rounds: info.rounds,
        tag_write_time: info.tag_write_time,
        tag_write_bytes: info.tag_write_bytes,
        bytes: sent.bytes,
    };
    let how = format!(
        "stop-and-copy through a socket to a new VMM process (pid {}, `{INCOMING_FLAG}`)",
        remote.child.id()
    );
    remote.report = report(how, sent, &received, &paused, info.registers_differing);
    Ok(remote)
}

/// Start this executable as a destination, with one end of a socket pair as its descriptor 3.
fn spawn_destination(deadline: Duration) -> Result<(Child, UnixStream), VmmError> {
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| io_error("socketpair for the destination", &e))?;
    let exe = std::env::current_exe().map_err(|e| io_error("the runner's own executable", &e))?;
    let theirs_fd = theirs.as_raw_fd();
    let mut command = Command::new(&exe);
    command
        .arg(INCOMING_FLAG)
        .arg(INCOMING_FD.to_string())
        .arg("--deadline")
        .arg(deadline.as_secs_f64().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure makes only async-signal-safe calls (dup2,
    // fcntl) on descriptors that exist.
    unsafe {
        command.pre_exec(move || {
            let ret = if theirs_fd == INCOMING_FD {
                libc::fcntl(theirs_fd, libc::F_SETFD, 0)
            } else {
                // dup2 leaves the new descriptor without close-on-exec.
                libc::dup2(theirs_fd, INCOMING_FD)
            };
            if ret < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let child = command
        .spawn()
        .map_err(|e| io_error(&format!("fork and exec of {}", exe.display()), &e))?;
    Ok((child, ours))
}

/// The destination guest, in its process, driven over the control socket.
pub struct RemoteGuest {
    child: Child,
    socket: UnixStream,
    ids: GuestIds,
    console_before: String,
    report: MigrationReport,
    patience: Duration,
    finished: bool,
}

impl RemoteGuest {
    fn set_timeouts(&self) -> Result<(), VmmError> {
        self.socket
            .set_read_timeout(Some(self.patience))
            .and_then(|()| self.socket.set_write_timeout(Some(self.patience)))
            .map_err(|e| io_error("SO_RCVTIMEO/SO_SNDTIMEO on the control socket", &e))
    }

    /// The destination's next message.
    fn answer(&mut self) -> Result<Response, VmmError> {
        Response::read(&mut self.socket).map_err(|e| self.lost(&e))
    }

    fn request(&mut self, request: Request) -> Result<Response, VmmError> {
        request.write(&mut self.socket).map_err(|e| self.lost(&e))?;
        match self.answer()? {
            Response::Failed(e) => Err(e),
            response => Ok(response),
        }
    }

    /// The channel broke: a deadline passed (the process is killed) or the process died.
    fn lost(&mut self, e: &std::io::Error) -> VmmError {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            let _ = self.child.kill();
            let _ = reap(&mut self.child, GRACE);
            self.finished = true;
            return VmmError::Timeout {
                what: format!("the destination process {}'s answer", self.child.id()),
                seconds: self.patience.as_secs_f64(),
            };
        }
        let status = reap(&mut self.child, GRACE);
        let mut stderr = String::new();
        if let Some(pipe) = &mut self.child.stderr {
            let _ = pipe.take(4096).read_to_string(&mut stderr);
        }
        if status.is_none() {
            let _ = self.child.kill();
            let _ = reap(&mut self.child, GRACE);
        }
        self.finished = true;
        VmmError::Host(format!(
            "the destination process {} went away ({e}; {}){}",
            self.child.id(),
            status.map_or("still running, killed".into(), |s| s.to_string()),
            if stderr.is_empty() {
                String::new()
            } else {
                format!(": {}", stderr.trim())
            }
        ))
    }

    fn bytes(&mut self, request: Request) -> Result<Vec<u8>, VmmError> {
        match self.request(request)? {
            Response::Bytes(bytes) => Ok(bytes),
            other => Err(unexpected(other)),
        }
    }

    fn done(&mut self, request: Request) -> Result<(), VmmError> {
        match self.request(request)? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(response: Response) -> VmmError {
    VmmError::Host(format!("the destination process answered {response:?}"))
}

/// Wait for the child's exit, at most `within`.
fn reap(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < within => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

impl Guest for RemoteGuest {
    fn ids(&self) -> GuestIds {
        self.ids
    }

    fn exec(&mut self, command: GuestCommand, args: &[u64]) -> Result<Reply, VmmError> {
        assert!(args.len() <= 8, "at most 8 command arguments");
        let mut words = [0u64; 8];
        words[..args.len()].copy_from_slice(args);
        match self.request(Request::Exec {
            command: command as u32,
            args: words,
        })? {
            Response::Reply(reply) => Ok(reply),
            other => Err(unexpected(other)),
        }
    }

    fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError> {
        self.bytes(Request::ReadBulk { len: len as u64 })
    }

    fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError> {
        self.done(Request::WriteBulk(bytes.to_vec()))
    }

    fn host_read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        self.bytes(Request::ReadTags { ipa, len })
    }

    fn host_write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        self.done(Request::WriteTags {
            ipa,
            tags: tags.to_vec(),
        })
    }

    fn console(&self) -> String {
        // What the guest printed before it moved, then what it printed in the new process.
        let mut socket = &self.socket;
        let theirs = Request::Console
            .write(&mut socket)
            .ok()
            .and_then(|()| Response::read(&mut socket).ok());
        match theirs {
            Some(Response::Bytes(bytes)) => {
                format!("{}{}", self.console_before, String::from_utf8_lossy(&bytes))
            }
            _ => format!(
                "{}[the destination process's console could not be read]",
                self.console_before
            ),
        }
    }

    fn migration_report(&mut self) -> Result<MigrationReport, VmmError> {
        Ok(self.report.clone())
    }
}

impl Drop for RemoteGuest {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let _ = Request::Finish.write(&mut self.socket);
        if reap(&mut self.child, GRACE).is_none() {
            let _ = self.child.kill();
            let _ = reap(&mut self.child, GRACE);
        }
    }
}

/// If this process was started as a migration destination, be one; the exit code.
pub fn incoming_if_asked() -> Option<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match incoming_arguments(&args)? {
        Ok((fd, deadline)) => {
            // SAFETY: the runner that started this process passed `fd` for this and nothing
            // else.
            let socket = unsafe { UnixStream::from_raw_fd(fd) };
            Some(serve_incoming(socket, deadline))
        }
        Err(usage) => {
            eprintln!("mte-runner: {usage}");
            Some(2)
        }
    }
}

/// The descriptor and deadline of `--migrate-incoming FD --deadline SECS`; None for other
/// arguments.
fn incoming_arguments(args: &[String]) -> Option<Result<(RawFd, Duration), String>> {
    if args.first().map(String::as_str) != Some(INCOMING_FLAG) {
        return None;
    }
    let fd = args.get(1).and_then(|a| a.parse::<RawFd>().ok());
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
            "usage: {INCOMING_FLAG} FD --deadline SECS, not {args:?}"
        )),
    })
}

/// Receive the stream, resume the guest, then answer requests until told to finish.
fn serve_incoming(mut socket: UnixStream, deadline: Duration) -> i32 {
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
        assert_eq!(incoming_arguments(&args(&["tags::", "--exact"])), None);
        assert_eq!(incoming_arguments(&[]), None);
        assert_eq!(
            incoming_arguments(&args(&[INCOMING_FLAG, "3", "--deadline", "2.5"])),
            Some(Ok((3, Duration::from_millis(2500))))
        );
        for bad in [
            &[INCOMING_FLAG, "x", "--deadline", "1"][..],
            &[INCOMING_FLAG, "3"],
            &[INCOMING_FLAG, "3", "--deadline", "-1"],
            &[INCOMING_FLAG, "3", "--deadline", "1", "more"],
        ] {
            assert!(
                matches!(incoming_arguments(&args(bad)), Some(Err(_))),
                "{bad:?}"
            );
        }
    }
}
