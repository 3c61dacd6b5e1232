//! `postgres.pitr_restore`: the plan step of scenario 3 (data corruption).
//!
//! Restores the newest physical backup of a source that ends before the
//! target time into a new data directory, replays the archived WAL up to the
//! target (PostgreSQL 15 docs §26.3.4, "Recovering Using a Continuous Archive
//! Backup", and §20.5.5 "Recovery Target"), promotes, and starts the new
//! cluster on a free (or given) port with `archive_mode = off`, so that it
//! never pushes its new timeline into the production archive. Its output
//! `state.dsn` is the new cluster's DSN, without password.
//!
//! - Idempotent after a crash: before creating anything the step saves the
//!   data directory and port in its [`Checkpoint`](dr_core::plan::Checkpoint).
//!   A re-run that finds a directory this step created and whose recovery
//!   ended (the `dr` marker in `postgresql.auto.conf`, `recovery.signal`
//!   gone) starts it if needed and returns the same output; one whose
//!   restore or recovery was interrupted is stopped, removed and restored
//!   again. A non-empty directory the step did not create is never touched.
//! - Rollback stops the server and removes the data directory, only when the
//!   directory still carries the marker of this restore, and the tablespace
//!   directories it restored.
//! - Tablespaces go to `<tablespace_dir>/<oid>` (default
//!   `<data_dir>.tablespaces`), never to the production cluster's paths.
//!
//! ```toml
//! [[steps]]
//! name = "pitr-restore"
//! action = "postgres.pitr_restore"
//! rollback = true
//! params = { source = "app-db", target_time = "2024-05-01T09:41:00Z", data_dir = "/var/lib/dr/restore/app-db", database = "app" }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dr_core::plan::{Action, ActionContext, ActionOutput, ActionRegistry};
use dr_storage::{Identities, Repository};
use serde::{Deserialize, Serialize};

use super::error::PitrError;
use super::plan::{plan_pitr, PitrOptions};
use super::restore::pitr_restore;
use super::server::{
    listening_address, log_path, pg_ctl, server_bin, stop_server, RecoveryPoint, RESTORE_MARKER,
};
use super::target::{format_time, parse_target_time, RecoveryTarget};
use crate::conn::ConnectionSettings;
use crate::host::{default_owner, free_port};

/// The action name.
pub const PITR_RESTORE: &str = "postgres.pitr_restore";

/// Parameters of `postgres.pitr_restore`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PitrRestoreParams {
    /// The backup source name in the repository (its physical backups and
    /// WAL archive).
    pub source: String,
    /// Recover to this instant, RFC 3339 with an offset
    /// (`2024-05-01T09:41:00Z`): recovery stops before the first transaction
    /// committed after it (`recovery_target_inclusive` default).
    pub target_time: String,
    /// The data directory of the new cluster: absent or empty.
    pub data_dir: PathBuf,
    /// The port of the new cluster (default: a free one).
    #[serde(default)]
    pub port: Option<u16>,
    /// The host name in the returned DSN (default `127.0.0.1`; the server
    /// listens where the backup's `listen_addresses` says).
    #[serde(default)]
    pub host: Option<String>,
    /// The database in the returned DSN (default `postgres`).
    #[serde(default)]
    pub database: Option<String>,
    /// The user in the returned DSN, also used to wait for recovery
    /// (default `postgres`).
    #[serde(default)]
    pub user: Option<String>,
    /// The application's role: when given, the output also has `app_dsn`,
    /// the same DSN with this user (what the application's `DATABASE_URL`
    /// becomes).
    #[serde(default)]
    pub app_user: Option<String>,
    /// Use this backup (id or unique prefix) instead of the newest suitable one.
    #[serde(default)]
    pub backup: Option<String>,
    /// Every tablespace of the backup is restored into
    /// `<tablespace_dir>/<oid>` (default `<data_dir>.tablespaces`), never
    /// into the production cluster's tablespace paths. A sibling of the data
    /// directory, not inside it: PostgreSQL 15 docs §22.6 warns against
    /// tablespaces inside the data directory (a base backup of the restored
    /// cluster would copy them twice).
    #[serde(default)]
    pub tablespace_dir: Option<PathBuf>,
}

/// What the action needs from its front end: the repository, the keys, and
/// how the restored server's `restore_command` reaches the archive.
#[derive(Clone)]
#[non_exhaustive]
pub struct PitrActionEnv {
    /// The repository holding the backups and the WAL archive.
    pub repository: Repository,
    /// The keys that decrypt them.
    pub identities: Identities,
    /// The `dr` program the restored server runs as
    /// `restore_command = dr wal-fetch ...`.
    pub dr_program: PathBuf,
    /// Arguments before `--source` for `dr wal-fetch`: the repository and the
    /// key *file* (never a key), e.g. `["--repo", URL, "--identity", FILE]`.
    pub fetch_args: Vec<String>,
    /// The PostgreSQL server programs' directory, searched first (see
    /// [`crate::tools`] for the rest of the search).
    pub bin_dir: Option<PathBuf>,
    /// `(uid, gid)` owning the data directory and running the server
    /// (default when root: the `postgres` user).
    pub owner: Option<(u32, u32)>,
    /// Bound on the recovery, lowered to the step's deadline (default 15 min,
    /// the runbook's objective for a database restore).
    pub wait_timeout: Duration,
}

impl PitrActionEnv {
    /// An environment with the defaults.
    pub fn new(
        repository: Repository,
        identities: Identities,
        dr_program: PathBuf,
        fetch_args: Vec<String>,
    ) -> Self {
        PitrActionEnv {
            repository,
            identities,
            dr_program,
            fetch_args,
            bin_dir: None,
            owner: None,
            wait_timeout: Duration::from_secs(900),
        }
    }
}

impl std::fmt::Debug for PitrActionEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PitrActionEnv")
            .field("repository", &self.repository.to_string())
            .field("dr_program", &self.dr_program)
            .field("bin_dir", &self.bin_dir)
            .finish_non_exhaustive()
    }
}

/// The output state of `postgres.pitr_restore` (also its checkpoint).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PitrRestoreState {
    /// The new cluster's DSN, without password, as `user`.
    pub dsn: String,
    /// The same DSN as the application's role (`app_user`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_dsn: Option<String>,
    /// The data directory created.
    pub data_dir: PathBuf,
    /// The port the server listens on.
    pub port: u16,
    /// The backup restored.
    pub backup_id: String,
    /// The target, as written into `recovery_target_time`.
    pub target_time: String,
    /// The server's major version (for `pg_ctl`).
    pub server_major: u32,
    /// Where recovery ended (absent when an earlier attempt had finished it).
    pub reached: Option<ReachedPoint>,
}

/// Where recovery ended, as recorded in the step's output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReachedPoint {
    /// The WAL position after recovery.
    pub lsn: String,
    /// The timeline (a new one after promotion).
    pub timeline: u32,
    /// The commit time of the last transaction replayed.
    pub last_replayed_commit: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the server is still in recovery.
    pub in_recovery: bool,
}

impl From<&RecoveryPoint> for ReachedPoint {
    fn from(r: &RecoveryPoint) -> Self {
        ReachedPoint {
            lsn: r.lsn.clone(),
            timeline: r.timeline,
            last_replayed_commit: r.last_replayed_commit,
            in_recovery: r.in_recovery,
        }
    }
}

/// What an attempt saves before it creates anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Started {
    data_dir: PathBuf,
    port: u16,
}

/// The `postgres.pitr_restore` action.
#[derive(Debug, Clone)]
pub struct PitrRestore {
    env: Arc<PitrActionEnv>,
    source: String,
    target: RecoveryTarget,
    target_text: String,
    data_dir: PathBuf,
    port: Option<u16>,
    host: String,
    database: String,
    user: String,
    app_user: Option<String>,
    backup: Option<String>,
    tablespace_dir: PathBuf,
}

fn invalid(key: &str, reason: impl Into<String>) -> dr_core::Error {
    dr_core::Error::InvalidConfig {
        key: format!("{PITR_RESTORE}.{key}"),
        reason: reason.into(),
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

impl PitrRestore {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`dr_core::Error::InvalidConfig`] naming the parameter: an empty
    /// source, a target time that does not parse or has no offset, a
    /// relative data directory, port 0, a host, user or database name with
    /// characters a DSN would need quoting for.
    pub fn new(env: Arc<PitrActionEnv>, p: PitrRestoreParams) -> dr_core::Result<Self> {
        if p.source.trim().is_empty() {
            return Err(invalid("source", "empty source name"));
        }
        let (t, explicit) =
            parse_target_time(&p.target_time).map_err(|e| invalid("target_time", e.to_string()))?;
        if !explicit {
            // A plan runs unattended: an instant without offset is ambiguous.
            return Err(invalid(
                "target_time",
                format!(
                    "{:?} has no UTC offset; write it in RFC 3339 with one, e.g. {}",
                    p.target_time,
                    format_time(&t)
                ),
            ));
        }
        if !p.data_dir.is_absolute() {
            return Err(invalid(
                "data_dir",
                format!("{} is not an absolute path", p.data_dir.display()),
            ));
        }
        // A Unix socket path is limited to 107 bytes (sun_path).
        if p.data_dir.as_os_str().len() > 80 {
            return Err(invalid(
                "data_dir",
                "longer than 80 bytes: the server's socket inside it would exceed the 107-byte limit of a Unix socket path",
            ));
        }
        let tablespace_dir = match p.tablespace_dir {
            Some(d) if !d.is_absolute() => {
                return Err(invalid(
                    "tablespace_dir",
                    format!("{} is not an absolute path", d.display()),
                ))
            }
            Some(d) if d.starts_with(&p.data_dir) || p.data_dir.starts_with(&d) => {
                return Err(invalid(
                    "tablespace_dir",
                    format!(
                        "{} overlaps the data directory {}",
                        d.display(),
                        p.data_dir.display()
                    ),
                ))
            }
            Some(d) => d,
            None => {
                let mut d = p.data_dir.clone().into_os_string();
                d.push(".tablespaces");
                PathBuf::from(d)
            }
        };
        if p.port == Some(0) {
            return Err(invalid("port", "0 is not a port"));
        }
        let host = p.host.unwrap_or_else(|| "127.0.0.1".into());
        let database = p.database.unwrap_or_else(|| "postgres".into());
        let user = p.user.unwrap_or_else(|| "postgres".into());
        let app_user = p.app_user.clone().unwrap_or_else(|| user.clone());
        for (key, v) in [
            ("host", &host),
            ("database", &database),
            ("user", &user),
            ("app_user", &app_user),
        ] {
            if !name_ok(v) {
                return Err(invalid(
                    key,
                    format!("{v:?}: use letters, digits, '_', '-' and '.' only"),
                ));
            }
        }
        Ok(PitrRestore {
            env,
            source: p.source,
            target_text: format_time(&t),
            target: RecoveryTarget::Time(t),
            data_dir: p.data_dir,
            port: p.port,
            host,
            database,
            user,
            app_user: p.app_user,
            backup: p.backup,
            tablespace_dir,
        })
    }

    fn options(&self, port: u16, wait: Duration) -> PitrOptions {
        let mut o = PitrOptions::new(
            self.data_dir.clone(),
            self.target.clone(),
            self.env.dr_program.clone(),
            self.env.fetch_args.clone(),
        );
        o.backup = self.backup.clone();
        o.start = true;
        o.archive_mode_off = true;
        o.port = Some(port);
        o.owner = self.env.owner;
        o.user = self.user.clone();
        o.bin_dir = self.env.bin_dir.clone();
        o.wait_timeout = wait;
        o.tablespace_root = Some(self.tablespace_dir.clone());
        o
    }

    fn dsn(&self, port: u16) -> String {
        self.dsn_as(&self.user, port)
    }

    fn dsn_as(&self, user: &str, port: u16) -> String {
        format!("postgresql://{user}@{}:{port}/{}", self.host, self.database)
    }

    fn app_dsn(&self, port: u16) -> Option<String> {
        self.app_user.as_deref().map(|u| self.dsn_as(u, port))
    }
}

/// Adds `postgres.pitr_restore` to `registry`, restoring from `env`.
pub fn register(registry: &mut ActionRegistry, env: PitrActionEnv) {
    let env = Arc::new(env);
    registry.register_typed(PITR_RESTORE, move |p: PitrRestoreParams| {
        Ok(Arc::new(PitrRestore::new(env.clone(), p)?) as Arc<dyn Action>)
    });
}

/// Whether `dir` is absent or an empty directory.
fn is_empty_dir(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut e) => e.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// The restore's marker line, when the directory holds one.
fn marker(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("postgresql.auto.conf")).ok()?;
    text.lines()
        .find(|l| l.starts_with(RESTORE_MARKER))
        .map(str::to_string)
}

fn remove_dir(dir: &Path) -> dr_core::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PitrError::io(dir)(e).into()),
    }
}

/// Removes the tablespace directories a restore into `data_dir` made under
/// `tablespace_dir` (found through the links in `pg_tblspc`, so nothing
/// else there is touched), then `tablespace_dir` itself if it is empty.
fn remove_tablespaces(data_dir: &Path, tablespace_dir: &Path) -> dr_core::Result<()> {
    if let Ok(links) = std::fs::read_dir(data_dir.join("pg_tblspc")) {
        for link in links.flatten() {
            let Ok(target) = std::fs::read_link(link.path()) else {
                continue;
            };
            if target.starts_with(tablespace_dir) && target != tablespace_dir {
                remove_dir(&target)?;
            }
        }
    }
    let _ = std::fs::remove_dir(tablespace_dir);
    Ok(())
}

/// Reads `PG_VERSION` (the major version) of a data directory.
fn server_major(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("PG_VERSION"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl PitrRestore {
    /// Connects to the restored cluster through the DSN it returns, so that
    /// the plan's next steps are known to reach it.
    async fn probe(&self, port: u16) -> dr_core::Result<String> {
        let dsn = self.dsn(port);
        let settings = ConnectionSettings::from_dsn(&dsn)?;
        let client = settings.connect().await.map_err(|e| {
            tracing::warn!(error = %e, dsn = %dsn, "restored cluster not reachable through its DSN");
            dr_core::Error::from(e)
        })?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map_err(|e| dr_core::Error::Failed {
                what: format!("querying the restored cluster at {}", settings.target()),
                source: Box::new(e),
            })?;
        Ok(dsn)
    }

    /// A re-run after a crash: the earlier attempt's directory, reused when
    /// its recovery ended, removed otherwise. `Ok(Some)` is the finished output.
    async fn resume(
        &self,
        started: &Started,
        wait: Duration,
    ) -> dr_core::Result<Option<ActionOutput>> {
        if started.data_dir != self.data_dir || is_empty_dir(&self.data_dir) {
            return Ok(None);
        }
        let opts = self.options(started.port, wait);
        let major = server_major(&self.data_dir).unwrap_or(15);
        let done = marker(&self.data_dir)
            .is_some_and(|m| m.contains(&RecoveryTarget::Time(self.target_time()).to_string()))
            && !self.data_dir.join("recovery.signal").exists();
        if done {
            tracing::info!(data_dir = %self.data_dir.display(), "an earlier attempt finished recovery; reusing it");
            if !self.data_dir.join("postmaster.pid").exists() {
                let bin = server_bin(&opts, major).await?;
                let owner = opts.owner.or_else(default_owner);
                let pgdata = self.data_dir.to_string_lossy().to_string();
                let log = log_path(&self.data_dir);
                let timeout = wait.as_secs().max(1).to_string();
                let (ok, out) = pg_ctl(
                    &bin,
                    owner,
                    &[
                        "-D",
                        &pgdata,
                        "-l",
                        &log.to_string_lossy(),
                        "-w",
                        "-t",
                        &timeout,
                        "start",
                    ],
                )
                .await?;
                if !ok {
                    return Err(PitrError::RecoveryFailed {
                        dir: self.data_dir.clone(),
                        reason: format!("pg_ctl start: {}", out.trim()),
                    }
                    .into());
                }
            }
            // The port the server listens on: the recorded one may have
            // moved when it was found taken at the first start.
            let port = listening_address(&self.data_dir).map_or(started.port, |(p, _)| p);
            let dsn = self.probe(port).await?;
            let backup_id = marker(&self.data_dir)
                .and_then(|m| {
                    m.strip_prefix(RESTORE_MARKER)
                        .and_then(|r| r.split_whitespace().next().map(str::to_string))
                })
                .unwrap_or_default();
            let state = PitrRestoreState {
                dsn,
                app_dsn: self.app_dsn(port),
                data_dir: self.data_dir.clone(),
                port,
                backup_id,
                target_time: self.target_text.clone(),
                server_major: major,
                reached: None,
            };
            return Ok(Some(self.output(state, true)));
        }
        tracing::info!(data_dir = %self.data_dir.display(), "an earlier attempt was interrupted; removing its data directory and restoring again");
        if self.data_dir.join("postmaster.pid").exists() {
            stop_server(&opts, major).await?;
        }
        remove_tablespaces(&self.data_dir, &self.tablespace_dir)?;
        remove_dir(&self.data_dir)?;
        Ok(None)
    }

    fn target_time(&self) -> chrono::DateTime<chrono::FixedOffset> {
        match &self.target {
            RecoveryTarget::Time(t) => *t,
            _ => unreachable!("the action only builds time targets"),
        }
    }

    fn output(&self, state: PitrRestoreState, resumed: bool) -> ActionOutput {
        let reached = state
            .reached
            .as_ref()
            .map(|r| format!(" (timeline {}, LSN {})", r.timeline, r.lsn))
            .unwrap_or_default();
        ActionOutput {
            summary: format!(
                "{}restored {} backup {} to {} into {}; server on port {}{reached}",
                if resumed { "already " } else { "" },
                self.source,
                state.backup_id,
                state.target_time,
                state.data_dir.display(),
                state.port
            ),
            state: serde_json::to_value(&state).unwrap_or_default(),
            log: String::new(),
        }
    }
}

#[async_trait]
impl Action for PitrRestore {
    fn name(&self) -> &'static str {
        PITR_RESTORE
    }

    /// Reads the repository for the source's newest physical base backup
    /// and finds the server programs of its major version; writes nothing.
    async fn preflight(&self) -> dr_core::Result<dr_core::plan::Preflight> {
        let backups = self.env.repository.list_backups(Some(&self.source)).await?;
        let newest = backups
            .iter()
            .filter(|m| m.source.kind == crate::metadata::KIND_PHYSICAL)
            .max_by_key(|m| m.finished_at)
            .ok_or_else(|| dr_core::Error::NotFound {
                what: format!(
                    "a physical base backup of {} in the repository",
                    self.source
                ),
            })?;
        let major = crate::metadata::PhysicalMetadata::from_manifest(newest)?.server_major();
        let bin = crate::tools::server_bin_dir(self.env.bin_dir.as_deref(), major).await?;
        Ok(dr_core::plan::Preflight::Reached(format!(
            "newest base backup of {}: {} (PostgreSQL {major}); server programs in {}",
            self.source,
            newest.backup_id,
            bin.display()
        )))
    }

    fn describe(&self) -> String {
        format!(
            "restore the newest physical backup of {:?} that ends before {}{}, replay WAL to {} into {} (tablespaces under {}) and start it on port {} (archive_mode off); DSN {}",
            self.source,
            self.target_text,
            self.backup
                .as_ref()
                .map(|b| format!(" (backup {b})"))
                .unwrap_or_default(),
            self.target_text,
            self.data_dir.display(),
            self.tablespace_dir.display(),
            self.port
                .map(|p| p.to_string())
                .unwrap_or_else(|| "<free>".into()),
            self.dsn(self.port.unwrap_or(0)),
        )
    }

    async fn run(&self, ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let span = tracing::info_span!("pitr_restore", source = %self.source, step = %ctx.step);
        let _enter = span.enter();
        let wait = ctx
            .time_left()
            .map(|t| t.min(self.env.wait_timeout))
            .unwrap_or(self.env.wait_timeout);
        let previous: Option<Started> = ctx
            .checkpoint
            .as_ref()
            .and_then(|c| c.previous())
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        if let Some(started) = &previous {
            if let Some(out) = self.resume(started, wait).await? {
                return Ok(out);
            }
        }
        if !is_empty_dir(&self.data_dir) {
            return Err(PitrError::TargetNotEmpty {
                dir: self.data_dir.clone(),
                reason: "is not empty and was not created by this step; restore into an empty or absent directory".into(),
            }
            .into());
        }
        // Choose first: a target before every backup fails before anything
        // is created.
        let port = match (self.port, &previous) {
            (Some(p), _) => p,
            (None, Some(s)) => s.port,
            (None, None) => free_port().map_err(|e| dr_core::Error::Failed {
                what: "finding a free port".into(),
                source: Box::new(e),
            })?,
        };
        let mut opts = self.options(port, wait);
        // A port dr chose moves when it is found taken at start.
        opts.port_chosen = self.port.is_none();
        let plan = plan_pitr(
            &self.env.repository,
            &self.env.identities,
            &self.source,
            &opts,
        )
        .await?;
        if let Some(c) = &ctx.checkpoint {
            c.save(
                serde_json::to_value(Started {
                    data_dir: self.data_dir.clone(),
                    port,
                })
                .unwrap_or_default(),
            )
            .await?;
        }
        let major = plan.backup.server_version_num / 10000;
        let report = match pitr_restore(&self.env.repository, &self.env.identities, &plan, &opts)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // Leave the directory (its dr-restore.log) for the operator
                // and a re-run; never leave a server running from it.
                if self.data_dir.join("postmaster.pid").exists() {
                    if let Err(stop) = stop_server(&opts, major).await {
                        tracing::warn!(error = %stop, "could not stop the partly restored server");
                    }
                }
                return Err(e.into());
            }
        };
        // Where the server listens (moved when the chosen port was taken).
        let port = report.port.unwrap_or(port);
        let dsn = self.probe(port).await?;
        let state = PitrRestoreState {
            dsn,
            app_dsn: self.app_dsn(port),
            data_dir: self.data_dir.clone(),
            port,
            backup_id: plan.backup_id.clone(),
            target_time: self.target_text.clone(),
            server_major: major,
            reached: report.reached.as_ref().map(ReachedPoint::from),
        };
        tracing::info!(backup_id = %plan.backup_id, port, elapsed_secs = report.elapsed_secs, "point-in-time restore done");
        Ok(self.output(state, false))
    }

    fn has_rollback(&self) -> bool {
        true
    }

    async fn rollback(
        &self,
        _ctx: &ActionContext,
        output: &ActionOutput,
    ) -> dr_core::Result<ActionOutput> {
        let state: PitrRestoreState = serde_json::from_value(output.state.clone())
            .map_err(|e| invalid("state", format!("not the output of this action: {e}")))?;
        if state.data_dir != self.data_dir {
            return Err(invalid(
                "data_dir",
                format!(
                    "the recorded output is for {}, not {}",
                    state.data_dir.display(),
                    self.data_dir.display()
                ),
            ));
        }
        if is_empty_dir(&state.data_dir) {
            return Ok(ActionOutput::summary(format!(
                "{} already removed",
                state.data_dir.display()
            )));
        }
        if marker(&state.data_dir).is_none() {
            return Err(dr_core::Error::Conflict {
                what: state.data_dir.display().to_string(),
                reason: "holds no restore written by dr; not removing it".into(),
            });
        }
        let opts = self.options(state.port, self.env.wait_timeout);
        if state.data_dir.join("postmaster.pid").exists() {
            stop_server(&opts, state.server_major).await?;
        }
        remove_tablespaces(&state.data_dir, &self.tablespace_dir)?;
        remove_dir(&state.data_dir)?;
        tracing::info!(data_dir = %state.data_dir.display(), "restored cluster stopped and removed");
        Ok(ActionOutput::summary(format!(
            "stopped the restored cluster on port {} and removed {}",
            state.port,
            state.data_dir.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn env() -> Arc<PitrActionEnv> {
        let loc = dr_storage::Location::parse(&format!(
            "memory://pitr{}",
            hex::encode(rand::random::<[u8; 6]>())
        ))
        .unwrap();
        let ids = Identities::generate();
        let repo = Repository::init(
            &loc,
            &dr_storage::StoreOptions::default(),
            dr_storage::InitOptions::with_recipients(ids.recipients().to_strings()),
        )
        .await
        .unwrap();
        Arc::new(PitrActionEnv::new(repo, ids, "dr".into(), vec![]))
    }

    fn params(v: serde_json::Value) -> PitrRestoreParams {
        serde_json::from_value(v).unwrap()
    }

    fn key_of(e: dr_core::Error) -> String {
        match e {
            dr_core::Error::InvalidConfig { key, .. } => key,
            other => panic!("not InvalidConfig: {other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_parameters_name_the_key() {
        let env = env().await;
        let base = serde_json::json!({"source": "db", "target_time": "2024-05-01T09:41:00Z", "data_dir": "/tmp/x"});
        let with = |k: &str, v: serde_json::Value| {
            let mut p = base.clone();
            p[k] = v;
            params(p)
        };
        assert!(PitrRestore::new(env.clone(), params(base.clone())).is_ok());
        for (k, v, key) in [
            ("source", serde_json::json!(" "), "source"),
            ("target_time", serde_json::json!("yesterday"), "target_time"),
            (
                "target_time",
                serde_json::json!("2024-05-01 09:41:00"),
                "target_time",
            ),
            ("data_dir", serde_json::json!("rel/dir"), "data_dir"),
            ("port", serde_json::json!(0), "port"),
            ("database", serde_json::json!("a b"), "database"),
            ("host", serde_json::json!("h/x"), "host"),
        ] {
            let e = PitrRestore::new(env.clone(), with(k, v)).unwrap_err();
            assert_eq!(key_of(e), format!("{PITR_RESTORE}.{key}"));
        }
        // Unknown parameters are refused by the registry, naming the action.
        let mut reg = ActionRegistry::new();
        register(&mut reg, PitrActionEnv::clone(&env));
        let mut p = base.clone();
        p["target"] = serde_json::json!("x");
        let e = reg.build(PITR_RESTORE, &p).unwrap_err();
        assert!(key_of(e).starts_with(PITR_RESTORE));
    }

    #[tokio::test]
    async fn describe_and_dsn() {
        let a = PitrRestore::new(
            env().await,
            params(
                serde_json::json!({"source": "db", "target_time": "2024-05-01T11:41:00+02:00",
                "data_dir": "/tmp/x", "port": 6543, "database": "app"}),
            ),
        )
        .unwrap();
        assert_eq!(a.dsn(6543), "postgresql://postgres@127.0.0.1:6543/app");
        let d = a.describe();
        assert!(d.contains("/tmp/x") && d.contains("6543"), "{d}");
    }

    #[tokio::test]
    async fn refuses_a_directory_it_did_not_create() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), b"x").unwrap();
        let a = PitrRestore::new(
            env().await,
            params(
                serde_json::json!({"source": "db", "target_time": "2024-05-01T09:41:00Z",
                "data_dir": dir.path()}),
            ),
        )
        .unwrap();
        let e = a.run(&ActionContext::new("r", "s")).await.unwrap_err();
        assert!(matches!(e, dr_core::Error::Conflict { .. }), "{e:?}");
        assert!(dir.path().join("keep").exists());
        // Rollback does not remove a directory without the restore marker.
        let out = ActionOutput {
            summary: String::new(),
            state: serde_json::to_value(PitrRestoreState {
                dsn: String::new(),
                app_dsn: None,
                data_dir: dir.path().to_path_buf(),
                port: 1,
                backup_id: "b".into(),
                target_time: "t".into(),
                server_major: 15,
                reached: None,
            })
            .unwrap(),
            log: String::new(),
        };
        let e = a
            .rollback(&ActionContext::new("r", "s"), &out)
            .await
            .unwrap_err();
        assert!(matches!(e, dr_core::Error::Conflict { .. }), "{e:?}");
        assert!(dir.path().join("keep").exists());
    }
}
