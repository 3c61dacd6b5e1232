//! The system identifier: from a WAL segment's first page header and from
//! `global/pg_control`.
//!
//! Layouts from PostgreSQL's `src/include/access/xlog_internal.h`
//! (`XLogLongPageHeaderData`: magic u16, info u16, tli u32, pageaddr u64,
//! rem_len u32, padding, sysid u64 at byte 24, seg_size u32 at 32, blcksz u32
//! at 36) and `src/include/catalog/pg_control.h` (`ControlFileData`: system
//! identifier u64 at byte 0, `pg_control_version` u32 at 8, then the catalog
//! version, state, time, checkpoint location at 32 and the checkpoint copy
//! whose `ThisTimeLineID` is at 48). Both are written in the server's byte
//! order; `dr` reads them little-endian, the order of every platform it is
//! built for (x86-64, AArch64).

use std::path::Path;

use super::error::FormatError;
use super::names::{Lsn, WalFileName};

/// `XLP_LONG_HEADER`: the first page of a segment has the long header.
const XLP_LONG_HEADER: u16 = 0x0002;

/// What the first page header of a segment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `xlp_magic`: the WAL format version (0xD110 for PostgreSQL 15).
    pub magic: u16,
    /// The timeline of the page.
    pub timeline: u32,
    /// The WAL location of the page.
    pub page_addr: Lsn,
    /// The cluster's system identifier.
    pub system_id: u64,
    /// The segment size.
    pub seg_size: u32,
    /// The WAL block size.
    pub block_size: u32,
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

/// Reads and checks the long page header at the start of segment `name`:
/// the magic is a WAL magic, the long-header flag is set, the segment size is
/// a power of two from 1 MiB to 1 GiB and equals the file's size, and the
/// page address is the start of the segment the name says.
///
/// # Errors
/// [`FormatError::NotWal`] naming the file and what is wrong.
pub fn segment_header(name: &WalFileName, data: &[u8]) -> Result<SegmentHeader, FormatError> {
    let bad = |reason: String| FormatError::NotWal {
        file: name.name.clone(),
        reason,
    };
    if data.len() < 40 {
        return Err(bad(format!(
            "{} bytes is too short for a WAL segment",
            data.len()
        )));
    }
    let h = SegmentHeader {
        magic: u16le(data, 0),
        timeline: u32le(data, 4),
        page_addr: Lsn(u64le(data, 8)),
        system_id: u64le(data, 24),
        seg_size: u32le(data, 32),
        block_size: u32le(data, 36),
    };
    let info = u16le(data, 2);
    if h.magic & 0xF000 != 0xD000 {
        return Err(bad(format!(
            "page magic {:#06X} is not a WAL page magic",
            h.magic
        )));
    }
    if info & XLP_LONG_HEADER == 0 {
        return Err(bad("the first page has no long header".into()));
    }
    if !h.seg_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&h.seg_size) {
        return Err(bad(format!(
            "segment size {} is not a power of two from 1 MiB to 1 GiB",
            h.seg_size
        )));
    }
    if data.len() as u64 != u64::from(h.seg_size) {
        return Err(bad(format!(
            "file is {} bytes, the header says segments are {}",
            data.len(),
            h.seg_size
        )));
    }
    let expected = Lsn(name.segment_no(h.seg_size) * u64::from(h.seg_size));
    if h.page_addr != expected {
        return Err(bad(format!(
            "first page is at {}, the name says the segment starts at {expected}",
            h.page_addr
        )));
    }
    Ok(h)
}

/// What `dr` reads from `global/pg_control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlData {
    /// The cluster's system identifier.
    pub system_id: u64,
    /// `pg_control_version` (1300 for PostgreSQL 13 to 16).
    pub control_version: u32,
    /// The latest checkpoint location.
    pub checkpoint: Lsn,
    /// The timeline of the latest checkpoint.
    pub timeline: u32,
}

/// Reads `<pgdata>/global/pg_control`. PostgreSQL runs `archive_command` and
/// `restore_command` in the data directory (PostgreSQL 15 docs §20.5.3), so
/// `pgdata` is usually `.`.
///
/// # Errors
/// [`FormatError::Io`] when the file cannot be read, [`FormatError::NotWal`] when
/// it is too short or its version is implausible.
pub fn read_control(pgdata: &Path) -> Result<ControlData, FormatError> {
    let path = pgdata.join("global").join("pg_control");
    let data = std::fs::read(&path).map_err(|source| FormatError::Io {
        path: path.clone(),
        source,
    })?;
    parse_control(&data).map_err(|reason| FormatError::NotWal {
        file: path.display().to_string(),
        reason,
    })
}

fn parse_control(data: &[u8]) -> Result<ControlData, String> {
    if data.len() < 56 {
        return Err(format!("{} bytes is too short for pg_control", data.len()));
    }
    let c = ControlData {
        system_id: u64le(data, 0),
        control_version: u32le(data, 8),
        checkpoint: Lsn(u64le(data, 32)),
        timeline: u32le(data, 48),
    };
    if !(900..10_000).contains(&c.control_version) {
        return Err(format!(
            "pg_control_version {} is not plausible (wrong byte order or not a pg_control file)",
            c.control_version
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(sysid: u64, seg_size: u32, segno: u64) -> Vec<u8> {
        let mut d = vec![0u8; seg_size as usize];
        d[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        d[2..4].copy_from_slice(&0x0006u16.to_le_bytes());
        d[4..8].copy_from_slice(&1u32.to_le_bytes());
        d[8..16].copy_from_slice(&(segno * u64::from(seg_size)).to_le_bytes());
        d[24..32].copy_from_slice(&sysid.to_le_bytes());
        d[32..36].copy_from_slice(&seg_size.to_le_bytes());
        d[36..40].copy_from_slice(&8192u32.to_le_bytes());
        d
    }

    #[test]
    fn reads_and_checks_the_long_header() {
        let name = WalFileName::parse("000000010000000000000003").unwrap();
        let d = segment(7_312_345_678_901_234_567, 1 << 20, 3);
        let h = segment_header(&name, &d).unwrap();
        assert_eq!(h.system_id, 7_312_345_678_901_234_567);
        assert_eq!(h.seg_size, 1 << 20);
        // The wrong segment number in the name.
        let other = WalFileName::parse("000000010000000000000004").unwrap();
        assert!(matches!(
            segment_header(&other, &d),
            Err(FormatError::NotWal { .. })
        ));
        // Truncated, or not WAL at all.
        assert!(segment_header(&name, &d[..4096]).is_err());
        assert!(segment_header(&name, &vec![0u8; 1 << 20]).is_err());
    }

    #[test]
    fn control_version_guards_garbage() {
        let mut d = vec![0u8; 300];
        d[0..8].copy_from_slice(&42u64.to_le_bytes());
        d[8..12].copy_from_slice(&1300u32.to_le_bytes());
        d[48..52].copy_from_slice(&3u32.to_le_bytes());
        let c = parse_control(&d).unwrap();
        assert_eq!((c.system_id, c.timeline), (42, 3));
        d[8..12].copy_from_slice(&1300u32.to_be_bytes());
        assert!(parse_control(&d).is_err());
    }
}
