//! [`InMemoryDnsProvider`]: one zone in memory, for tests and examples.

use std::collections::BTreeMap;
use std::fmt::{self, Display};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;

use super::change::{check_batch_against, ChangeAction, ChangeBatch, ChangeInfo, ChangeStatus};
use super::provider::{DnsCapabilities, DnsProvider};
use super::record::{normalize_name, RecordKey, RecordSet, RecordType};
use crate::error::{Error, Result};

/// A [`DnsProvider`] in memory, for tests and examples: one zone, every
/// capability, changes `PENDING` for a configurable number of status polls.
#[derive(Debug)]
pub struct InMemoryDnsProvider {
    zone: String,
    state: Mutex<MemoryState>,
    pending_polls: u32,
}

#[derive(Debug, Default)]
struct MemoryState {
    records: BTreeMap<RecordKey, RecordSet>,
    changes: BTreeMap<String, u32>,
    next_change: u64,
}

impl InMemoryDnsProvider {
    /// An empty zone (`example.test.`); changes are in sync at once.
    ///
    /// # Panics
    /// When `zone` is not a valid DNS name.
    pub fn new(zone: &str) -> Self {
        InMemoryDnsProvider {
            zone: normalize_name(zone).expect("valid zone name"),
            state: Mutex::default(),
            pending_polls: 0,
        }
    }

    /// Changes stay `PENDING` for `polls` status requests, as Route53's do.
    pub fn with_pending_polls(mut self, polls: u32) -> Self {
        self.pending_polls = polls;
        self
    }

    /// The zone's name.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// Every record set of the zone, in key order (name, type, set
    /// identifier): what a test inspects after a run.
    pub fn records(&self) -> Vec<RecordSet> {
        self.state
            .lock()
            .expect("lock")
            .records
            .values()
            .cloned()
            .collect()
    }

    fn in_zone(&self, name: &str) -> Result<()> {
        if name == self.zone || name.ends_with(&format!(".{}", self.zone)) {
            Ok(())
        } else {
            Err(Error::InvalidConfig {
                key: "record.name".into(),
                reason: format!("{name} is not in zone {}", self.zone),
            })
        }
    }
}

impl Display for InMemoryDnsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory:{}", self.zone)
    }
}

#[async_trait]
impl DnsProvider for InMemoryDnsProvider {
    fn capabilities(&self) -> DnsCapabilities {
        DnsCapabilities::all()
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<RecordSet>> {
        let key = RecordKey {
            name: normalize_name(&key.name)?,
            ..key.clone()
        };
        Ok(self.state.lock().expect("lock").records.get(&key).cloned())
    }

    async fn apply(&self, batch: &ChangeBatch) -> Result<ChangeInfo> {
        let batch = batch.validate()?;
        for c in &batch.changes {
            self.in_zone(&c.record.name)?;
            self.capabilities().check_record(&c.record, self)?;
        }
        let mut state = self.state.lock().expect("lock");
        check_batch_against(&batch, |k| state.records.get(k).cloned())?;
        for c in batch.changes {
            let key = c.record.key();
            match c.action {
                ChangeAction::Create | ChangeAction::Upsert => {
                    state.records.insert(key, c.record);
                }
                ChangeAction::Delete => {
                    state.records.remove(&key);
                }
            }
        }
        state.next_change += 1;
        let id = format!("MEM{:08}", state.next_change);
        state.changes.insert(id.clone(), self.pending_polls);
        Ok(ChangeInfo {
            id,
            status: if self.pending_polls == 0 {
                ChangeStatus::InSync
            } else {
                ChangeStatus::Pending
            },
            submitted_at: Some(Utc::now()),
        })
    }

    async fn change_status(&self, id: &str) -> Result<ChangeStatus> {
        let mut state = self.state.lock().expect("lock");
        let left = state.changes.get_mut(id).ok_or_else(|| Error::NotFound {
            what: format!("DNS change {id}"),
        })?;
        if *left == 0 {
            Ok(ChangeStatus::InSync)
        } else {
            *left -= 1;
            Ok(ChangeStatus::Pending)
        }
    }

    async fn query_authoritative(&self, name: &str, rtype: RecordType) -> Result<Vec<String>> {
        let key = RecordKey::new(name, rtype)?;
        Ok(self
            .state
            .lock()
            .expect("lock")
            .records
            .get(&key)
            .map(|r| r.values.clone())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{Change, DnsProviderExt};

    #[tokio::test]
    async fn out_of_zone_names_are_refused() {
        let p = InMemoryDnsProvider::new("example.test");
        let e = p
            .apply_one(Change::create(RecordSet::new(
                "a.other.test",
                RecordType::A,
                60,
                ["192.0.2.1"],
            )))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
    }
}
