//! A small QMP client (QEMU's JSON machine protocol over a Unix socket): the qemu lane uses it
//! for what the gdbstub cannot do, which is migration.
//!
//! QMP is line-based JSON: a greeting, then `qmp_capabilities`, then one reply per command,
//! with asynchronous events interleaved (they are skipped here).
//!
//! Hand-written: the QMP crates generate the whole QAPI schema at build time (qapi) or need an
//! async runtime (qmp), for the three commands sent here.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The longest message taken from QEMU: far above any reply to the commands sent here, and a
/// bound on what a monitor that never ends its line can make the client hold.
pub const MAX_MESSAGE: usize = 1 << 20;

/// A connected QMP monitor in command mode; over a socket unless a test gives other ends.
pub struct Qmp<R = BufReader<UnixStream>, W = UnixStream> {
    reader: R,
    writer: W,
}

impl Qmp {
    /// Connect to the monitor at `socket` and leave capabilities negotiation, within `limit`.
    pub fn connect(socket: &Path, limit: Duration) -> Result<Self, String> {
        let deadline = Instant::now() + limit;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("QMP at {}: {e}", socket.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        stream
            .set_read_timeout(Some(limit))
            .map_err(|e| format!("QMP socket: {e}"))?;
        let writer = stream.try_clone().map_err(|e| format!("QMP socket: {e}"))?;
        Qmp::negotiate(BufReader::new(stream), writer)
    }
}

impl<R: BufRead, W: Write> Qmp<R, W> {
    /// Take QEMU's greeting from `reader` and leave capabilities negotiation.
    pub fn negotiate(reader: R, writer: W) -> Result<Self, String> {
        let mut qmp = Qmp { reader, writer };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("QMP greeting expected, got {greeting}"));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Run `command`; its `return` value, or QEMU's error description.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
        let mut request = json!({ "execute": command });
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("QMP {command}: {e}"))?;
        loop {
            let reply = self.read_message()?;
            if reply.get("event").is_some() {
                continue;
            }
            return reply_of(command, reply);
        }
    }

    /// Run `command` and wait, within `limit`, for QEMU's `event` that says it is done (a
    /// `system_reset` returns at once; the machine has reset at its `RESET` event).
    pub fn execute_until_event(
        &mut self,
        command: &str,
        event: &str,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let line = format!("{}\n", json!({ "execute": command }));
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("QMP {command}: {e}"))?;
        let (mut replied, mut happened) = (false, false);
        while !(replied && happened) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "no {event} event within {:.1} s of QMP {command}",
                    limit.as_secs_f64()
                ));
            }
            let message = self.read_message()?;
            match message.get("event").and_then(Value::as_str) {
                Some(name) => happened |= name == event,
                None => {
                    reply_of(command, message)?;
                    replied = true;
                }
            }
        }
        Ok(())
    }

    fn read_message(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let limit = MAX_MESSAGE as u64 + 1;
        match (&mut self.reader).take(limit).read_line(&mut line) {
            Ok(0) => Err("QMP: QEMU closed the monitor".into()),
            Ok(n) if n > MAX_MESSAGE => Err(format!(
                "QMP: a message longer than {MAX_MESSAGE} bytes, starting {:?}",
                start_of(&line)
            )),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| format!("QMP: {e} in {:?}", start_of(&line))),
            Err(e) => Err(format!("QMP: {e}")),
        }
    }

    /// Poll `query-migrate` until the migration (outgoing, or incoming on a destination)
    /// completes; its final status object. A failed migration is QEMU's error description.
    pub fn wait_for_migration(&mut self, limit: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.execute("query-migrate", json!({}))?;
            match status.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(status),
                Some("failed") | Some("cancelled") => {
                    let why = status
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(format!("migration failed: {why}"));
                }
                _ if Instant::now() >= deadline => {
                    return Err(format!(
                        "migration did not complete within {:.1} s (last status {status})",
                        limit.as_secs_f64()
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// The start of a message, for an error that quotes it.
fn start_of(message: &str) -> &str {
    const SHOWN: usize = 200;
    match message.char_indices().nth(SHOWN) {
        Some((at, _)) => &message[..at],
        None => message,
    }
}

/// The `return` of a reply, or its `error` in words.
fn reply_of(command: &str, reply: Value) -> Result<Value, String> {
    if let Some(value) = reply.get("return") {
        return Ok(value.clone());
    }
    let error = reply.get("error");
    let class = error
        .and_then(|e| e.get("class"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let desc = error
        .and_then(|e| e.get("desc"))
        .and_then(Value::as_str)
        .unwrap_or("no description");
    Err(format!("QMP {command} failed ({class}): {desc}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 10.0's monitor as the qemu lane meets it: the greeting, an event between a
    /// command and its reply, a migration's statuses.
    const SESSION: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}
{"return": {}}
{"timestamp": {"seconds": 1765137000, "microseconds": 1}, "event": "STOP"}
{"return": {}}
{"return": {"status": "active"}}
{"return": {"status": "completed", "total-time": 19}}
"#;

    #[test]
    fn a_session_skips_events_and_follows_the_migration() {
        let mut qmp = Qmp::negotiate(SESSION.as_bytes(), Vec::new()).unwrap();
        assert_eq!(
            qmp.execute("migrate", json!({"uri": "file:/m"})).unwrap(),
            json!({})
        );
        let done = qmp.wait_for_migration(Duration::from_secs(5)).unwrap();
        assert_eq!(done["total-time"], 19);
        let sent = String::from_utf8(qmp.writer).unwrap();
        assert_eq!(
            sent.lines().collect::<Vec<_>>(),
            [
                r#"{"execute":"qmp_capabilities"}"#,
                r#"{"arguments":{"uri":"file:/m"},"execute":"migrate"}"#,
                r#"{"execute":"query-migrate"}"#,
                r#"{"execute":"query-migrate"}"#,
            ]
        );
        assert!(Qmp::negotiate(&b"{\"return\": {}}\n"[..], Vec::new())
            .err()
            .unwrap()
            .contains("greeting expected"));
        assert!(Qmp::negotiate(&b""[..], Vec::new())
            .err()
            .unwrap()
            .contains("closed"));
    }

    #[test]
    fn a_message_without_its_end_is_bounded() {
        let mut endless = br#"{"QMP": ""#.to_vec();
        endless.resize(MAX_MESSAGE + 100, b'x');
        let error = Qmp::negotiate(&endless[..], Vec::new()).err().unwrap();
        assert!(error.contains("longer than"), "{error:.100}");
        assert!(error.len() < 400, "the error quotes only the start");
    }

    #[test]
    fn replies_give_their_return_or_their_error_in_words() {
        assert_eq!(reply_of("stop", json!({"return": {}})).unwrap(), json!({}));
        let refused = json!({"error": {"class": "GenericError", "desc": "Live migration disabled due to MTE enabled"}});
        assert_eq!(
            reply_of("migrate", refused).unwrap_err(),
            "QMP migrate failed (GenericError): Live migration disabled due to MTE enabled"
        );
    }
}
