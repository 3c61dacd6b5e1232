//! Recovery objectives: RPO and RTO, from the runbook (DESIGN.md: RPO < 15
//! minutes, RTO < 1 hour).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Objectives of one source (or the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objectives {
    /// Recovery point objective: the most data loss allowed, i.e. the
    /// largest age the newest good backup (or archived WAL) may have.
    #[serde(with = "crate::serde_duration::human")]
    pub rpo: Duration,
    /// Recovery time objective: the longest a recovery may take.
    #[serde(with = "crate::serde_duration::human")]
    pub rto: Duration,
}

impl Default for Objectives {
    fn default() -> Self {
        Objectives {
            rpo: Duration::from_secs(15 * 60),
            rto: Duration::from_secs(3600),
        }
    }
}

/// `[objectives]` in `dr.toml`: defaults plus per-source overrides.
///
/// ```toml
/// [objectives]
/// rpo = "15m"
/// rto = "1h"
/// [objectives.sources.app-db]
/// rpo = "1m"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectivesConfig {
    /// Default RPO (15 minutes when unset).
    #[serde(default, with = "crate::serde_duration::human_option")]
    pub rpo: Option<Duration>,
    /// Default RTO (1 hour when unset).
    #[serde(default, with = "crate::serde_duration::human_option")]
    pub rto: Option<Duration>,
    /// Per-source overrides.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceObjectives>,
}

/// Per-source overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceObjectives {
    /// RPO of this source.
    #[serde(default, with = "crate::serde_duration::human_option")]
    pub rpo: Option<Duration>,
    /// RTO of this source.
    #[serde(default, with = "crate::serde_duration::human_option")]
    pub rto: Option<Duration>,
}

impl ObjectivesConfig {
    /// The objectives that apply to `source`.
    pub fn for_source(&self, source: &str) -> Objectives {
        let d = Objectives::default();
        let o = self.sources.get(source);
        Objectives {
            rpo: o.and_then(|o| o.rpo).or(self.rpo).unwrap_or(d.rpo),
            rto: o.and_then(|o| o.rto).or(self.rto).unwrap_or(d.rto),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c: ObjectivesConfig =
            toml::from_str("rpo = \"30m\"\n[sources.db]\nrpo = \"1m\"\n").unwrap();
        assert_eq!(c.for_source("db").rpo, Duration::from_secs(60));
        assert_eq!(c.for_source("other").rpo, Duration::from_secs(1800));
        assert_eq!(c.for_source("db").rto, Duration::from_secs(3600));
        assert!(toml::from_str::<ObjectivesConfig>("rpp = \"1m\"").is_err());
    }
}
