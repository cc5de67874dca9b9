use std::path::PathBuf;

use mte_runner::{bench, emit, harness, init, machine_setup};

/// Payloads sit beside the runner unless told otherwise.
fn default_payload_dir() -> PathBuf {
    if init::is_init() {
        return PathBuf::from(init::PAYLOAD_DIR);
    }
    std::env::var_os("MTE_PAYLOAD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .unwrap_or_default()
        })
}

fn main() {
    // A migration destination the KVM backend's engine started from this executable.
    if let Some(code) = mte_vmm_kvm::serve_migration_destination_if_asked() {
        std::process::exit(code);
    }
    let as_init = init::is_init();
    let args = if as_init {
        init::set_up_machine();
        machine_setup::prepare_beside();
        init::read_args()
    } else {
        std::env::args().skip(1).collect()
    };
    let run = || match harness::Options::parse(args, default_payload_dir()) {
        Ok(options) if options.bench => bench::run(&options),
        Ok(options) => harness::run(&options),
        Err(message) => {
            emit::abort(format!("bad arguments: {message}"));
            eprintln!("mte-runner: {message}");
            false
        }
    };
    // As init, a panic outside the checks must still be told and must not kill init.
    let ok = std::panic::catch_unwind(run).unwrap_or_else(|_| {
        emit::abort("the runner panicked outside a check; see the console log");
        false
    });
    if as_init {
        init::power_off();
    }
    std::process::exit(if ok { 0 } else { 101 });
}
