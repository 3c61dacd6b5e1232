//! The names PostgreSQL gives archived files, and log sequence numbers.
//!
//! PostgreSQL 15 docs §26.3.1 and §30.6 ("WAL Internals"): a segment file is
//! named by 24 hex digits, timeline, log and segment number (8 each); a
//! timeline history file is `<timeline>.history`; a backup history file
//! `<segment>.<offset>.backup`; a segment that ended a timeline early is
//! archived by a promoted standby or `pg_receivewal` as `<segment>.partial`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::FormatError;

/// The WAL segment size assumed for a cluster that no physical backup
/// describes: PostgreSQL's default, 16 MiB (`initdb --wal-segsize` chooses
/// 1 MiB to 1 GiB; PostgreSQL 15 docs, "initdb"), in bytes.
pub const DEFAULT_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;

/// A WAL location (`XLogRecPtr`), shown as `16/B374D848`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        let bad = || FormatError::InvalidInput {
            what: "LSN".into(),
            value: s.to_string(),
            reason: "expected two hex numbers separated by '/', like 0/3000060".into(),
        };
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Lsn {
    /// The number of the segment holding this location.
    pub fn segment_no(self, seg_size: u32) -> u64 {
        self.0 / u64::from(seg_size)
    }

    /// The name of the segment holding this location on `timeline`.
    pub fn segment_name(self, timeline: u32, seg_size: u32) -> String {
        segment_file_name(timeline, self.segment_no(seg_size), seg_size)
    }

    /// The offset of this location inside its segment.
    pub fn segment_offset(self, seg_size: u32) -> u32 {
        (self.0 % u64::from(seg_size)) as u32
    }
}

/// The file name of segment number `segno` on `timeline` (PostgreSQL's
/// `XLogFileName`).
pub fn segment_file_name(timeline: u32, segno: u64, seg_size: u32) -> String {
    let per_log = 0x1_0000_0000u64 / u64::from(seg_size);
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segno / per_log,
        segno % per_log
    )
}

/// What an archived file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalFileKind {
    /// A complete WAL segment.
    Segment,
    /// A segment cut short at a timeline switch (`.partial`).
    Partial,
    /// A timeline history file (`.history`).
    History,
    /// A backup history file (`.backup`).
    Backup,
}

/// A parsed archived file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFileName {
    /// The name as given.
    pub name: String,
    /// What it is.
    pub kind: WalFileKind,
    /// The timeline.
    pub timeline: u32,
    /// Log number (high 32 bits of the segment's location); 0 for history files.
    pub log: u32,
    /// Segment within the log; 0 for history files.
    pub seg: u32,
    /// Offset of the backup start, for `.backup` files.
    pub offset: Option<u32>,
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

impl WalFileName {
    /// Parses any name PostgreSQL archives.
    ///
    /// # Errors
    /// [`FormatError::InvalidInput`] naming the file.
    pub fn parse(name: &str) -> Result<Self, FormatError> {
        let bad = || FormatError::InvalidInput {
            what: "WAL file name".into(),
            value: name.to_string(),
            reason: "expected a segment (24 hex digits), <segment>.partial, <timeline>.history or \
                     <segment>.<offset>.backup"
                .into(),
        };
        let segment = |s: &str| -> Option<(u32, u32, u32)> {
            if s.len() != 24 {
                return None;
            }
            Some((hex8(&s[..8])?, hex8(&s[8..16])?, hex8(&s[16..])?))
        };
        let (kind, base, offset) = if let Some(t) = name.strip_suffix(".history") {
            let tli = hex8(t).filter(|t| *t > 0).ok_or_else(bad)?;
            return Ok(WalFileName {
                name: name.to_string(),
                kind: WalFileKind::History,
                timeline: tli,
                log: 0,
                seg: 0,
                offset: None,
            });
        } else if let Some(s) = name.strip_suffix(".partial") {
            (WalFileKind::Partial, s, None)
        } else if let Some(s) = name.strip_suffix(".backup") {
            let (seg, off) = s.split_once('.').ok_or_else(bad)?;
            (WalFileKind::Backup, seg, Some(hex8(off).ok_or_else(bad)?))
        } else {
            (WalFileKind::Segment, name, None)
        };
        let (timeline, log, seg) = segment(base).ok_or_else(bad)?;
        if timeline == 0 {
            return Err(bad());
        }
        Ok(WalFileName {
            name: name.to_string(),
            kind,
            timeline,
            log,
            seg,
            offset,
        })
    }

    /// The segment number, for a segment size.
    pub fn segment_no(&self, seg_size: u32) -> u64 {
        u64::from(self.log) * (0x1_0000_0000u64 / u64::from(seg_size)) + u64::from(self.seg)
    }

    /// Whether the file carries WAL pages (a segment or a partial segment).
    pub fn has_pages(&self) -> bool {
        matches!(self.kind, WalFileKind::Segment | WalFileKind::Partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_segments_and_partial_segments_carry_pages() {
        let kind = |n: &str| WalFileName::parse(n).unwrap().has_pages();
        assert!(kind("000000010000000000000003"));
        assert!(kind("000000010000000000000003.partial"));
        assert!(!kind("00000002.history"));
        assert!(!kind("000000010000000000000003.00000028.backup"));
    }

    #[test]
    fn the_default_segment_is_initdbs_16_mib() {
        assert_eq!(DEFAULT_SEGMENT_SIZE, 16_777_216);
        // 0/1000000 is the first byte of segment 1 at that size.
        assert_eq!(Lsn(0x0100_0000).segment_no(DEFAULT_SEGMENT_SIZE), 1);
    }

    #[test]
    fn lsn_round_trip_and_segments() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(l.segment_name(1, 16 << 20), "0000000100000016000000B3");
        assert_eq!(
            Lsn(0x300_0060).segment_name(2, 16 << 20),
            "000000020000000000000003"
        );
        assert!("3000000".parse::<Lsn>().is_err());
        assert!("0/xyz".parse::<Lsn>().is_err());
        assert_eq!(
            segment_file_name(1, 0x1_05, 16 << 20),
            "000000010000000100000005"
        );
    }

    #[test]
    fn parses_every_archived_name() {
        let s = WalFileName::parse("0000000100000002000000AB").unwrap();
        assert_eq!(
            (s.kind, s.timeline, s.log, s.seg),
            (WalFileKind::Segment, 1, 2, 0xAB)
        );
        assert_eq!(s.segment_no(16 << 20), 2 * 256 + 0xAB);
        let p = WalFileName::parse("000000030000000000000004.partial").unwrap();
        assert_eq!((p.kind, p.timeline), (WalFileKind::Partial, 3));
        let h = WalFileName::parse("0000000A.history").unwrap();
        assert_eq!((h.kind, h.timeline), (WalFileKind::History, 10));
        let b = WalFileName::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!((b.kind, b.offset), (WalFileKind::Backup, Some(0x28)));
        for bad in [
            "",
            "RECOVERYXLOG",
            "00000001000000000000000",
            "000000010000000000000002.backup",
            "00000000.history",
            "000000000000000000000001",
            "00000001000000000000000G",
            "000000010000000000000001.partial.x",
            "../000000010000000000000001",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad}");
        }
    }

    /// Names that are one character off what PostgreSQL writes: a ninth
    /// digit, a sign `from_str_radix` would take.
    #[test]
    fn near_misses_are_refused() {
        for bad in [
            "000000001.history",
            "+0000001.history",
            "000000010000000000000002.000000028.backup",
            "000000010000000000000002.+0000028.backup",
            "000000010000000000000002.0000028.backup",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad}");
        }
    }

    /// The WAL segment sizes `initdb --wal-segsize` allows: powers of two
    /// from 1 MiB to 1 GiB.
    fn seg_sizes() -> impl proptest::strategy::Strategy<Value = u32> {
        (20u32..=30).prop_map(|p| 1 << p)
    }

    use proptest::prelude::*;

    proptest! {
        /// An LSN prints as PostgreSQL prints it and parses back.
        #[test]
        fn lsns_print_and_parse_back(v in any::<u64>()) {
            let l = Lsn(v);
            let text = l.to_string();
            prop_assert_eq!(text.parse::<Lsn>().unwrap(), l);
            prop_assert_eq!(text, format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF));
        }

        /// A location is its segment's start plus its offset in it, and the
        /// offset lies inside the segment.
        #[test]
        fn a_location_is_its_segment_and_offset(v in any::<u64>(), size in seg_sizes()) {
            let l = Lsn(v);
            let off = l.segment_offset(size);
            prop_assert!(off < size);
            prop_assert_eq!(l.segment_no(size) * u64::from(size) + u64::from(off), v);
        }

        /// Segment names parse back to their timeline and number, and on
        /// one timeline order as the segments do (as PostgreSQL's archiver
        /// and `pg_archivecleanup` compare them).
        #[test]
        fn segment_names_parse_back_and_order_as_segments(
            tli in 1u32..=u32::MAX,
            a in 0u64..(1 << 40),
            b in 0u64..(1 << 40),
            size in seg_sizes(),
        ) {
            let per = 0x1_0000_0000u64 / u64::from(size);
            let max = u64::from(u32::MAX) * per;
            let (a, b) = (a % max, b % max);
            let na = segment_file_name(tli, a, size);
            let nb = segment_file_name(tli, b, size);
            let pa = WalFileName::parse(&na).unwrap();
            prop_assert_eq!(pa.kind, WalFileKind::Segment);
            prop_assert_eq!(pa.timeline, tli);
            prop_assert_eq!(pa.segment_no(size), a);
            prop_assert_eq!(&pa.name, &na);
            prop_assert_eq!(na.cmp(&nb), a.cmp(&b));
            let partial = WalFileName::parse(&format!("{na}.partial")).unwrap();
            prop_assert_eq!((partial.kind, partial.segment_no(size)), (WalFileKind::Partial, a));
            let history = WalFileName::parse(&format!("{tli:08X}.history")).unwrap();
            prop_assert_eq!((history.kind, history.timeline), (WalFileKind::History, tli));
        }

        /// Anything that is not one of the four forms is refused, never a
        /// panic.
        #[test]
        fn arbitrary_names_never_panic(name in "[0-9A-Fa-f.+/a-z]{0,40}") {
            if let Ok(n) = WalFileName::parse(&name) {
                let base_ok = match n.kind {
                    WalFileKind::History => name.len() == 16,
                    WalFileKind::Segment => name.len() == 24,
                    WalFileKind::Partial => name.len() == 32,
                    WalFileKind::Backup => name.len() == 40,
                };
                prop_assert!(base_ok, "{} parsed as {:?}", name, n);
                prop_assert!(name.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.' || b.is_ascii_lowercase()));
            }
        }
    }
}
