//! The kernel's own voice: /dev/kmsg, read while the checks run. Every line goes to the host
//! side (which keeps a boot's whole log in the run directory); each check gets the lines the
//! kernel logged while it ran, those logged while other checks ran too marked with their
//! names; and a check during which the kernel warned (see [`mte_results::kernel_log`]) fails
//! with those lines as its evidence, whatever its comparisons said.
//!
//! /dev/kmsg has every line whatever the console's log level (the emulated machine boots
//! `quiet`, and init keeps the console to emergencies so that records are not cut apart).
//! Lines are read when a check starts or ends and while the runner says it is alive: a line
//! read at a check's start was logged before it, one read at its end while it ran.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, OnceLock, PoisonError};

use mte_results::kernel_log::is_warning;
use mte_results::stream::Record;
use mte_results::{Evidence, KernelLine, Lane, Outcome};
use mte_suites::Finding;

use crate::emit;

const KMSG: &str = "/dev/kmsg";
/// Lines a record carries at most: the boot's log arrives in a few records, not one huge line.
const LINES_A_RECORD: usize = 200;

/// The kernel log as this runner hears it.
pub struct KernelLog {
    state: Mutex<State>,
}

struct State {
    /// /dev/kmsg opened non-blocking, or why it cannot be read.
    kmsg: Result<File, String>,
    /// The checks running now, with the lines they heard so far.
    running: Vec<(String, Vec<KernelLine>)>,
    /// Lines not yet sent to the host side.
    unsent: Vec<String>,
    lines: usize,
    /// Lines heard by at least one check.
    attributed: usize,
}

static KERNEL_LOG: OnceLock<KernelLog> = OnceLock::new();

/// Start hearing the kernel of `lane`: the emulated machine's whole log since boot; the host's
/// from now on (its older lines are not this run's), when the runner is root; none in the
/// qemu lane, whose VMM is a QEMU under TCG with no kernel under test.
pub fn open(lane: Lane) -> &'static KernelLog {
    KERNEL_LOG.get_or_init(|| KernelLog {
        state: Mutex::new(State {
            kmsg: open_kmsg(lane),
            running: Vec::new(),
            unsent: Vec::new(),
            lines: 0,
            attributed: 0,
        }),
    })
}

fn open_kmsg(lane: Lane) -> Result<File, String> {
    match lane {
        Lane::Qemu => {
            return Err(
                "the qemu lane has no kernel under test (QEMU is the VMM, under TCG)".into(),
            )
        }
        // SAFETY: geteuid has no preconditions.
        Lane::Host if unsafe { libc::geteuid() } != 0 => {
            return Err(format!(
                "the runner is not root, and the host's {KMSG} is root's to read whole"
            ))
        }
        // The qemu-kvm lane runs QEMU on the kernel under test, as the emulated lane runs the runner.
        Lane::Host | Lane::Emulated | Lane::QemuKvm => {}
    }
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(KMSG)
        .map_err(|e| format!("{KMSG}: {e}"))?;
    if lane == Lane::Host {
        use std::io::{Seek, SeekFrom};
        kmsg.seek(SeekFrom::End(0))
            .map_err(|e| format!("{KMSG}: seeking to its end: {e}"))?;
    }
    Ok(kmsg)
}

/// The kernel log, once [`open`] has opened it.
pub fn open_already() -> Option<&'static KernelLog> {
    KERNEL_LOG.get()
}

/// Why the kernel log is not heard here, if it is not.
pub fn unavailable() -> Option<String> {
    let Some(log) = KERNEL_LOG.get() else {
        return Some("the runner has not opened the kernel log".into());
    };
    let state = log.state.lock().unwrap_or_else(PoisonError::into_inner);
    state.kmsg.as_ref().err().cloned()
}

impl KernelLog {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Read what the kernel logged since the last look and send it on.
    pub fn send(&self) {
        let mut state = self.state();
        state.read();
        let unsent = std::mem::take(&mut state.unsent);
        drop(state);
        for lines in unsent.chunks(LINES_A_RECORD) {
            emit::record(&Record::KernelLog {
                lines: lines.to_vec(),
            });
        }
    }

    /// `(lines heard, lines heard by a check)` so far.
    pub fn figures(&self) -> (usize, usize) {
        let mut state = self.state();
        state.read();
        (state.lines, state.attributed)
    }

    fn started(&self, test: &str) {
        let mut state = self.state();
        state.read();
        state.running.push((test.to_string(), Vec::new()));
    }

    fn finished(&self, test: &str) -> Vec<KernelLine> {
        let mut state = self.state();
        state.read();
        let at = state.running.iter().position(|(name, _)| name == test);
        at.map(|at| state.running.remove(at).1).unwrap_or_default()
    }
}

impl State {
    /// Every record the kernel has logged since the last read, each to the checks running.
    fn read(&mut self) {
        let Ok(kmsg) = &mut self.kmsg else {
            return;
        };
        let mut buffer = vec![0u8; 8192];
        let mut heard = Vec::new();
        loop {
            // One read, one record.
            match kmsg.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => heard.push(dmesg_line(&String::from_utf8_lossy(&buffer[..n]))),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // EPIPE: the ring buffer overwrote records before they were read.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => heard
                    .push("[kernel log: records were overwritten before they were read]".into()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    heard.push(format!("[kernel log: reading {KMSG} failed: {e}]"));
                    self.kmsg = Err(format!("{KMSG}: {e}"));
                    break;
                }
            }
        }
        self.hear(heard);
    }

    /// Lines just heard, to every check running (each marked with the others).
    fn hear(&mut self, heard: Vec<String>) {
        for text in heard {
            self.lines += 1;
            if !self.running.is_empty() {
                self.attributed += 1;
            }
            let names: Vec<String> = self.running.iter().map(|(n, _)| n.clone()).collect();
            // A warning the runner injected is its own check's alone: it is not the kernel's
            // voice, and must not fail a check that happens to run beside it.
            let only = injected_for(&text);
            for (name, lines) in &mut self.running {
                if only.is_some_and(|test| test != name) {
                    continue;
                }
                lines.push(KernelLine {
                    text: text.clone(),
                    also_running: names.iter().filter(|n| *n != name).cloned().collect(),
                });
            }
            self.unsent.push(text);
        }
    }
}

/// A /dev/kmsg record (`level,sequence,microseconds,flags;text` and `KEY=value` lines) as
/// dmesg prints it: `[seconds.micros] text`.
fn dmesg_line(record: &str) -> String {
    let first = record.lines().next().unwrap_or_default();
    let Some((prefix, text)) = first.split_once(';') else {
        return first.to_string();
    };
    let micros: u64 = prefix
        .split(',')
        .nth(2)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    format!(
        "[{:5}.{:06}] {text}",
        micros / 1_000_000,
        micros % 1_000_000
    )
}

/// What the runner's injected warnings say before the check's name.
const INJECTED: &str = "mte-runner: WARNING: injected by --inject kernel-warn while ";

/// The check a warning the runner injected was for, if `line` is one.
fn injected_for(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once(INJECTED)?;
    rest.strip_suffix(" ran")
}

/// Write a kernel warning into the log, as `--inject kernel-warn` does while a check runs.
fn inject_warning(test: &str) -> Result<(), String> {
    let line = format!("<4>{INJECTED}{test} ran\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(KMSG)
        .and_then(|mut kmsg| kmsg.write_all(line.as_bytes()))
        .map_err(|e| format!("writing to {KMSG}: {e}"))
}

/// Run the check `test` while hearing the kernel: its finding, with the lines the kernel
/// logged meanwhile, and a fail if the kernel warned. `inject_warning` writes a warning into
/// the log while it runs (`--inject kernel-warn`); where the log is not heard that is a skip,
/// as nothing could hear it.
pub fn during(test: &str, inject: bool, work: impl FnOnce() -> Finding) -> Finding {
    if let (true, Some(why)) = (inject, unavailable()) {
        return Finding::skip(format!(
            "the kernel log is not read here ({why}): an injected kernel warning cannot be heard"
        ));
    }
    let Some(log) = KERNEL_LOG.get() else {
        return work();
    };
    log.started(test);
    let mut injected = if inject {
        inject_warning(test).err()
    } else {
        None
    };
    let finding = work();
    let lines = log.finished(test);
    if let Some(why) = injected.take() {
        return Finding::fail(format!(
            "--inject kernel-warn could not write its warning: {why}"
        ));
    }
    judge(finding, lines)
}

/// The finding with the kernel's lines: a fail, whatever it was, when one of them warns.
pub fn judge(mut finding: Finding, lines: Vec<KernelLine>) -> Finding {
    if lines.is_empty() {
        return finding;
    }
    let warning = lines.iter().find(|l| is_warning(&l.text)).cloned();
    finding.detail.push(Evidence::KernelLog { lines });
    if let Some(warning) = warning {
        let was = match finding.outcome {
            Outcome::Fail => finding.reason.clone(),
            outcome => format!("{outcome}: {}", finding.reason),
        };
        finding.outcome = Outcome::Fail;
        finding.refuted = true;
        finding.reason = format!("the kernel warned while it ran: {warning}; the check: {was}");
    }
    finding
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records_read_as_dmesg_lines() {
        assert_eq!(
            dmesg_line(
                "6,339,5140900,-;NET: Registered PF_INET6 protocol family\n SUBSYSTEM=net\n"
            ),
            "[    5.140900] NET: Registered PF_INET6 protocol family"
        );
        assert_eq!(dmesg_line("odd"), "odd");
    }

    fn line(text: &str, also: &[&str]) -> KernelLine {
        KernelLine {
            text: text.into(),
            also_running: also.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_kernel_warning_fails_the_check_that_heard_it() {
        let passed = Finding {
            outcome: Outcome::Pass,
            reason: "tags agree".into(),
            detail: vec![],
            refuted: false,
        };
        let quiet = judge(passed.clone(), vec![line("[ 1.0] kvm: something", &[])]);
        assert_eq!(quiet.outcome, Outcome::Pass);
        assert!(matches!(&quiet.detail[0], Evidence::KernelLog { lines } if lines.len() == 1));

        let warned = judge(
            passed.clone(),
            vec![line(
                "[ 2.0] WARNING: CPU: 0 PID: 1 at mm/x.c:1",
                &["tags::y"],
            )],
        );
        assert_eq!(warned.outcome, Outcome::Fail);
        assert!(warned.refuted);
        assert!(warned.reason.contains("WARNING: CPU"), "{}", warned.reason);
        assert!(
            warned.reason.contains("also running: tags::y"),
            "{}",
            warned.reason
        );
        assert!(
            warned.reason.ends_with("pass: tags agree"),
            "{}",
            warned.reason
        );

        assert_eq!(
            judge(Finding::skip("no swap"), vec![]).outcome,
            Outcome::Skip
        );
    }

    #[test]
    fn lines_go_to_every_check_running_marked_as_shared() {
        let mut state = State {
            kmsg: Err("none".into()),
            running: vec![("a".into(), vec![]), ("b".into(), vec![])],
            unsent: vec![],
            lines: 0,
            attributed: 0,
        };
        state.hear(vec!["both".into()]);
        let (a, a_heard) = state.running.remove(0);
        state.hear(vec!["b alone".into()]);
        let (b, b_heard) = state.running.remove(0);
        state.hear(vec!["between checks".into()]);
        assert_eq!((state.lines, state.attributed), (3, 2));
        assert_eq!(state.unsent.len(), 3);
        assert_eq!((a.as_str(), a_heard), ("a", vec![line("both", &["b"])]));
        let b_expected = vec![line("both", &["a"]), line("b alone", &[])];
        assert_eq!((b.as_str(), b_heard), ("b", b_expected));

        // A warning the runner injected for one check is not heard by the other.
        state.running = vec![("a".into(), vec![]), ("b".into(), vec![])];
        let injected = format!("[    4.0] {INJECTED}b ran");
        assert_eq!(injected_for(&injected), Some("b"));
        state.hear(vec![injected.clone()]);
        assert!(state.running[0].1.is_empty());
        assert_eq!(state.running[1].1, vec![line(&injected, &["a"])]);
    }
}
