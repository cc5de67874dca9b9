//! A vCPU's state as KVM exposes it: every register KVM_GET_REG_LIST names, read and written
//! with KVM_GET_ONE_REG and KVM_SET_ONE_REG. With MTE on, the list holds GCR_EL1, RGSR_EL1,
//! TFSR_EL1 and TFSRE0_EL1 besides the rest.

use kvm_ioctls::VcpuFd;
use mte_suites::vmm::VmmError;
use vmm_sys_util::ioctl::ioctl_with_mut_ptr;

use super::stream::{register_size, Register};
use crate::ioctls::KVM_GET_REG_LIST;

/// KVM ONE_REG id of an arm64 system register (`ARM64_SYS_REG` in the UAPI).
pub const fn sys_reg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    const KVM_REG_ARM64: u64 = 0x6000_0000_0000_0000;
    const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
    const KVM_REG_ARM64_SYSREG: u64 = 0x0013 << 16;
    KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | KVM_REG_ARM64_SYSREG
        | op0 << 14
        | op1 << 11
        | crn << 7
        | crm << 3
        | op2
}

/// The PC among the core registers (`struct kvm_regs`: 31 GPRs and SP before it, in 32-bit
/// words).
pub const PC: u64 = 0x6030_0000_0010_0000 | ((31 + 1) * 8 / 4);

/// The MTE system registers KVM lists when the VM has MTE.
pub const MTE_REGISTERS: [(&str, u64); 4] = [
    ("GCR_EL1", sys_reg(3, 0, 1, 0, 6)),
    ("RGSR_EL1", sys_reg(3, 0, 1, 0, 5)),
    ("TFSR_EL1", sys_reg(3, 0, 5, 6, 0)),
    ("TFSRE0_EL1", sys_reg(3, 0, 5, 6, 1)),
];

/// SCTLR_EL1, whose TCF and TCF0 fields say how the guest's accesses are tag checked.
pub const SCTLR_EL1: u64 = sys_reg(3, 0, 1, 0, 0);

/// Counters that move on their own: a read-back cannot match what was written
/// (`KVM_REG_ARM_TIMER_CNT`, `KVM_REG_ARM_PTIMER_CNT`).
const MOVING: [u64; 2] = [sys_reg(3, 3, 14, 3, 2), sys_reg(3, 3, 14, 0, 1)];

/// Bits a read-back is not compared on, each with why:
/// - a timer's CNT*_CTL_EL0.ISTATUS (bit 2) is read-only status: whether the timer condition
///   holds now, against the counter of the VM that reads it, not what the source's guest saw;
/// - ID_AA64MMFR2_EL1.NV (bits 27:24): older kernels (6.12 among them) exposed the host's
///   FEAT_NV to guests without EL2; "KVM: arm64: Hide ID_AA64MMFR2_EL1.NV from guest and
///   userspace" (upstream in 2025, with the NV userspace ABI) masks it and, so that a stream
///   from an older kernel still restores, takes a write of the old value and ignores it, as
///   6685f5d572c2 does for MPAM.
const NOT_COMPARED: [(u64, u64); 3] = [
    (sys_reg(3, 3, 14, 3, 1), 1 << 2),
    (sys_reg(3, 3, 14, 2, 1), 1 << 2),
    (sys_reg(3, 0, 0, 7, 2), 0xf << 24),
];

/// `value` (little-endian) without the bits of register `id` a read-back is not compared on.
fn comparable(id: u64, value: &[u8]) -> Vec<u8> {
    let mut value = value.to_vec();
    if let Some(&(_, mask)) = NOT_COMPARED.iter().find(|&&(named, _)| named == id) {
        for (byte, mask_byte) in value.iter_mut().zip(mask.to_le_bytes()) {
            *byte &= !mask_byte;
        }
    }
    value
}

/// A register's name where the suite knows it, else its id.
pub fn describe(id: u64) -> String {
    const NAMED: [(&str, u64); 10] = [
        ("PC", PC),
        ("SCTLR_EL1", SCTLR_EL1),
        ("TCR_EL1", sys_reg(3, 0, 2, 0, 2)),
        ("MAIR_EL1", sys_reg(3, 0, 10, 2, 0)),
        ("VBAR_EL1", sys_reg(3, 0, 12, 0, 0)),
        ("KVM_REG_ARM_TIMER_CNT", MOVING[0]),
        ("KVM_REG_ARM_PTIMER_CNT", MOVING[1]),
        ("KVM_REG_ARM_TIMER_CTL", sys_reg(3, 3, 14, 3, 1)),
        ("KVM_REG_ARM_PTIMER_CTL", sys_reg(3, 3, 14, 2, 1)),
        ("ID_AA64MMFR2_EL1", sys_reg(3, 0, 0, 7, 2)),
    ];
    MTE_REGISTERS
        .iter()
        .chain(&NAMED)
        .find(|&&(_, named)| named == id)
        .map_or_else(
            || format!("register {id:#x}"),
            |&(name, _)| name.to_string(),
        )
}

/// The value of a 64-bit register in a saved set.
pub fn value_of(registers: &[Register], id: u64) -> Option<u64> {
    registers
        .iter()
        .find(|r| r.id == id && r.value.len() == 8)
        .map(|r| u64::from_le_bytes(r.value[..].try_into().expect("8 bytes")))
}

fn sys_error(call: String, errno: i32) -> VmmError {
    VmmError::Sys { call, errno }
}

/// Complete the exit the vCPU stopped on (the doorbell's MMIO write) without running the
/// guest: KVM_RUN with `immediate_exit` set finishes pending operations and returns EINTR
/// (api.rst). Only then is the PC past the doorbell's store, so the destination resumes after it
/// instead of ringing again.
pub fn complete_pending_exit(vcpu: &mut VcpuFd) -> Result<(), VmmError> {
    vcpu.set_kvm_immediate_exit(1);
    let outcome = match vcpu.run() {
        Err(e) if e.errno() == libc::EINTR => Ok(()),
        Err(e) => Err(sys_error(
            "KVM_RUN with immediate_exit set".into(),
            e.errno(),
        )),
        Ok(exit) => Err(VmmError::Host(format!(
            "KVM_RUN with immediate_exit set ran the guest to {exit:?} instead of returning EINTR"
        ))),
    };
    vcpu.set_kvm_immediate_exit(0);
    outcome
}

/// Every register id KVM_GET_REG_LIST names for this vCPU. By hand rather than with
/// kvm-ioctls' `get_reg_list`, whose list holds at most 500 ids: the call is repeated with the
/// room the kernel says it needs.
pub fn register_ids(vcpu: &VcpuFd) -> Result<Vec<u64>, VmmError> {
    let mut capacity = 512;
    loop {
        let mut list = vec![0u64; 1 + capacity];
        list[0] = capacity as u64;
        // SAFETY: `list` is a struct kvm_reg_list: its count n = capacity, then room for n ids.
        let ret = unsafe { ioctl_with_mut_ptr(vcpu, KVM_GET_REG_LIST(), list.as_mut_ptr()) };
        if ret == 0 {
            let n = list[0] as usize;
            list.truncate(1 + n);
            list.remove(0);
            return Ok(list);
        }
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // E2BIG: the kernel wrote the count it needs.
        if errno == libc::E2BIG && list[0] as usize > capacity {
            capacity = list[0] as usize;
            continue;
        }
        return Err(sys_error("KVM_GET_REG_LIST".into(), errno));
    }
}

/// Read every listed register.
pub fn save(vcpu: &VcpuFd) -> Result<Vec<Register>, VmmError> {
    register_ids(vcpu)?
        .into_iter()
        .map(|id| {
            let mut value = vec![0u8; register_size(id)];
            vcpu.get_one_reg(id, &mut value)
                .map_err(|e| sys_error(format!("KVM_GET_ONE_REG({})", describe(id)), e.errno()))?;
            Ok(Register { id, value })
        })
        .collect()
}

/// Write `registers` into a vCPU that has not run, then read each back. Returns the names of
/// those read back otherwise (counters that move on their own left aside).
pub fn restore(vcpu: &VcpuFd, registers: &[Register]) -> Result<Vec<String>, VmmError> {
    let (accepted, refused) = write_each(vcpu, registers);
    if !refused.is_empty() {
        return Err(VmmError::Host(format!(
            "KVM_SET_ONE_REG refused {} of {} registers: {}",
            refused.len(),
            registers.len(),
            refused.join(", ")
        )));
    }
    read_back(vcpu, &accepted)
}

/// As [`restore`], for registers saved under another kernel: one this kernel refuses (a
/// register it does not list, or a value it does not take, as an ID register naming features
/// it offers otherwise) keeps this kernel's value, as a VMM restoring across kernel versions
/// must settle. Returns those read back otherwise, and those refused with both values.
pub fn restore_across_kernels(
    vcpu: &VcpuFd,
    registers: &[Register],
) -> Result<(Vec<String>, Vec<String>), VmmError> {
    let (accepted, refused) = write_each(vcpu, registers);
    Ok((read_back(vcpu, &accepted)?, refused))
}

/// Write each register; those KVM took, and those it refused in words.
fn write_each<'a>(vcpu: &VcpuFd, registers: &'a [Register]) -> (Vec<&'a Register>, Vec<String>) {
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for r in registers {
        match vcpu.set_one_reg(r.id, &r.value) {
            Ok(_) => accepted.push(r),
            Err(e) => {
                let mut kept = vec![0u8; r.value.len()];
                let kept = match vcpu.get_one_reg(r.id, &mut kept) {
                    Ok(_) => format!("kept {}", hex_le(&kept)),
                    Err(_) => "not a register here".into(),
                };
                refused.push(format!(
                    "{} ({}: saved {}, {kept})",
                    describe(r.id),
                    mte_suites::vmm::errno_name(e.errno()),
                    hex_le(&r.value)
                ));
            }
        }
    }
    (accepted, refused)
}

/// `registers` read back otherwise than written (the bits of [`NOT_COMPARED`] aside): each
/// named, with both values.
fn read_back(vcpu: &VcpuFd, registers: &[&Register]) -> Result<Vec<String>, VmmError> {
    let mut differing = Vec::new();
    for r in registers.iter().filter(|r| !MOVING.contains(&r.id)) {
        let mut value = vec![0u8; r.value.len()];
        vcpu.get_one_reg(r.id, &mut value)
            .map_err(|e| sys_error(format!("KVM_GET_ONE_REG({})", describe(r.id)), e.errno()))?;
        if comparable(r.id, &value) != comparable(r.id, &r.value) {
            differing.push(format!(
                "{}: wrote {}, read {}",
                describe(r.id),
                hex_le(&r.value),
                hex_le(&value)
            ));
        }
    }
    Ok(differing)
}

/// A little-endian register value as one hex number.
fn hex_le(value: &[u8]) -> String {
    let digits: String = value.iter().rev().map(|b| format!("{b:02x}")).collect();
    format!("0x{}", digits.trim_start_matches('0').max("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_uapi() {
        // ARM64_SYS_REG(3, 0, 1, 0, 6), as `get-reg-list` in the kernel's selftests lists it.
        assert_eq!(MTE_REGISTERS[0].1, 0x6030_0000_0013_c086);
        assert_eq!(PC, 0x6030_0000_0010_0040);
        assert_eq!(register_size(PC), 8);
        assert_eq!(describe(MTE_REGISTERS[2].1), "TFSR_EL1");
        assert_eq!(describe(0x42), "register 0x42");
    }

    #[test]
    fn a_timer_s_status_bit_is_no_difference_but_its_enable_is() {
        let ctl = sys_reg(3, 3, 14, 3, 1);
        let [written, fired, disabled] = [0b001u64, 0b101, 0b000].map(|v| v.to_le_bytes());
        assert_eq!(comparable(ctl, &written), comparable(ctl, &fired));
        assert_ne!(comparable(ctl, &written), comparable(ctl, &disabled));
        // Other registers compare whole.
        let sctlr = sys_reg(3, 0, 1, 0, 0);
        assert_ne!(comparable(sctlr, &written), comparable(sctlr, &fired));
    }

    #[test]
    fn an_ignored_nv_field_is_no_difference_but_the_rest_of_mmfr2_is() {
        let mmfr2 = sys_reg(3, 0, 0, 7, 2);
        // As 6.12 saved it and 7.3 read it back.
        let saved = 0x1221_0111_1201_1011u64.to_le_bytes();
        let read = 0x1221_0111_1001_1011u64.to_le_bytes();
        assert_eq!(comparable(mmfr2, &saved), comparable(mmfr2, &read));
        let other_field = 0x1221_0111_1201_1111u64.to_le_bytes();
        assert_ne!(comparable(mmfr2, &saved), comparable(mmfr2, &other_field));
    }

    #[test]
    fn values_print_as_one_hex_number() {
        assert_eq!(hex_le(&0x10_2010u64.to_le_bytes()), "0x102010");
        assert_eq!(hex_le(&[0; 8]), "0x0");
    }

    #[test]
    fn values_are_found_by_id() {
        let registers = vec![Register {
            id: PC,
            value: 0x4008_1234u64.to_le_bytes().to_vec(),
        }];
        assert_eq!(value_of(&registers, PC), Some(0x4008_1234));
        assert_eq!(value_of(&registers, MTE_REGISTERS[0].1), None);
    }
}
