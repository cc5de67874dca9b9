//! What QEMU's monitor sends the qemu lane's QMP client: a greeting, then replies and events,
//! one JSON object a line. Whatever arrives is a reply, an event skipped, or an error in
//! words, never a panic, and no line is held past the client's bound.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mte_vmm_qemu::qmp::Qmp;
use serde_json::json;

fuzz_target!(|monitor: &[u8]| {
    let Ok(mut qmp) = Qmp::negotiate(monitor, std::io::sink()) else {
        return;
    };
    let _ = qmp.execute("migrate", json!({ "uri": "unix:/tmp/m" }));
    let _ = qmp.execute("stop", json!({}));
    // No time to wait: the first status that is not final ends it.
    let _ = qmp.wait_for_migration(Duration::ZERO);
});
