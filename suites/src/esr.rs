//! ESR_EL1 in words, for evidence a person reads.

use mte_protocol::esr;
use mte_results::Evidence;

use crate::reply::Reply;

/// ESR_EL1 in words, for evidence a person reads.
pub fn describe_esr(value: u64) -> String {
    let ec = esr::ec(value);
    let class = match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE",
        0x07 => "SVE/SIMD/FP access",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "system register access",
        0x20 => "instruction abort, lower EL",
        0x21 => "instruction abort, same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort, lower EL",
        0x25 => "data abort, same EL",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other exception class",
    };
    let mut text = format!("EC {ec:#04x} ({class})");
    if ec == 0x24 || ec == 0x25 {
        let dfsc = esr::dfsc(value);
        let fault = match dfsc {
            0x04..=0x07 => "translation fault",
            0x08..=0x0b => "access flag fault",
            0x0c..=0x0f => "permission fault",
            0x10 => "synchronous external abort",
            0x11 => "synchronous tag check fault",
            0x21 => "alignment fault",
            _ => "other fault",
        };
        let access = if esr::is_write(value) {
            "write"
        } else {
            "read"
        };
        text.push_str(&format!(": DFSC {dfsc:#04x} {fault}, {access}"));
    }
    text
}

/// Evidence of a guest exception.
pub fn fault_evidence(reply: &Reply) -> Evidence {
    Evidence::Fault {
        esr: reply.fault.esr,
        far: reply.fault.far,
        elr: reply.fault.elr,
        decoded: describe_esr(reply.fault.esr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esr_of_a_tag_check_fault_reads_as_such() {
        assert_eq!(
            describe_esr(0x9600_0011),
            "EC 0x25 (data abort, same EL): DFSC 0x11 synchronous tag check fault, read"
        );
        assert!(describe_esr(0x9600_0051).ends_with("write"));
    }
}
