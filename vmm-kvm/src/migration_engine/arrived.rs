//! A guest that arrived by migration in a VM of this process: the destination's [`KvmGuest`],
//! the report of how it came, and (post-copy) the page server it still depends on.

use mte_protocol::{Command, GuestIds};
use mte_suites::migration_plan::{MigrationPlan, MigrationReport};
use mte_suites::vmm::{Guest, Reply, VmmError};

use super::postcopy::PageServer;
use crate::KvmGuest;

/// Field order is drop order: the page server stops (and lets go of the source) before the
/// destination VM and its RAM go.
pub struct MigratedGuest {
    pub server: Option<PageServer>,
    pub inner: KvmGuest,
    pub report: MigrationReport,
}

impl MigratedGuest {
    /// A post-copy page server that failed has left pages of zeros behind: every later step
    /// says so.
    fn healthy(&self) -> Result<(), VmmError> {
        match &self.server {
            Some(server) => server.healthy(),
            None => Ok(()),
        }
    }
}

impl Guest for MigratedGuest {
    fn ids(&self) -> GuestIds {
        self.inner.ids()
    }

    fn exec(&mut self, command: Command, args: &[u64]) -> Result<Reply, VmmError> {
        let reply = self.inner.exec(command, args);
        self.healthy()?;
        reply
    }

    fn read_bulk(&mut self, len: usize) -> Result<Vec<u8>, VmmError> {
        let bytes = self.inner.read_bulk(len);
        self.healthy()?;
        bytes
    }

    fn write_bulk(&mut self, bytes: &[u8]) -> Result<(), VmmError> {
        self.inner.write_bulk(bytes)?;
        self.healthy()
    }

    fn host_read_tags(&mut self, ipa: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        // Tags held back (the late-tags fault) arrive now, after whatever the guest has seen.
        if let Some(server) = &self.server {
            server.deliver_late_tags()?;
        }
        let tags = self.inner.host_read_tags(ipa, len);
        self.healthy()?;
        tags
    }

    fn host_write_tags(&mut self, ipa: u64, tags: &[u8]) -> Result<(), VmmError> {
        self.inner.host_write_tags(ipa, tags)?;
        self.healthy()
    }

    fn console(&self) -> String {
        self.inner.console()
    }

    /// On again: a guest that arrived whole moves as any guest of this process does; one that
    /// a post-copy source still serves pages to cannot leave before they have all arrived.
    fn migrate(self: Box<Self>, plan: &MigrationPlan) -> Result<Box<dyn Guest>, VmmError> {
        if self.server.is_some() {
            return Err(VmmError::Unsupported(
                "migrating a post-copy destination while its source still serves it pages".into(),
            ));
        }
        let MigratedGuest { inner, .. } = *self;
        super::migrate(inner, plan)
    }

    fn migration_report(&mut self) -> Result<MigrationReport, VmmError> {
        let mut report = self.report.clone();
        if let Some(server) = &self.server {
            server.add_to(&mut report);
        }
        Ok(report)
    }
}
