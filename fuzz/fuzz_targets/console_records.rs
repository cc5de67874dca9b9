//! The emulated machine's console as xtask reads it: lines of kernel chatter with framed
//! records (`@@mte <crc32> <json>`) anywhere in them. A line is text, a record or a damaged
//! record, never a panic; a record read can be written again, and what the host side does with
//! one (an artifact's name and path, a kernel's folder, the run's reports) holds for any.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mte_fuzz::render_text_reports;
use mte_results::artifact::{check_name, kept_path};
use mte_results::stream::{crc32, frame, parse_line, Line, Record, MARKER};
use mte_results::summary::RunSummary;

fuzz_target!(|console: &[u8]| {
    let mut summary = RunSummary::default();
    // As xtask's console reader takes lines: split at newlines, decoded lossily, `\r` dropped.
    for raw in console.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(raw).replace('\r', "");
        if let Line::Record(record) = parse_line(&line) {
            take(*record, &mut summary);
        }
        // The same line with a CRC that holds, so that mutated records get past the checksum
        // to the JSON behind it.
        if let Some(repaired) = with_crc_repaired(&line) {
            if let Line::Record(record) = parse_line(&repaired) {
                take(*record, &mut summary);
            }
        }
    }
    render_text_reports(&summary);
});

/// `line` with the CRC of its record made to hold; `None` without a record or when it holds.
fn with_crc_repaired(line: &str) -> Option<String> {
    let start = line.find(MARKER)? + MARKER.len();
    let (crc, json) = line[start..].split_once(' ')?;
    let json = json.trim_end_matches(['\r', '\n']);
    let repaired = format!("{:08x}", crc32(json.as_bytes()));
    (crc != repaired).then(|| format!("{}{repaired} {json}", &line[..start]))
}

fn take(record: Record, summary: &mut RunSummary) {
    // What was read can be written again (into results.jsonl), and reads back the same.
    let framed = frame(&record);
    match parse_line(&framed) {
        Line::Record(again) => assert_eq!(*again, record, "a record framed again reads back"),
        other => panic!("a record framed again does not read back: {other:?}"),
    }
    match record {
        Record::Hello { environment, .. } => {
            assert_in_its_folder(&kept_path(
                environment.boot,
                &environment.kernel_release,
                "a",
            ));
            summary.environments.push(environment);
        }
        Record::Artifact { name, bytes_base64 } => {
            if check_name(&name).is_ok() {
                assert_in_its_folder(&kept_path(1, "6.12", &name));
            }
            let _ = mte_results::base64::decode(&bytes_base64);
        }
        Record::Verdict(verdict) => summary.verdicts.push(verdict),
        Record::Benchmark(benchmark) => summary.benchmarks.push(*benchmark),
        Record::Log { .. }
        | Record::Started { .. }
        | Record::Alive
        | Record::Done { .. }
        | Record::Abort { .. } => {}
    }
}

/// An artifact's path in the run directory is `artifacts/<kernel>/<name>`: three plain parts.
fn assert_in_its_folder(path: &str) {
    let parts: Vec<&str> = path.split('/').collect();
    assert_eq!(parts.len(), 3, "{path:?}");
    for part in parts {
        assert!(
            !part.is_empty() && part != "." && part != ".." && !part.contains('\0'),
            "{path:?}"
        );
    }
}
