//! The record stream from the runner to the host side.
//!
//! In the emulated lane the runner's only way out is the serial console, which it shares with the
//! kernel. Each record is therefore one line, `@@mte <crc32> <json>`, that can start anywhere on
//! a console line (after kernel noise) and carries a CRC-32 of its JSON: a record that was cut or
//! interleaved is detected, never misread.

use serde::{Deserialize, Serialize};

use crate::model::{Environment, Tally, Verdict};

/// Marks the start of a record on a console line.
pub const MARKER: &str = "@@mte ";

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
    },
    /// One check's verdict, sent as soon as it is known.
    Verdict(Verdict),
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

/// CRC-32 (IEEE 802.3, reflected), bitwise: records are small and few.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
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
