//! Sending records to the host side: one framed line each, written whole and flushed at once so
//! that records from parallel checks never interleave and none is lost if the run dies later.

use std::io::Write;

use mte_results::stream::{frame, Record};

pub fn record(record: &Record) {
    let line = frame(record) + "\n";
    let mut out = std::io::stdout().lock();
    // A console that cannot be written to leaves nobody to tell; carry on with the checks.
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

pub fn log(text: impl Into<String>) {
    record(&Record::Log { text: text.into() });
}

/// The last word of a runner that cannot carry out its run.
pub fn abort(reason: impl Into<String>) {
    record(&Record::Abort {
        reason: reason.into(),
    });
}
