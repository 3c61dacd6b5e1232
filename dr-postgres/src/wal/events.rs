//! What an archived segment's WAL does outside the data directory, found at
//! archive time: the tablespace creations and drops among its records, read
//! with [`crate::format::RecordReader`] and recorded by [`super::wal_push`]
//! beside the segment ([`dr_storage::WalEvent`], see `dr_storage::wal`).
//!
//! Replaying `CREATE TABLESPACE` makes the tablespace at the directory in
//! the record, so a restore beside the cluster from a base backup older than
//! the record would write into the original's tablespace (PostgreSQL 15
//! docs §26.3.7 "Caveats": "take a new base backup after creating or
//! dropping tablespaces"). Record layouts: `src/include/commands/tablespace.h`
//! (`xl_tblspc_create_rec`: `Oid ts_id; char ts_path[]`, NUL-terminated;
//! `xl_tblspc_drop_rec`: `Oid ts_id`), resource manager `RM_TBLSPC_ID` (5),
//! `XLOG_TBLSPC_CREATE` 0x00, `XLOG_TBLSPC_DROP` 0x10.
//!
//! One segment is read alone. A creation or drop whose record runs on into
//! the next segment is recorded with the segment it starts in, recognised
//! by its header (`continued`: its OID and path may be incomplete); one
//! whose record starts in the last 16 bytes of a segment has its resource
//! manager in the next segment, as a continuation that cannot be told apart
//! from any other, and is not seen here (one record start in a million).
//! The restore-time check (`crate::physical`), which reads segments in
//! sequence, finds every one.

use dr_storage::WalEvent;

use crate::format::records::RM_TBLSPC;
use crate::format::records::{unfinished_kind, Fed};
use crate::format::{FormatError, RecordKind, RecordReader, WalFileKind, WalFileName};

/// The tablespace creations and drops among the records of the full
/// segment `name` (its whole content in `data`, whose length is the
/// segment size), in WAL order. Reading stops where recovery would find the
/// end of WAL.
///
/// # Errors
/// [`FormatError::NotWal`] when `name` is not a full segment or `data` is
/// not a segment (a size that is not a power of two of 1 MiB to 1 GiB, an
/// implausible block size).
pub fn segment_events(name: &WalFileName, data: &[u8]) -> Result<Vec<WalEvent>, FormatError> {
    let not_wal = |reason: String| FormatError::NotWal {
        file: name.name.clone(),
        reason,
    };
    if name.kind != WalFileKind::Segment {
        return Err(not_wal("not a full segment".into()));
    }
    let size = u32::try_from(data.len())
        .ok()
        .filter(|s| s.is_power_of_two() && (1 << 20..=1 << 30).contains(s))
        .ok_or_else(|| not_wal(format!("{} bytes is no WAL segment size", data.len())))?;
    let mut out = Vec::new();
    let event = |kind: &RecordKind, lsn: String, continued: bool| match kind {
        RecordKind::TablespaceCreate { oid, path } => Some(WalEvent::TablespaceCreate {
            oid: *oid,
            path: path.clone(),
            lsn,
            continued,
        }),
        RecordKind::TablespaceDrop { oid } => Some(WalEvent::TablespaceDrop {
            oid: *oid,
            lsn,
            continued,
        }),
        _ => None,
    };
    // Only the records decoded here need their CRC checked: the segment is
    // complete, and the CRC of every byte is most of the cost (measured on
    // a 16 MiB segment, debug build: 139 ms checking every record, 13-21 ms
    // checking these).
    let mut reader = RecordReader::new(size).crc_only_for(&[RM_TBLSPC]);
    let fed = reader.feed(&name.name, name.segment_no(size), data, |r| {
        out.extend(event(&r.kind, r.lsn.to_string(), false));
        true
    })?;
    // A creation or drop whose record runs on into the next segment is
    // recognised by its header when the header is here (it is unless the
    // record starts in the segment's last 16 bytes).
    if fed == Fed::More {
        if let Some((lsn, bytes)) = reader.unfinished() {
            if let Some(kind) = unfinished_kind(bytes) {
                out.extend(event(&kind, lsn.to_string(), true));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::records::tests::{create, segment};

    #[test]
    fn finds_creations_and_drops_in_a_segment() {
        let big = (10u8, 0u8, vec![0xAB; 20_000]);
        let drop = (RM_TBLSPC, 0x10, 16_391u32.to_le_bytes().to_vec());
        let records = vec![
            big.clone(),
            create(16_390, "/srv/ts2"),
            big.clone(),
            drop,
            create(16_392, "/srv/ts3"),
            big,
        ];
        let (seg, starts) = segment(3, 0, &records);
        let name = WalFileName::parse("000000010000000000000003").unwrap();
        let got = segment_events(&name, &seg).unwrap();
        let lsn = |i: usize| crate::format::Lsn(starts[i]).to_string();
        assert_eq!(
            got,
            vec![
                WalEvent::TablespaceCreate {
                    oid: 16_390,
                    path: "/srv/ts2".into(),
                    lsn: lsn(1),
                    continued: false
                },
                WalEvent::TablespaceDrop {
                    oid: 16_391,
                    lsn: lsn(3),
                    continued: false
                },
                WalEvent::TablespaceCreate {
                    oid: 16_392,
                    path: "/srv/ts3".into(),
                    lsn: lsn(4),
                    continued: false
                },
            ]
        );
        // Only the tablespace records' CRC is checked: a damaged byte in
        // another record is passed over; one in a creation ends the WAL
        // there, as recovery would.
        let offset = |i: usize, by: usize| (starts[i] - 3 * (1 << 20)) as usize + by;
        let mut other = seg.clone();
        other[offset(0, 100)] ^= 0xFF;
        assert_eq!(segment_events(&name, &other).unwrap(), got);
        let mut torn = seg.clone();
        torn[offset(1, 32)] ^= 0xFF;
        assert!(segment_events(&name, &torn).unwrap().is_empty());
        // A segment without such records has none.
        let (plain, _) = segment(3, 0, &[(10u8, 0u8, vec![1; 100])]);
        assert!(segment_events(&name, &plain).unwrap().is_empty());
        // Not a segment: an error, never a panic.
        assert!(segment_events(&name, &seg[..4096]).is_err());
        let mut garbage = seg.clone();
        garbage[36..40].copy_from_slice(&3u32.to_le_bytes());
        assert!(segment_events(&name, &garbage).is_err());
        let partial = WalFileName::parse("000000010000000000000003.partial").unwrap();
        assert!(segment_events(&partial, &seg).is_err());
    }

    /// A creation whose record runs off the segment's end is recorded with
    /// the segment it starts in, as far as its bytes there go; one whose
    /// header is cut is not (its resource manager is in the next segment).
    #[test]
    fn a_creation_running_into_the_next_segment_is_recorded_by_its_header() {
        const SEG: usize = 1 << 20;
        let name = WalFileName::parse("000000010000000000000003").unwrap();
        let path = "/srv/a-long-tablespace-directory";
        // One filler record sized so that the creation starts `left` bytes
        // before the segment's end (the start grows with the filler's size).
        let with_room = |left: u64| {
            let target = 4 * SEG as u64 - left;
            let build =
                |n: usize| segment(3, 0, &[(10u8, 0u8, vec![0x11; n]), create(16_400, path)]);
            let (mut lo, mut hi) = (0usize, SEG);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if build(mid).1[1] < target {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            let built = build(lo);
            assert_eq!(
                built.1[1], target,
                "no filler puts the creation {left} bytes from the end"
            );
            built
        };
        for left in [40u64, 32, 24] {
            let (seg, starts) = with_room(left);
            let start = *starts.last().unwrap();
            let in_segment = 4 * SEG as u64 - start;
            let got = segment_events(&name, &seg).unwrap();
            assert_eq!(got.len(), 1, "{in_segment} bytes in the segment: {got:?}");
            let WalEvent::TablespaceCreate {
                oid,
                path: p,
                lsn,
                continued,
            } = &got[0]
            else {
                panic!("{got:?}")
            };
            assert!(*continued);
            assert_eq!(lsn, &crate::format::Lsn(start).to_string());
            // 24 header + 2 main data header + 4 OID + path.
            let expect_oid = if in_segment >= 30 { 16_400 } else { 0 };
            assert_eq!(*oid, expect_oid, "{in_segment} bytes in the segment");
            assert!(
                path.starts_with(p.as_str()) && p.len() == (in_segment as usize).saturating_sub(30)
            );
        }
        let (seg, starts) = with_room(16);
        assert_eq!(4 * SEG as u64 - starts.last().unwrap(), 16);
        assert!(segment_events(&name, &seg).unwrap().is_empty());
    }
}
