//! The registries: which system crate backs up, restores and verifies each
//! kind of source, and which plan actions exist.
//!
//! Adding a source kind is its system crate plus one entry here: a
//! [`SourceKind`] variant (with its manifest kind name), a
//! [`crate::SourceConfig`] variant, and its arms in [`build_source`],
//! [`restorer`] and, when it can be proven in a scratch target,
//! [`scratch_restorer`]. Adding a plan action is a `register` call in
//! [`action_registry`].

use dr_core::plan::{actions, ActionRegistry};
use dr_core::{BackupSource, Restorer};
use dr_postgres::{ConnectionSettings, LogicalRestoreOptions, PostgresLogicalRestorer};
use dr_storage::{Identities, Manifest, Repository, RepositorySettings};

use crate::config::{DrConfig, SourceConfig};
use crate::error::{Error, Result};
pub use crate::kind::SourceKind;
use crate::options::RestoreOptions;

/// The backup source a `[sources.NAME]` entry describes; `pg_bin`
/// (`--pg-bin`, `DR_PG_BIN`) replaces a PostgreSQL entry's `bin_dir`.
///
/// # Errors
/// [`Error::Core`] (a usage kind) when the entry's settings are invalid;
/// for Kubernetes, when no client can be made from KUBECONFIG.
pub async fn build_source(
    config: &SourceConfig,
    pg_bin: Option<&std::path::Path>,
) -> Result<Box<dyn BackupSource>> {
    let bin_dir = |c: &dr_postgres::PostgresSourceConfig| {
        pg_bin
            .map(std::path::Path::to_path_buf)
            .or_else(|| c.bin_dir.clone())
    };
    Ok(match config {
        SourceConfig::Postgres(c) => Box::new(c.logical_source()?.with_bin_dir(bin_dir(c))),
        SourceConfig::PostgresPhysical(c) => {
            let mut opts = dr_postgres::physical::PhysicalOptions::default();
            opts.bin_dir = bin_dir(c);
            Box::new(dr_postgres::physical::PostgresPhysical::new(
                c.connection()?,
                opts,
            ))
        }
        SourceConfig::VaultRaft(c) => {
            let c = c.clone().with_env()?;
            Box::new(dr_vault::VaultRaftSnapshot::new(&c)?)
        }
        SourceConfig::Kubernetes(c) => Box::new(c.source().await?),
        SourceConfig::Etcd(c) => Box::new(c.source()?),
    })
}

/// The restorer for a backup of `kind` into the target `opts` names; the
/// configured source of the backup's name supplies what the flags do not
/// (the Vault address, the Kubernetes cluster); `pg_bin` is searched first
/// for PostgreSQL's programs.
///
/// A physical backup is restored with [`pitr_restorer`] (its options need
/// the recovery target).
///
/// # Errors
/// [`Error::Usage`] when the target flags of the kind are missing or
/// malformed; client set-up errors.
pub async fn restorer(
    kind: SourceKind,
    config: &DrConfig,
    manifest: &Manifest,
    opts: &RestoreOptions,
    pg_bin: Option<std::path::PathBuf>,
) -> Result<Box<dyn Restorer>> {
    let configured = config.sources.get(&manifest.source.name).map(|e| &e.config);
    Ok(match kind {
        SourceKind::PostgresLogical => {
            let dsn = opts.to.as_ref().ok_or_else(|| {
                Error::usage("restoring a PostgreSQL backup needs --to DSN (the target database)")
            })?;
            let mut conn = dsn_arg(dsn, "--to")?;
            if let Some(f) = &opts.password_file {
                conn = conn
                    .with_password_file(f)
                    .map_err(|e| Error::config("--password-file", e))?;
            }
            let mut o = LogicalRestoreOptions::default();
            o.clean = opts.clean;
            o.globals = opts.globals;
            o.jobs = opts.jobs.max(1);
            o.staging_dir = opts.staging_dir.clone();
            o.ignore_database_properties = opts.ignore_database_properties;
            o.bin_dir = pg_bin;
            Box::new(PostgresLogicalRestorer::new(conn, o))
        }
        SourceKind::PostgresPhysical => {
            return Err(Error::usage(
                "restoring a physical backup needs --pgdata DIR and a recovery target \
                 (--target-time, --target-lsn, --target-xid, --target-name or --target immediate|latest)",
            ))
        }
        SourceKind::VaultRaft => {
            let cfg = match configured {
                Some(SourceConfig::VaultRaft(c)) => c.clone().with_env()?,
                _ => dr_vault::VaultConfig::from_env()?,
            };
            let o = dr_vault::RestoreOptions::default()
                .forced(opts.force)
                .with_unseal_key_files(opts.unseal_key_file.clone());
            Box::new(dr_vault::VaultRestorer::new(&cfg, o)?)
        }
        SourceKind::Kubernetes => {
            let cluster = match configured {
                Some(SourceConfig::Kubernetes(c)) => c.cluster(),
                _ => dr_k8s::ClusterConfig::default(),
            };
            let mut o = dr_k8s::KubernetesRestoreOptions::default();
            for pair in &opts.namespace_map {
                let (old, new) = pair.split_once('=').ok_or_else(|| {
                    Error::usage(format!("--namespace-map {pair:?}: expected OLD=NEW"))
                })?;
                o.namespace_mapping.insert(old.to_string(), new.to_string());
            }
            o.existing = opts.existing.into();
            o.dry_run = opts.server_dry_run;
            let client = cluster.client().await?;
            Box::new(dr_k8s::KubernetesRestorer::new(client, o))
        }
        SourceKind::Etcd => {
            let dir = opts.etcd_snapshot_dir.clone().ok_or_else(|| {
                Error::usage("restoring an etcd snapshot needs --etcd-snapshot-dir DIR")
            })?;
            Box::new(dr_k8s::EtcdSnapshotFile::new(dir))
        }
    })
}

/// The restorer of a point-in-time restore of a physical backup;
/// `identities` read the archive's timeline history while planning.
pub fn pitr_restorer(
    opts: dr_postgres::physical::PitrOptions,
    identities: Identities,
) -> dr_postgres::PostgresPitrRestorer {
    dr_postgres::PostgresPitrRestorer::new(opts, identities)
}

/// Where `verify --restore` restores a backup to prove it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ScratchTarget {
    /// PostgreSQL server for a logical backup's scratch database (a DSN);
    /// default: the configured source's server.
    pub server: Option<String>,
    /// Apply the backup's globals and keep owners in the scratch database.
    pub globals: bool,
    /// Searched first for PostgreSQL's programs (`pg_restore`, `pg_ctl`).
    pub pg_bin: Option<std::path::PathBuf>,
}

/// The scratch restorer that proves a backup of `kind`, or `None` when the
/// kind has no scratch restore (its data is checked by digest and
/// decryption only).
///
/// # Errors
/// [`Error::Usage`] when a logical backup's scratch server is neither
/// given nor configured.
pub fn scratch_restorer(
    kind: SourceKind,
    config: &DrConfig,
    manifest: &Manifest,
    target: &ScratchTarget,
    ids: &Identities,
    settings: &RepositorySettings,
    dr_program: std::path::PathBuf,
) -> Result<Option<Box<dyn Restorer>>> {
    Ok(match kind {
        SourceKind::PostgresLogical => {
            let server = match &target.server {
                Some(dsn) => dsn_arg(dsn, "--scratch")?,
                None => match config.sources.get(&manifest.source.name).map(|e| &e.config) {
                    Some(SourceConfig::Postgres(c)) => c.connection()?,
                    _ => {
                        return Err(Error::usage(format!(
                        "verify --restore of {} needs --scratch DSN (a PostgreSQL server for the \
                             scratch database)",
                        manifest.source.name
                    )))
                    }
                },
            };
            let mut o = LogicalRestoreOptions::default();
            o.globals = target.globals;
            o.no_owner = !target.globals;
            o.bin_dir = target.pg_bin.clone();
            Some(Box::new(PostgresLogicalRestorer::scratch(&server, o)))
        }
        SourceKind::PostgresPhysical => {
            let mut scratch = dr_postgres::physical::PhysicalScratchRestorer::new(
                ids.clone(),
                dr_program,
                crate::wal::fetch_args(settings)?,
            );
            if let Some(dir) = &target.pg_bin {
                scratch = scratch.with_bin_dir(dir);
            }
            Some(Box::new(scratch))
        }
        SourceKind::VaultRaft | SourceKind::Kubernetes | SourceKind::Etcd => None,
    })
}

/// Every plan action dr can run, wired from the configuration: the generic
/// ones, PostgreSQL's, Kubernetes' (through KUBECONFIG), DNS with `[dns]`,
/// and with a repository and its key the restores (Vault, logical, PITR);
/// `pg_bin` is searched first for PostgreSQL's server programs.
///
/// # Errors
/// A `[dns]` section whose provider cannot be set up.
pub async fn action_registry(
    config: &DrConfig,
    repo: Option<&Repository>,
    ids: Option<&Identities>,
    settings: &RepositorySettings,
    dr_program: std::path::PathBuf,
    pg_bin: Option<std::path::PathBuf>,
) -> Result<ActionRegistry> {
    let mut registry = ActionRegistry::new();
    actions::register(&mut registry);
    dr_postgres::plan::register(&mut registry);
    dr_k8s::register(
        &mut registry,
        dr_k8s::KubeContext::new(dr_k8s::ClusterConfig::default()),
    );
    match &config.dns {
        Some(dns) => {
            // Connected on first use: checking a plan makes no network call.
            let provider = dr_dns::connect_lazily(dns)?;
            dr_dns::register(&mut registry, provider);
        }
        None => unavailable(
            &mut registry,
            &[dr_dns::FAILOVER_ACTION],
            "needs a [dns] section in dr.toml (provider = \"route53\" or \"rfc2136\")",
        ),
    }
    let (Some(repo), Some(ids)) = (repo, ids) else {
        // Documented actions stay known: a plan that uses one fails its
        // check naming what is missing, not as an unknown action.
        unavailable(
            &mut registry,
            &[
                dr_vault::RESTORE_ACTION,
                dr_postgres::logical::action::LOGICAL_RESTORE,
                dr_postgres::logical::action::VERIFY,
                dr_postgres::physical::PITR_RESTORE,
            ],
            "needs the repository and its key (--repo and --identity, or [repository] url and \
             identity_file in dr.toml)",
        );
        return Ok(registry);
    };
    {
        let vault = dr_vault::VaultConfig::from_env().unwrap_or_default();
        dr_vault::register(
            &mut registry,
            dr_vault::VaultActionEnv {
                repository: repo.clone(),
                identities: ids.clone(),
                vault,
            },
        );
        dr_postgres::logical::action::register(
            &mut registry,
            dr_postgres::logical::action::LogicalActionEnv {
                repository: repo.clone(),
                identities: ids.clone(),
            },
        );
        let mut pitr = dr_postgres::physical::PitrActionEnv::new(
            repo.clone(),
            ids.clone(),
            dr_program,
            crate::wal::fetch_args(settings)?,
        );
        pitr.bin_dir = pg_bin;
        dr_postgres::physical::register(&mut registry, pitr);
    }
    Ok(registry)
}

/// Registers `names` as actions that cannot be built here, each failing
/// the plan's check with `reason`.
fn unavailable(registry: &mut ActionRegistry, names: &[&str], reason: &'static str) {
    for name in names {
        let key = (*name).to_string();
        registry.register(
            name,
            std::sync::Arc::new(move |_: &serde_json::Value| {
                Err(dr_core::Error::InvalidConfig {
                    key: key.clone(),
                    reason: reason.to_string(),
                })
            }),
        );
    }
}

/// Parses a DSN given on a command line. A password in it is accepted but
/// logged as a warning: other users can read a process's arguments (`ps`,
/// `/proc/<pid>/cmdline`).
///
/// # Errors
/// [`Error::Config`] naming `flag` for a malformed DSN.
pub fn dsn_arg(dsn: &str, flag: &str) -> Result<ConnectionSettings> {
    let conn = ConnectionSettings::from_dsn(dsn).map_err(|e| Error::config(flag, e))?;
    if ConnectionSettings::dsn_has_password(dsn) {
        tracing::warn!(
            "the {flag} connection string holds a password, which other users can read in the process \
             list; use PGPASSWORD, ~/.pgpass or --password-file instead"
        );
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_manifest_name() {
        for k in SourceKind::ALL {
            assert_eq!(SourceKind::from_manifest_kind(k.manifest_kind()), Some(k));
        }
        assert_eq!(SourceKind::from_manifest_kind("oracle"), None);
    }

    #[tokio::test]
    async fn documented_actions_are_known_and_say_what_they_need() {
        let config = DrConfig::default();
        let registry = action_registry(
            &config,
            None,
            None,
            &RepositorySettings::default(),
            "dr".into(),
            None,
        )
        .await
        .unwrap();
        for (name, needs) in [
            ("postgres.pitr_restore", "repository"),
            ("postgres.logical_restore", "repository"),
            ("vault.restore", "repository"),
            ("dns.failover", "[dns]"),
        ] {
            let e = registry.build(name, &serde_json::json!({})).unwrap_err();
            match e {
                dr_core::Error::InvalidConfig { key, reason } => {
                    assert_eq!(key, name);
                    assert!(reason.contains(needs), "{name}: {reason}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(registry
            .build("postgres.nonsense", &serde_json::json!({}))
            .is_err());
    }

    #[test]
    fn config_kinds_match_their_manifest_kinds() {
        let c = DrConfig::parse(
            "[sources.a]\nkind = 'postgres'\n[sources.b]\nkind = 'postgres-physical'\n\
             [sources.c]\nkind = 'etcd'\nendpoints = ['http://127.0.0.1:2379']\n",
        )
        .unwrap();
        assert_eq!(c.sources["a"].config.kind(), SourceKind::PostgresLogical);
        assert_eq!(c.sources["b"].config.kind(), SourceKind::PostgresPhysical);
        assert_eq!(c.sources["c"].config.kind(), SourceKind::Etcd);
    }
}
