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
//! Backup schedules stay with their sources (`[sources.NAME] schedule`). The
//! cron expressions and the time zone are checked when the file is loaded
//! ([`super::DrConfig::schedules`]).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

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
    /// configured). Each outcome is recorded in the repository, as `dr
    /// verify` records it.
    #[serde(default)]
    pub verify_schedule: Option<String>,
    /// On SIGTERM, how long running jobs may take to finish before they are
    /// stopped (default 5 minutes; keep it below the pod's
    /// `terminationGracePeriodSeconds`).
    #[serde(default = "default_grace", with = "dr_core::serde_duration::human")]
    pub shutdown_grace: Duration,
    /// How often the repository is read for backups taken outside the agent
    /// and for WAL archiving (default 1 minute).
    #[serde(default = "default_refresh", with = "dr_core::serde_duration::human")]
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

#[cfg(test)]
mod tests {
    use super::super::DrConfig;
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c =
            DrConfig::parse("[sources.db]\nkind = 'postgres'\nschedule = '0 */6 * * *'\n").unwrap();
        assert_eq!(c.sources["db"].schedule.as_deref(), Some("0 */6 * * *"));
        assert_eq!(c.agent.listen, default_listen());
        assert_eq!(c.agent.time_zone, "UTC");
        assert_eq!(c.agent.shutdown_grace, Duration::from_secs(300));
        let c =
            DrConfig::parse("[agent]\nlisten = '0.0.0.0:9100'\nshutdown_grace = '30s'\n").unwrap();
        assert_eq!(c.agent.listen.port(), 9100);
        assert_eq!(c.agent.shutdown_grace, Duration::from_secs(30));
        let chain = |t: &str| dr_core::error_chain(&DrConfig::parse(t).unwrap_err());
        assert!(chain("[agent]\nlisen = '0.0.0.0:9100'\n").contains("lisen"));
        assert!(chain("[agent]\nshutdown_grace = 'soon'\n").contains("soon"));
    }
}
