//! Plan actions over logical backups: `postgres.logical_restore` and
//! `postgres.verify`.

use std::sync::Arc;

use async_trait::async_trait;
use dr_core::plan::{Action, ActionContext, ActionOutput, ActionRegistry};
use dr_core::{job, Restorer};
use dr_storage::{Identities, Repository};
use serde::Deserialize;

use super::restore::{LogicalRestoreOptions, PostgresLogicalRestorer};
use crate::conn::ConnectionSettings;

/// Action name of the logical restore.
pub const LOGICAL_RESTORE: &str = "postgres.logical_restore";
/// Action name of the restore check.
pub const VERIFY: &str = "postgres.verify";

/// What the actions read backups from.
#[derive(Debug, Clone)]
pub struct LogicalActionEnv {
    /// The repository.
    pub repository: Repository,
    /// Keys that decrypt it.
    pub identities: Identities,
}

/// Parameters of both actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalParams {
    /// The source name in the repository.
    pub source: String,
    /// Backup id or `latest` (default).
    #[serde(default = "latest")]
    pub backup: String,
    /// The target database (a DSN without password).
    pub dsn: String,
    /// Replace a target that holds objects (restore only).
    #[serde(default)]
    pub clean: bool,
    /// Apply the backup's globals first (restore only).
    #[serde(default)]
    pub globals: bool,
    /// Drop the database properties the target cannot take, with warnings,
    /// instead of failing (restore only; see
    /// [`LogicalRestoreOptions::ignore_database_properties`]).
    #[serde(default)]
    pub ignore_database_properties: bool,
}

fn latest() -> String {
    "latest".into()
}

/// Adds `postgres.logical_restore` (a [`PostgresLogicalRestorer`] into `dsn`;
/// no rollback: the target is created under a temporary name and renamed only
/// when complete) and `postgres.verify` (the restored database's row counts
/// against the backup's, table by table, and its recorded properties:
/// encoding, locale, owner, privileges, settings, comment; fails on any
/// difference).
pub fn register(registry: &mut ActionRegistry, env: LogicalActionEnv) {
    let env = Arc::new(env);
    let e = env.clone();
    registry.register_typed::<LogicalParams, _>(LOGICAL_RESTORE, move |p| {
        Ok(Arc::new(LogicalAction::new(e.clone(), p, false)?) as Arc<dyn Action>)
    });
    registry.register_typed::<LogicalParams, _>(VERIFY, move |p| {
        Ok(Arc::new(LogicalAction::new(env.clone(), p, true)?) as Arc<dyn Action>)
    });
}

#[derive(Debug)]
struct LogicalAction {
    env: Arc<LogicalActionEnv>,
    params: LogicalParams,
    target: ConnectionSettings,
    verify: bool,
}

impl LogicalAction {
    fn new(
        env: Arc<LogicalActionEnv>,
        params: LogicalParams,
        verify: bool,
    ) -> dr_core::Result<Self> {
        let dsn = crate::plan::privileges::check_time_dsn(&params.dsn);
        let target =
            ConnectionSettings::from_dsn(dsn).map_err(|e| dr_core::Error::InvalidConfig {
                key: format!("{}.dsn", if verify { VERIFY } else { LOGICAL_RESTORE }),
                reason: e.to_string(),
            })?;
        Ok(LogicalAction {
            env,
            params,
            target,
            verify,
        })
    }

    fn restorer(&self) -> PostgresLogicalRestorer {
        let opts = LogicalRestoreOptions {
            clean: self.params.clean,
            globals: self.params.globals,
            ignore_database_properties: self.params.ignore_database_properties,
            ..Default::default()
        };
        PostgresLogicalRestorer::new(self.target.clone(), opts)
    }
}

#[async_trait]
impl Action for LogicalAction {
    fn name(&self) -> &'static str {
        if self.verify {
            VERIFY
        } else {
            LOGICAL_RESTORE
        }
    }

    fn describe(&self) -> String {
        if self.verify {
            format!(
                "compare every table of {} with backup {} of {}",
                self.target.target(),
                self.params.backup,
                self.params.source
            )
        } else {
            format!(
                "restore backup {} of {} into {}{}",
                self.params.backup,
                self.params.source,
                self.target.target(),
                if self.params.clean {
                    " (replacing it)"
                } else {
                    ""
                }
            )
        }
    }

    async fn run(&self, _ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let m = self
            .env
            .repository
            .find_backup(Some(&self.params.source), &self.params.backup)
            .await?;
        let restorer = self.restorer();
        if self.verify {
            let report = restorer.check(&m).await?;
            let failures: Vec<String> = report
                .failures()
                .map(|c| format!("{}: expected {}, found {}", c.name, c.expected, c.actual))
                .collect();
            if !failures.is_empty() || report.checks.is_empty() {
                return Err(dr_core::Error::VerificationFailed {
                    what: format!("{} against backup {}", self.target.target(), m.backup_id),
                    reason: if failures.is_empty() {
                        "nothing compared".into()
                    } else {
                        failures.join("; ")
                    },
                });
            }
            return Ok(ActionOutput {
                summary: format!(
                    "{} checks (row counts, database properties) match backup {}",
                    report.checks.len(),
                    m.backup_id
                ),
                state: serde_json::json!({
                    "backup_id": m.backup_id,
                    "tables": report.checks.iter().filter(|c| !c.name.starts_with("database ")).count(),
                    "checks": report.checks.len(),
                }),
                log: String::new(),
            });
        }
        let report =
            job::restore(&self.env.repository, &m, &self.env.identities, &restorer).await?;
        Ok(ActionOutput {
            summary: format!("restored backup {} into {}", m.backup_id, report.target),
            state: serde_json::json!({
                "backup_id": m.backup_id,
                "dsn": self.target.dsn_without_password(),
                "bytes": report.bytes_read,
            }),
            log: report.warnings.join("\n"),
        })
    }
}
