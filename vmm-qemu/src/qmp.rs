//! A small QMP client (QEMU's JSON machine protocol over a Unix socket): the qemu lane uses it
//! for what the gdbstub cannot do, which is migration.
//!
//! QMP is line-based JSON: a greeting, then `qmp_capabilities`, then one reply per command,
//! with asynchronous events interleaved (they are skipped here).
//!
//! Hand-written: the QMP crates generate the whole QAPI schema at build time (qapi) or need an
//! async runtime (qmp), for the three commands sent here.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A connected QMP monitor in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
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
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
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
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QMP: QEMU closed the monitor".into()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("QMP: {e} in {line:?}")),
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
