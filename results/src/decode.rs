//! ESR_EL1 and FAR_EL1 of an exception the guest took, in words, for the reports.
//!
//! The runner already sends its own reading (`Evidence::Fault::decoded`); this one is done from
//! the raw registers on the host side, so a report reads the same whatever runner wrote the
//! record, and the FAR is split into the address and the pointer's tag, which is what a tag
//! check fault is about. Field layouts are those of the Arm ARM (ESR_ELx, FAR_ELx).
//! Hand-written rather than aarch64-esr-decoder, whose field-by-field descriptions would change
//! the report's one-sentence reading and which does not read the FAR.

/// The registers, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultWords {
    /// The exception class, e.g. `data abort taken without a change of exception level`.
    pub class: String,
    /// For an abort, its fault status, e.g. `synchronous tag check fault`.
    pub status: Option<String>,
    /// For a data abort, `read` or `write` (ESR.WnR).
    pub access: Option<&'static str>,
    /// FAR bits 55:0, the address, sign-extended from bit 55 as the MMU reads it.
    pub address: u64,
    /// FAR bits 59:56: the logical tag of the faulting pointer (reported for tag check faults).
    pub pointer_tag: u8,
}

impl FaultWords {
    /// One line: `data abort ...: synchronous tag check fault, on a write; address 0x..., tag 0xa`.
    pub fn sentence(&self) -> String {
        let mut text = self.class.clone();
        if let Some(status) = &self.status {
            text.push_str(": ");
            text.push_str(status);
        }
        if let Some(access) = self.access {
            text.push_str(", on a ");
            text.push_str(access);
        }
        text
    }
}

/// Read ESR_EL1 and FAR_EL1.
pub fn decode(esr: u64, far: u64) -> FaultWords {
    let ec = ((esr >> 26) & 0x3f) as u8;
    let iss = esr & 0x01ff_ffff;
    let is_abort = matches!(ec, 0x20 | 0x21 | 0x24 | 0x25);
    let status = is_abort.then(|| fault_status((iss & 0x3f) as u8));
    let access =
        matches!(ec, 0x24 | 0x25).then(|| if iss & (1 << 6) != 0 { "write" } else { "read" });
    let low = far & 0x00ff_ffff_ffff_ffff;
    let address = if low & (1 << 55) != 0 {
        low | 0xff00_0000_0000_0000
    } else {
        low
    };
    FaultWords {
        class: format!("EC {ec:#04x}, {}", exception_class(ec)),
        status,
        access,
        address,
        pointer_tag: ((far >> 56) & 0xf) as u8,
    }
}

fn exception_class(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "trapped WFI or WFE",
        0x07 => "SVE, SIMD or floating-point access trapped",
        0x0e => "illegal execution state",
        0x15 => "SVC instruction",
        0x16 => "HVC instruction",
        0x17 => "SMC instruction",
        0x18 => "trapped MSR, MRS or system instruction",
        0x19 => "SVE access trapped",
        0x20 => "instruction abort from a lower exception level",
        0x21 => "instruction abort taken without a change of exception level",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower exception level",
        0x25 => "data abort taken without a change of exception level",
        0x26 => "SP alignment fault",
        0x2c => "trapped floating-point exception",
        0x2f => "SError interrupt",
        0x30 => "breakpoint from a lower exception level",
        0x31 => "breakpoint taken without a change of exception level",
        0x32 => "software step from a lower exception level",
        0x33 => "software step taken without a change of exception level",
        0x34 => "watchpoint from a lower exception level",
        0x35 => "watchpoint taken without a change of exception level",
        0x3c => "BRK instruction",
        _ => "an exception class this report does not name",
    }
}

/// DFSC / IFSC, ESR bits 5:0 of an abort.
fn fault_status(code: u8) -> String {
    let level = code & 0b11;
    let words = match code {
        0b00_0000..=0b00_0011 => format!("address size fault, level {level}"),
        0b00_0100..=0b00_0111 => format!("translation fault, level {level}"),
        0b00_1000..=0b00_1011 => format!("access flag fault, level {level}"),
        0b00_1100..=0b00_1111 => format!("permission fault, level {level}"),
        0b01_0000 => "synchronous external abort".into(),
        0b01_0001 => "synchronous tag check fault".into(),
        0b10_0001 => "alignment fault".into(),
        0b11_0000 => "TLB conflict abort".into(),
        _ => "a fault status this report does not name".into(),
    };
    format!("{words} (FSC {code:#04x})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_check_fault_on_a_read_reads_as_such() {
        let words = decode(0x9600_0011, 0x0a00_0000_4102_0000);
        assert_eq!(
            words.sentence(),
            "EC 0x25, data abort taken without a change of exception level: synchronous tag \
             check fault (FSC 0x11), on a read"
        );
        assert_eq!(words.address, 0x4102_0000);
        assert_eq!(words.pointer_tag, 0xa);
    }

    #[test]
    fn writes_levels_and_other_classes() {
        let write = decode(0x9600_0051, 0);
        assert_eq!(write.access, Some("write"));
        assert_eq!(
            decode(0x9600_0007, 0).status.as_deref(),
            Some("translation fault, level 3 (FSC 0x07)")
        );
        let svc = decode(0x5600_0000, 0);
        assert_eq!(svc.sentence(), "EC 0x15, SVC instruction");
        assert_eq!((svc.status, svc.access), (None, None));
        let instruction = decode(0x8600_000f, 0);
        assert_eq!(instruction.access, None);
        assert!(instruction
            .status
            .unwrap()
            .starts_with("permission fault, level 3"));
    }

    #[test]
    fn the_far_splits_into_address_and_tag() {
        let words = decode(0x9600_0011, 0xf5ff_8000_0000_1230);
        assert_eq!(words.pointer_tag, 0x5);
        assert_eq!(words.address, 0xffff_8000_0000_1230);
    }
}
