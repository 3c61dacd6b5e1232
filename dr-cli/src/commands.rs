//! The commands: configuration to objects, a library call, rendering.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use dr_core::verification::{VerificationRecord, VerifyLevel};
use dr_core::{job, BackupSource, Restorer};
use dr_postgres::{
    ConnectionSettings, LogicalRestoreOptions, PostgresLogical, PostgresLogicalRestorer,
    PostgresSourceConfig,
};
use dr_storage::{Identities, InitOptions, KeySource, Repository, RepositorySettings};

use crate::args::{
    BackupArgs, Cli, Command, KeyCommand, ListArgs, PruneArgs, RepoArgs, RepoCommand, RestoreArgs,
    ShowArgs, StatusArgs, VerifyArgs,
};
use crate::config::{DrConfig, SourceConfig};
use crate::exit::{Usage, EXIT_FAILED, EXIT_OK, EXIT_VERIFY_FAILED};
use crate::progress::Bar;
use crate::render;

/// Runs the parsed command line; returns the exit code.
///
/// # Errors
/// Any failure; the caller maps it to an exit code with
/// [`crate::exit::code`].
pub async fn run(cli: Cli) -> Result<i32> {
    let config = DrConfig::discover(cli.config.as_ref()).map_err(Usage::wrap)?;
    let ctx = Ctx { cli: &cli, config };
    match &cli.command {
        Command::Key(KeyCommand::Generate { output, force }) => ctx.key_generate(output, *force),
        Command::Repo(RepoCommand::Init { repo, recipients }) => {
            ctx.repo_init(repo, recipients).await
        }
        Command::Backup(a) => ctx.backup(a).await,
        Command::List(a) => ctx.list(a).await,
        Command::Show(a) => ctx.show(a).await,
        Command::Verify(a) => ctx.verify(a).await,
        Command::Restore(a) => ctx.restore(a).await,
        Command::Prune(a) => ctx.prune(a).await,
        Command::Status(a) => ctx.status(a).await,
        Command::WalPush(a) => Ok(crate::wal::run_wal_push(&ctx.config, a, cli.json).await),
        Command::WalFetch(a) => Ok(crate::wal::run_wal_fetch(&ctx.config, a, cli.json).await),
        Command::Plan(c) => crate::plan_cmd::run(&ctx.config, c, cli.json).await,
        Command::Drill(a) => crate::plan_cmd::drill(&ctx.config, a, cli.json).await,
        Command::Dns(c) => crate::dns_cmd::run(&ctx.config, c, cli.json).await,
    }
}

struct Ctx<'a> {
    cli: &'a Cli,
    config: DrConfig,
}

impl Ctx<'_> {
    fn print_json(&self, value: &impl serde::Serialize) -> Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        Ok(())
    }

    /// Repository settings: flags > DR_* environment (both through clap) > file.
    fn settings(&self, args: &RepoArgs) -> RepositorySettings {
        args.apply(&self.config.repository)
    }

    async fn open(
        &self,
        args: &RepoArgs,
    ) -> Result<(Repository, RepositorySettings, Option<Arc<Bar>>)> {
        let s = self.settings(args);
        let location = s.location().map_err(Usage::wrap)?;
        let repo = Repository::open(&location, &s.store_options()).await?;
        let repo = repo.with_codec(s.codec_options().map_err(Usage::wrap)?);
        let bar = Bar::new(!self.cli.no_progress && !self.cli.json);
        let repo = match &bar {
            Some(b) => repo.with_progress(b.clone()),
            None => repo,
        };
        Ok((repo, s, bar))
    }

    fn keys(&self, s: &RepositorySettings) -> Result<KeySource> {
        s.key_source().map_err(Usage::wrap)
    }

    fn key_generate(&self, output: &Path, force: bool) -> Result<i32> {
        use std::os::unix::fs::OpenOptionsExt;
        let id = Identities::generate();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).mode(0o600);
        if force {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        let mut f = opts.open(output).with_context(|| {
            format!(
                "writing identity file {} (use --force to replace it)",
                output.display()
            )
        })?;
        let text = id.to_file_text();
        f.write_all(secrecy::ExposeSecret::expose_secret(&text).as_bytes())?;
        let recipient = id.recipients().to_strings().remove(0);
        if self.cli.json {
            self.print_json(
                &serde_json::json!({ "recipient": recipient, "identity_file": output }),
            )?;
        } else {
            println!("{recipient}");
            eprintln!(
                "identity written to {} (mode 0600); keep it away from the repository",
                output.display()
            );
        }
        Ok(EXIT_OK)
    }

    async fn repo_init(&self, args: &RepoArgs, recipients: &[String]) -> Result<i32> {
        let s = self.settings(args);
        let location = s.location().map_err(Usage::wrap)?;
        let mut init = InitOptions::with_recipients(if recipients.is_empty() {
            s.recipients.clone()
        } else {
            recipients.to_vec()
        });
        // Only the passphrase matters here: the identity file is for reading.
        let mut pass_only = s.clone();
        pass_only.identity_file = None;
        init.passphrase = self.keys(&pass_only)?.passphrase;
        if init.recipients.is_empty() && init.passphrase.is_none() {
            return Err(Usage::msg(
                "dr repo init needs --recipient age1... (see `dr key generate`) or a passphrase (--passphrase-file or \
                 DR_PASSPHRASE)",
            ));
        }
        let repo = Repository::init(&location, &s.store_options(), init).await?;
        if self.cli.json {
            self.print_json(
                &serde_json::json!({ "location": location.to_string(), "config": repo.config() }),
            )?;
        } else {
            println!(
                "initialised repository {} at {location} ({} recipient(s))",
                repo.config().repository_id,
                repo.config().recipients.len()
            );
        }
        Ok(EXIT_OK)
    }

    async fn sources(&self, a: &BackupArgs) -> Result<Vec<(String, Box<dyn BackupSource>)>> {
        if let Some(dsn) = &a.postgres {
            let mut conn = dsn_arg(dsn, "--postgres")?;
            if let Some(f) = &a.password_file {
                conn = conn.with_password_file(f).map_err(Usage::wrap)?;
            }
            let name = a.name.clone().unwrap_or_else(|| conn.dbname().to_string());
            if a.physical {
                let source = dr_postgres::physical::PostgresPhysical::new(conn, Default::default());
                return Ok(vec![(name, Box::new(source))]);
            }
            let source = PostgresLogical::new(conn).with_globals(!a.no_globals);
            return Ok(vec![(name, Box::new(source))]);
        }
        let selected: Vec<(&String, &SourceConfig)> = match &a.name {
            Some(n) => vec![(
                n,
                &self
                    .config
                    .sources
                    .get(n)
                    .ok_or_else(|| Usage::msg(format!("no source {n:?} in the configuration")))?
                    .config,
            )],
            None => self
                .config
                .sources
                .iter()
                .map(|(n, e)| (n, &e.config))
                .collect(),
        };
        if selected.is_empty() {
            return Err(Usage::msg(
                "nothing to back up: name a configured source, or give --postgres DSN",
            ));
        }
        let mut out = Vec::new();
        for (name, cfg) in selected {
            out.push((name.clone(), build_source(cfg).await.map_err(Usage::wrap)?));
        }
        Ok(out)
    }

    async fn backup(&self, a: &BackupArgs) -> Result<i32> {
        let sources = self.sources(a).await?;
        let (repo, _, bar) = self.open(&a.repo).await?;
        let mut done = Vec::new();
        for (name, source) in sources {
            let result = job::backup(&repo, source.as_ref(), &name).await;
            if let Some(b) = &bar {
                b.finish();
            }
            let m = result.with_context(|| format!("backup of {name} ({source})"))?;
            if !self.cli.json {
                println!("{}", render::backup_summary(&m));
            }
            done.push(m);
        }
        if self.cli.json {
            self.print_json(&done)?;
        }
        Ok(EXIT_OK)
    }

    async fn list(&self, a: &ListArgs) -> Result<i32> {
        let (repo, _, _) = self.open(&a.repo).await?;
        let (all, damaged) = repo.list_backups_checked(a.source.as_deref()).await?;
        for d in &damaged {
            eprintln!(
                "warning: damaged manifest {} (backup not listed): {}",
                d.object, d.reason
            );
        }
        if self.cli.json {
            self.print_json(&all)?;
        } else {
            writeln!(std::io::stdout(), "{}", render::list(&all))?;
        }
        Ok(EXIT_OK)
    }

    async fn show(&self, a: &ShowArgs) -> Result<i32> {
        let (repo, _, _) = self.open(&a.repo).await?;
        let m = repo.find_backup(a.source.as_deref(), &a.backup).await?;
        if self.cli.json {
            self.print_json(&m)?;
        } else {
            println!("{}", render::show(&m));
        }
        Ok(EXIT_OK)
    }

    async fn verify(&self, a: &VerifyArgs) -> Result<i32> {
        let (repo, s, bar) = self.open(&a.repo).await?;
        let m = repo.find_backup(a.source.as_deref(), &a.backup).await?;
        let keys = self.keys(&s)?;
        let ids = if keys.identities.is_some() || keys.passphrase.is_some() {
            Some(repo.unlock(&keys)?)
        } else {
            None
        };
        let scratch: Option<Box<dyn Restorer>> = if a.restore {
            if ids.is_none() {
                return Err(Usage::msg(
                    "verify --restore needs --identity FILE or the repository passphrase",
                ));
            }
            Some(self.scratch_restorer(&m, a, ids.as_ref(), &s)?)
        } else {
            None
        };
        // SIGINT or SIGTERM during a scratch restore: stopped, and the
        // scratch target removed.
        let report = match scratch.as_deref() {
            Some(restorer) => {
                let stop = crate::agent::shutdown_signal()?;
                job::verify_until(&repo, &m, ids.as_ref(), restorer, stop).await
            }
            None => job::verify(&repo, &m, ids.as_ref(), None).await,
        };
        if let Some(b) = &bar {
            b.finish();
        }
        let report = report?;
        // Kinds with their own archive checks on the stored data.
        let mut extra = None;
        if let (dr_vault::KIND, Some(ids)) = (m.source.kind.as_str(), ids.as_ref()) {
            if report.ok() {
                let reader = dr_core::BackupReader::new(repo.clone(), m.clone(), ids.clone());
                extra = Some(match dr_vault::verify_snapshot(&reader).await {
                    Ok(facts) => Ok(serde_json::to_value(facts)?),
                    Err(e) => Err(e.to_string()),
                });
            }
        }
        let ok = report.ok() && !matches!(extra, Some(Err(_)));
        // Kept in the repository for `dr status`; failing to keep it does
        // not change what the verification found.
        let level = match (a.restore, ids.is_some()) {
            (true, _) => VerifyLevel::Restored,
            (false, true) => VerifyLevel::Decoded,
            (false, false) => VerifyLevel::Stored,
        };
        let mut record = VerificationRecord::from_report(&report, level, chrono::Utc::now());
        if let Some(Err(e)) = &extra {
            record.ok = false;
            record.problems.push(format!("raft snapshot archive: {e}"));
        }
        if let Err(e) = dr_core::verification::record_verification(&repo, &record).await {
            eprintln!("warning: the verification result was not recorded in the repository: {e:#}");
        }
        if self.cli.json {
            let mut v = serde_json::to_value(&report)?;
            if let Some(x) = &extra {
                v["archive_check"] = match x {
                    Ok(f) => serde_json::json!({ "ok": true, "facts": f }),
                    Err(e) => serde_json::json!({ "ok": false, "error": e }),
                };
            }
            self.print_json(&v)?;
        } else {
            println!("{}", render::verify(&report));
            match &extra {
                Some(Ok(_)) => {
                    println!("  ok      raft snapshot archive: members and SHA256SUMS match")
                }
                Some(Err(e)) => println!("  FAILED  raft snapshot archive: {e}"),
                None => {}
            }
        }
        // An unreachable scratch server proves nothing about the backup: exit 3,
        // not "verification failed".
        Ok(if ok {
            EXIT_OK
        } else if report.scratch_unavailable && report.artifacts.iter().all(|a| a.error.is_none()) {
            EXIT_FAILED
        } else {
            EXIT_VERIFY_FAILED
        })
    }

    fn scratch_restorer(
        &self,
        m: &dr_storage::Manifest,
        a: &VerifyArgs,
        ids: Option<&Identities>,
        s: &RepositorySettings,
    ) -> Result<Box<dyn Restorer>> {
        match m.source.kind.as_str() {
            dr_postgres::KIND_LOGICAL => {
                let server = match &a.scratch {
                    Some(dsn) => dsn_arg(dsn, "--scratch")?,
                    None => match self.config.sources.get(&m.source.name).map(|e| &e.config) {
                        Some(SourceConfig::Postgres(c)) => c.connection().map_err(Usage::wrap)?,
                        _ => {
                            return Err(Usage::msg(format!(
                                "verify --restore of {} needs --scratch DSN (a PostgreSQL server for the scratch \
                                 database)",
                                m.source.name
                            )))
                        }
                    },
                };
                let mut opts = LogicalRestoreOptions::default();
                opts.globals = a.globals;
                opts.no_owner = !a.globals;
                Ok(Box::new(PostgresLogicalRestorer::scratch(&server, opts)))
            }
            dr_postgres::physical::KIND_PHYSICAL => {
                let ids = ids.ok_or_else(|| Usage::msg("verify --restore needs the identity"))?;
                let fetch_args = crate::wal::fetch_args(s)?;
                Ok(Box::new(
                    dr_postgres::physical::PhysicalScratchRestorer::new(
                        ids.clone(),
                        std::env::current_exe()?,
                        fetch_args,
                    ),
                ))
            }
            other => Err(Usage::msg(format!(
                "no scratch restore for backups of kind {other}"
            ))),
        }
    }

    async fn restore(&self, a: &RestoreArgs) -> Result<i32> {
        if a.pitr.pgdata.is_some() {
            let source = a.source.as_deref().ok_or_else(|| {
                Usage::msg("a point-in-time restore needs --source NAME (the WAL archive's source)")
            })?;
            let report =
                crate::wal::run_pitr_restore(&self.config, &a.repo, source, &a.backup, &a.pitr)
                    .await?;
            if self.cli.json {
                self.print_json(&report)?;
            } else {
                println!("{}", render::pitr(&report));
            }
            return Ok(EXIT_OK);
        }
        let (repo, s, bar) = self.open(&a.repo).await?;
        let m = repo.find_backup(a.source.as_deref(), &a.backup).await?;
        let keys = self.keys(&s)?;
        let ids = repo.unlock(&keys).map_err(Usage::wrap_storage)?;
        let restorer: Box<dyn Restorer> = match m.source.kind.as_str() {
            dr_postgres::KIND_LOGICAL => {
                let dsn = a.to.as_ref().ok_or_else(|| {
                    Usage::msg("restoring a PostgreSQL backup needs --to DSN (the target database)")
                })?;
                let mut conn = dsn_arg(dsn, "--to")?;
                if let Some(f) = &a.password_file {
                    conn = conn.with_password_file(f).map_err(Usage::wrap)?;
                }
                let mut opts = LogicalRestoreOptions::default();
                opts.clean = a.clean;
                opts.globals = a.globals;
                opts.jobs = a.jobs;
                opts.staging_dir = a.staging_dir.clone();
                Box::new(PostgresLogicalRestorer::new(conn, opts))
            }
            dr_vault::KIND => {
                let cfg = match self.config.sources.get(&m.source.name).map(|e| &e.config) {
                    Some(SourceConfig::VaultRaft(c)) => {
                        c.clone().with_env().map_err(dr_core::Error::from)?
                    }
                    _ => dr_vault::VaultConfig::from_env().map_err(dr_core::Error::from)?,
                };
                let opts = dr_vault::RestoreOptions::default()
                    .forced(a.force)
                    .with_unseal_key_files(a.unseal_key_file.clone());
                Box::new(dr_vault::VaultRestorer::new(&cfg, opts).map_err(dr_core::Error::from)?)
            }
            dr_k8s::KIND_KUBERNETES => {
                let cluster = match self.config.sources.get(&m.source.name).map(|e| &e.config) {
                    Some(SourceConfig::Kubernetes(c)) => c.cluster(),
                    _ => dr_k8s::ClusterConfig::default(),
                };
                let client = cluster.client().await.map_err(dr_core::Error::from)?;
                let mut opts = dr_k8s::KubernetesRestoreOptions::default();
                for pair in &a.namespace_map {
                    let (old, new) = pair.split_once('=').ok_or_else(|| {
                        Usage::msg(format!("--namespace-map {pair:?}: expected OLD=NEW"))
                    })?;
                    opts.namespace_mapping
                        .insert(old.to_string(), new.to_string());
                }
                opts.existing = match a.existing.as_str() {
                    "report" => dr_k8s::ExistingPolicy::Report,
                    "update" => dr_k8s::ExistingPolicy::Update,
                    other => {
                        return Err(Usage::msg(format!(
                            "--existing {other:?}: report or update"
                        )))
                    }
                };
                opts.dry_run = a.server_dry_run;
                Box::new(dr_k8s::KubernetesRestorer::new(client, opts))
            }
            dr_k8s::KIND_ETCD => {
                let dir = a.etcd_snapshot_dir.clone().ok_or_else(|| {
                    Usage::msg("restoring an etcd snapshot needs --etcd-snapshot-dir DIR")
                })?;
                Box::new(dr_k8s::EtcdSnapshotFile::new(dir))
            }
            other => bail!("no restorer for backups of kind {other}"),
        };
        let report = job::restore(&repo, &m, &ids, restorer.as_ref()).await;
        if let Some(b) = &bar {
            b.finish();
        }
        let report =
            report.with_context(|| format!("restore of backup {} into {restorer}", m.backup_id))?;
        // A Kubernetes restore can be partial: visible, and not exit 0.
        let complete = report
            .details
            .get("complete")
            .and_then(|c| c.as_bool())
            .unwrap_or(true);
        if self.cli.json {
            self.print_json(&report)?;
        } else {
            println!("{}", render::restore(&m, &report));
        }
        Ok(if complete { EXIT_OK } else { EXIT_FAILED })
    }
}

impl Ctx<'_> {
    async fn prune(&self, a: &PruneArgs) -> Result<i32> {
        let (repo, _, _) = self.open(&a.repo).await?;
        let policies: std::collections::BTreeMap<String, dr_core::retention::RetentionPolicy> =
            self.config
                .sources
                .iter()
                .map(|(n, e)| (n.clone(), e.retention.clone()))
                .collect();
        let mut opts = dr_core::prune::PruneOptions::default();
        opts.orphan_grace = a.orphan_grace;
        opts.lock_wait = a.lock_wait;
        opts.break_stale_lock = a.break_stale_lock;
        // WAL retention needs the archive's objects, with each cluster's
        // real segment size (from its physical backups' manifests).
        let (wal, _) = dr_postgres::wal::retention::all_retention_facts(&repo).await?;
        let plan =
            dr_core::prune::plan_prune(&repo, &policies, &wal, &opts, chrono::Utc::now()).await?;
        if a.dry_run {
            if self.cli.json {
                self.print_json(&plan)?;
            } else {
                println!("{}", render::prune_plan(&plan));
            }
            return Ok(EXIT_OK);
        }
        let report = dr_core::prune::prune(&repo, &plan, &opts).await?;
        if self.cli.json {
            self.print_json(&serde_json::json!({ "plan": plan, "report": report }))?;
        } else {
            println!("{}", render::prune_plan(&plan));
            println!(
                "pruned: {} backup(s), {} WAL object(s), {} orphan(s), {} verification record(s); {} freed",
                report.backups_deleted.len(),
                report.wal_deleted,
                report.orphans_deleted,
                report.verifications_deleted,
                render::bytes(report.bytes_freed)
            );
        }
        Ok(EXIT_OK)
    }

    async fn status(&self, a: &StatusArgs) -> Result<i32> {
        let (repo, s, _) = self.open(&a.repo).await?;
        let configured: Vec<String> = self.config.sources.keys().cloned().collect();
        // With a key the timeline history files are read and switches
        // followed exactly; without, they are inferred from the names.
        let keys = self.keys(&s)?;
        let ids = if keys.identities.is_some() || keys.passphrase.is_some() {
            Some(repo.unlock(&keys).map_err(Usage::wrap_storage)?)
        } else {
            None
        };
        // Continuous WAL is promised from the PITR window's anchor on.
        let windows: std::collections::BTreeMap<String, std::time::Duration> = self
            .config
            .sources
            .iter()
            .filter_map(|(n, e)| e.retention.pitr_window.map(|w| (n.clone(), w)))
            .collect();
        let now = chrono::Utc::now();
        let wal =
            dr_postgres::wal::continuity::wal_status(&repo, ids.as_ref(), &windows, now).await?;
        let statuses = dr_core::status::status_with_wal(
            &repo,
            &configured,
            &self.config.objectives,
            &wal,
            now,
        )
        .await?;
        let last_drill = dr_core::drill::last_drill(&repo).await.ok().flatten();
        if let Some(path) = &a.prometheus {
            let text = dr_core::status::to_prometheus(&statuses);
            if path.as_os_str() == "-" {
                print!("{text}");
            } else {
                let tmp = path.with_extension("prom.tmp");
                std::fs::write(&tmp, &text)
                    .with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        if self.cli.json {
            self.print_json(&serde_json::json!({ "sources": statuses, "last_drill": last_drill }))?;
        } else if a.prometheus.as_deref() != Some(Path::new("-")) {
            println!("{}", render::status(&statuses));
            match &last_drill {
                Some(d) => println!(
                    "last drill: {} of {} at {}: {} in {:.1} s",
                    d.id,
                    d.plan,
                    d.started_at.to_rfc3339(),
                    if d.passed { "passed" } else { "FAILED" },
                    d.duration_secs
                ),
                None => println!("last drill: none"),
            }
        }
        Ok(if statuses.iter().all(dr_core::status::SourceStatus::ok) {
            EXIT_OK
        } else {
            EXIT_VERIFY_FAILED
        })
    }
}

/// The backup source a `[sources.NAME]` entry describes (shared with dr-agent).
///
/// # Errors
/// The entry's settings are invalid.
pub async fn build_source(cfg: &SourceConfig) -> Result<Box<dyn BackupSource>> {
    Ok(match cfg {
        SourceConfig::Postgres(c) => Box::new(logical(c)?),
        SourceConfig::PostgresPhysical(c) => {
            let conn = c.connection().map_err(dr_core::Error::from)?;
            let mut opts = dr_postgres::physical::PhysicalOptions::default();
            opts.bin_dir = c.bin_dir.clone();
            Box::new(dr_postgres::physical::PostgresPhysical::new(conn, opts))
        }
        SourceConfig::VaultRaft(c) => {
            let c = c.clone().with_env().map_err(dr_core::Error::from)?;
            Box::new(dr_vault::VaultRaftSnapshot::new(&c).map_err(dr_core::Error::from)?)
        }
        SourceConfig::Kubernetes(c) => Box::new(c.source().await.map_err(dr_core::Error::from)?),
        SourceConfig::Etcd(c) => Box::new(c.source().map_err(dr_core::Error::from)?),
    })
}

fn logical(c: &PostgresSourceConfig) -> Result<PostgresLogical> {
    c.logical_source()
        .map_err(|e| anyhow!(dr_core::Error::from(e)))
}

/// Parses a DSN given on dr's command line. A password in it is accepted but
/// warned about: other users can read a process's arguments (`ps`,
/// `/proc/<pid>/cmdline`).
fn dsn_arg(dsn: &str, flag: &str) -> Result<ConnectionSettings> {
    let conn = ConnectionSettings::from_dsn(dsn).map_err(Usage::wrap)?;
    if ConnectionSettings::dsn_has_password(dsn) {
        eprintln!(
            "warning: the {flag} connection string holds a password, which other users can read in the process \
             list; use PGPASSWORD, ~/.pgpass or --password-file instead"
        );
    }
    Ok(conn)
}
