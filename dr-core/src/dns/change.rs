//! Change batches: what a provider applies all or nothing, the status of a
//! submitted batch, and the precondition check providers without
//! server-side preconditions share.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record::{RecordKey, RecordSet};
use crate::error::{Error, Result};

/// What a [`Change`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeAction {
    /// Create; the record set must not exist.
    Create,
    /// Create or replace.
    Upsert,
    /// Delete; the record set must exist with exactly these values.
    Delete,
}

/// What the current value must be for a change to apply: the precondition
/// that keeps a failover from clobbering a change it did not expect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// No precondition.
    #[default]
    Any,
    /// The record set must not exist.
    Absent,
    /// The record set must hold this data ([`RecordSet::same_data`]).
    Current(RecordSet),
}

/// One change of a [`ChangeBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Create, upsert or delete.
    pub action: ChangeAction,
    /// The record set created, written or deleted.
    pub record: RecordSet,
    /// Precondition on the current value of `record`'s key.
    #[serde(default)]
    pub expect: Expect,
}

impl Change {
    /// A `CREATE`.
    pub fn create(record: RecordSet) -> Self {
        Change {
            action: ChangeAction::Create,
            record,
            expect: Expect::Any,
        }
    }

    /// An `UPSERT`.
    pub fn upsert(record: RecordSet) -> Self {
        Change {
            action: ChangeAction::Upsert,
            record,
            expect: Expect::Any,
        }
    }

    /// A `DELETE`.
    pub fn delete(record: RecordSet) -> Self {
        Change {
            action: ChangeAction::Delete,
            record,
            expect: Expect::Any,
        }
    }

    /// The same change with a precondition.
    pub fn expecting(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }
}

/// Changes applied together, all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBatch {
    /// A comment kept by providers that keep one (Route53).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The changes, in order.
    pub changes: Vec<Change>,
}

impl ChangeBatch {
    /// A batch of these changes.
    pub fn new(changes: Vec<Change>) -> Self {
        ChangeBatch {
            comment: None,
            changes,
        }
    }

    /// The same batch with a comment.
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// Checks every record of the batch and returns the batch normalised.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty batch or an invalid record.
    pub fn validate(&self) -> Result<ChangeBatch> {
        if self.changes.is_empty() {
            return Err(Error::InvalidConfig {
                key: "changes".into(),
                reason: "a change batch needs at least one change".into(),
            });
        }
        let mut changes = Vec::with_capacity(self.changes.len());
        for c in &self.changes {
            let record = c.record.validate()?;
            let expect = match &c.expect {
                Expect::Current(r) => {
                    let r = r.validate()?;
                    if r.key() != record.key() {
                        return Err(Error::InvalidConfig {
                            key: "expect".into(),
                            reason: format!(
                                "the expected record {} is not the changed one {}",
                                r.key(),
                                record.key()
                            ),
                        });
                    }
                    Expect::Current(r)
                }
                other => other.clone(),
            };
            changes.push(Change {
                action: c.action,
                record,
                expect,
            });
        }
        Ok(ChangeBatch {
            comment: self.comment.clone(),
            changes,
        })
    }
}

/// Whether a submitted change has reached all of the provider's
/// authoritative servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeStatus {
    /// Accepted, not yet everywhere.
    Pending,
    /// Served by every authoritative server.
    InSync,
}

/// A submitted change batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInfo {
    /// The provider's change id (Route53 `C2682N5HXP0BZ4`).
    pub id: String,
    /// Its status when last seen.
    pub status: ChangeStatus,
    /// When the provider accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
}

/// Checks a validated batch against current state, in order, as a working
/// copy: what every provider without server-side preconditions (and the
/// in-memory one) uses.
///
/// `current` returns the record set of a key before the batch.
///
/// # Errors
/// [`Error::Conflict`] naming the record and the broken precondition.
pub fn check_batch_against<F>(batch: &ChangeBatch, mut current: F) -> Result<()>
where
    F: FnMut(&RecordKey) -> Option<RecordSet>,
{
    let mut working: BTreeMap<RecordKey, Option<RecordSet>> = BTreeMap::new();
    for change in &batch.changes {
        let key = change.record.key();
        let now = working
            .entry(key.clone())
            .or_insert_with(|| current(&key))
            .clone();
        let conflict = |reason: String| Error::Conflict {
            what: format!("DNS record {key}"),
            reason,
        };
        match &change.expect {
            Expect::Any => {}
            Expect::Absent => {
                if let Some(n) = &now {
                    return Err(conflict(format!(
                        "expected no record set, found {}",
                        n.summary()
                    )));
                }
            }
            Expect::Current(e) => match &now {
                Some(n) if n.same_data(e) => {}
                Some(n) => {
                    return Err(conflict(format!(
                        "expected {}, found {}",
                        e.summary(),
                        n.summary()
                    )))
                }
                None => {
                    return Err(conflict(format!(
                        "expected {}, found no record set",
                        e.summary()
                    )))
                }
            },
        }
        let next = match change.action {
            ChangeAction::Create => {
                if let Some(n) = &now {
                    return Err(conflict(format!(
                        "cannot create: it already exists as {}",
                        n.summary()
                    )));
                }
                Some(change.record.clone())
            }
            ChangeAction::Upsert => Some(change.record.clone()),
            ChangeAction::Delete => match &now {
                None => return Err(conflict("cannot delete: it was not found".into())),
                Some(n) if !(n.same_data(&change.record) && (n.ttl == change.record.ttl)) => {
                    return Err(conflict(format!(
                        "cannot delete: the values given ({}) do not match the current values ({})",
                        change.record.summary(),
                        n.summary()
                    )))
                }
                Some(_) => None,
            },
        };
        working.insert(key, next);
    }
    Ok(())
}
