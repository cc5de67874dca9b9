//! The host kernel's MTE as its processes see it: the hwcaps in the auxiliary vector.

use mte_suites::vmm::{HostMte, VmmError};

/// HWCAP2_MTE (FEAT_MTE2) and HWCAP2_MTE3 (FEAT_MTE3), arch/arm64/include/uapi/asm/hwcap.h.
const HWCAP2_MTE: u64 = 1 << 18;
const HWCAP2_MTE3: u64 = 1 << 22;

/// Where the bits mean MTE (arm64), the host's level; elsewhere no arm64 KVM to compare with.
pub fn host_mte() -> Result<HostMte, VmmError> {
    if !cfg!(target_arch = "aarch64") {
        return Err(VmmError::Unsupported(
            "the host's MTE hwcaps: an arm64 host".into(),
        ));
    }
    // SAFETY: getauxval only reads the process's auxiliary vector.
    let hwcap2 = unsafe { libc::getauxval(libc::AT_HWCAP2) } as u64;
    Ok(from_hwcap2(hwcap2))
}

fn from_hwcap2(hwcap2: u64) -> HostMte {
    let level = match (hwcap2 & HWCAP2_MTE != 0, hwcap2 & HWCAP2_MTE3 != 0) {
        (_, true) => 3,
        (true, false) => 2,
        (false, false) => 0,
    };
    let named: Vec<&str> = [(HWCAP2_MTE, "mte"), (HWCAP2_MTE3, "mte3")]
        .into_iter()
        .filter(|&(bit, _)| hwcap2 & bit != 0)
        .map(|(_, name)| name)
        .collect();
    HostMte {
        level,
        source: format!(
            "getauxval(AT_HWCAP2) = {hwcap2:#x}: hwcaps [{}]",
            named.join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hwcaps_give_the_level() {
        assert_eq!(from_hwcap2(0).level, 0);
        assert_eq!(from_hwcap2(HWCAP2_MTE).level, 2);
        assert_eq!(from_hwcap2(HWCAP2_MTE | HWCAP2_MTE3).level, 3);
        assert!(from_hwcap2(HWCAP2_MTE | HWCAP2_MTE3)
            .source
            .contains("[mte mte3]"));
    }
}
