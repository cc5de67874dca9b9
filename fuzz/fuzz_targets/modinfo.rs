//! A kernel module from a kernel package, as xtask reads it for the modules it loads at boot:
//! an ELF object whose `.modinfo` section holds `key=value` strings. Any bytes are a list of
//! strings or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mte_fuzz::modinfo::{modinfo, split_depends};

fuzz_target!(|module: &[u8]| {
    let Ok(info) = modinfo(module) else {
        return;
    };
    for (key, value) in info {
        assert!(!key.contains('\0') && !key.contains('='));
        if key == "depends" {
            for name in split_depends(&value) {
                assert!(!name.is_empty() && !name.contains(',') && !name.contains('-'));
            }
        }
    }
});
