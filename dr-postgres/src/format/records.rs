//! WAL records read from archived segments, as far as `dr` needs them:
//! the record boundaries, and the few record types whose replay matters to
//! a restore (tablespace creation and drop, transaction commits and aborts
//! with their times, restore points, WAL switches).
//!
//! Layouts from PostgreSQL's `src/include/access/xlog_internal.h`
//! (`XLogPageHeaderData`: magic u16, info u16, tli u32, pageaddr u64,
//! rem_len u32; 24 bytes, 40 with the long header of a segment's first
//! page), `src/include/access/xlogrecord.h` (`XLogRecord`: tot_len u32, xid
//! u32, prev u64, info u8, rmid u8, 2 bytes padding, CRC-32C u32; 24 bytes;
//! then the block headers and the main-data header, `XLR_BLOCK_ID_DATA_SHORT`
//! 255 with a 1-byte length or `XLR_BLOCK_ID_DATA_LONG` 254 with a 4-byte
//! one; the main data last), `src/include/access/rmgrlist.h` (resource
//! manager ids), `src/include/commands/tablespace.h`
//! (`xl_tblspc_create_rec`: oid u32, path NUL-terminated),
//! `src/include/access/xact.h` (`xl_xact_commit` / `xl_xact_abort` begin
//! with the transaction's time, microseconds since 2000-01-01 UTC) and
//! `src/include/access/xlog_internal.h` (`xl_restore_point`: time, name).
//! Records start 8-byte aligned and continue across pages and segments;
//! PostgreSQL 15 docs §30.6 "WAL Internals".
//!
//! The reader is the one recovery runs, reduced: it stops where recovery
//! would find the end of WAL (a zero length, a page from another place, a
//! record whose CRC or back-link does not match), and skips the rest of a
//! segment after a WAL switch record. Records are read in the server's byte
//! order; `dr` reads little-endian, the order of every platform it is built
//! for.

use chrono::{DateTime, Utc};

use super::error::FormatError;
use super::names::Lsn;

/// `RM_XLOG_ID`.
pub const RM_XLOG: u8 = 0;
/// `RM_XACT_ID`.
pub const RM_XACT: u8 = 1;
/// `RM_TBLSPC_ID`.
pub const RM_TBLSPC: u8 = 5;

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;
const RECORD_HEADER: usize = 24;
/// `XLOG_SWITCH`, `XLOG_RESTORE_POINT` (`RM_XLOG`).
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
/// `XLOG_TBLSPC_CREATE`, `XLOG_TBLSPC_DROP`.
const XLOG_TBLSPC_CREATE: u8 = 0x00;
const XLOG_TBLSPC_DROP: u8 = 0x10;
/// `XLOG_XACT_OPMASK` and the operations that end a transaction.
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// One WAL record, with what `dr` decodes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// Where the record starts.
    pub lsn: Lsn,
    /// Where the record before it starts (`xl_prev`): a recovery target
    /// LSN of this value stops just before this record (PostgreSQL 15
    /// docs §20.5.5, `recovery_target_inclusive` on).
    pub prev: Lsn,
    /// The transaction that wrote it (0 for none).
    pub xid: u32,
    /// The resource manager (`RM_*`).
    pub rmid: u8,
    /// The resource manager's info bits (`xl_info & 0xF0`).
    pub info: u8,
    /// What the record does, when `dr` decodes it.
    pub kind: RecordKind,
}

/// What a decoded record does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// `CREATE TABLESPACE`: replay makes the directory at `path` (PostgreSQL
    /// 15 docs §26.3.6 "Caveats").
    TablespaceCreate {
        /// The tablespace's oid.
        oid: u32,
        /// The directory written in the record.
        path: String,
    },
    /// `DROP TABLESPACE`.
    TablespaceDrop {
        /// The tablespace's oid.
        oid: u32,
    },
    /// A transaction ends: commit or abort (prepared or not), at `time`.
    XactEnd {
        /// Committed (else aborted).
        commit: bool,
        /// The transaction's commit or abort time.
        time: DateTime<Utc>,
    },
    /// `pg_create_restore_point(name)`.
    RestorePoint {
        /// The restore point's name.
        name: String,
    },
    /// `pg_switch_wal()`: the rest of the segment is unused.
    Switch,
    /// Anything else.
    Other,
}

/// Why [`RecordReader::feed`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// The segment was read to its end; feed the next one.
    More,
    /// The valid WAL ends in this segment (recovery would end here too).
    EndOfWal {
        /// Where the next record would have started.
        at: Lsn,
    },
    /// The callback asked to stop.
    Stopped,
}

/// Reads the records of consecutive WAL segments, fed one at a time.
#[derive(Debug)]
pub struct RecordReader {
    seg_size: u32,
    /// The record being assembled across pages: its start and bytes.
    partial: Option<(Lsn, Vec<u8>, usize)>,
    /// The segment number the next feed must have.
    next_segment: Option<u64>,
    /// The start of the last record read.
    last: Option<Lsn>,
    /// Only records of these resource managers have their CRC checked
    /// (`None`: every record).
    crc_only: Option<&'static [u8]>,
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), PostgreSQL's
/// `pg_crc32c`.
fn crc32c(parts: &[&[u8]]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for p in parts {
        for &b in *p {
            crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

/// PostgreSQL's `TimestampTz` (microseconds since 2000-01-01 UTC).
fn pg_time(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(
        PG_EPOCH_UNIX_SECS + us.div_euclid(1_000_000),
        (us.rem_euclid(1_000_000) * 1000) as u32,
    )
}

/// The main data of a record without block references (the records `dr`
/// decodes have none): after the header, an optional origin and top-level
/// xid, then the main-data header; the data is the record's tail.
fn main_data(rec: &[u8]) -> Option<&[u8]> {
    let mut o = RECORD_HEADER;
    loop {
        let id = *rec.get(o)?;
        match id {
            255 => {
                let len = usize::from(*rec.get(o + 1)?);
                return rec.get(rec.len().checked_sub(len)?..);
            }
            254 => {
                let len = u32le(rec.get(o..o + 5)?, 1) as usize;
                return rec.get(rec.len().checked_sub(len)?..);
            }
            253 => o += 3, // XLR_BLOCK_ID_ORIGIN: u16
            252 => o += 5, // XLR_BLOCK_ID_TOPLEVEL_XID: u32
            _ => return None,
        }
    }
}

/// What the first bytes `rec` of a record that runs on into the next
/// segment say, when its header (`xl_rmid` at byte 17, `xl_info` at 16) is
/// there and names a tablespace creation or drop: the record kind, with the
/// OID (0 when not there yet) and as much of the path as `rec` holds. Such
/// records carry no block references, so their main data follows the
/// optional origin and top-level-xid headers (PostgreSQL's
/// `src/include/access/xlogrecord.h`).
pub fn unfinished_kind(rec: &[u8]) -> Option<RecordKind> {
    if *rec.get(17)? != RM_TBLSPC {
        return None;
    }
    let info = rec[16] & 0xF0;
    let mut o = RECORD_HEADER;
    let data: &[u8] = loop {
        match rec.get(o) {
            Some(253) => o += 3,
            Some(252) => o += 5,
            Some(255) => break rec.get(o + 2..).unwrap_or_default(),
            Some(254) => break rec.get(o + 5..).unwrap_or_default(),
            Some(_) => return None,
            None => break &[],
        }
    };
    let oid = if data.len() >= 4 { u32le(data, 0) } else { 0 };
    match info {
        XLOG_TBLSPC_CREATE => Some(RecordKind::TablespaceCreate {
            oid,
            path: data.get(4..).map(cstr).unwrap_or_default(),
        }),
        XLOG_TBLSPC_DROP => Some(RecordKind::TablespaceDrop { oid }),
        _ => None,
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn decode(rmid: u8, info: u8, rec: &[u8]) -> RecordKind {
    // A switch record has no data.
    if (rmid, info) == (RM_XLOG, XLOG_SWITCH) {
        return RecordKind::Switch;
    }
    let Some(data) = main_data(rec) else {
        return RecordKind::Other;
    };
    match (rmid, info) {
        (RM_TBLSPC, XLOG_TBLSPC_CREATE) if data.len() >= 4 => RecordKind::TablespaceCreate {
            oid: u32le(data, 0),
            path: cstr(&data[4..]),
        },
        (RM_TBLSPC, XLOG_TBLSPC_DROP) if data.len() >= 4 => RecordKind::TablespaceDrop {
            oid: u32le(data, 0),
        },
        (RM_XACT, i) if data.len() >= 8 => {
            let commit = match i & XLOG_XACT_OPMASK {
                XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED => true,
                XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED => false,
                _ => return RecordKind::Other,
            };
            match pg_time(u64le(data, 0) as i64) {
                Some(time) => RecordKind::XactEnd { commit, time },
                None => RecordKind::Other,
            }
        }
        (RM_XLOG, XLOG_RESTORE_POINT) if data.len() >= 8 => RecordKind::RestorePoint {
            name: cstr(&data[8..]),
        },
        _ => RecordKind::Other,
    }
}

const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

impl RecordReader {
    /// A reader of segments of `seg_size` bytes.
    pub fn new(seg_size: u32) -> Self {
        RecordReader {
            seg_size,
            partial: None,
            next_segment: None,
            last: None,
            crc_only: None,
        }
    }

    /// Checks the CRC only of the records of the resource managers `rmids`
    /// (`RM_*`), and trusts the others as far as their length and back-link
    /// go. For a complete segment being archived, where no record is torn
    /// and the end of WAL is not sought: the CRC-32C of every byte is most
    /// of the cost of reading a segment, and the records decoded are still
    /// checked.
    pub fn crc_only_for(mut self, rmids: &'static [u8]) -> Self {
        self.crc_only = Some(rmids);
        self
    }

    /// Reads the records of segment number `segno` (its whole content in
    /// `data`), in order, calling `each` with every complete record until it
    /// returns `false`. A record continued from the previous segment is
    /// completed only when that segment was fed just before; otherwise the
    /// continuation is skipped.
    ///
    /// # Errors
    /// [`FormatError::NotWal`] when `data` is not a segment of this size.
    pub fn feed(
        &mut self,
        name: &str,
        segno: u64,
        data: &[u8],
        mut each: impl FnMut(&WalRecord) -> bool,
    ) -> Result<Fed, FormatError> {
        let bad = |reason: String| FormatError::NotWal {
            file: name.to_string(),
            reason,
        };
        if data.len() != self.seg_size as usize || data.len() < LONG_PAGE_HEADER {
            return Err(bad(format!(
                "{} bytes, expected a segment of {}",
                data.len(),
                self.seg_size
            )));
        }
        let block = u32le(data, 36) as usize;
        if !block.is_power_of_two() || block < 1024 || data.len() % block != 0 {
            return Err(bad(format!("implausible WAL block size {block}")));
        }
        if self.next_segment != Some(segno) {
            self.partial = None;
            self.last = None;
        }
        self.next_segment = Some(segno + 1);
        let seg_start = segno * u64::from(self.seg_size);
        for (page_no, page) in data.chunks(block).enumerate() {
            let page_addr = seg_start + (page_no * block) as u64;
            let info = u16le(page, 2);
            if u16le(page, 0) & 0xF000 != 0xD000 || u64le(page, 8) != page_addr {
                // A page never written in this place: the end of WAL.
                self.partial = None;
                return Ok(Fed::EndOfWal { at: Lsn(page_addr) });
            }
            let header = if info & XLP_LONG_HEADER != 0 {
                LONG_PAGE_HEADER
            } else {
                SHORT_PAGE_HEADER
            };
            let rem_len = u32le(page, 16) as usize;
            let mut o = header;
            if info & XLP_FIRST_IS_CONTRECORD != 0 {
                let take = rem_len.min(block - header);
                match self.partial.take() {
                    Some((start, mut buf, need)) if need == rem_len => {
                        buf.extend_from_slice(&page[header..header + take]);
                        if take == need {
                            match self.finish(start, &buf) {
                                Some(r) => {
                                    if !each(&r) {
                                        return Ok(Fed::Stopped);
                                    }
                                    if r.kind == RecordKind::Switch {
                                        self.partial = None;
                                        return Ok(Fed::More);
                                    }
                                }
                                None => return Ok(Fed::EndOfWal { at: start }),
                            }
                        } else {
                            self.partial = Some((start, buf, need - take));
                        }
                    }
                    // No record to continue (the first segment read, or an
                    // aborted record overwritten): skip the continuation.
                    _ => {}
                }
                o = align8(header + take);
            } else {
                // A record left unfinished was abandoned
                // (XLP_FIRST_IS_OVERWRITE_CONTRECORD).
                self.partial = None;
            }
            while o + 4 <= block && self.partial.is_none() {
                let lsn = Lsn(page_addr + o as u64);
                let tot_len = u32le(page, o) as usize;
                if tot_len == 0 {
                    return Ok(Fed::EndOfWal { at: lsn });
                }
                if tot_len < RECORD_HEADER {
                    return Ok(Fed::EndOfWal { at: lsn });
                }
                let take = tot_len.min(block - o);
                if take < tot_len {
                    self.partial = Some((lsn, page[o..o + take].to_vec(), tot_len - take));
                    break;
                }
                match self.finish(lsn, &page[o..o + take]) {
                    Some(r) => {
                        if !each(&r) {
                            return Ok(Fed::Stopped);
                        }
                        if r.kind == RecordKind::Switch {
                            return Ok(Fed::More);
                        }
                    }
                    None => return Ok(Fed::EndOfWal { at: lsn }),
                }
                o = align8(o + tot_len);
            }
        }
        Ok(Fed::More)
    }

    /// The record the last [`RecordReader::feed`] started but did not finish
    /// (it runs on into the next segment): where it starts and its bytes so
    /// far. `None` when the last record ended in the segment, or when the
    /// bytes so far hold its back-link (`xl_prev`) and it does not point at
    /// the record read before it.
    pub fn unfinished(&self) -> Option<(Lsn, &[u8])> {
        let (start, bytes, _) = self.partial.as_ref()?;
        if bytes.len() >= 16 && self.last.is_some_and(|l| Lsn(u64le(bytes, 8)) != l) {
            return None;
        }
        Some((*start, bytes))
    }

    /// Checks a complete record (its length, CRC and back-link) and decodes
    /// it; `None` where recovery would see the end of WAL.
    fn finish(&mut self, lsn: Lsn, rec: &[u8]) -> Option<WalRecord> {
        if rec.len() < RECORD_HEADER || u32le(rec, 0) as usize != rec.len() {
            return None;
        }
        let crc = u32le(rec, 20);
        let check = self.crc_only.is_none_or(|ids| ids.contains(&rec[17]));
        if check && crc32c(&[&rec[RECORD_HEADER..], &rec[..20]]) != crc {
            return None;
        }
        let prev = Lsn(u64le(rec, 8));
        if self.last.is_some_and(|l| l != prev) {
            return None;
        }
        self.last = Some(lsn);
        let rmid = rec[17];
        let info = rec[16] & 0xF0;
        Some(WalRecord {
            lsn,
            prev,
            xid: u32le(rec, 4),
            rmid,
            info,
            kind: decode(rmid, info, rec),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720 B.4).
        assert_eq!(crc32c(&[b"1234", b"56789"]), 0xE306_9283);
    }

    /// A segment of 1 MiB with 8 KiB pages holding `records` (rmid, info,
    /// main data), laid out as PostgreSQL does: 8-byte aligned, continued
    /// across pages with `XLP_FIRST_IS_CONTRECORD`. A record that does not
    /// fit runs off the segment's end (its first bytes only are written).
    pub(crate) fn segment(
        segno: u64,
        start_prev: u64,
        records: &[(u8, u8, Vec<u8>)],
    ) -> (Vec<u8>, Vec<u64>) {
        const SEG: usize = 1 << 20;
        const BLOCK: usize = 8192;
        let mut seg = vec![0u8; SEG];
        let base = segno * SEG as u64;
        // The usable bytes of the segment, as a stream with page headers.
        let mut pos = LONG_PAGE_HEADER;
        let mut starts = Vec::new();
        let mut prev = start_prev;
        let page_header = |seg: &mut Vec<u8>, page: usize, rem: usize| {
            let at = page * BLOCK;
            let mut info = if page == 0 { XLP_LONG_HEADER } else { 0 };
            if rem > 0 {
                info |= XLP_FIRST_IS_CONTRECORD;
            }
            seg[at..at + 2].copy_from_slice(&0xD110u16.to_le_bytes());
            seg[at + 2..at + 4].copy_from_slice(&info.to_le_bytes());
            seg[at + 4..at + 8].copy_from_slice(&1u32.to_le_bytes());
            seg[at + 8..at + 16].copy_from_slice(&(base + at as u64).to_le_bytes());
            seg[at + 16..at + 20].copy_from_slice(&(rem as u32).to_le_bytes());
            if page == 0 {
                seg[at + 32..at + 36].copy_from_slice(&(SEG as u32).to_le_bytes());
                seg[at + 36..at + 40].copy_from_slice(&(BLOCK as u32).to_le_bytes());
            }
        };
        for page in 0..SEG / BLOCK {
            page_header(&mut seg, page, 0);
        }
        for (rmid, info, data) in records {
            let mut rec = vec![0u8; RECORD_HEADER];
            if data.len() < 256 {
                rec.extend_from_slice(&[255, data.len() as u8]);
            } else {
                rec.push(254);
                rec.extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
            rec.extend_from_slice(data);
            let len = rec.len();
            rec[0..4].copy_from_slice(&(len as u32).to_le_bytes());
            rec[4..8].copy_from_slice(&7u32.to_le_bytes());
            rec[8..16].copy_from_slice(&prev.to_le_bytes());
            rec[16] = *info;
            rec[17] = *rmid;
            let crc = crc32c(&[&rec[RECORD_HEADER..], &rec[..20]]);
            rec[20..24].copy_from_slice(&crc.to_le_bytes());
            pos = align8(pos);
            if pos % BLOCK == 0 {
                pos += SHORT_PAGE_HEADER;
            }
            let start = base + pos as u64;
            starts.push(start);
            prev = start;
            let mut left = &rec[..];
            while !left.is_empty() && pos < SEG {
                let room = BLOCK - pos % BLOCK;
                let n = room.min(left.len());
                seg[pos..pos + n].copy_from_slice(&left[..n]);
                left = &left[n..];
                pos += n;
                if !left.is_empty() && pos < SEG {
                    // Next page: a continuation header.
                    page_header(&mut seg, pos / BLOCK, left.len());
                    pos += SHORT_PAGE_HEADER;
                }
            }
        }
        (seg, starts)
    }

    pub(crate) fn create(oid: u32, path: &str) -> (u8, u8, Vec<u8>) {
        let mut d = oid.to_le_bytes().to_vec();
        d.extend_from_slice(path.as_bytes());
        d.push(0);
        (RM_TBLSPC, XLOG_TBLSPC_CREATE, d)
    }

    fn read_all(r: &mut RecordReader, segno: u64, seg: &[u8]) -> (Vec<WalRecord>, Fed) {
        let mut out = Vec::new();
        let fed = r
            .feed("seg", segno, seg, |rec| {
                out.push(rec.clone());
                true
            })
            .unwrap();
        (out, fed)
    }

    #[test]
    fn reads_records_across_pages_and_decodes_the_ones_dr_needs() {
        // 2000-01-01 + 1 s.
        let commit = (
            RM_XACT,
            XLOG_XACT_COMMIT,
            1_000_000i64.to_le_bytes().to_vec(),
        );
        let big = (10u8, 0u8, vec![0xAB; 20_000]);
        let records = vec![
            big.clone(),
            create(16_390, "/srv/ts2"),
            commit,
            big,
            (
                RM_TBLSPC,
                XLOG_TBLSPC_DROP,
                16_390u32.to_le_bytes().to_vec(),
            ),
        ];
        let (seg, starts) = segment(3, 0, &records);
        let mut r = RecordReader::new(1 << 20);
        let (got, fed) = read_all(&mut r, 3, &seg);
        assert_eq!(
            fed,
            Fed::EndOfWal {
                at: Lsn(starts[4] + 24 + 2 + 4).align8()
            }
        );
        assert_eq!(got.len(), 5);
        assert_eq!(got.iter().map(|g| g.lsn.0).collect::<Vec<_>>(), starts);
        assert_eq!(
            got[1].kind,
            RecordKind::TablespaceCreate {
                oid: 16_390,
                path: "/srv/ts2".into()
            }
        );
        assert_eq!(got[1].prev, Lsn(starts[0]));
        assert_eq!(
            got[2].kind,
            RecordKind::XactEnd {
                commit: true,
                time: DateTime::parse_from_rfc3339("2000-01-01T00:00:01Z")
                    .unwrap()
                    .with_timezone(&Utc)
            }
        );
        assert_eq!(got[4].kind, RecordKind::TablespaceDrop { oid: 16_390 });
    }

    #[test]
    fn a_damaged_record_ends_the_wal_there() {
        let records = vec![create(1, "/a"), create(2, "/b"), create(3, "/c")];
        let (mut seg, starts) = segment(0, 0, &records);
        // Flip a byte of the second record's path: its CRC fails.
        let at = (starts[1] as usize) + 24 + 2 + 5;
        seg[at] ^= 1;
        let (got, fed) = read_all(&mut RecordReader::new(1 << 20), 0, &seg);
        assert_eq!(got.len(), 1);
        assert_eq!(fed, Fed::EndOfWal { at: Lsn(starts[1]) });
        // A page from elsewhere (a recycled segment's old content) inside
        // a record continued over it.
        let (mut seg, _) = segment(0, 0, &[create(1, "/a"), (10, 0, vec![1; 20_000])]);
        seg[8192 + 8] ^= 1;
        let (got, fed) = read_all(&mut RecordReader::new(1 << 20), 0, &seg);
        assert_eq!(got.len(), 1);
        assert_eq!(fed, Fed::EndOfWal { at: Lsn(8192) });
        // Not a segment of this size.
        assert!(RecordReader::new(1 << 20)
            .feed("x", 0, &seg[..4096], |_| true)
            .is_err());
    }

    #[test]
    fn a_switch_skips_the_rest_of_the_segment() {
        // XLOG_SWITCH carries no data: a bare header.
        let (mut seg, starts) = segment(0, 0, &[create(1, "/a"), create(2, "/b")]);
        let at = starts[1] as usize;
        let mut rec = vec![0u8; RECORD_HEADER];
        rec[0..4].copy_from_slice(&(RECORD_HEADER as u32).to_le_bytes());
        rec[8..16].copy_from_slice(&starts[0].to_le_bytes());
        rec[16] = XLOG_SWITCH;
        let crc = crc32c(&[&rec[RECORD_HEADER..], &rec[..20]]);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        seg[at..at + RECORD_HEADER].copy_from_slice(&rec);
        let (got, fed) = read_all(&mut RecordReader::new(1 << 20), 0, &seg);
        assert_eq!(fed, Fed::More);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].kind, RecordKind::Switch);
    }

    #[test]
    fn the_callback_stops_the_reading() {
        let records = vec![create(1, "/a"), create(2, "/b")];
        let (seg, _) = segment(0, 0, &records);
        let mut n = 0;
        let fed = RecordReader::new(1 << 20)
            .feed("x", 0, &seg, |_| {
                n += 1;
                false
            })
            .unwrap();
        assert_eq!((fed, n), (Fed::Stopped, 1));
    }

    impl Lsn {
        fn align8(self) -> Lsn {
            Lsn((self.0 + 7) & !7)
        }
    }
}
