//! Booting the guest a check needs: with MTE (a skip where its CPU has no tag storage), on a
//! given backing, or without MTE for a control.

use super::command::require_mte;
use crate::error::VmmError;
use crate::host_mm::Backing;
use crate::vmm::{BootOptions, Guest, Vmm};

/// Boot a guest as `options` say; skip where its CPU has no tag storage.
pub fn boot_tagged(vmm: &dyn Vmm, options: &BootOptions) -> Result<Box<dyn Guest>, VmmError> {
    let guest = vmm.boot(options)?;
    require_mte(&guest.ids())?;
    Ok(guest)
}

/// Boot a guest with MTE as the lane boots one by default.
pub fn boot(vmm: &dyn Vmm) -> Result<Box<dyn Guest>, VmmError> {
    boot_tagged(vmm, &BootOptions::default())
}

/// Boot a guest with MTE on `backing`.
pub fn boot_on(vmm: &dyn Vmm, backing: Backing) -> Result<Box<dyn Guest>, VmmError> {
    boot_tagged(
        vmm,
        &BootOptions {
            backing: Some(backing),
            ..BootOptions::default()
        },
    )
}

/// Boot a guest with MTE on private anonymous RAM that the lane's VMM maps itself: what the
/// checks of the host's memory management work on. Skips elsewhere.
pub fn boot_private(vmm: &dyn Vmm) -> Result<Box<dyn Guest>, VmmError> {
    let guest = boot_on(vmm, Backing::PrivateAnonymous)?;
    require_backing(guest.as_ref(), Backing::PrivateAnonymous)?;
    Ok(guest)
}

/// Boot a guest without MTE (its pages are never tagged): the control of cost measurements.
pub fn boot_untagged(vmm: &dyn Vmm) -> Result<Box<dyn Guest>, VmmError> {
    vmm.boot(&BootOptions {
        mte: false,
        ..BootOptions::default()
    })
}

/// Skip unless the lane's VMM owns the mapping of guest RAM (and made it as asked).
pub fn require_backing(guest: &dyn Guest, wanted: Backing) -> Result<(), VmmError> {
    let actual = guest.ram_backing()?;
    if actual != wanted {
        return Err(VmmError::Host(format!(
            "asked for guest RAM backed by {}, the VMM made {}",
            wanted.describe(),
            actual.describe()
        )));
    }
    Ok(())
}
