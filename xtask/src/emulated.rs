//! The emulated lane's machine: QEMU (TCG, with EL2 and MTE) booting the kernel under test with
//! the runner as `/init`, its console read line by line under two deadlines.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use mte_results::stream::MARKER;

use anyhow::{Context, Result};

/// After a kernel panic, how many more lines (the backtrace) are kept.
const PANIC_TAIL_LINES: usize = 30;
/// QEMU's own messages (stderr) kept for error reports.
const STDERR_KEPT: usize = 20;

/// When a machine that is still running is stopped.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// The whole run, boot included.
    pub overall: Duration,
    /// No console line for this long: the machine is taken to be stuck.
    pub silence: Duration,
    /// After the runner's last record, the time it has to power the machine off.
    pub power_off: Duration,
    /// After a kernel panic, the time given to print the backtrace.
    pub panic_tail: Duration,
}

impl Deadlines {
    pub fn with_overall(overall: Duration) -> Self {
        Deadlines {
            overall,
            silence: Duration::from_secs(300),
            power_off: Duration::from_secs(30),
            panic_tail: Duration::from_secs(10),
        }
    }
}

/// The machine to boot.
#[derive(Clone, Debug)]
pub struct Machine {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

impl Machine {
    /// QEMU's arguments. `virtualization=on` gives the guest EL2 so its kernel runs KVM;
    /// `mte=on` with `-cpu max` gives it MTE (and MTE3); `pauth-impdef` keeps pointer
    /// authentication cheap under TCG. The console is the first serial port on stdout; there is
    /// no monitor, display or network, and `-no-reboot` turns the runner's power-off (and a
    /// panic's reboot) into QEMU's exit.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-M",
            "virt,virtualization=on,mte=on,gic-version=3",
            "-cpu",
            "max,pauth-impdef=on",
            "-smp",
            "2",
            "-m",
            "2048",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-nic",
            "none",
            "-no-reboot",
            "-kernel",
        ]
        .map(String::from)
        .to_vec();
        args.push(self.kernel.display().to_string());
        args.push("-initrd".into());
        args.push(self.initramfs.display().to_string());
        args.push("-append".into());
        args.push("console=ttyAMA0 rdinit=/init quiet panic=-1".into());
        args
    }

    /// The command line as a person would type it, for the run's record.
    pub fn command_line(&self) -> String {
        std::iter::once(self.qemu.display().to_string())
            .chain(self.args())
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=,./:+~%@".contains(&b))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// What the console consumer tells the machine after each line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The runner said its last word: the machine should power off now.
    Finished,
}

/// How the machine's run ended.
#[derive(Debug)]
pub enum End {
    /// QEMU exited by itself (the runner powered off, or QEMU failed).
    Exited(ExitStatus),
    /// The run was complete but the machine did not power off in time; QEMU was killed.
    KilledAfterFinish,
    /// The overall deadline passed; QEMU was killed.
    Deadline(Duration),
    /// Nothing came out of the console for this long; QEMU was killed.
    Silent(Duration),
    /// The kernel panicked: the panic line. QEMU was stopped after the backtrace.
    Panic(String),
}

#[derive(Debug)]
pub struct Ending {
    pub end: End,
    /// QEMU's last messages on stderr.
    pub qemu_stderr: Vec<String>,
}

enum Event {
    Console(String),
    QemuStderr(String),
    ConsoleClosed,
}

/// Boot `machine` and hand every console line to `on_line` until QEMU exits or a deadline
/// passes. QEMU's stderr lines reach `on_line` too, prefixed with `qemu: `.
pub fn boot(
    machine: &Machine,
    deadlines: Deadlines,
    on_line: impl FnMut(&str) -> Flow,
) -> Result<Ending> {
    let mut command = Command::new(&machine.qemu);
    command.args(machine.args());
    watch(command, deadlines, on_line)
        .with_context(|| format!("starting {}", machine.qemu.display()))
}

/// Run `command` with its stdout as the console, under `deadlines`.
pub fn watch(
    mut command: Command,
    deadlines: Deadlines,
    mut on_line: impl FnMut(&str) -> Flow,
) -> std::io::Result<Ending> {
    // No stdin: QEMU leaves the terminal alone, and CI has none to give. QEMU stays in this
    // process group, so Ctrl-C stops it together with xtask.
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;

    let (events, inbox) = mpsc::channel();
    spawn_line_reader(
        child.stdout.take().expect("stdout is piped"),
        events.clone(),
        Event::Console,
        true,
    );
    spawn_line_reader(
        child.stderr.take().expect("stderr is piped"),
        events,
        Event::QemuStderr,
        false,
    );

    let started = Instant::now();
    let mut last_line = started;
    let mut finished_at: Option<Instant> = None;
    let mut panic: Option<(String, Instant, usize)> = None;
    let mut qemu_stderr: Vec<String> = Vec::new();

    let end = loop {
        let mut deadline = (started + deadlines.overall).min(last_line + deadlines.silence);
        if let Some(at) = finished_at {
            deadline = deadline.min(at + deadlines.power_off);
        }
        if let Some((_, at, _)) = &panic {
            deadline = deadline.min(*at + deadlines.panic_tail);
        }
        let event = inbox.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        match event {
            Ok(Event::Console(line)) => {
                last_line = now;
                if on_line(&line) == Flow::Finished && finished_at.is_none() {
                    finished_at = Some(now);
                }
                match &mut panic {
                    Some((_, _, tail)) => *tail += 1,
                    // A record may quote a panic; only the kernel's own line counts.
                    None if line.contains("Kernel panic") && !line.contains(MARKER) => {
                        panic = Some((line.trim().to_string(), now, 0))
                    }
                    None => {}
                }
                if let Some((line, _, tail)) = &panic {
                    if *tail >= PANIC_TAIL_LINES {
                        kill(&mut child);
                        break End::Panic(line.clone());
                    }
                }
            }
            Ok(Event::QemuStderr(line)) => {
                last_line = now;
                on_line(&format!("qemu: {line}"));
                if qemu_stderr.len() == STDERR_KEPT {
                    qemu_stderr.remove(0);
                }
                qemu_stderr.push(line);
            }
            Ok(Event::ConsoleClosed) | Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                break match panic {
                    Some((line, _, _)) => End::Panic(line),
                    None => End::Exited(status),
                };
            }
            Err(RecvTimeoutError::Timeout) => {
                kill(&mut child);
                break if let Some((line, _, _)) = panic {
                    End::Panic(line)
                } else if finished_at.is_some_and(|at| now >= at + deadlines.power_off) {
                    End::KilledAfterFinish
                } else if now >= started + deadlines.overall {
                    End::Deadline(deadlines.overall)
                } else {
                    End::Silent(deadlines.silence)
                };
            }
        }
    };
    // QEMU's last words on stderr may still be in flight after its stdout closed.
    let drain_until = Instant::now() + Duration::from_millis(300);
    while let Ok(event) = inbox.recv_timeout(drain_until.saturating_duration_since(Instant::now()))
    {
        if let Event::QemuStderr(line) = event {
            on_line(&format!("qemu: {line}"));
            qemu_stderr.push(line);
        }
    }
    Ok(Ending { end, qemu_stderr })
}

/// Forward each line of `stream` (lossily decoded, `\r` dropped); `closed` adds a
/// [`Event::ConsoleClosed`] at the end.
fn spawn_line_reader(
    stream: impl Read + Send + 'static,
    events: mpsc::Sender<Event>,
    wrap: fn(String) -> Event,
    closed: bool,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buffer);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if events.send(wrap(line)).is_err() {
                        return;
                    }
                }
            }
        }
        if closed {
            let _ = events.send(Event::ConsoleClosed);
        }
    });
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            qemu: "/usr/bin/qemu-system-aarch64".into(),
            kernel: "/k/vmlinuz-6.12".into(),
            initramfs: "/t/initramfs.cpio".into(),
        }
    }

    #[test]
    fn the_machine_has_el2_mte_and_a_console_on_stdout() {
        let args = machine().args().join(" ");
        assert!(args.contains("-M virt,virtualization=on,mte=on,gic-version=3"));
        assert!(args.contains("-serial stdio"));
        assert!(args.contains("-no-reboot"));
        assert!(args.ends_with("-kernel /k/vmlinuz-6.12 -initrd /t/initramfs.cpio -append console=ttyAMA0 rdinit=/init quiet panic=-1"));
    }

    #[test]
    fn the_command_line_is_quoted_for_a_shell() {
        let line = machine().command_line();
        assert!(line.starts_with(
            "/usr/bin/qemu-system-aarch64 -M virt,virtualization=on,mte=on,gic-version=3 "
        ));
        assert!(line.ends_with("-append 'console=ttyAMA0 rdinit=/init quiet panic=-1'"));
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    fn script(text: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", text]);
        command
    }

    fn short(overall_ms: u64, silence_ms: u64) -> Deadlines {
        Deadlines {
            overall: Duration::from_millis(overall_ms),
            silence: Duration::from_millis(silence_ms),
            power_off: Duration::from_millis(300),
            panic_tail: Duration::from_millis(300),
        }
    }

    /// Run `text` as the machine; returns how it ended and the lines seen.
    fn watch_script(text: &str, deadlines: Deadlines, finish_on: &str) -> (Ending, Vec<String>) {
        let mut lines = Vec::new();
        let ending = watch(script(text), deadlines, |line| {
            lines.push(line.to_string());
            if line == finish_on {
                Flow::Finished
            } else {
                Flow::Continue
            }
        })
        .unwrap();
        (ending, lines)
    }

    #[test]
    fn every_line_arrives_and_the_exit_is_reported() {
        let (ending, lines) = watch_script(
            "printf 'a\\r\\nb\\n'; echo oops >&2; exit 3",
            short(5000, 5000),
            "",
        );
        assert!(
            matches!(ending.end, End::Exited(s) if s.code() == Some(3)),
            "{ending:?}"
        );
        // The two streams interleave in any order; each keeps its own.
        let console: Vec<&String> = lines.iter().filter(|l| !l.starts_with("qemu: ")).collect();
        assert_eq!(console, ["a", "b"]);
        assert!(lines.contains(&"qemu: oops".to_string()));
        assert_eq!(ending.qemu_stderr, ["oops"]);
    }

    #[test]
    fn silence_and_the_overall_deadline_stop_the_machine() {
        let (ending, _) = watch_script("echo hi; sleep 10", short(5000, 300), "");
        assert!(matches!(ending.end, End::Silent(_)), "{ending:?}");
        let (ending, lines) = watch_script(
            "while true; do echo tick; sleep 0.05; done",
            short(400, 5000),
            "",
        );
        assert!(matches!(ending.end, End::Deadline(_)), "{ending:?}");
        assert!(lines.len() > 2);
    }

    #[test]
    fn a_finished_run_that_does_not_power_off_is_stopped_quietly() {
        let (ending, _) = watch_script("echo done; sleep 10", short(5000, 5000), "done");
        assert!(matches!(ending.end, End::KilledAfterFinish), "{ending:?}");
    }

    #[test]
    fn a_panic_keeps_the_backtrace_then_stops_the_machine() {
        let text = "echo '[ 1.0] Kernel panic - not syncing: x'; for i in $(seq 40); do echo \"frame $i\"; done; sleep 10";
        let (ending, lines) = watch_script(text, short(5000, 5000), "");
        assert!(
            matches!(&ending.end, End::Panic(line) if line == "[ 1.0] Kernel panic - not syncing: x"),
            "{ending:?}"
        );
        assert!(lines.len() > 30 && lines.len() <= 32, "{}", lines.len());
        let (ending, _) = watch_script(
            "echo 'Kernel panic - not syncing: y'; sleep 10",
            short(5000, 5000),
            "",
        );
        assert!(matches!(&ending.end, End::Panic(_)), "{ending:?}");
    }
}
