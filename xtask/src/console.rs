//! A process whose stdout carries a lane's records, as the emulated machine's console or a
//! runner's output does: read line by line under deadlines, with its stderr kept for errors.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;
use mte_results::kernel_log;
use mte_results::stream::MARKER;

/// After a kernel panic, how many more lines (the backtrace) are kept.
const PANIC_TAIL_LINES: usize = 30;
/// The process's own messages (stderr) kept for error reports.
const STDERR_KEPT: usize = 20;
/// The longest console line taken whole: far above the longest record (an artifact of a guest's
/// whole RAM in base64); a machine that never ends its line has the rest come as further
/// lines, whose records then fail their checksum, instead of growing one without bound.
const MAX_LINE: u64 = 128 << 20;

/// When a process that is still running is stopped.
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
    /// Once a runner that beats has gone silent, the further time the kernel is given to
    /// report what is stuck (its soft-lockup watchdog speaks after 20 s, later under TCG):
    /// its words tell a kernel that stopped from a machine that did.
    pub kernel_report_grace: Duration,
    /// After the kernel reported a stuck CPU or task while the runner is silent, the time
    /// given to print the backtrace.
    pub stuck_tail: Duration,
}

impl Deadlines {
    pub fn with_overall(overall: Duration) -> Self {
        Deadlines {
            overall,
            silence: Duration::from_secs(300),
            power_off: Duration::from_secs(30),
            panic_tail: Duration::from_secs(10),
            kernel_report_grace: Duration::from_secs(30),
            stuck_tail: Duration::from_secs(3),
        }
    }
}

/// What the console consumer tells the process after each line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The runner says it is alive at least this often from now on: a silence longer than
    /// this means the machine stopped (a hung kernel), whatever the silence deadline says.
    AliveEvery(Duration),
    /// The runner said its last word: the process should end now.
    Finished,
}

/// A runner that says it is alive every so often has missed this many of its beats when the
/// machine is taken to have stopped: a loaded host (two cores, TCG) delays a beat, never six.
const BEATS_MISSED: u32 = 6;
/// Once the kernel has reported a stuck CPU or task, a runner that missed this many beats is
/// taken to be stuck with it.
const BEATS_MISSED_AFTER_A_STUCK_REPORT: u32 = 2;

/// How the process's run ended.
#[derive(Debug)]
pub enum End {
    /// It exited by itself (the runner powered off, or QEMU failed).
    Exited(ExitStatus),
    /// The run was complete but the process did not end in time; it was killed.
    KilledAfterFinish,
    /// The overall deadline passed; it was killed.
    Deadline(Duration),
    /// Nothing came out of the console for this long; it was killed.
    Silent(Duration),
    /// The kernel panicked: the panic line. The process was stopped after the backtrace.
    Panic(String),
}

#[derive(Debug)]
pub struct Ending {
    pub end: End,
    /// The process's last messages on stderr.
    pub qemu_stderr: Vec<String>,
}

enum Event {
    Console(String),
    Stderr(String),
    ConsoleClosed,
}

/// The command line as a person would type it, for the run's record.
pub fn command_line(program: &Path, args: &[String]) -> String {
    std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
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

/// Start `program` with `args` and watch it as [`watch`] does.
pub fn run(
    program: &Path,
    args: &[String],
    deadlines: Deadlines,
    on_line: &mut dyn FnMut(&str) -> Flow,
) -> anyhow::Result<Ending> {
    let mut command = Command::new(program);
    command.args(args);
    watch(command, deadlines, on_line).with_context(|| format!("starting {}", program.display()))
}

/// Run `command` with its stdout as the console, under `deadlines`, handing every line to
/// `on_line`; its stderr lines reach `on_line` too, prefixed with `qemu: `.
pub fn watch(
    mut command: Command,
    deadlines: Deadlines,
    on_line: &mut dyn FnMut(&str) -> Flow,
) -> std::io::Result<Ending> {
    // No stdin: QEMU leaves the terminal alone, and CI has none to give. The process stays in
    // this process group, so Ctrl-C stops it together with xtask.
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (events, inbox) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    spawn_line_reader(stdout, events.clone(), Event::Console, true);
    spawn_line_reader(stderr, events, Event::Stderr, false);
    let mut watch = Watch {
        deadlines,
        on_line,
        started: Instant::now(),
        last_line: Instant::now(),
        runner_beats: None,
        stuck_reported: None,
        finished_at: None,
        panic: None,
        stderr: Vec::new(),
    };
    let end = watch.until_end(&mut child, &inbox)?;
    watch.drain_stderr(&inbox);
    Ok(Ending {
        end,
        qemu_stderr: watch.stderr,
    })
}

/// A kernel panic seen on the console: its line, when, and the lines since.
struct Panic {
    line: String,
    at: Instant,
    tail: usize,
}

/// The state of a watched process between its lines.
struct Watch<'a> {
    deadlines: Deadlines,
    on_line: &'a mut dyn FnMut(&str) -> Flow,
    started: Instant,
    /// The last sign of life: any line until the runner beats, then only the runner's records.
    last_line: Instant,
    /// How often the runner says it is alive, once it does: from then on a kernel that keeps
    /// printing (a soft lockup reported every 20 s) is no sign that the runner lives.
    runner_beats: Option<Duration>,
    /// When the kernel reported a stuck CPU or task (a soft lockup, a stall, a hung task).
    stuck_reported: Option<Instant>,
    /// When the runner said its last word.
    finished_at: Option<Instant>,
    panic: Option<Panic>,
    stderr: Vec<String>,
}

impl Watch<'_> {
    /// Take events until the process ends or is stopped.
    fn until_end(&mut self, child: &mut Child, inbox: &Receiver<Event>) -> std::io::Result<End> {
        loop {
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            let event = inbox.recv_timeout(wait);
            let now = Instant::now();
            match event {
                Ok(Event::Console(line)) => {
                    if let Some(panic_line) = self.on_console(&line, now) {
                        kill(child);
                        return Ok(End::Panic(panic_line));
                    }
                }
                Ok(Event::Stderr(line)) => {
                    self.last_line = now;
                    self.on_stderr(line);
                }
                Ok(Event::ConsoleClosed) | Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait()?;
                    return Ok(match self.panic.take() {
                        Some(panic) => End::Panic(panic.line),
                        None => End::Exited(status),
                    });
                }
                Err(RecvTimeoutError::Timeout) => {
                    kill(child);
                    return Ok(self.timed_out(now));
                }
            }
        }
    }

    /// When the machine is taken to have stopped, if nothing more is heard: after the silence
    /// deadline; with a runner that beats, later by the grace that lets the kernel say what is
    /// stuck, and sooner once it has said so.
    fn silent_deadline(&self) -> Instant {
        let silent = self.last_line + self.deadlines.silence;
        match (self.runner_beats, self.stuck_reported) {
            (None, _) => silent,
            (Some(_), None) => silent + self.deadlines.kernel_report_grace,
            (Some(every), Some(at)) => silent
                .min(self.last_line + every * BEATS_MISSED_AFTER_A_STUCK_REPORT)
                .max(at + self.deadlines.stuck_tail),
        }
    }

    /// The earliest deadline now in force.
    fn next_deadline(&self) -> Instant {
        let mut deadline = (self.started + self.deadlines.overall).min(self.silent_deadline());
        if let Some(at) = self.finished_at {
            deadline = deadline.min(at + self.deadlines.power_off);
        }
        if let Some(panic) = &self.panic {
            deadline = deadline.min(panic.at + self.deadlines.panic_tail);
        }
        deadline
    }

    /// Hand on a console line and follow a panic's backtrace; the panic line once the
    /// backtrace is complete.
    fn on_console(&mut self, line: &str, now: Instant) -> Option<String> {
        let record = line.contains(MARKER);
        if self.runner_beats.is_none() || record {
            self.last_line = now;
        }
        if !record && self.stuck_reported.is_none() && kernel_log::reports_stuck(line) {
            self.stuck_reported = Some(now);
        }
        match (self.on_line)(line) {
            Flow::Finished if self.finished_at.is_none() => self.finished_at = Some(now),
            Flow::AliveEvery(every) => {
                self.runner_beats = Some(every);
                self.deadlines.silence = self.deadlines.silence.min(every * BEATS_MISSED)
            }
            _ => {}
        }
        match &mut self.panic {
            Some(panic) => panic.tail += 1,
            // A record may quote a panic; only the kernel's own line counts.
            None if line.contains("Kernel panic") && !line.contains(MARKER) => {
                self.panic = Some(Panic {
                    line: line.trim().to_string(),
                    at: now,
                    tail: 0,
                })
            }
            None => {}
        }
        let panic = self.panic.as_ref()?;
        (panic.tail >= PANIC_TAIL_LINES).then(|| panic.line.clone())
    }

    fn on_stderr(&mut self, line: String) {
        (self.on_line)(&format!("qemu: {line}"));
        if self.stderr.len() == STDERR_KEPT {
            self.stderr.remove(0);
        }
        self.stderr.push(line);
    }

    /// Which deadline passed at `now`.
    fn timed_out(&mut self, now: Instant) -> End {
        if let Some(panic) = self.panic.take() {
            End::Panic(panic.line)
        } else if self
            .finished_at
            .is_some_and(|at| now >= at + self.deadlines.power_off)
        {
            End::KilledAfterFinish
        } else if now >= self.started + self.deadlines.overall {
            End::Deadline(self.deadlines.overall)
        } else {
            End::Silent(now.saturating_duration_since(self.last_line))
        }
    }

    /// The process's last words on stderr may still be in flight after its stdout closed.
    fn drain_stderr(&mut self, inbox: &Receiver<Event>) {
        let until = Instant::now() + Duration::from_millis(300);
        while let Ok(event) = inbox.recv_timeout(until.saturating_duration_since(Instant::now())) {
            if let Event::Stderr(line) = event {
                (self.on_line)(&format!("qemu: {line}"));
                self.stderr.push(line);
            }
        }
    }
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
            match read_line(&mut reader, &mut buffer, MAX_LINE) {
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

/// One line of `reader` into `buffer` (with its newline, if it came), at most `limit` bytes.
fn read_line(
    reader: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    limit: u64,
) -> std::io::Result<usize> {
    reader.take(limit).read_until(b'\n', buffer)
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_quoted_for_a_shell() {
        let args = ["-append", "console=ttyAMA0 quiet", "it's"].map(String::from);
        assert_eq!(
            command_line(Path::new("/usr/bin/qemu"), &args),
            r"/usr/bin/qemu -append 'console=ttyAMA0 quiet' 'it'\''s'"
        );
    }

    #[test]
    fn a_line_without_its_end_comes_in_bounded_pieces() {
        let mut console = &b"0123456789abc\nde"[..];
        let mut pieces = Vec::new();
        let mut buffer = Vec::new();
        while read_line(&mut console, &mut buffer, 5).unwrap() > 0 {
            pieces.push(String::from_utf8(std::mem::take(&mut buffer)).unwrap());
        }
        assert_eq!(pieces, ["01234", "56789", "abc\n", "de"]);
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
            kernel_report_grace: Duration::from_millis(300),
            stuck_tail: Duration::from_millis(100),
        }
    }

    /// Run `text` as the machine; returns how it ended and the lines seen.
    fn watch_script(text: &str, deadlines: Deadlines, finish_on: &str) -> (Ending, Vec<String>) {
        let mut lines = Vec::new();
        let ending = watch(script(text), deadlines, &mut |line| {
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
    fn a_kernel_that_keeps_printing_does_not_keep_a_silent_runner_alive() {
        let started = Instant::now();
        let ending = watch(
            script(&format!(
                "echo '{MARKER} alive'; while true; do echo 'watchdog: BUG: soft lockup'; sleep 0.02; done"
            )),
            short(5000, 5000),
            &mut |line| match line.contains(MARKER) {
                true => Flow::AliveEvery(Duration::from_millis(50)),
                false => Flow::Continue,
            },
        )
        .unwrap();
        assert!(matches!(ending.end, End::Silent(_)), "{ending:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_kernel_that_reports_a_lockup_in_the_grace_ends_the_wait() {
        let started = Instant::now();
        let mut deadlines = short(20_000, 20_000);
        deadlines.kernel_report_grace = Duration::from_secs(10);
        let ending = watch(
            script(&format!(
                "echo '{MARKER} alive'; sleep 0.5; echo 'watchdog: BUG: soft lockup - CPU#1'; \
                 echo 'Call trace:'; sleep 20"
            )),
            deadlines,
            &mut |line| match line.contains(MARKER) {
                true => Flow::AliveEvery(Duration::from_millis(50)),
                false => Flow::Continue,
            },
        )
        .unwrap();
        assert!(matches!(ending.end, End::Silent(_)), "{ending:?}");
        // Past the six beats and in the grace: the report ends the wait a tail later.
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn a_runner_that_stops_saying_it_is_alive_is_found_silent_soon() {
        let started = Instant::now();
        let mut lines = 0;
        let ending = watch(
            script("echo alive; sleep 10"),
            short(5000, 5000),
            &mut |_| {
                lines += 1;
                Flow::AliveEvery(Duration::from_millis(50))
            },
        )
        .unwrap();
        // Six missed beats, then the grace the kernel has to say what is stuck.
        assert!(
            matches!(ending.end, End::Silent(silent) if silent >= Duration::from_millis(600)),
            "{ending:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(lines, 1);
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
