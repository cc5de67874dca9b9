//! One QEMU process per guest: its private directory (payload copy, gdbstub socket, console,
//! QEMU's own messages), its start up to a connected gdbstub, and its end.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use mte_suites::vmm::VmmError;

use super::qmp::Qmp;

/// How much of the console and of QEMU's messages is kept: enough for any message, bounded
/// for a guest that prints in a loop.
const TEXT_LIMIT: u64 = 64 << 10;

const PAYLOAD: &str = "payload.elf";
const SOCKET: &str = "gdb.sock";
const QMP_SOCKET: &str = "qmp.sock";
/// Where an outgoing migration writes the guest's state.
const MIGRATION: &str = "migration.bin";
const CONSOLE: &str = "console.log";
const MESSAGES: &str = "qemu.log";

/// How QEMU runs the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's own emulation (`-accel tcg -cpu max`): QEMU keeps the tags itself.
    Tcg,
    /// The host's KVM (`-accel kvm -cpu host`): the host kernel keeps the tags.
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// What backs the guest's RAM in QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ram {
    /// QEMU's own: private anonymous memory.
    Private,
    /// `-object memory-backend-memfd,share=on`: a memfd QEMU maps shared, which another
    /// process can map too.
    SharedMemfd,
}

/// How a QEMU is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    pub accel: Accel,
    pub mte: bool,
    pub ram: Ram,
}

/// A running `qemu-system-aarch64`, halted (`-S`) until its gdbstub lets it go. Dropping it
/// kills the process and removes its directory.
pub struct Machine {
    child: Child,
    dir: PathBuf,
    /// The thread that started QEMU, whose end kills it (PR_SET_PDEATHSIG).
    started_by: ThreadId,
}

impl Machine {
    /// Start QEMU on `image` (a copy of it, so that a payload rebuilt meanwhile cannot differ
    /// from the one whose symbols were read) and connect to its gdbstub, within `limit`.
    /// With `incoming`, the guest's state comes from that migration file instead.
    pub fn start(
        qemu: &Path,
        image: &[u8],
        setup: Setup,
        incoming: Option<&Path>,
        limit: Duration,
    ) -> Result<(Self, UnixStream), VmmError> {
        let dir = private_dir()?;
        let host = |what: &str, e: std::io::Error| {
            VmmError::Host(format!("{what} in {}: {e}", dir.display()))
        };
        std::fs::write(dir.join(PAYLOAD), image).map_err(|e| host("writing the payload", e))?;
        let messages = std::fs::File::create(dir.join(MESSAGES))
            .map_err(|e| host("creating QEMU's log", e))?;
        let mut command = Command::new(qemu);
        command
            .args(arguments(&dir, setup, incoming))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(messages);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. QEMU dies
        // with the thread that started it, so a runner that is killed leaves no guest
        // spinning; a guest never leaves the thread that booted it (Guest is not Send).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(VmmError::Host(format!("starting {}: {e}", qemu.display())));
            }
        };
        let mut machine = Machine {
            child,
            dir,
            started_by: std::thread::current().id(),
        };
        let stream = machine.connect(limit)?;
        Ok((machine, stream))
    }

    /// Connect to the gdbstub once QEMU has its socket listening.
    fn connect(&mut self, limit: Duration) -> Result<UnixStream, VmmError> {
        let socket = self.dir.join(SOCKET);
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(stream) = UnixStream::connect(&socket) {
                return Ok(stream);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(VmmError::Host(format!(
                    "QEMU exited ({status}) before its gdbstub was up: {}",
                    self.messages()
                )));
            }
            if Instant::now() >= deadline {
                return Err(VmmError::Timeout {
                    what: format!("QEMU's start (gdbstub at {})", socket.display()),
                    seconds: limit.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Connect to QEMU's QMP monitor.
    pub fn qmp(&self, limit: Duration) -> Result<Qmp, VmmError> {
        Qmp::connect(&self.dir.join(QMP_SOCKET), limit)
            .map_err(|e| VmmError::Host(format!("{e}; QEMU: {}", self.messages())))
    }

    /// Where this machine's outgoing migration goes.
    pub fn migration_file(&self) -> PathBuf {
        self.dir.join(MIGRATION)
    }

    /// What the guest wrote to its serial port from byte `offset` on.
    pub fn console_from(&self, offset: u64) -> String {
        read_limited(&self.dir.join(CONSOLE), offset)
    }

    /// How much the guests of this QEMU wrote to its serial port so far.
    pub fn console_len(&self) -> u64 {
        std::fs::metadata(self.dir.join(CONSOLE)).map_or(0, |m| m.len())
    }

    /// The thread whose end kills QEMU.
    pub(crate) fn started_by(&self) -> ThreadId {
        self.started_by
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What QEMU itself printed (its errors and warnings).
    pub fn messages(&self) -> String {
        let text = read_limited(&self.dir.join(MESSAGES), 0);
        match text.trim() {
            "" => "QEMU printed nothing".into(),
            text => text.to_string(),
        }
    }

    /// Whether QEMU exits with success within `limit`: how a guest's power-off ends it.
    pub fn exited_cleanly(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => return false,
            }
        }
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How QEMU ended, if it has within `limit`: its exit status or the signal that killed it.
    pub fn ended_how(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(describe_exit(status)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => return None,
            }
        }
    }

    /// Stop QEMU now (a guest past its deadline, or done with).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An exit status in words: `exited with status 1`, `killed by signal 11 (SIGSEGV)`.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal} ({})", signal_name(signal)),
        (None, None) => status.to_string(),
    }
}

/// The name of the signals a process is usually ended by.
fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        _ => "a signal",
    }
}

/// The QEMU object id of a shared RAM backend.
const RAM_BACKEND: &str = "mte-ram";

/// QEMU's command line: the virt machine with (or without) MTE and nothing else attached, its
/// CPU emulated (TCG, `-cpu max`) or the host's (KVM, `-cpu host`), its RAM QEMU's own or a
/// shared memfd, halted at the payload's entry (or, with `incoming`, paused after loading that
/// migration file) until the gdbstub resumes it; the console goes to a file; a QMP monitor
/// for migration.
fn arguments(dir: &Path, setup: Setup, incoming: Option<&Path>) -> Vec<OsString> {
    let in_dir = |name: &str| dir.join(name).into_os_string();
    let mut serial = OsString::from("file:");
    serial.push(in_dir(CONSOLE));
    let socket = |name: &str| {
        let mut spec = OsString::from("unix:");
        spec.push(in_dir(name));
        spec.push(",server=on,wait=off");
        spec
    };
    let mte = if setup.mte { "on" } else { "off" };
    let mut machine = format!("virt,mte={mte},gic-version=3");
    let memory = format!("{}M", mte_protocol::RAM_SIZE >> 20);
    let cpu = match setup.accel {
        Accel::Tcg => "max",
        Accel::Kvm => "host",
    };
    let mut args: Vec<OsString> = Vec::new();
    if setup.ram == Ram::SharedMemfd {
        machine.push_str(&format!(",memory-backend={RAM_BACKEND}"));
        args.extend([
            "-object".into(),
            format!("memory-backend-memfd,id={RAM_BACKEND},size={memory},share=on").into(),
        ]);
    }
    args.extend(
        [
            "-M",
            &machine,
            "-cpu",
            cpu,
            "-accel",
            setup.accel.name(),
            "-smp",
            "1",
            "-m",
            &memory,
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-S",
            // A guest stopped by the gdbstub is in the `debug` run state, which a destination
            // cannot enter from `inmigrate` (QEMU aborts); without the run state in the stream,
            // the destination stays paused, as -S asks, until the gdbstub resumes it.
            "-global",
            "migration.store-global-state=off",
        ]
        .iter()
        .map(OsString::from),
    );
    args.extend([
        "-serial".into(),
        serial,
        "-kernel".into(),
        in_dir(PAYLOAD),
        "-gdb".into(),
        socket(SOCKET),
        "-qmp".into(),
        socket(QMP_SOCKET),
    ]);
    if let Some(file) = incoming {
        let mut uri = OsString::from("file:");
        uri.push(file);
        args.extend(["-incoming".into(), uri]);
    }
    args
}

/// A new directory of our own (mode 0700) under the temporary directory.
fn private_dir() -> Result<PathBuf, VmmError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    loop {
        let dir = base.join(format!(
            "mte-qemu-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            // Left by an earlier process with the same id: take the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(VmmError::Host(format!(
                    "creating a directory for QEMU in {}: {e}",
                    base.display()
                )))
            }
        }
    }
}

fn read_limited(path: &Path, offset: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.take(TEXT_LIMIT).read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_the_machine_and_the_files_in_its_directory() {
        let tcg = Setup {
            accel: Accel::Tcg,
            mte: true,
            ram: Ram::Private,
        };
        let args: Vec<String> = arguments(Path::new("/tmp/q"), tcg, None)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let after = |flag: &str| {
            let at = args.iter().position(|a| a == flag).unwrap();
            args[at + 1].as_str()
        };
        assert_eq!(after("-M"), "virt,mte=on,gic-version=3");
        assert_eq!(after("-m"), "64M");
        assert_eq!(after("-kernel"), "/tmp/q/payload.elf");
        assert_eq!(after("-serial"), "file:/tmp/q/console.log");
        assert_eq!(after("-gdb"), "unix:/tmp/q/gdb.sock,server=on,wait=off");
        assert_eq!(after("-qmp"), "unix:/tmp/q/qmp.sock,server=on,wait=off");
        assert!(args.iter().any(|a| a == "-S"));
        assert!(!args.iter().any(|a| a == "-incoming"));
        assert_eq!(after("-cpu"), "max");
        let untagged = Setup { mte: false, ..tcg };
        let untagged = arguments(Path::new("/tmp/q"), untagged, None);
        assert!(untagged.iter().any(|a| a == "virt,mte=off,gic-version=3"));
        let incoming = arguments(Path::new("/tmp/q"), tcg, Some(Path::new("/tmp/p/m.bin")));
        assert!(incoming.ends_with(&["-incoming".into(), "file:/tmp/p/m.bin".into()]));
    }

    #[test]
    fn under_kvm_the_cpu_is_the_hosts_and_ram_may_be_a_shared_memfd() {
        let kvm = Setup {
            accel: Accel::Kvm,
            mte: true,
            ram: Ram::SharedMemfd,
        };
        let args: Vec<String> = arguments(Path::new("/tmp/q"), kvm, None)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let line = args.join(" ");
        assert!(line.starts_with(
            "-object memory-backend-memfd,id=mte-ram,size=64M,share=on \
             -M virt,mte=on,gic-version=3,memory-backend=mte-ram -cpu host -accel kvm "
        ));
        let private = arguments(
            Path::new("/tmp/q"),
            Setup {
                ram: Ram::Private,
                ..kvm
            },
            None,
        );
        assert!(!private.iter().any(|a| a == "-object"));
    }
}
