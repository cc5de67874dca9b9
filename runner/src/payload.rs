//! Reading a payload image from the payload directory, for every backend that boots one.

use std::path::Path;

use mte_protocol::elf::{parse_payload, Elf};
use mte_suites::vmm::VmmError;

/// Read the payload at `path`, check it against the guest memory layout (see
/// `mte_protocol::elf`), and take what the backend needs from it with `take`. Returns the image
/// and what `take` took. The error for a payload that cannot be read or is corrupt says to
/// (re)build it with `cargo xtask build`; `take`'s errors should say so too.
pub fn read<T>(
    path: &Path,
    take: impl FnOnce(&Elf<'_>) -> Result<T, VmmError>,
) -> Result<(Vec<u8>, T), VmmError> {
    let image = std::fs::read(path).map_err(|e| {
        VmmError::Host(format!(
            "payload {} cannot be read ({e}); build it with `cargo xtask build`",
            path.display()
        ))
    })?;
    let elf = parse_payload(&image).map_err(|e| {
        VmmError::Host(format!(
            "payload {} is corrupt: {e}; rebuild it with `cargo xtask build`",
            path.display()
        ))
    })?;
    let taken = take(&elf)?;
    Ok((image, taken))
}
