//! Recovery targets (PostgreSQL 15 docs §20.5.5 "Recovery Target").

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::PitrError;
use crate::format::Lsn;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "value")]
pub enum RecoveryTarget {
    /// As soon as the backup is consistent (`recovery_target = 'immediate'`).
    Immediate,
    /// The end of the archived WAL (no target).
    Latest,
    /// `recovery_target_time`; always written with its offset.
    Time(DateTime<FixedOffset>),
    /// `recovery_target_lsn`.
    Lsn(Lsn),
    /// `recovery_target_xid`.
    Xid(u64),
    /// `recovery_target_name` (a `pg_create_restore_point` name).
    Name(String),
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Immediate => f.write_str("immediate (end of the backup)"),
            RecoveryTarget::Latest => f.write_str("latest (end of the archived WAL)"),
            RecoveryTarget::Time(t) => write!(f, "time {}", format_time(t)),
            RecoveryTarget::Lsn(l) => write!(f, "LSN {l}"),
            RecoveryTarget::Xid(x) => write!(f, "transaction {x}"),
            RecoveryTarget::Name(n) => write!(f, "restore point {n:?}"),
        }
    }
}

/// The value written for `recovery_target_time`: with microseconds and an
/// explicit offset.
pub fn format_time(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string()
}

/// Parses a target time. With an offset (`+00`, `+02:00`, `Z`) it is taken
/// as given; without one it is read as UTC and the second value is `false`,
/// so the caller can print the resolved instant.
///
/// # Errors
/// [`PitrError::InvalidInput`] naming the value and the accepted forms.
pub fn parse_target_time(s: &str) -> Result<(DateTime<FixedOffset>, bool), PitrError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok((t, true));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok((t, true));
        }
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return Ok((n.and_utc().fixed_offset(), false));
        }
    }
    Err(PitrError::InvalidInput {
        what: "target time".into(),
        value: s.to_string(),
        reason: "expected 'YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM]' (an offset is recommended; without one UTC is \
                 assumed)"
            .into(),
    })
}

impl RecoveryTarget {
    /// The `recovery_target*` settings for this target.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            RecoveryTarget::Immediate => vec![("recovery_target", "immediate".into())],
            RecoveryTarget::Latest => vec![],
            RecoveryTarget::Time(t) => vec![("recovery_target_time", format_time(t))],
            RecoveryTarget::Lsn(l) => vec![("recovery_target_lsn", l.to_string())],
            RecoveryTarget::Xid(x) => vec![("recovery_target_xid", x.to_string())],
            RecoveryTarget::Name(n) => vec![("recovery_target_name", n.clone())],
        }
    }

    /// The target time in UTC, for a time target.
    pub fn time_utc(&self) -> Option<DateTime<Utc>> {
        match self {
            RecoveryTarget::Time(t) => Some(t.with_timezone(&Utc)),
            _ => None,
        }
    }
}

/// What the server does at the target (`recovery_target_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetAction {
    /// End recovery and accept writes on a new timeline.
    #[default]
    Promote,
    /// Pause; inspect, then `pg_wal_replay_resume()` to promote.
    Pause,
    /// Shut down, ready to be started again.
    Shutdown,
}

impl TargetAction {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

impl std::str::FromStr for TargetAction {
    type Err = PitrError;
    fn from_str(s: &str) -> Result<Self, PitrError> {
        match s {
            "promote" => Ok(TargetAction::Promote),
            "pause" => Ok(TargetAction::Pause),
            "shutdown" => Ok(TargetAction::Shutdown),
            _ => Err(PitrError::InvalidInput {
                what: "target action".into(),
                value: s.into(),
                reason: "expected promote, pause or shutdown".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_or_get_an_offset() {
        let (t, explicit) = parse_target_time("2026-11-29 14:00:00+00").unwrap();
        assert!(explicit);
        assert_eq!(format_time(&t), "2026-11-29 14:00:00.000000+00:00");
        let (t, explicit) = parse_target_time("2026-11-29 16:00:00.25+02:00").unwrap();
        assert!(explicit);
        assert_eq!(
            t.with_timezone(&Utc).to_rfc3339(),
            "2026-11-29T14:00:00.250+00:00"
        );
        let (t, explicit) = parse_target_time("2026-11-29 14:00:00").unwrap();
        assert!(!explicit);
        assert_eq!(format_time(&t), "2026-11-29 14:00:00.000000+00:00");
        parse_target_time("2026-11-29T14:00:00Z").unwrap();
        assert!(parse_target_time("yesterday").is_err());
        assert_eq!(
            RecoveryTarget::Lsn(Lsn(0x300_0000)).settings(),
            vec![("recovery_target_lsn", "0/3000000".to_string())]
        );
    }
}
