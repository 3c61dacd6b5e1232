//! What retention and status need to know about a source's WAL archive.
//!
//! LSN ranges of archived segments use the cluster's real WAL segment size
//! (`initdb --wal-segsize`, 1 MiB to 1 GiB; PostgreSQL 15 docs, "initdb"):
//! every physical base backup records it (`wal_segment_size` in its
//! manifest), so [`segment_sizes`] derives it per system identifier and
//! [`DEFAULT_SEGMENT_SIZE`] is used only for a cluster no backup describes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dr_core::retention::WalFacts;
use dr_storage::object_store::path::Path;
use dr_storage::{Manifest, Repository, WalArchive, WalObject};

pub use crate::format::DEFAULT_SEGMENT_SIZE;
use crate::format::{WalFileKind, WalFileName};
use crate::metadata::KIND_PHYSICAL;

/// The two fields of [`crate::metadata::PhysicalMetadata`] that segment
/// sizes need, read leniently: a manifest whose other fields do not parse
/// still tells its cluster's segment size.
#[derive(serde::Deserialize)]
struct SegmentFacts {
    system_identifier: Option<String>,
    wal_segment_size: Option<u64>,
}

/// The WAL segment size of each cluster (by system identifier) that a
/// physical backup in `manifests` describes (`wal_segment_size` of its
/// metadata). When backups of one cluster disagree (only `pg_resetwal
/// --wal-segsize` changes it), the newest backup's value wins, with a
/// warning.
pub fn segment_sizes(manifests: &[Manifest]) -> BTreeMap<u64, u32> {
    let mut physical: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.source.kind == KIND_PHYSICAL)
        .collect();
    physical.sort_by_key(|m| m.started_at);
    let mut out = BTreeMap::new();
    for m in physical {
        let Ok(md) = serde_json::from_value::<SegmentFacts>(m.metadata.clone()) else {
            continue;
        };
        let sysid = md.system_identifier.and_then(|s| s.parse::<u64>().ok());
        let size = md
            .wal_segment_size
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| v.is_power_of_two() && *v >= 1 << 20);
        if let (Some(sysid), Some(size)) = (sysid, size) {
            if let Some(old) = out.insert(sysid, size) {
                if old != size {
                    tracing::warn!(
                        system_id = sysid,
                        old,
                        new = size,
                        backup_id = %m.backup_id,
                        "physical backups of one cluster record different WAL segment sizes; using the newest"
                    );
                }
            }
        }
    }
    out
}

/// The segment size for `system_id`: the recorded one, else
/// [`DEFAULT_SEGMENT_SIZE`].
pub fn segment_size_for(sizes: &BTreeMap<u64, u32>, system_id: u64) -> u32 {
    sizes
        .get(&system_id)
        .copied()
        .unwrap_or(DEFAULT_SEGMENT_SIZE)
}

/// The sources that have a WAL archive in the repository.
///
/// # Errors
/// Store errors.
pub async fn archived_sources(repo: &Repository) -> dr_core::Result<Vec<String>> {
    let listing = repo
        .store()
        .list_with_delimiter(Some(&Path::from("wal")))
        .await
        .map_err(|e| dr_storage::Error::store("wal/", e))?;
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect())
}

/// Every stored object of `source`, per system identifier (one chain each),
/// each listed once (segments, `.partial`, `.backup` and `.history` files).
///
/// # Errors
/// Store errors.
pub async fn list_chains(
    repo: &Repository,
    source: &str,
) -> dr_core::Result<BTreeMap<u64, Vec<WalObject>>> {
    let archive = WalArchive::new(repo, source)?;
    let prefix = Path::from(format!("wal/{source}"));
    let listing = repo
        .store()
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|e| dr_storage::Error::store(prefix.to_string(), e))?;
    let mut out = BTreeMap::new();
    for dir in listing.common_prefixes {
        let Some(sysid) = dir.filename().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        // The listing is recursive: it holds the history/ directory too.
        let mut objects = archive.list(sysid).await?;
        objects.sort_by(|a, b| a.object.cmp(&b.object));
        objects.dedup_by(|a, b| a.object == b.object);
        out.insert(sysid, objects);
    }
    Ok(out)
}

/// Every archived WAL object of `source`, under every system identifier it
/// archived (one chain each), as retention facts: segments, `.partial` and
/// `.backup` files with the LSN range of their segment (the segment size of
/// their cluster from `sizes`, see [`segment_sizes`]), `.history` files with
/// none (kept forever). Also returns when the newest object was stored.
///
/// # Errors
/// Store errors.
pub async fn retention_facts(
    repo: &Repository,
    source: &str,
    sizes: &BTreeMap<u64, u32>,
) -> dr_core::Result<(Vec<WalFacts>, Option<DateTime<Utc>>)> {
    let mut facts = Vec::new();
    let mut newest: Option<DateTime<Utc>> = None;
    for (sysid, objects) in list_chains(repo, source).await? {
        let segment_size = segment_size_for(sizes, sysid);
        for o in objects {
            newest = newest.max(Some(o.last_modified));
            let range = match WalFileName::parse(&o.name) {
                Ok(n) if n.kind == WalFileKind::History => None,
                Ok(n) => {
                    let start = n.segment_no(segment_size) * u64::from(segment_size);
                    Some((start, start + u64::from(segment_size)))
                }
                // Unknown names are kept: retention never guesses.
                Err(_) => None,
            };
            facts.push(WalFacts {
                source: source.to_string(),
                system_id: sysid.to_string(),
                object: o.object.clone(),
                start_lsn: range.map(|r| r.0),
                end_lsn: range.map(|r| r.1),
                stored_bytes: o.stored_size,
            });
        }
    }
    Ok((facts, newest))
}

/// [`retention_facts`] for every source with an archive, with the segment
/// sizes the repository's physical backups record: all facts, and the
/// newest archived time per source.
///
/// # Errors
/// Store errors.
pub async fn all_retention_facts(
    repo: &Repository,
) -> dr_core::Result<(Vec<WalFacts>, BTreeMap<String, DateTime<Utc>>)> {
    let sizes = segment_sizes(&repo.list_backups(None).await?);
    let mut all = Vec::new();
    let mut last = BTreeMap::new();
    for source in archived_sources(repo).await? {
        let (facts, newest) = retention_facts(repo, &source, &sizes).await?;
        all.extend(facts);
        if let Some(t) = newest {
            last.insert(source, t);
        }
    }
    Ok((all, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_storage::{InitOptions, Location, StoreOptions};

    fn manifest(sysid: &str, size: Option<u64>, at: i64) -> Manifest {
        let mut md = serde_json::json!({ "system_identifier": sysid });
        if let Some(s) = size {
            md["wal_segment_size"] = s.into();
        }
        serde_json::from_value(serde_json::json!({
            "format_version": 1,
            "tool_version": "test",
            "repository_id": "r",
            "backup_id": format!("b{at}"),
            "source": { "name": "db", "kind": KIND_PHYSICAL },
            "started_at": DateTime::<Utc>::from_timestamp(at, 0).unwrap(),
            "finished_at": DateTime::<Utc>::from_timestamp(at + 1, 0).unwrap(),
            "codec": { "compression": "zstd", "zstd_level": 3, "encryption": "age-x25519" },
            "recipients": [],
            "artifacts": [],
            "metadata": md,
        }))
        .unwrap()
    }

    #[test]
    fn sizes_come_from_physical_manifests_per_cluster() {
        let ms = vec![
            manifest("7", Some(1 << 20), 10),
            manifest("8", Some(64 << 20), 10),
            manifest("9", None, 10),
            manifest("10", Some(12345), 10),
        ];
        let sizes = segment_sizes(&ms);
        assert_eq!(sizes.get(&7), Some(&(1 << 20)));
        assert_eq!(sizes.get(&8), Some(&(64 << 20)));
        assert_eq!(segment_size_for(&sizes, 9), DEFAULT_SEGMENT_SIZE);
        // Not a power of two: not a WAL segment size, ignored.
        assert_eq!(segment_size_for(&sizes, 10), DEFAULT_SEGMENT_SIZE);
        // A power of two below initdb's 1 MiB minimum: ignored too.
        let sizes = segment_sizes(&[manifest("11", Some(512 << 10), 10)]);
        assert_eq!(segment_size_for(&sizes, 11), DEFAULT_SEGMENT_SIZE);
        // Backups of one cluster that disagree: the newest wins, in any order.
        let sizes = segment_sizes(&[
            manifest("12", Some(32 << 20), 30),
            manifest("12", Some(1 << 20), 20),
        ]);
        assert_eq!(sizes.get(&12), Some(&(32 << 20)));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn facts_use_the_clusters_segment_size() {
        let key = dr_storage::Identities::generate();
        let repo = Repository::init(
            &Location::parse("memory://wal-sizes").unwrap(),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        let a = WalArchive::new(&repo, "db").unwrap();
        a.push(
            7,
            "000000010000000000000021",
            bytes::Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
        a.push(
            7,
            "00000002.history",
            bytes::Bytes::from_static(b"1\t0/21000000\tx\n"),
        )
        .await
        .unwrap();
        let mut sizes = BTreeMap::new();
        sizes.insert(7u64, 1u32 << 20);
        let (facts, newest) = retention_facts(&repo, "db", &sizes).await.unwrap();
        assert!(newest.is_some());
        assert_eq!(facts.len(), 2, "each object once: {facts:?}");
        let seg = facts.iter().find(|f| f.start_lsn.is_some()).unwrap();
        // Segment 0x21 of 1 MiB starts at 33 MiB, not at 33 * 16 MiB.
        assert_eq!(seg.start_lsn, Some(0x21 << 20));
        assert_eq!(seg.end_lsn, Some(0x22 << 20));
        let (facts, _) = retention_facts(&repo, "db", &BTreeMap::new())
            .await
            .unwrap();
        let seg = facts.iter().find(|f| f.start_lsn.is_some()).unwrap();
        assert_eq!(seg.start_lsn, Some(0x21 * u64::from(DEFAULT_SEGMENT_SIZE)));
        // The history file has no range: retention keeps it forever.
        let history = facts
            .iter()
            .find(|f| f.object.contains(".history"))
            .unwrap();
        assert_eq!((history.start_lsn, history.end_lsn), (None, None));

        // Every source with an archive, and when each last archived.
        WalArchive::new(&repo, "other")
            .unwrap()
            .push(
                9,
                "000000010000000000000003",
                bytes::Bytes::from_static(b"y"),
            )
            .await
            .unwrap();
        let (all, last) = all_retention_facts(&repo).await.unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all.iter().filter(|f| f.source == "other").count(), 1);
        assert_eq!(last.keys().collect::<Vec<_>>(), vec!["db", "other"]);
        assert_eq!(last["db"], newest.unwrap());
    }
}
