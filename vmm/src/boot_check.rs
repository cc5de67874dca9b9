//! What every backend checks at a payload's first doorbell: that it booted, and speaks this
//! protocol.

use mte_protocol::{GuestIds, Mailbox, Status, MAILBOX_MAGIC, PROTOCOL_VERSION};
use mte_suites::vmm::VmmError;

/// The guest's ID registers from the mailbox of its first doorbell, or why the payload (named
/// `payload`) did not boot.
pub fn booted_ids(mailbox: &Mailbox, payload: &str) -> Result<GuestIds, VmmError> {
    // A runtime that took an exception on its way up says so before it fills in the rest.
    if Status::from_u32(mailbox.status) == Some(Status::Panic) {
        return Err(VmmError::Guest(format!(
            "the payload took an exception while booting: {} (FAR {:#x}, ELR {:#x})",
            mte_suites::esr::describe_esr(mailbox.fault.esr),
            mailbox.fault.far,
            mailbox.fault.elr
        )));
    }
    if mailbox.magic != MAILBOX_MAGIC || mailbox.version != PROTOCOL_VERSION {
        return Err(VmmError::Guest(format!(
            "payload {payload} speaks another protocol (magic {:#x}, version {}; expected {MAILBOX_MAGIC:#x}, {PROTOCOL_VERSION}): rebuild it",
            mailbox.magic, mailbox.version
        )));
    }
    if Status::from_u32(mailbox.status) != Some(Status::Booted) {
        return Err(VmmError::Guest(format!(
            "the payload did not boot: status {}, exception ESR {:#x} FAR {:#x} ELR {:#x}",
            mailbox.status, mailbox.fault.esr, mailbox.fault.far, mailbox.fault.elr
        )));
    }
    Ok(mailbox.ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn booted() -> Mailbox {
        Mailbox {
            magic: MAILBOX_MAGIC,
            version: PROTOCOL_VERSION,
            status: Status::Booted as u32,
            ids: GuestIds {
                id_aa64pfr1_el1: 0x300,
                ..GuestIds::default()
            },
            ..Mailbox::zeroed()
        }
    }

    #[test]
    fn a_booted_payload_gives_its_ids() {
        assert_eq!(booted_ids(&booted(), "p").unwrap().mte_level(), 3);
    }

    #[test]
    fn panics_and_other_protocols_say_why() {
        let mut panicked = booted();
        panicked.status = Status::Panic as u32;
        panicked.fault.esr = 0x9600_0010;
        let why = booted_ids(&panicked, "p").unwrap_err().to_string();
        assert!(why.contains("exception while booting"), "{why}");

        let mut old = booted();
        old.version = PROTOCOL_VERSION + 1;
        let why = booted_ids(&old, "mte-guest.elf").unwrap_err().to_string();
        assert!(
            why.contains("mte-guest.elf") && why.contains("rebuild"),
            "{why}"
        );

        let mut silent = booted();
        silent.status = Status::Empty as u32;
        assert!(booted_ids(&silent, "p").is_err());
    }
}
