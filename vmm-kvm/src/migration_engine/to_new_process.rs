//! Stop-and-copy into a new VMM process. The program starts its own executable again as a
//! [`destination_process`](super::destination_process), streams the paused guest into a socket
//! that the new process reads, and then drives the destination guest over the same socket with
//! [`control`](super::control) requests. A socket rather than a pipe, because the channel
//! carries the stream one way and then requests and answers both ways.

use std::io::{BufWriter, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mte_protocol::{Command as GuestCommand, GuestIds};
use mte_suites::kernel_options::{self, Call};
use mte_suites::migration_plan::{MigrationReport, StreamFault};
use mte_suites::vmm::{Guest, Reply, VmmError};

use super::control::{Request, Response};
use super::destination_process::DESTINATION_FLAG;
use super::in_process::{pause, report, send_stopped, Sent};
use super::receive::ReceiveStats;
use super::send::{is_write_error, Sender};
use super::source::SourceMemory;
use crate::KvmGuest;

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
    let memory = SourceMemory::of(&source.transport().vm);
    let patience = source.deadline() + GRACE;
    let (child, socket) = spawn_destination(source.deadline())?;
    let mut remote = RemoteGuest {
        child,
        socket,
        ids: source.ids(),
        console_before: source.console(),
        report: MigrationReport::default(),
        patience,
        finished: false,
    };
    remote.set_timeouts()?;
    let sent = (|| {
        let mut sender = Sender::new(BufWriter::new(&remote.socket), memory.page_size, fault)?;
        let rounds = send_stopped(&mut sender, &memory, &paused.registers)?;
        Sent::finish(&mut sender, rounds)
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
        "stop-and-copy through a socket to a new VMM process (pid {}, `{DESTINATION_FLAG}`)",
        remote.child.id()
    );
    remote.report = report(how, sent, &received, &paused, info.registers_differing);
    Ok(remote)
}

/// Held while a destination's end of its socket is open across exec.
static SPAWNING: Mutex<()> = Mutex::new(());

/// Start this executable as a destination, with one end of a socket pair as the descriptor
/// its arguments name.
fn spawn_destination(deadline: Duration) -> Result<(Child, UnixStream), VmmError> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| {
        let errno = e.raw_os_error().unwrap_or(0);
        kernel_options::call_error(
            Call::UnixSocketPair,
            "socketpair for the destination",
            errno,
        )
    })?;
    let exe = std::env::current_exe().map_err(|e| io_error("the runner's own executable", &e))?;
    // Their end stays open across the exec; with nothing to run between fork and exec, std
    // starts the child with posix_spawn (a vfork), which neither copies the runner's page
    // tables nor shares any guest's pages with the child, so no other check has to wait.
    // Destinations start one at a time, so that none inherits another's end (which would
    // keep it open after that one's destination ended, and hide its end from the source).
    let _one_at_a_time = SPAWNING.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: F_SETFD on a descriptor this function owns.
    if unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(io_error(
            "clearing close-on-exec of the destination's socket",
            &e,
        ));
    }
    let child = Command::new(&exe)
        .arg(DESTINATION_FLAG)
        .arg(theirs.as_raw_fd().to_string())
        .arg("--deadline")
        .arg(deadline.as_secs_f64().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io_error(&format!("starting {}", exe.display()), &e))?;
    drop(theirs);
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
