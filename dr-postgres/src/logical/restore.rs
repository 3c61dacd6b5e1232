//! The logical restorer: `pg_restore` into a database, never leaving a
//! partial restore under the target's name.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use dr_core::{BackupReader, Check, CheckReport, RestoreReport};
use dr_storage::Manifest;
use tokio::io::AsyncReadExt;
use tokio_postgres::Client;

use super::counts::quote_ident;
use super::counts::{count_one, LARGE_OBJECTS};
use super::properties::{self, dbname_conninfo, quote_literal, PropertyPlan, TargetFacts};
use crate::conn::ConnectionSettings;
use crate::error::{Error, Result};
use crate::metadata::{
    DatabaseProperties, LogicalMetadata, DUMP_ARTIFACT, GLOBALS_ARTIFACT, KIND_LOGICAL,
};
use crate::tools::{self, tail};

/// Options of a logical restore.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LogicalRestoreOptions {
    /// Replace a target database that already holds objects (it is dropped
    /// only after the new copy restored completely).
    pub clean: bool,
    /// Apply the backup's globals (roles, tablespaces) to the target server
    /// first. Errors for roles that already exist are reported as warnings.
    pub globals: bool,
    /// `pg_restore --jobs`. Above 1 the dump is first decoded into a file in
    /// `staging_dir` (pg_restore needs a seekable file for parallel restore).
    pub jobs: u32,
    /// Where the dump is staged for a parallel restore (default: the system
    /// temporary directory).
    pub staging_dir: Option<PathBuf>,
    /// `pg_restore --no-owner --no-privileges`: objects belong to the
    /// restoring user (for scratch targets without the source's roles).
    pub no_owner: bool,
    /// Directory of the PostgreSQL client programs.
    pub bin_dir: Option<PathBuf>,
    /// Restore even when the target server cannot give the database a
    /// property the backup recorded (a locale it lacks, a role that does not
    /// exist) or a pre-created target has another encoding or locale: the
    /// property is dropped and named in the report's warnings. Without it
    /// such a restore fails before creating anything.
    pub ignore_database_properties: bool,
}

/// Restores a logical backup into a database.
///
/// The data goes into a new database under a temporary name
/// (`<target>_dr_<random>`), created from `template0` with the encoding and
/// locale the backup recorded ([`DatabaseProperties`]); `pg_restore` fills
/// it, the recorded owner, connection limit, privileges and settings are
/// applied, and only then is it renamed to the target (after dropping a
/// previous target when `clean` allows) and given the recorded comment. A
/// failure drops the temporary database: the target is never left half
/// restored.
///
/// Before anything is created the restore checks that the target server
/// can take every recorded property (the roles exist or the globals create
/// them, the settings exist, the server version has the locale provider)
/// and that a pre-created target has the recorded encoding and locale;
/// otherwise it fails naming the property
/// ([`Error::DatabaseProperty`](crate::Error::DatabaseProperty), a
/// [`dr_core::Error::Conflict`]), unless
/// [`ignore_database_properties`](LogicalRestoreOptions::ignore_database_properties).
/// A locale the server lacks is found by the `CREATE DATABASE` itself,
/// which leaves nothing behind when it fails.
#[derive(Debug)]
pub struct PostgresLogicalRestorer {
    target: ConnectionSettings,
    options: LogicalRestoreOptions,
    created: Mutex<Option<String>>,
}

impl std::fmt::Display for PostgresLogicalRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL database {}", self.target.target())
    }
}

impl PostgresLogicalRestorer {
    /// Restores into the database `target` names (created if missing).
    pub fn new(target: ConnectionSettings, options: LogicalRestoreOptions) -> Self {
        PostgresLogicalRestorer {
            target,
            options,
            created: Mutex::new(None),
        }
    }

    /// Restores into a new scratch database `dr_verify_<random>` on the server
    /// `server` names; [`discard`](dr_core::Restorer::discard) drops it.
    pub fn scratch(server: &ConnectionSettings, options: LogicalRestoreOptions) -> Self {
        let name = format!("dr_verify_{}", hex::encode(rand::random::<[u8; 4]>()));
        Self::new(server.with_database(&name), options)
    }

    /// The target database.
    pub fn target(&self) -> &ConnectionSettings {
        &self.target
    }

    async fn admin(&self) -> Result<Client> {
        match self.target.with_database("postgres").connect().await {
            Err(Error::NoSuchDatabase { .. }) => {
                self.target.with_database("template1").connect().await
            }
            other => other,
        }
    }

    fn query_err(&self, what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let what = what.into();
        let target = self.target.server();
        move |source| Error::Query {
            what,
            target,
            source,
        }
    }

    /// Whether the target exists, and whether it holds user objects.
    async fn target_state(&self, admin: &Client) -> Result<Option<bool>> {
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&self.target.dbname()],
            )
            .await
            .map_err(self.query_err("looking up the target database"))?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let client = self.target.connect().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
                     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%') \
                 + (SELECT count(*) FROM pg_largeobject_metadata)",
                &[],
            )
            .await
            .map_err(self.query_err("checking whether the target is empty"))?;
        let objects: i64 = row.get(0);
        Ok(Some(objects > 0))
    }

    async fn read_globals(&self, backup: &BackupReader) -> dr_core::Result<Vec<u8>> {
        let mut reader = backup.open(GLOBALS_ARTIFACT).await?;
        let mut sql = Vec::new();
        reader
            .read_to_end(&mut sql)
            .await
            .map_err(|e| dr_storage::Error::from_io(e, GLOBALS_ARTIFACT))?;
        Ok(sql)
    }

    async fn apply_globals(
        &self,
        sql: Vec<u8>,
        psql: &tools::Tool,
        warnings: &mut Vec<String>,
    ) -> dr_core::Result<u64> {
        let admin_conn = self.target.with_database("postgres");
        let (mut cmd, _pass) = admin_conn.command(&psql.path)?;
        cmd.arg("--no-psqlrc")
            .arg("--quiet")
            .arg("--set=ON_ERROR_STOP=0")
            .arg("--dbname")
            .arg(dbname_conninfo(admin_conn.dbname()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| Error::Io {
            path: psql.path.clone(),
            source,
        })?;
        let mut stdin = child.stdin.take().expect("piped");
        let n = sql.len() as u64;
        let writer = tokio::spawn(async move {
            let r = tokio::io::AsyncWriteExt::write_all(&mut stdin, &sql).await;
            drop(stdin);
            r
        });
        let out = child.wait_with_output().await.map_err(|source| Error::Io {
            path: psql.path.clone(),
            source,
        })?;
        let _ = writer.await;
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            if line.contains("ERROR:") && !line.contains("already exists") {
                warnings.push(format!("globals: {}", line.trim()));
            }
        }
        if !out.status.success() {
            return Err(dr_core::Error::from(Error::ToolFailed {
                program: "psql (globals)".into(),
                status: out.status.to_string(),
                stderr: tail(&out.stderr, 4000),
            }));
        }
        Ok(n)
    }

    /// Moves the restored database to the target name in one transaction:
    /// an existing target is renamed aside (`<temp>_old`), the restored copy
    /// takes the name and gets the recorded comment, all or nothing (the
    /// statements of one simple-query message run as a single transaction:
    /// PostgreSQL docs, Frontend/Backend Protocol, "Multiple Statements in a
    /// Simple Query"). There is no moment without a database of the target's
    /// name, and the restore's mark (the temporary database's comment) goes
    /// with the rename, so that a killed restore's leftover is always
    /// recognised. The old copy is then dropped (`DROP DATABASE` cannot run in
    /// a transaction block); a crash before that leaves it, and the next
    /// restore into the target reports it.
    async fn swap_in(
        &self,
        admin: &Client,
        temp: &str,
        target_db: &str,
        exists: bool,
        comment: Option<&str>,
        warnings: &mut Vec<String>,
    ) -> dr_core::Result<()> {
        let aside = format!("{temp}_old");
        let swap = |comment: Option<&str>| {
            let mut sql = String::new();
            if exists {
                sql.push_str(&format!(
                    "ALTER DATABASE {} RENAME TO {};\n",
                    quote_ident(target_db),
                    quote_ident(&aside)
                ));
            }
            sql.push_str(&format!(
                "ALTER DATABASE {} RENAME TO {};\nCOMMENT ON DATABASE {} IS {};",
                quote_ident(temp),
                quote_ident(target_db),
                quote_ident(target_db),
                comment.map_or_else(|| "NULL".to_string(), quote_literal)
            ));
            sql
        };
        let what = if exists {
            format!("swapping the restored copy {temp} in as {target_db} (is {target_db} in use?)")
        } else {
            format!("renaming {temp} to {target_db}")
        };
        if let Err(e) = admin.batch_execute(&swap(comment)).await {
            // The comment is the only part that the properties' plan may
            // drop: when the operator allowed that, try the swap without it
            // (a failed multi-statement message is rolled back whole).
            if comment.is_none() || !self.options.ignore_database_properties {
                return Err(self.query_err(what)(e).into());
            }
            admin
                .batch_execute(&swap(None))
                .await
                .map_err(self.query_err(what))?;
            warnings.push(format!(
                "database comment dropped: the target server refused it: {}",
                properties::db_message(&e)
            ));
        }
        if exists {
            admin
                .batch_execute(&format!(
                    "DROP DATABASE {} WITH (FORCE)",
                    quote_ident(&aside)
                ))
                .await
                .map_err(self.query_err(format!(
                    "dropping the replaced database {aside} (the restored copy is in place as {target_db})"
                )))?;
        }
        Ok(())
    }

    /// Drops the temporary databases `<stem>_dr_<6 hex>` that a restore
    /// into the same target left behind when it was killed: only those
    /// marked by a restore on this host whose process is gone and that no
    /// session uses. Others (another host, a live process) are reported in
    /// `warnings` and kept; `<temp>_old` databases (the previous target
    /// moved aside by a `--clean` swap that was interrupted before it
    /// dropped them) are reported in `warnings` and never dropped.
    async fn drop_stale_temporaries(
        &self,
        admin: &Client,
        stem: &str,
        warnings: &mut Vec<String>,
    ) -> dr_core::Result<()> {
        let rows = admin
            .query(
                "SELECT d.datname, shobj_description(d.oid, 'pg_database'),
                        (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid)
                   FROM pg_database d
                  WHERE starts_with(d.datname, $1)",
                &[&format!("{stem}_dr_")],
            )
            .await
            .map_err(self.query_err("looking for temporary databases of earlier restores"))?;
        for row in rows {
            let name: String = row.get(0);
            let comment: Option<String> = row.get(1);
            let sessions: i64 = row.get(2);
            let suffix = &name[stem.len() + "_dr_".len()..];
            let hex = |s: &str| s.len() == 6 && s.bytes().all(|b| b.is_ascii_hexdigit());
            if suffix.strip_suffix("_old").is_some_and(hex) {
                warnings.push(format!(
                    "database {name} is a previous copy of the target that a restore with --clean \
                     moved aside and could not drop (interrupted?); kept: DROP DATABASE it once \
                     you no longer need it"
                ));
                continue;
            }
            if !hex(suffix) {
                continue;
            }
            let Some(owner) = comment.as_deref().and_then(TemporaryOwner::parse) else {
                continue;
            };
            if sessions > 0 || !owner.is_gone() {
                warnings.push(format!(
                    "temporary database {name} of another restore ({}) may still be in use; left alone \
                     (DROP DATABASE it by hand once that restore is gone)",
                    owner.comment()
                ));
                continue;
            }
            tracing::warn!(database = %name, owner = %owner.comment(), "dropping the temporary database of a restore that was killed");
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&name)))
                .await
                .map_err(self.query_err(format!("dropping the stale temporary database {name}")))?;
            warnings.push(format!(
                "dropped {name}, the temporary database of a restore that was killed ({})",
                owner.comment()
            ));
        }
        Ok(())
    }

    /// What the planning of database properties needs from the target
    /// server: its roles, its settings and template0's locale.
    async fn target_facts(&self, admin: &Client, major: u32) -> Result<TargetFacts> {
        let roles = admin
            .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
            .await
            .map_err(self.query_err("listing the roles"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let settings = admin
            .query("SELECT lower(name) FROM pg_catalog.pg_settings", &[])
            .await
            .map_err(self.query_err("listing the settings"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let template0 = properties::read(admin, "template0", &self.target.server()).await?;
        Ok(TargetFacts {
            major,
            roles,
            settings,
            template0,
        })
    }

    /// Creates the temporary database with the first locale of the plan
    /// the server accepts. A `CREATE DATABASE` that fails leaves nothing
    /// behind, so a locale the server lacks is refused before anything
    /// exists.
    async fn create_temporary(
        &self,
        admin: &Client,
        temp: &str,
        plan: &PropertyPlan,
        major: u32,
        warnings: &mut Vec<String>,
    ) -> dr_core::Result<()> {
        let plain = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(temp));
        let mut refused: Option<(String, String)> = None;
        for locale in &plan.creates {
            let sql = locale
                .create_sql(temp, major)
                .unwrap_or_else(|_| plain.clone());
            match admin.batch_execute(&sql).await {
                Ok(()) => {
                    if let Some((wanted, reason)) = refused {
                        warnings.push(format!(
                            "database encoding and locale dropped: the target server cannot create {wanted} \
                             ({reason}); created with {locale}"
                        ));
                    }
                    return Ok(());
                }
                Err(e) if properties::is_locale_error(&e) => {
                    tracing::warn!(%locale, error = %properties::db_message(&e), "the server refused the locale");
                    if !self.options.ignore_database_properties {
                        return Err(Error::DatabaseProperty {
                            target: self.target.target(),
                            property: "encoding and locale".into(),
                            reason: format!(
                                "the target server cannot create a database with {locale}: {}; \
                                 install the locale there, or pass ignore_database_properties \
                                 (--ignore-database-properties) to restore with another",
                                properties::db_message(&e)
                            ),
                        }
                        .into());
                    }
                    refused.get_or_insert((locale.to_string(), properties::db_message(&e)));
                }
                Err(e) => {
                    return Err(self.query_err(format!("creating database {temp}"))(e).into());
                }
            }
        }
        if plan.creates.is_empty() || refused.is_some() {
            // Nothing recorded to follow, or nothing the server accepts: its
            // defaults.
            admin
                .batch_execute(&plain)
                .await
                .map_err(self.query_err(format!("creating database {temp}")))?;
            if let Some((wanted, reason)) = refused {
                warnings.push(format!(
                    "database encoding and locale dropped: the target server cannot create {wanted} \
                     ({reason}); created with the server's defaults"
                ));
            }
        }
        Ok(())
    }

    /// The recorded database properties against the target's, one check
    /// each (`database encoding`, `database owner`, ...). Without owners
    /// (`no_owner`, a scratch restore without globals) the owner and the
    /// privileges are not compared.
    async fn check_properties(
        &self,
        client: &Client,
        recorded: &DatabaseProperties,
    ) -> Result<Vec<Check>> {
        let server = self.target.server();
        let Some(actual) = properties::read(client, self.target.dbname(), &server).await? else {
            return Err(Error::NoSuchDatabase {
                database: self.target.dbname().to_string(),
                server,
            });
        };
        let roles = client
            .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
            .await
            .map_err(self.query_err("listing the roles"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(properties::compare(
            recorded,
            &actual,
            self.options.no_owner,
            &roles,
        ))
    }

    async fn drop_database(&self, admin: &Client, name: &str) -> Result<()> {
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(name)
            ))
            .await
            .map_err(self.query_err(format!("dropping {name}")))
    }

    async fn run_pg_restore(
        &self,
        backup: &BackupReader,
        pg_restore: &tools::Tool,
        temp: &str,
        server_major: u32,
        warnings: &mut Vec<String>,
    ) -> dr_core::Result<u64> {
        let (mut cmd, _pass) = self.target.command(&pg_restore.path)?;
        // pg_restore 17 and newer begin every session with `SET
        // transaction_timeout = 0`, which servers before 17 reject
        // ("unrecognized configuration parameter"). When no pg_restore of
        // the server's own major is installed, the newer one runs without
        // --exit-on-error and every error it reports must be that one.
        let newer_settings = pg_restore.major >= 17 && server_major < 17;
        if newer_settings {
            cmd.env("LC_MESSAGES", "C");
        } else {
            cmd.arg("--exit-on-error");
        }
        cmd.arg("--dbname").arg(dbname_conninfo(temp));
        if self.options.no_owner {
            cmd.arg("--no-owner").arg("--no-privileges");
        }
        let mut reader = backup.open(DUMP_ARTIFACT).await?;
        let jobs = self.options.jobs.max(1);
        let staged;
        if jobs > 1 {
            let dir = self
                .options
                .staging_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir);
            let file = tempfile_in(&dir)?;
            let mut out = tokio::fs::File::create(&file.0)
                .await
                .map_err(|source| Error::Io {
                    path: file.0.clone(),
                    source,
                })?;
            tokio::io::copy(&mut reader, &mut out)
                .await
                .map_err(decode_error)?;
            cmd.arg(format!("--jobs={jobs}")).arg(&file.0);
            cmd.stdin(Stdio::null());
            staged = Some(file);
        } else {
            cmd.stdin(Stdio::piped());
            staged = None;
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| Error::Io {
            path: pg_restore.path.clone(),
            source,
        })?;
        let feeder = child.stdin.take().map(|mut stdin| {
            tokio::spawn(async move {
                let r = tokio::io::copy(&mut reader, &mut stdin).await;
                drop(stdin);
                r
            })
        });
        let out = child.wait_with_output().await.map_err(|source| Error::Io {
            path: pg_restore.path.clone(),
            source,
        })?;
        drop(staged);
        let fed = match feeder {
            Some(f) => Some(f.await.map_err(|e| Error::Io {
                path: "restore stream".into(),
                source: std::io::Error::other(e),
            })?),
            None => None,
        };
        // A decoding error explains a pg_restore failure: report it first.
        let bytes = match fed {
            Some(Err(e)) if e.kind() != std::io::ErrorKind::BrokenPipe || out.status.success() => {
                return Err(decode_error(e).into())
            }
            Some(Ok(n)) => n,
            _ => 0,
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if newer_settings && only_transaction_timeout_errors(&stderr) {
                warnings.push(format!(
                    "pg_restore {} sent `SET transaction_timeout = 0`, which this PostgreSQL {server_major} \
                     server does not know; that error was the only one and was ignored (install pg_restore \
                     {server_major} to avoid it)",
                    pg_restore.major
                ));
            } else {
                return Err(Error::ToolFailed {
                    program: "pg_restore".into(),
                    status: out.status.to_string(),
                    stderr: tail(&out.stderr, 4000),
                }
                .into());
            }
        }
        Ok(bytes)
    }
}

/// Whether every error in pg_restore's standard error (run with
/// `LC_MESSAGES=C`) is the rejected `SET transaction_timeout`, and the
/// count it reports at the end ("errors ignored on restore: N") matches.
fn only_transaction_timeout_errors(stderr: &str) -> bool {
    let errors: Vec<&str> = stderr.split("pg_restore: error:").skip(1).collect();
    let ignored: Option<usize> = stderr
        .split("errors ignored on restore:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    !errors.is_empty()
        && ignored == Some(errors.len())
        && errors.iter().all(|e| {
            let e = e.split("pg_restore: warning:").next().unwrap_or(e);
            e.contains("\"transaction_timeout\"") && e.contains("SET transaction_timeout")
        })
}

fn decode_error(e: std::io::Error) -> Error {
    Error::Data(dr_storage::Error::from_io(e, DUMP_ARTIFACT))
}

struct StagedFile(PathBuf);

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_in(dir: &std::path::Path) -> Result<StagedFile> {
    let path = dir.join(format!(
        "dr-restore-{}.pgdump",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    Ok(StagedFile(path))
}

#[async_trait]
impl dr_core::Restorer for PostgresLogicalRestorer {
    fn accepts(&self, kind: &str) -> bool {
        kind == KIND_LOGICAL
    }

    async fn restore(&self, backup: &BackupReader) -> dr_core::Result<RestoreReport> {
        let started = Instant::now();
        let target_db = self.target.dbname().to_string();
        let ignore = self.options.ignore_database_properties;
        // Open the dump first: a wrong key fails here, before the target server
        // is touched.
        drop(backup.open(DUMP_ARTIFACT).await?);
        let recorded = LogicalMetadata::from_manifest(backup.manifest())
            .ok()
            .and_then(|m| m.database_properties);
        let admin = self.admin().await?;
        let state = self.target_state(&admin).await?;
        if state == Some(true) && !self.options.clean {
            return Err(Error::TargetNotEmpty {
                target: self.target.target(),
                reason: "the database already holds objects; restore into a new database or ask to clean it \
                         (--clean)"
                    .into(),
            }
            .into());
        }
        let num: i32 = admin
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(self.query_err("reading the server version"))?
            .get(0);
        let major = num as u32 / 10000;
        let pg_restore = tools::find("pg_restore", self.options.bin_dir.as_deref(), major).await?;
        let mut warnings = Vec::new();
        let mut bytes = 0;
        let globals = if self.options.globals {
            if backup.manifest().artifact(GLOBALS_ARTIFACT).is_none() {
                return Err(dr_core::Error::NotFound {
                    what: format!("globals in backup {}", backup.manifest().backup_id),
                });
            }
            let psql = tools::find("psql", self.options.bin_dir.as_deref(), major).await?;
            Some((self.read_globals(backup).await?, psql))
        } else {
            None
        };

        // Everything the target must take is checked before anything is
        // created.
        let server = self.target.server();
        let existing = match state {
            Some(_) => properties::read(&admin, &target_db, &server).await?,
            None => None,
        };
        let mut facts = self.target_facts(&admin, major).await?;
        if let Some((sql, _)) = &globals {
            facts
                .roles
                .extend(properties::roles_created_by(&String::from_utf8_lossy(sql)));
        }
        let plan = properties::plan(
            recorded.as_ref(),
            existing.as_ref(),
            &facts,
            self.options.no_owner,
            ignore,
        )
        .map_err(|problems| properties::refusal(self.target.target(), &problems))?;
        warnings.extend(plan.dropped.iter().cloned());

        let mut stem: String = target_db.chars().take(40).collect();
        stem.retain(|c| c != '\0');
        self.drop_stale_temporaries(&admin, &stem, &mut warnings)
            .await?;
        let temp = format!("{stem}_dr_{}", hex::encode(rand::random::<[u8; 3]>()));
        self.create_temporary(&admin, &temp, &plan, major, &mut warnings)
            .await?;
        // Who owns it, so that a later restore can tell a temporary database
        // left by a killed restore from one still being written.
        let owner = TemporaryOwner::current();
        let marked = admin
            .batch_execute(&format!(
                "COMMENT ON DATABASE {} IS {}",
                quote_ident(&temp),
                quote_literal(&owner.comment())
            ))
            .await
            .map_err(self.query_err(format!("marking database {temp}")));
        tracing::info!(temporary = %temp, target = %target_db, "restoring under a temporary name");
        let finish = async {
            marked?;
            if let Some((sql, psql)) = globals {
                bytes += self.apply_globals(sql, &psql, &mut warnings).await?;
            }
            bytes += self
                .run_pg_restore(backup, &pg_restore, &temp, major, &mut warnings)
                .await?;
            properties::apply(
                &admin,
                &temp,
                &self.target.target(),
                &plan,
                ignore,
                &mut warnings,
            )
            .await?;
            self.swap_in(
                &admin,
                &temp,
                &target_db,
                state.is_some(),
                plan.comment.as_deref(),
                &mut warnings,
            )
            .await
        }
        .await;
        if let Err(e) = finish {
            if let Err(drop_err) = self.drop_database(&admin, &temp).await {
                tracing::warn!(error = %drop_err, database = %temp, "temporary database not dropped");
            }
            return Err(e);
        }
        *self.created.lock().expect("created") = Some(target_db.clone());
        let mut report = RestoreReport::new(format!("database {}", self.target.target()));
        report.bytes_read = bytes;
        report.duration = started.elapsed();
        report.warnings = warnings;
        report.details = serde_json::json!({
            "database": target_db,
            "replaced_existing": state.is_some(),
            "globals_applied": self.options.globals,
            "jobs": self.options.jobs.max(1),
            "database_properties": if recorded.is_some() { "recorded" } else { "not recorded" },
        });
        Ok(report)
    }

    async fn check(&self, manifest: &Manifest) -> dr_core::Result<CheckReport> {
        let meta = LogicalMetadata::from_manifest(manifest).map_err(|e| {
            dr_core::Error::failed(
                format!("reading the metadata of backup {}", manifest.backup_id),
                e.to_string(),
            )
        })?;
        let client = self.target.connect().await?;
        let target = self.target.target();
        let mut checks = Vec::new();
        for (table, expected) in &meta.row_counts {
            let actual = if table == LARGE_OBJECTS {
                client
                    .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
                    .await
                    .map(|r| r.get::<_, i64>(0).to_string())
                    .unwrap_or_else(|e| format!("error: {e}"))
            } else {
                match count_one(&client, table, &target).await {
                    Ok(n) => n.to_string(),
                    Err(Error::Query { source, .. }) => match source.code() {
                        Some(c) if *c == tokio_postgres::error::SqlState::UNDEFINED_TABLE => {
                            "missing".into()
                        }
                        _ => format!("error: {source}"),
                    },
                    Err(e) => return Err(e.into()),
                }
            };
            checks.push(Check {
                name: table.clone(),
                expected: expected.to_string(),
                actual,
            });
        }
        if let Some(recorded) = &meta.database_properties {
            checks.extend(self.check_properties(&client, recorded).await?);
        }
        Ok(CheckReport { checks })
    }

    async fn discard(&self) -> dr_core::Result<()> {
        let Some(db) = self.created.lock().expect("created").take() else {
            return Ok(());
        };
        let admin = self.admin().await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&db)
            ))
            .await
            .map_err(self.query_err(format!("dropping {db}")))?;
        Ok(())
    }
}

/// The mark a restore puts on its temporary database (a `COMMENT ON
/// DATABASE`): `dr restore in progress: pid <pid> on <host>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TemporaryOwner {
    pid: u32,
    host: String,
}

const OWNER_PREFIX: &str = "dr restore in progress: pid ";

fn this_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

impl TemporaryOwner {
    fn current() -> Self {
        TemporaryOwner {
            pid: std::process::id(),
            host: this_host(),
        }
    }

    fn comment(&self) -> String {
        format!("{OWNER_PREFIX}{} on {}", self.pid, self.host)
    }

    fn parse(comment: &str) -> Option<Self> {
        let rest = comment.strip_prefix(OWNER_PREFIX)?;
        let (pid, host) = rest.split_once(" on ")?;
        Some(TemporaryOwner {
            pid: pid.parse().ok()?,
            host: host.to_string(),
        })
    }

    /// Whether the restore that made it is known to be gone: it ran on this
    /// host and its process no longer exists. A restore on another host is
    /// never presumed gone.
    fn is_gone(&self) -> bool {
        if self.host.is_empty() || self.host != this_host() {
            return false;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        matches!(
            nix::sys::signal::kill(pid, None),
            Err(nix::errno::Errno::ESRCH)
        )
    }
}

#[cfg(test)]
mod owner_tests {
    use super::TemporaryOwner;

    #[test]
    fn the_mark_round_trips_and_only_a_dead_local_process_is_gone() {
        let me = TemporaryOwner::current();
        assert_eq!(TemporaryOwner::parse(&me.comment()), Some(me.clone()));
        assert!(!me.is_gone(), "this process is alive");
        let elsewhere = TemporaryOwner {
            pid: 1 << 30,
            host: format!("{}-elsewhere", me.host),
        };
        assert!(!elsewhere.is_gone(), "another host is never presumed gone");
        let dead = TemporaryOwner {
            pid: (1 << 22) + 1,
            host: me.host.clone(),
        };
        assert!(dead.is_gone());
        assert_eq!(TemporaryOwner::parse("a user comment"), None);
    }
}

#[cfg(test)]
mod newer_pg_restore_tests {
    use super::only_transaction_timeout_errors;

    const TIMEOUT: &str = "pg_restore: error: could not execute query: ERROR:  unrecognized configuration \
                           parameter \"transaction_timeout\"\nCommand was: SET transaction_timeout = 0;\n";

    #[test]
    fn only_the_rejected_transaction_timeout_is_forgiven() {
        let one = format!("{TIMEOUT}pg_restore: warning: errors ignored on restore: 1\n");
        assert!(only_transaction_timeout_errors(&one));
        // One per session with --jobs.
        let three = format!(
            "{TIMEOUT}{TIMEOUT}{TIMEOUT}pg_restore: warning: errors ignored on restore: 3\n"
        );
        assert!(only_transaction_timeout_errors(&three));
        let other = format!(
            "{TIMEOUT}pg_restore: error: could not execute query: ERROR:  relation \"t\" already exists\n\
             Command was: CREATE TABLE public.t (id integer);\n\
             pg_restore: warning: errors ignored on restore: 2\n"
        );
        assert!(!only_transaction_timeout_errors(&other));
        // A count that does not match what was read is not trusted.
        let miscounted = format!("{TIMEOUT}pg_restore: warning: errors ignored on restore: 2\n");
        assert!(!only_transaction_timeout_errors(&miscounted));
        assert!(!only_transaction_timeout_errors(
            "pg_restore: error: could not open input file: No such file\n"
        ));
        assert!(!only_transaction_timeout_errors(""));
    }
}
