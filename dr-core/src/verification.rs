//! The outcome of each `dr verify`, kept in the repository so that
//! `dr status` can say when each source's backups were last proven and how:
//! `verifications/<source>/<unix millis>-<backup id>.json`, written once with
//! a conditional create (never overwritten), read newest first.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dr_storage::object_store::path::Path as ObjectPath;
use dr_storage::Repository;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::job::VerifyReport;

/// The prefix under which verification records live.
pub const VERIFICATION_PREFIX: &str = "verifications";

/// How deep a verification went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyLevel {
    /// Size and SHA-256 of the stored objects (no key).
    Stored,
    /// Decrypted and decompressed to the end, plaintext digests checked.
    Decoded,
    /// Restored into a scratch target and compared with the source.
    Restored,
}

/// One verification, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// Source name.
    pub source: String,
    /// The backup verified.
    pub backup_id: String,
    /// When the verification finished.
    pub verified_at: DateTime<Utc>,
    /// How deep it went.
    pub level: VerifyLevel,
    /// Whether everything checked passed.
    pub ok: bool,
    /// The scratch restore could not run for a reason that says nothing
    /// about the backup (it is unproven, not wrong).
    pub unproven: bool,
    /// What failed, one line each.
    pub problems: Vec<String>,
}

impl VerificationRecord {
    /// The record of `report`, finished at `at`.
    pub fn from_report(report: &VerifyReport, level: VerifyLevel, at: DateTime<Utc>) -> Self {
        let mut problems: Vec<String> = report
            .artifacts
            .iter()
            .filter_map(|a| a.error.as_ref().map(|e| format!("{}: {e}", a.name)))
            .collect();
        problems.extend(report.restore_error.iter().cloned());
        if let Some(c) = &report.checks {
            problems.extend(
                c.failures()
                    .map(|f| format!("{}: expected {}, found {}", f.name, f.expected, f.actual)),
            );
        }
        VerificationRecord {
            source: report.source.clone(),
            backup_id: report.backup_id.clone(),
            verified_at: at,
            level,
            ok: report.ok(),
            unproven: report.scratch_unavailable,
            problems,
        }
    }

    /// The object path of this record.
    pub fn path(&self) -> String {
        format!(
            "{VERIFICATION_PREFIX}/{}/{:013}-{}.json",
            self.source,
            self.verified_at.timestamp_millis().max(0),
            self.backup_id
        )
    }
}

/// Stores `record` (create-only).
///
/// # Errors
/// Store errors; [`dr_storage::Error::AlreadyExists`] for a record of the
/// same backup in the same millisecond.
pub async fn record_verification(
    repository: &Repository,
    record: &VerificationRecord,
) -> Result<()> {
    repository.put_json_create(&record.path(), record).await?;
    Ok(())
}

/// A verification record's object, by name: `verifications/<source>/<unix
/// millis, 13 digits>-<backup id>.json` ([`VerificationRecord::path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordObject {
    /// The object's path.
    pub path: String,
    /// The source.
    pub source: String,
    /// The backup verified.
    pub backup_id: String,
    /// The file name, which orders a source's records by time.
    file: String,
}

impl RecordObject {
    /// Parses an object path; `None` for anything that is not a record.
    pub fn parse(path: &str) -> Option<Self> {
        let mut parts = path.splitn(3, '/');
        let (Some(VERIFICATION_PREFIX), Some(source), Some(file)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let (stamp, id) = file.strip_suffix(".json")?.split_once('-')?;
        if stamp.len() != 13 || !stamp.bytes().all(|b| b.is_ascii_digit()) || id.is_empty() {
            return None;
        }
        Some(RecordObject {
            path: path.to_string(),
            source: source.to_string(),
            backup_id: id.to_string(),
            file: file.to_string(),
        })
    }
}

/// Every verification record's object in the repository, by name (nothing
/// is read).
///
/// # Errors
/// The store cannot be listed.
pub async fn list_records(repository: &Repository) -> Result<Vec<RecordObject>> {
    let prefix = ObjectPath::from(VERIFICATION_PREFIX);
    let objects: Vec<_> = repository
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| dr_storage::Error::store(VERIFICATION_PREFIX, e))?;
    Ok(objects
        .iter()
        .filter_map(|o| RecordObject::parse(o.location.as_ref()))
        .collect())
}

/// The newest record of each source (by name: the millisecond stamps have
/// equal width).
fn newest_per_source(records: &[RecordObject]) -> BTreeMap<&str, &RecordObject> {
    let mut newest: BTreeMap<&str, &RecordObject> = BTreeMap::new();
    for r in records {
        let e = newest.entry(r.source.as_str()).or_insert(r);
        if e.file < r.file {
            *e = r;
        }
    }
    newest
}

/// The records that prune deletes: those of backups that are not kept
/// (`kept(source, backup_id)` false), except the newest record of each
/// source, which `dr status` reports as the source's last verification.
pub fn stale_records(records: &[RecordObject], kept: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let newest = newest_per_source(records);
    records
        .iter()
        .filter(|r| {
            newest
                .get(r.source.as_str())
                .is_none_or(|n| n.path != r.path)
        })
        .filter(|r| !kept(&r.source, &r.backup_id))
        .map(|r| r.path.clone())
        .collect()
}

/// The newest verification record of each source. Unreadable records are
/// skipped with a warning.
///
/// # Errors
/// The store cannot be listed.
pub async fn last_verifications(
    repository: &Repository,
) -> Result<BTreeMap<String, VerificationRecord>> {
    let records = list_records(repository).await?;
    // Newest per source by name, then read only those.
    let newest: Vec<(String, ObjectPath)> = newest_per_source(&records)
        .into_iter()
        .map(|(source, r)| (source.to_string(), ObjectPath::from(r.path.as_str())))
        .collect();
    let mut out = BTreeMap::new();
    for (source, path) in newest {
        let read = async {
            let bytes = repository
                .store()
                .get(&path)
                .await
                .map_err(|e| dr_storage::Error::store(path.to_string(), e))?
                .bytes()
                .await
                .map_err(|e| dr_storage::Error::store(path.to_string(), e))?;
            serde_json::from_slice::<VerificationRecord>(&bytes)
                .map_err(|e| crate::Error::failed(format!("reading {path}"), e.to_string()))
        };
        match read.await {
            Ok(r) => {
                out.insert(source, r);
            }
            Err(e) => {
                tracing::warn!(object = %path, error = %e, "unreadable verification record skipped")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_storage::{Identities, InitOptions, Location, StoreOptions};

    #[test]
    fn records_of_pruned_backups_go_except_each_sources_newest() {
        let records: Vec<RecordObject> = [
            "verifications/db/1764000000000-20261124T000000Z-aaaaaa.json", // pruned backup
            "verifications/db/1764100000000-20261125T000000Z-bbbbbb.json", // kept backup
            "verifications/db/1764200000000-20261124T000000Z-aaaaaa.json", // newest of db
            "verifications/vault/1764000000000-old.json",                  // newest of vault
            "verifications/db/notes.txt",                                  // not a record
            "backups/db/1764000000000-x.json",                             // not a record
        ]
        .iter()
        .filter_map(|p| RecordObject::parse(p))
        .collect();
        assert_eq!(records.len(), 4);
        assert_eq!(records[0].backup_id, "20261124T000000Z-aaaaaa");
        let kept = |source: &str, id: &str| source == "db" && id == "20261125T000000Z-bbbbbb";
        assert_eq!(
            stale_records(&records, kept),
            vec!["verifications/db/1764000000000-20261124T000000Z-aaaaaa.json".to_string()]
        );
        assert!(stale_records(&[], kept).is_empty());
    }

    #[test]
    fn a_record_path_parses_back() {
        let r = record("db", "20261125T000000Z-bbbbbb", 1_764_000_000, true);
        let parsed = RecordObject::parse(&r.path()).unwrap();
        assert_eq!(
            (parsed.source.as_str(), parsed.backup_id.as_str()),
            ("db", "20261125T000000Z-bbbbbb")
        );
    }

    fn record(source: &str, id: &str, secs: i64, ok: bool) -> VerificationRecord {
        VerificationRecord {
            source: source.into(),
            backup_id: id.into(),
            verified_at: DateTime::from_timestamp(secs, 0).unwrap(),
            level: VerifyLevel::Decoded,
            ok,
            unproven: false,
            problems: if ok {
                vec![]
            } else {
                vec!["dump: corrupt".into()]
            },
        }
    }

    #[tokio::test]
    async fn the_newest_record_of_each_source_wins_and_none_is_overwritten() {
        let key = Identities::generate();
        let repo = Repository::init(
            &Location::parse("memory://verifications").unwrap(),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        assert!(last_verifications(&repo).await.unwrap().is_empty());
        // Written out of order: time decides, not the order of writing.
        for r in [
            record("db", "b2", 2_000_000_000, false),
            record("db", "b1", 1_000_000_000, true),
            record("vault", "v1", 1_500_000_000, true),
        ] {
            record_verification(&repo, &r).await.unwrap();
        }
        let again = record_verification(&repo, &record("db", "b1", 1_000_000_000, true)).await;
        assert!(again.is_err(), "a record is never overwritten");
        let last = last_verifications(&repo).await.unwrap();
        assert_eq!(last["db"].backup_id, "b2");
        assert!(!last["db"].ok);
        assert_eq!(last["vault"].backup_id, "v1");
    }
}
