//! `dr.toml`: the repository, the named sources, objectives, DNS, plans and
//! the agent, in one model that `dr`, `dr-agent` and embedding programs load
//! the same way.
//!
//! Path from `--config` or `DR_CONFIG`; without either, `./dr.toml` when it
//! exists. Unknown keys are errors (`deny_unknown_fields`), and so are bad
//! cron expressions and time zones: they are parsed when the file is loaded,
//! not when a job first runs. Precedence: flags > `DR_*` environment > the
//! file > defaults ([`RepositoryArgs`] carries the first two).

mod agent;
mod repository;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use dr_core::schedule::{parse_time_zone, CronSchedule};
use dr_storage::RepositorySettings;

pub use agent::AgentConfig;
pub use repository::RepositoryArgs;
pub use source::{SourceConfig, SourceEntry};

use crate::error::{Error, Result};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrConfig {
    /// `[repository]`.
    #[serde(default)]
    pub repository: RepositorySettings,
    /// `[objectives]`: RPO and RTO, with per-source overrides.
    #[serde(default)]
    pub objectives: dr_core::objectives::ObjectivesConfig,
    /// `[sources.NAME]`, each with a `kind`.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceEntry>,
    /// `[dns]`: the DNS provider for `dr dns` and `dns.*` plan steps.
    #[serde(default)]
    pub dns: Option<dr_dns::DnsConfig>,
    /// `[plans]`: where plan run journals are kept.
    #[serde(default)]
    pub plans: PlanSettings,
    /// `[agent]`: dr-agent's settings.
    #[serde(default)]
    pub agent: AgentConfig,
    /// The cron expressions of the file, parsed in `[agent] time_zone`.
    #[serde(skip)]
    schedules: Schedules,
}

/// `[plans]` in `dr.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    /// Directory of the local run journals (default `./dr-runs`); a copy goes
    /// to the repository under `plans/runs/`.
    #[serde(default)]
    pub journal_dir: Option<PathBuf>,
}

impl PlanSettings {
    /// The journal directory: `explicit` (a flag), else the file's, else
    /// `./dr-runs`.
    pub fn journal_dir(&self, explicit: Option<&Path>) -> PathBuf {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| self.journal_dir.clone())
            .unwrap_or_else(|| PathBuf::from("dr-runs"))
    }
}

/// The schedules of a configuration, parsed at load.
#[derive(Debug, Clone, Default)]
pub struct Schedules {
    /// `[sources.NAME] schedule`, per source that has one.
    pub backups: BTreeMap<String, CronSchedule>,
    /// `[agent] prune_schedule`.
    pub prune: Option<CronSchedule>,
    /// `[agent] verify_schedule`.
    pub verify: Option<CronSchedule>,
}

impl DrConfig {
    /// Reads `path`.
    ///
    /// # Errors
    /// [`Error::ConfigFile`] for an unreadable file, TOML errors (with line
    /// and key) and unknown keys; [`Error::Config`] naming the key of a bad
    /// source name, cron expression or time zone.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        Self::parse(&text).map_err(|e| match e {
            Error::ConfigFile { source, .. } => Error::ConfigFile {
                path: path.display().to_string(),
                source,
            },
            other => other.context(format!("in configuration {}", path.display())),
        })
    }

    /// Parses TOML text; see [`DrConfig::load`].
    ///
    /// # Errors
    /// As [`DrConfig::load`].
    pub fn parse(text: &str) -> Result<Self> {
        let mut config: DrConfig = toml::from_str(text).map_err(|e| Error::ConfigFile {
            path: "(text)".into(),
            source: Box::new(e),
        })?;
        for name in config.sources.keys() {
            dr_storage::validate_source_name(name)
                .map_err(|e| Error::config(format!("sources.{name}"), e))?;
        }
        config.schedules = config.parse_schedules()?;
        if config.agent.refresh_interval < std::time::Duration::from_secs(1) {
            return Err(Error::config(
                "agent.refresh_interval",
                "must be at least 1s (the repository is read that often)",
            ));
        }
        Ok(config)
    }

    /// Finds the configuration: `explicit` (from `--config`/`DR_CONFIG`),
    /// else `./dr.toml` if present, else the defaults.
    ///
    /// # Errors
    /// As [`DrConfig::load`]; a missing explicit file is an error.
    pub fn discover(explicit: Option<&Path>) -> Result<Self> {
        match explicit {
            Some(p) => Self::load(p),
            None if Path::new("dr.toml").exists() => Self::load(Path::new("dr.toml")),
            None => Ok(DrConfig::default()),
        }
    }

    fn parse_schedules(&self) -> Result<Schedules> {
        let tz = parse_time_zone(&self.agent.time_zone)
            .map_err(|e| Error::config("agent.time_zone", e))?;
        let parse = |key: String, expr: &str| {
            CronSchedule::parse(expr, tz).map_err(|e| Error::config(key, e))
        };
        let mut s = Schedules::default();
        for (name, entry) in &self.sources {
            if let Some(expr) = &entry.schedule {
                s.backups.insert(
                    name.clone(),
                    parse(format!("sources.{name}.schedule"), expr)?,
                );
            }
        }
        s.prune = self
            .agent
            .prune_schedule
            .as_deref()
            .map(|e| parse("agent.prune_schedule".into(), e))
            .transpose()?;
        s.verify = self
            .agent
            .verify_schedule
            .as_deref()
            .map(|e| parse("agent.verify_schedule".into(), e))
            .transpose()?;
        Ok(s)
    }

    /// The schedules, parsed when the file was loaded.
    pub fn schedules(&self) -> &Schedules {
        &self.schedules
    }

    /// The entry of source `name`.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the source when it is not configured.
    pub fn source(&self, name: &str) -> Result<&SourceEntry> {
        self.sources
            .get(name)
            .ok_or_else(|| Error::usage(format!("no source {name:?} in the configuration")))
    }

    /// Each configured source's retention policy.
    pub fn retention_policies(&self) -> BTreeMap<String, dr_core::retention::RetentionPolicy> {
        self.sources
            .iter()
            .map(|(n, e)| (n.clone(), e.retention.clone()))
            .collect()
    }

    /// Each configured source's PITR window (`retention.pitr_window`): WAL
    /// continuity is promised from the window's anchor on.
    pub fn pitr_windows(&self) -> BTreeMap<String, Duration> {
        self.sources
            .iter()
            .filter_map(|(n, e)| e.retention.pitr_window.map(|w| (n.clone(), w)))
            .collect()
    }

    /// The configured source names, in order.
    pub fn source_names(&self) -> Vec<String> {
        self.sources.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let e = DrConfig::parse(text).unwrap_err();
        assert_eq!(e.kind(), dr_core::ErrorKind::Usage, "{e:?}");
        dr_core::error_chain(&e)
    }

    #[test]
    fn parses_sources_and_refuses_unknown_keys() {
        let c = DrConfig::parse(
            r#"
            [repository]
            url = "s3://b/p"
            recipients = ["age1x"]
            [sources.shop]
            kind = "postgres"
            dsn = "postgresql://u@h/shop"
            "#,
        )
        .unwrap();
        assert_eq!(c.repository.url.as_deref(), Some("s3://b/p"));
        assert!(matches!(
            c.sources["shop"].config,
            SourceConfig::Postgres(_)
        ));
        assert!(err("[repository]\nurll = 'x'\n").contains("urll"));
        assert!(err("[sources.a]\nkind = 'postgres'\ndns = 'x'\n").contains("dns"));
        assert!(err("[sources.a]\nkind = 'oracle'\n").contains("oracle"));
        let c = DrConfig::parse(
            "[sources.a]\nkind = 'postgres'\n[sources.a.retention]\nkeep_daily = 7\n",
        )
        .unwrap();
        assert_eq!(c.sources["a"].retention.keep_daily, Some(7));
        assert!(
            err("[sources.a]\nkind = 'postgres'\n[sources.a.retention]\nkeep_dayly = 7\n")
                .contains("keep_dayly")
        );
        assert!(err("[sources.'bad name']\nkind = 'postgres'\n").contains("bad name"));
    }

    #[test]
    fn schedules_and_time_zone_are_parsed_at_load() {
        let c = DrConfig::parse(
            "[agent]\ntime_zone = 'Europe/Berlin'\nprune_schedule = '30 3 * * *'\n\
             [sources.db]\nkind = 'postgres'\nschedule = '0 */6 * * *'\n",
        )
        .unwrap();
        let s = c.schedules();
        assert_eq!(s.backups["db"].expression(), "0 */6 * * *");
        assert_eq!(s.backups["db"].time_zone().name(), "Europe/Berlin");
        assert!(s.prune.is_some() && s.verify.is_none());
        let e = err("[sources.db]\nkind = 'postgres'\nschedule = 'every day'\n");
        assert!(e.contains("sources.db.schedule"), "{e}");
        let e = err("[agent]\ntime_zone = 'Mars/Base'\n");
        assert!(e.contains("agent.time_zone"), "{e}");
        let e = err("[agent]\nverify_schedule = '61 * * * *'\n");
        assert!(e.contains("agent.verify_schedule"), "{e}");
        let e = err("[agent]\nrefresh_interval = '0s'\n");
        assert!(e.contains("agent.refresh_interval"), "{e}");
    }

    #[test]
    fn journal_dir_precedence() {
        let p = PlanSettings {
            journal_dir: Some("/j".into()),
        };
        assert_eq!(p.journal_dir(Some(Path::new("/f"))), PathBuf::from("/f"));
        assert_eq!(p.journal_dir(None), PathBuf::from("/j"));
        assert_eq!(
            PlanSettings::default().journal_dir(None),
            PathBuf::from("dr-runs")
        );
    }
}
