//! The record stream from the runner to the host side.
//!
//! In the emulated lane the runner's only way out is the serial console, which it shares with the
//! kernel. Each record is therefore one line, `@@mte <crc32> <json>`, that can start anywhere on
//! a console line (after kernel noise) and carries a CRC-32 of its JSON: a record that was cut or
//! interleaved is detected, never misread.

use serde::{Deserialize, Serialize};

use crate::bench::Benchmark;
use crate::model::{Environment, Tally, Verdict};

/// Marks the start of a record on a console line.
pub const MARKER: &str = "@@mte ";

/// How often the runner says it is alive while checks run.
pub const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// One message from the runner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// First record of a run: where it runs and which checks it will run.
    Hello {
        schema: u32,
        environment: Environment,
        /// Checks the selection runs (0 when listing).
        planned: usize,
        /// Checks the runner knows, selected or not.
        available: usize,
        /// `--list`: the check names follow as Log records, one `NAME: test` each; no check runs.
        list: bool,
        /// The selection in words (filter, --exact, --skip, --ignored); empty for every check.
        selection: String,
        /// The performance suite: `planned` and `available` count benchmarks, which arrive as
        /// Benchmark records instead of verdicts.
        #[serde(default)]
        bench: bool,
        /// What the lane's machine or VMM lacks of what the lane needs, with what to do: a run
        /// error however its checks end (those that need what is missing skip saying so).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        setup_error: Option<String>,
        /// The planned checks by name, so that those that never report can be named.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<String>,
    },
    /// A check started; its verdict ends it. What was running when a machine stopped.
    Started { test: String },
    /// The runner is alive: sent every [`ALIVE_EVERY`] while checks run, so that a machine that
    /// stopped (a hung kernel) is told from checks that take long.
    Alive,
    /// One check's verdict, sent as soon as it is known.
    Verdict(Verdict),
    /// One benchmark's result, sent as soon as criterion has analysed it.
    Benchmark(Box<Benchmark>),
    /// A file a check leaves for the host side to keep with the run, e.g. a migration stream
    /// saved on this kernel for the next kernel of the run to restore. `name` is a plain file
    /// name (letters, digits, `_`, `-`, `.`); the bytes travel as base64.
    Artifact { name: String, bytes_base64: String },
    /// Progress or diagnostics worth keeping in the run log.
    Log { text: String },
    /// Last record of a run: the runner finished normally.
    Done { tally: Tally, wall_ms: f64 },
    /// Last record of a run the runner could not carry out (bad arguments, a panic outside
    /// the checks): why.
    Abort { reason: String },
}

/// Frame a record as one console line (without the newline).
pub fn frame(record: &Record) -> String {
    let json = serde_json::to_string(record).expect("records always serialise");
    format!("{MARKER}{:08x} {json}", crc32(json.as_bytes()))
}

/// What a console line holds.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A line without a record: kernel or runner chatter.
    Text,
    Record(Box<Record>),
    /// A line with a marker whose record is damaged: the reason.
    Corrupt(String),
}

/// Parse one console line.
pub fn parse_line(line: &str) -> Line {
    let Some(start) = line.find(MARKER) else {
        return Line::Text;
    };
    let rest = line[start + MARKER.len()..].trim_end_matches(['\r', '\n']);
    let Some((crc_hex, json)) = rest.split_once(' ') else {
        return Line::Corrupt("record without a CRC".into());
    };
    let Ok(crc) = u32::from_str_radix(crc_hex, 16) else {
        return Line::Corrupt(format!("record CRC {crc_hex:?} is not hex"));
    };
    if crc32(json.as_bytes()) != crc {
        return Line::Corrupt(format!(
            "record CRC mismatch (line cut or interleaved): {json:.120}"
        ));
    }
    match serde_json::from_str(json) {
        Ok(record) => Line::Record(Box::new(record)),
        Err(e) => Line::Corrupt(format!("record does not parse: {e}")),
    }
}

/// CRC-32 (IEEE 802.3) of the record frames, which the migration streams use too.
pub use crc32fast::hash as crc32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn hello_records_of_older_runners_read_as_check_runs() {
        let line = r#"{"record":"hello","schema":2,"environment":{"lane":"emulated","kernel_release":"6.12","kernel_version":"","machine":"","runner_version":"","features":[],"host":[]},"planned":1,"available":1,"list":false,"selection":""}"#;
        match serde_json::from_str::<Record>(line).unwrap() {
            Record::Hello { bench, .. } => assert!(!bench),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn records_round_trip_after_console_noise() {
        let rec = Record::Log {
            text: "booted \"6.12\"".into(),
        };
        let line = format!("[    1.234] noise{}\r\n", frame(&rec));
        assert_eq!(parse_line(&line), Line::Record(Box::new(rec)));
        assert_eq!(parse_line("[    0.000] Booting Linux"), Line::Text);
    }

    #[test]
    fn artifacts_round_trip_with_their_bytes() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let rec = Record::Artifact {
            name: "migration-sparse.stream".into(),
            bytes_base64: crate::base64::encode(&bytes),
        };
        let Line::Record(parsed) = parse_line(&frame(&rec)) else {
            panic!("an artifact record parses");
        };
        assert_eq!(*parsed, rec);
        let Record::Artifact { bytes_base64, .. } = *parsed else {
            unreachable!()
        };
        assert_eq!(crate::base64::decode(&bytes_base64).unwrap(), bytes);
    }

    #[test]
    fn damaged_records_are_reported_not_misread() {
        let line = frame(&Record::Log {
            text: "abcdef".into(),
        });
        let cut = &line[..line.len() - 3];
        assert!(matches!(parse_line(cut), Line::Corrupt(_)));
        let flipped = line.replace("abcdef", "abcdeg");
        assert!(matches!(parse_line(&flipped), Line::Corrupt(m) if m.contains("CRC mismatch")));
        assert!(matches!(parse_line("@@mte zz {}"), Line::Corrupt(_)));
    }
}
