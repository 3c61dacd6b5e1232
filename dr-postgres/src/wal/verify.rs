//! Verification of a physical base backup's WAL: a base backup is only
//! restorable with the WAL from its start to its stop segment (PostgreSQL
//! docs, Continuous Archiving, "Making a Base Backup": the segments written
//! during the backup are needed to reach a consistent state). `dr verify`
//! checks each of them in the archive: present under exactly one content,
//! read whole, and with a key decrypted, decompressed and checked against
//! the SHA-256 in its object name. With the whole chain, it checks every
//! segment on the path of the newest timeline from the backup's start to the
//! newest archived segment (what a `--target latest` recovery replays), as
//! [`super::continuity::check_chain`] walks it.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;

use dr_storage::{Identities, Manifest, Repository, WalArchive, WalObject};

use super::continuity::{check_chain, read_histories, BaseStart, ChainFacts};
use crate::format::{segment_file_name, WalFileName};
use crate::metadata::PhysicalMetadata;

/// At most this many problems are listed one by one; the rest are counted.
const LISTED_PROBLEMS: usize = 20;

/// Segments read at once.
const CONCURRENCY: usize = 4;

/// What [`verify_backup_wal`] found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WalVerification {
    /// Whether every needed segment checked out.
    pub ok: bool,
    /// The WAL archive (source name) the backup's WAL lives in.
    pub wal_source: String,
    /// The first segment checked (the backup's start segment).
    pub first_segment: Option<String>,
    /// The last segment checked (the stop segment, or with the whole chain
    /// the newest archived segment on the path).
    pub last_segment: Option<String>,
    /// Segments checked.
    pub segments_checked: u64,
    /// Whether each segment was decrypted and its digest checked (a key was
    /// given), or only read whole.
    pub decoded: bool,
    /// Whether the whole chain to the newest segment was checked.
    pub whole_chain: bool,
    /// What is wrong, each naming the segment or object.
    pub problems: Vec<String>,
}

/// Checks the WAL that physical backup `manifest` needs (see the module
/// docs): from its start to its stop segment, or with `whole_chain` to the
/// newest archived segment on the newest timeline's path. With
/// `identities` every segment is decrypted and its digest checked.
/// Segments are read [`CONCURRENCY`] at a time.
///
/// A missing segment, a name stored with two contents, a damaged object and
/// (with `whole_chain`) a gap or a backup off the newest timeline's path
/// are problems in an `Ok` result.
///
/// # Errors
/// The manifest is not a physical backup's; the archive cannot be listed;
/// a segment's key does not open it ([`dr_storage::Error::Decrypt`]: the
/// wrong key, not damage); a `.history` file that cannot be read.
pub async fn verify_backup_wal(
    repo: &Repository,
    manifest: &Manifest,
    identities: Option<&Identities>,
    whole_chain: bool,
) -> dr_core::Result<WalVerification> {
    let md = PhysicalMetadata::from_manifest(manifest).map_err(dr_core::Error::from)?;
    let mut out = WalVerification {
        wal_source: md.wal_source.clone(),
        decoded: identities.is_some(),
        whole_chain,
        ..Default::default()
    };
    let Some(system_id) = md.system_id() else {
        out.problems.push(format!(
            "the manifest's system identifier {:?} is not a number",
            md.system_identifier
        ));
        return Ok(out);
    };
    let size = md.wal_segment_size;
    let (start, stop) = match (
        WalFileName::parse(&md.start_segment),
        WalFileName::parse(&md.stop_segment),
    ) {
        (Ok(a), Ok(b)) => (a.segment_no(size), b.segment_no(size)),
        _ => {
            out.problems.push(format!(
                "the manifest's start and stop segments {} and {} are not WAL segment names",
                md.start_segment, md.stop_segment
            ));
            return Ok(out);
        }
    };
    let archive = WalArchive::new(repo, &md.wal_source)?;
    let objects = archive.list(system_id).await?;
    let mut by_name: BTreeMap<&str, Vec<&WalObject>> = BTreeMap::new();
    for o in &objects {
        by_name.entry(o.name.as_str()).or_default().push(o);
    }

    // The backup's own WAL: the highest timeline between the start's and
    // the stop's that holds each segment (recovery reads the newer copy of
    // the segment that holds a switch).
    let mut needed: Vec<String> = (start..=stop)
        .map(|s| {
            (md.timeline..=md.stop_timeline.max(md.timeline))
                .rev()
                .map(|t| segment_file_name(t, s, size))
                .find(|n| by_name.contains_key(n.as_str()))
                .unwrap_or_else(|| segment_file_name(md.stop_timeline, s, size))
        })
        .collect();
    if whole_chain {
        let chain = ChainFacts {
            system_id: system_id.to_string(),
            segment_size: size,
            names: objects.iter().map(|o| o.name.clone()).collect(),
            histories: read_histories(&archive, system_id, &objects, identities).await?,
            bases: vec![BaseStart {
                backup_id: manifest.backup_id.clone(),
                timeline: md.timeline,
                start_lsn: md.start_lsn,
                stop_timeline: md.stop_timeline,
                stop_lsn: md.stop_lsn,
                started_at: manifest.started_at,
            }],
            window_start: None,
        };
        let check = check_chain(&chain);
        out.problems.extend(check.problems);
        out.problems
            .extend(check.gaps.iter().map(ToString::to_string));
        for s in check.segments {
            if !needed.contains(&s) {
                needed.push(s);
            }
        }
    }
    needed.sort_by(|a, b| a[8..].cmp(&b[8..]));
    out.first_segment = needed.first().cloned();
    out.last_segment = needed.last().cloned();
    out.segments_checked = needed.len() as u64;

    let backup = &manifest.backup_id;
    let mut to_read: Vec<&WalObject> = Vec::new();
    for name in &needed {
        match by_name.get(name.as_str()).map(Vec::as_slice) {
            None | Some([]) => out.problems.push(format!(
                "WAL segment {name} of archive {} is missing: backup {backup} needs it{}",
                md.wal_source,
                if whole_chain {
                    ""
                } else {
                    " to reach a consistent state"
                }
            )),
            Some([one]) => to_read.push(one),
            Some([a, b, ..]) => out.problems.push(format!(
                "WAL segment {name} of archive {} is stored with two contents (sha256 {} and {}): recovery \
                 refuses it",
                md.wal_source, a.plain_sha256, b.plain_sha256
            )),
        }
    }
    // Futures collected first: a stream holding a closure over borrowed
    // data makes the caller's future not provably `Send`.
    let reads: Vec<_> = to_read
        .into_iter()
        .map(|o| check_segment(&archive, o, identities))
        .collect();
    let checked: Vec<dr_core::Result<Option<String>>> = futures::stream::iter(reads)
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut damaged = Vec::new();
    for c in checked {
        damaged.extend(c?);
    }
    out.problems.extend(damaged);
    if out.problems.len() > LISTED_PROBLEMS {
        let more = out.problems.len() - LISTED_PROBLEMS;
        out.problems.truncate(LISTED_PROBLEMS);
        out.problems
            .push(format!("... and {more} more WAL problems"));
    }
    out.ok = out.problems.is_empty();
    Ok(out)
}

/// Reads one segment (see [`WalArchive::check_object`]): `Some(problem)`
/// when it is damaged.
///
/// # Errors
/// The key does not open it (not damage: the wrong key).
async fn check_segment(
    archive: &WalArchive,
    obj: &WalObject,
    identities: Option<&Identities>,
) -> dr_core::Result<Option<String>> {
    match archive.check_object(obj, identities).await {
        Ok(_) => Ok(None),
        Err(e @ dr_storage::Error::Decrypt { .. }) => Err(e.into()),
        Err(e) => Ok(Some(format!(
            "WAL segment {} is damaged: {}",
            obj.name,
            dr_core::error_chain(&e)
        ))),
    }
}
