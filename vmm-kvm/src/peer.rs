//! A second VM on the same memory as a guest: its memslot is a second mapping of the guest's
//! memfd or file.

use mte_protocol::{RAM_IPA, RAM_SIZE};
use mte_suites::host_mm::{Backing, TagPeer};
use mte_suites::vmm::VmmError;

use crate::copy_tags;
use crate::memory::GuestRam;
use crate::vm::{io_error, Vm};

pub struct KvmPeer {
    vm: Vm,
    backing: Backing,
}

impl KvmPeer {
    /// A VM with MTE whose RAM is a second mapping of `ram`.
    pub fn open(ram: &GuestRam) -> Result<Self, VmmError> {
        let backing = ram.backing();
        let second = ram
            .second_mapping()
            .map_err(|e| io_error("mmap of guest RAM a second time", e))?
            .ok_or_else(|| {
                VmmError::Host(format!(
                    "guest RAM on {} has no file to map a second time",
                    backing.describe()
                ))
            })?;
        let kvm = kvm_ioctls::Kvm::new().map_err(|e| VmmError::Sys {
            call: "open /dev/kvm".into(),
            errno: e.errno(),
        })?;
        Ok(KvmPeer {
            vm: Vm::new(&kvm, true, second)?,
            backing,
        })
    }

    fn offset(&self, ipa: u64, len: u64) -> Result<usize, VmmError> {
        if ipa < RAM_IPA || ipa - RAM_IPA + len > RAM_SIZE {
            return Err(VmmError::Host(format!(
                "{ipa:#x}+{len:#x} is outside guest RAM"
            )));
        }
        Ok((ipa - RAM_IPA) as usize)
    }
}

impl TagPeer for KvmPeer {
    fn describe(&self) -> String {
        format!(
            "a VM with MTE whose memslot is a second mapping of {}, at {:#x}",
            self.backing.describe(),
            self.vm.ram.host_address()
        )
    }

    fn read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        copy_tags::read(self.vm.raw_fd(), ipa, len)
    }

    fn write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        copy_tags::write(self.vm.raw_fd(), ipa, tags)
    }

    fn read_data(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        let offset = self.offset(ipa, len)?;
        let mut data = vec![0u8; len as usize];
        self.vm.ram.read(offset, &mut data);
        Ok(data)
    }
}
