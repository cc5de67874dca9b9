//! Where MTE went missing in a machine that should have it. Three layers must each give it for
//! KVM to hand MTE to a guest: the CPU (QEMU's `mte=on` in the emulated lane), the kernel (built
//! with CONFIG_ARM64_MTE, not switched off with `arm64.nomte`) and KVM (KVM_CAP_ARM_MTE). Each
//! layer shows itself in its own place, which is how they are told apart: the kernel's command
//! line, its config, the `mte` hwcap of /proc/cpuinfo (the kernel uses MTE), the ID register
//! the kernel shows user space, and KVM_CHECK_EXTENSION.

use mte_results::Feature;

/// What the machine shows of MTE, layer by layer; `None` where a place could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MteSigns {
    /// The kernel's command line (`/proc/cmdline`).
    pub cmdline: String,
    /// CONFIG_ARM64_MTE of the kernel's config.
    pub config_arm64_mte: Option<bool>,
    /// The `mte` hwcap (/proc/cpuinfo's Features): the kernel found MTE and uses it.
    pub hwcap_mte: Option<bool>,
    /// ID_AA64PFR1_EL1.MTE as the kernel shows it to user space (0 when it hides or lacks MTE).
    pub id_register_mte: Option<u8>,
    /// `Ok(KVM_CHECK_EXTENSION(KVM_CAP_ARM_MTE) > 0)`, or why there is no KVM.
    pub kvm_mte_cap: Result<bool, String>,
}

impl MteSigns {
    /// Read what this machine shows, with what KVM said of its capability (or why there is no
    /// KVM).
    pub fn of_this_machine(kvm_mte_cap: Result<bool, String>) -> Self {
        let hwcap_mte = crate::environment::cpu_features()
            .map(|flags| flags.split_whitespace().any(|flag| flag == "mte"));
        MteSigns {
            cmdline: std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
            config_arm64_mte: crate::kernel_config::arm64_mte(),
            hwcap_mte,
            id_register_mte: id_register_mte(),
            kvm_mte_cap,
        }
    }
}

impl MteSigns {
    /// The signs as facts of the run's environment.
    pub fn features(&self) -> Vec<Feature> {
        let known = |value: Option<String>| value.unwrap_or_else(|| "unknown".into());
        vec![
            Feature::new("MTE: kernel command line", self.cmdline.trim()),
            Feature::new(
                "MTE: CONFIG_ARM64_MTE",
                known(
                    self.config_arm64_mte
                        .map(|on| if on { "y" } else { "n" }.to_string()),
                ),
            ),
            Feature::new(
                "MTE: mte hwcap",
                known(self.hwcap_mte.map(|on| on.to_string())),
            ),
            Feature::new(
                "MTE: ID_AA64PFR1_EL1.MTE as user space reads it",
                known(self.id_register_mte.map(|field| field.to_string())),
            ),
        ]
    }
}

/// ID_AA64PFR1_EL1.MTE (bits 11:8) as the kernel shows it to user space, where it does.
#[cfg(target_arch = "aarch64")]
fn id_register_mte() -> Option<u8> {
    /// HWCAP_CPUID: the kernel emulates reads of the ID registers at EL0.
    const HWCAP_CPUID: libc::c_ulong = 1 << 11;
    // SAFETY: getauxval only reads the process's auxiliary vector.
    if unsafe { libc::getauxval(libc::AT_HWCAP) } & HWCAP_CPUID == 0 {
        return None;
    }
    let value: u64;
    // SAFETY: with HWCAP_CPUID the kernel traps and emulates this read; it touches no memory.
    unsafe { core::arch::asm!("mrs {}, id_aa64pfr1_el1", out(reg) value, options(nomem, nostack)) };
    Some(((value >> 8) & 0xf) as u8)
}

#[cfg(not(target_arch = "aarch64"))]
fn id_register_mte() -> Option<u8> {
    None
}

/// The kernel command-line words that switch MTE off.
const MTE_OFF_WORDS: [&str; 2] = ["arm64.nomte", "id_aa64pfr1.mte=0"];

/// What the emulated lane's machine lacks of the KVM with MTE it promises, and what to do; `None`
/// when KVM offers MTE.
pub fn missing_in_emulated_machine(signs: &MteSigns) -> Option<String> {
    let has_cap = match &signs.kvm_mte_cap {
        Ok(has_cap) => *has_cap,
        Err(why) => {
            return Some(format!(
                "the emulated machine has no KVM ({why}): QEMU must give it EL2 \
                 (-M virt,virtualization=on) and its kernel must be built with CONFIG_KVM"
            ))
        }
    };
    if has_cap {
        return None;
    }
    let id_register = match signs.id_register_mte {
        Some(field) => format!(", ID_AA64PFR1_EL1.MTE = {field} as the kernel shows it"),
        None => String::new(),
    };
    let off_word = signs
        .cmdline
        .split_whitespace()
        .find(|word| MTE_OFF_WORDS.contains(word));
    Some(if let Some(word) = off_word {
        format!(
            "the kernel's MTE is switched off: its command line holds `{word}` (no mte hwcap, \
             KVM offers no KVM_CAP_ARM_MTE{id_register}); boot it without `{word}`"
        )
    } else if signs.config_arm64_mte == Some(false) {
        "the kernel has no MTE: it was built without CONFIG_ARM64_MTE (KVM offers no \
         KVM_CAP_ARM_MTE); build it with CONFIG_ARM64_MTE=y"
            .to_string()
    } else if signs.hwcap_mte == Some(false) && signs.id_register_mte == Some(1) {
        // MTE field 1: the instructions without tag storage, what QEMU's mte=off gives `-cpu
        // max`; a kernel built without MTE would hide the field (0).
        format!(
            "QEMU gives the machine no MTE tag storage: the kernel reports no mte hwcap{id_register} \
             (MTE instructions only, as QEMU's mte=off makes `-cpu max`); start QEMU with \
             -M virt,mte=on (is MTE_QEMU a QEMU, or a wrapper that changes its arguments?)"
        )
    } else if signs.hwcap_mte == Some(false) {
        let unless = match signs.config_arm64_mte {
            Some(_) => "",
            None => {
                " (or the kernel was built without CONFIG_ARM64_MTE: its config cannot be read \
                 to tell)"
            }
        };
        format!(
            "QEMU gives the machine no MTE: the kernel reports no mte hwcap{id_register} and \
             nothing on its command line switches MTE off{unless}; start QEMU with \
             -M virt,mte=on and -cpu max (is MTE_QEMU a QEMU, or a wrapper that changes its \
             arguments?)"
        )
    } else {
        "KVM offers no KVM_CAP_ARM_MTE although the kernel uses MTE (mte hwcap): a kernel \
         before 5.13, or KVM in a mode without MTE (kvm-arm.mode on the command line?); use a \
         kernel whose KVM offers MTE to guests"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signs() -> MteSigns {
        MteSigns {
            cmdline: "console=ttyAMA0 rdinit=/init quiet panic=-1".into(),
            config_arm64_mte: Some(true),
            hwcap_mte: Some(true),
            id_register_mte: Some(2),
            kvm_mte_cap: Ok(true),
        }
    }

    #[test]
    fn a_machine_whose_kvm_offers_mte_lacks_nothing() {
        assert_eq!(missing_in_emulated_machine(&signs()), None);
    }

    #[test]
    fn each_missing_layer_is_named_with_what_to_do() {
        // QEMU started with mte=off: the kernel, built with MTE, finds none.
        let qemu = MteSigns {
            hwcap_mte: Some(false),
            id_register_mte: Some(0),
            kvm_mte_cap: Ok(false),
            ..signs()
        };
        let why = missing_in_emulated_machine(&qemu).unwrap();
        assert!(why.starts_with("QEMU gives the machine no MTE"), "{why}");
        // QEMU's mte=off leaves `-cpu max` the MTE instructions (field 1), without tag storage.
        let mte_off = MteSigns {
            id_register_mte: Some(1),
            ..qemu.clone()
        };
        let why = missing_in_emulated_machine(&mte_off).unwrap();
        assert!(
            why.starts_with("QEMU gives the machine no MTE tag storage"),
            "{why}"
        );
        assert!(why.contains("ID_AA64PFR1_EL1.MTE = 1"), "{why}");
        assert!(why.contains("mte=on"), "{why}");
        assert!(!why.contains("CONFIG_ARM64_MTE"), "{why}");
        // Without the kernel's config, the other reading is named too.
        let unknown = MteSigns {
            config_arm64_mte: None,
            ..qemu.clone()
        };
        let why = missing_in_emulated_machine(&unknown).unwrap();
        assert!(
            why.contains("or the kernel was built without CONFIG_ARM64_MTE"),
            "{why}"
        );

        // The kernel booted with arm64.nomte.
        let nomte = MteSigns {
            cmdline: format!("{} arm64.nomte", signs().cmdline),
            ..qemu.clone()
        };
        let why = missing_in_emulated_machine(&nomte).unwrap();
        assert!(
            why.starts_with(
                "the kernel's MTE is switched off: its command line holds `arm64.nomte`"
            ),
            "{why}"
        );
        assert!(why.ends_with("boot it without `arm64.nomte`"), "{why}");

        // The kernel built without MTE.
        let unbuilt = MteSigns {
            config_arm64_mte: Some(false),
            ..qemu
        };
        let why = missing_in_emulated_machine(&unbuilt).unwrap();
        assert!(why.contains("built without CONFIG_ARM64_MTE"), "{why}");

        // The kernel uses MTE, but KVM does not offer it.
        let kvm = MteSigns {
            kvm_mte_cap: Ok(false),
            ..signs()
        };
        let why = missing_in_emulated_machine(&kvm).unwrap();
        assert!(
            why.starts_with("KVM offers no KVM_CAP_ARM_MTE although the kernel uses MTE"),
            "{why}"
        );

        // No KVM at all.
        let none = MteSigns {
            kvm_mte_cap: Err("/dev/kvm cannot be opened".into()),
            ..signs()
        };
        let why = missing_in_emulated_machine(&none).unwrap();
        assert!(why.contains("virtualization=on"), "{why}");
    }
}
