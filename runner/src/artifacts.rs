//! Artifacts in and out of this boot: a file a check keeps goes to the host side as a record;
//! a file the run's previous kernel kept is found where xtask put it in this machine. The KVM
//! lanes' VMM is given them by [`KeepsArtifacts`].

use std::io::ErrorKind;

use mte_results::artifact::{
    check_name, incoming_path, INCOMING_DIR, NEXT_KERNEL_WORD, SAVED_ON_FILE,
};
use mte_results::stream::Record;
use mte_results::Lane;
use mte_suites::migration_plan::{IncomingStream, StreamFault};
use mte_suites::vmm::{
    AbiVm, BootOptions, Guest, HostMte, IpaProbe, IpaSizes, SveOffer, Vmm, VmmError,
};

use crate::emit;

/// A VMM whose checks keep artifacts with the run, for its next kernel, and find those of the
/// run's previous kernel (the migration stream carried across kernels); everything else is the
/// VMM's own.
pub struct KeepsArtifacts<V>(pub V);

impl<V: Vmm> Vmm for KeepsArtifacts<V> {
    fn lane(&self) -> Lane {
        self.0.lane()
    }

    fn boot(&self, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
        self.0.boot(options)
    }

    fn abi_vm(&self, mte: bool) -> Result<Box<dyn AbiVm>, VmmError> {
        self.0.abi_vm(mte)
    }

    fn mte_capable(&self) -> Result<(), VmmError> {
        self.0.mte_capable()
    }

    fn kernel_release(&self) -> &str {
        self.0.kernel_release()
    }
    fn without_injection(&self) -> &dyn Vmm {
        self
    }

    fn restore(
        &self,
        stream: &[u8],
        fault: Option<StreamFault>,
    ) -> Result<Box<dyn Guest>, VmmError> {
        self.0.restore(stream, fault)
    }

    /// Sent only when a next kernel of the run will read it.
    fn keep_artifact(&self, name: &str, bytes: &[u8]) -> Result<bool, VmmError> {
        if !next_kernel_waits() {
            return Ok(false);
        }
        keep(name, bytes).map(|()| true)
    }

    fn incoming_stream(&self, name: &str) -> Result<Option<IncomingStream>, VmmError> {
        incoming(name)
    }

    fn ipa_sizes(&self) -> Result<IpaSizes, VmmError> {
        self.0.ipa_sizes()
    }

    fn ipa_probe(&self, bits: u32, top: u64) -> Result<IpaProbe, VmmError> {
        self.0.ipa_probe(bits, top)
    }

    fn host_mte(&self) -> Result<HostMte, VmmError> {
        self.0.host_mte()
    }

    fn sve_offer(&self) -> Result<SveOffer, VmmError> {
        self.0.sve_offer()
    }
}

/// Whether xtask said, on this machine's kernel command line, that a next kernel of the run
/// takes this one's artifacts.
fn next_kernel_waits() -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .is_ok_and(|line| line.split_whitespace().any(|word| word == NEXT_KERNEL_WORD))
}

/// Send `bytes` to the host side, which keeps them with the run under `name`.
pub fn keep(name: &str, bytes: &[u8]) -> Result<(), VmmError> {
    check_name(name).map_err(VmmError::Host)?;
    emit::record(&Record::Artifact {
        name: name.into(),
        bytes_base64: mte_results::base64::encode(bytes),
    });
    Ok(())
}

/// The artifact `name` the run's previous kernel kept, with that kernel's release; None when
/// this boot was given none.
pub fn incoming(name: &str) -> Result<Option<IncomingStream>, VmmError> {
    check_name(name).map_err(VmmError::Host)?;
    let path = incoming_path(name);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(VmmError::Sys {
                call: format!("read of {path}"),
                errno: e.raw_os_error().unwrap_or(0),
            })
        }
    };
    let saved_on = std::fs::read_to_string(format!("{INCOMING_DIR}/{SAVED_ON_FILE}"))
        .map(|text| text.trim().to_string())
        .ok()
        .filter(|release| !release.is_empty())
        .unwrap_or_else(|| "a kernel the run did not name".into());
    Ok(Some(IncomingStream {
        bytes,
        saved_on,
        path,
    }))
}
