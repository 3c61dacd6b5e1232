//! What retention and status need to know about a source's WAL archive.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dr_core::retention::WalFacts;
use dr_storage::object_store::path::Path;
use dr_storage::{Repository, WalArchive};

use super::names::{WalFileKind, WalFileName};

/// The WAL segment size assumed for LSN ranges: PostgreSQL's default (16 MiB,
/// `initdb --wal-segsize`). A physical backup's manifest records the real one.
pub const DEFAULT_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;

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

/// Every archived WAL object of `source`, under every system identifier it
/// archived (one chain each), as retention facts: segments, `.partial` and
/// `.backup` files with the LSN range of their segment (`segment_size`
/// bytes), `.history` files with none (kept forever). Also returns when the
/// newest object was stored.
///
/// # Errors
/// Store errors.
pub async fn retention_facts(
    repo: &Repository,
    source: &str,
    segment_size: u32,
) -> dr_core::Result<(Vec<WalFacts>, Option<DateTime<Utc>>)> {
    let archive = WalArchive::new(repo, source)?;
    let prefix = Path::from(format!("wal/{source}"));
    let listing = repo
        .store()
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|e| dr_storage::Error::store(prefix.to_string(), e))?;
    let mut facts = Vec::new();
    let mut newest: Option<DateTime<Utc>> = None;
    for dir in listing.common_prefixes {
        let Some(sysid) = dir.filename().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let mut objects = archive.list(sysid).await?;
        objects.extend(archive.list_history(sysid).await?);
        for o in objects {
            newest = newest.max(Some(o.last_modified));
            let range = match WalFileName::parse(&o.name) {
                Ok(n) if n.kind == WalFileKind::History => None,
                Ok(n) => {
                    let start = n.segment_no(segment_size) * segment_size as u64;
                    Some((start, start + segment_size as u64))
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

/// [`retention_facts`] for every source with an archive: all facts, and the
/// newest archived time per source.
///
/// # Errors
/// Store errors.
pub async fn all_retention_facts(
    repo: &Repository,
) -> dr_core::Result<(Vec<WalFacts>, BTreeMap<String, DateTime<Utc>>)> {
    let mut all = Vec::new();
    let mut last = BTreeMap::new();
    for source in archived_sources(repo).await? {
        let (facts, newest) = retention_facts(repo, &source, DEFAULT_SEGMENT_SIZE).await?;
        all.extend(facts);
        if let Some(t) = newest {
            last.insert(source, t);
        }
    }
    Ok((all, last))
}
