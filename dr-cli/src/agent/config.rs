//! `[agent]` in `dr.toml`: what `dr-agent` needs beyond the sources.
//!
//! ```toml
//! [agent]
//! listen = "0.0.0.0:9477"
//! time_zone = "UTC"
//! prune_schedule = "30 3 * * *"
//! verify_schedule = "0 5 * * *"
//! shutdown_grace = "5m"
//! refresh_interval = "1m"
//! [agent.notify.webhook]
//! url_file = "/run/secrets/slack-webhook"
//! ```
//!
//! Backup schedules stay with their sources (`[sources.NAME] schedule`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::config::DrConfig;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9477))
}

fn default_time_zone() -> String {
    "UTC".into()
}

fn default_grace() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_refresh() -> Duration {
    Duration::from_secs(60)
}

/// `[agent]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address of `/metrics`, `/health` and `/ready` (default
    /// `127.0.0.1:9477`; `0.0.0.0:9477` in a pod).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// IANA time zone the cron expressions are read in (default `UTC`).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Cron schedule of `prune` over the whole repository.
    #[serde(default)]
    pub prune_schedule: Option<String>,
    /// Cron schedule of the verification of each source's newest backup
    /// (every object's digest; decrypted to the end when a key is
    /// configured).
    #[serde(default)]
    pub verify_schedule: Option<String>,
    /// On SIGTERM, how long running jobs may take to finish before they are
    /// stopped (default 5 minutes; keep it below the pod's
    /// `terminationGracePeriodSeconds`).
    #[serde(default = "default_grace", with = "humantime_duration")]
    pub shutdown_grace: Duration,
    /// How often the repository is read for backups taken outside the agent
    /// and for WAL archiving (default 1 minute).
    #[serde(default = "default_refresh", with = "humantime_duration")]
    pub refresh_interval: Duration,
    /// `[agent.notify]`.
    #[cfg(feature = "notify")]
    #[serde(default)]
    pub notify: Option<dr_core::notify::NotifyConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        toml::from_str("").expect("the defaults parse")
    }
}

mod humantime_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// Reads `path` into the shared [`DrConfig`] and the `[agent]` table.
///
/// The `[agent]` table is taken out before [`DrConfig::parse`] sees the rest,
/// so this works whether or not `DrConfig` knows the table.
///
/// # Errors
/// Unreadable file, TOML errors, unknown keys (naming them).
pub fn load(path: &Path) -> Result<(DrConfig, AgentConfig)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading configuration {}", path.display()))?;
    parse(&text).with_context(|| format!("in configuration {}", path.display()))
}

/// As [`load`], from text.
///
/// # Errors
/// TOML errors and unknown keys.
pub fn parse(text: &str) -> Result<(DrConfig, AgentConfig)> {
    let mut table: toml::Table = toml::from_str(text)?;
    let agent = match table.remove("agent") {
        Some(v) => AgentConfig::deserialize(v).context("in [agent]")?,
        None => AgentConfig::default(),
    };
    let rest = toml::to_string(&table)?;
    Ok((DrConfig::parse(&rest)?, agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let (c, a) = parse("[sources.db]\nkind = 'postgres'\nschedule = '0 */6 * * *'\n").unwrap();
        assert_eq!(c.sources["db"].schedule.as_deref(), Some("0 */6 * * *"));
        assert_eq!(a.listen, default_listen());
        assert_eq!(a.time_zone, "UTC");
        assert_eq!(a.shutdown_grace, Duration::from_secs(300));
        let (_, a) = parse("[agent]\nlisten = '0.0.0.0:9100'\nshutdown_grace = '30s'\n").unwrap();
        assert_eq!(a.listen.port(), 9100);
        assert_eq!(a.shutdown_grace, Duration::from_secs(30));
        let e = parse("[agent]\nlisen = '0.0.0.0:9100'\n").unwrap_err();
        assert!(format!("{e:#}").contains("lisen"), "{e:#}");
        let e = parse("[agent]\nshutdown_grace = 'soon'\n").unwrap_err();
        assert!(format!("{e:#}").contains("soon"), "{e:#}");
        let e = parse("[repository]\nurll = 'x'\n").unwrap_err();
        assert!(format!("{e:#}").contains("urll"), "{e:#}");
    }
}
