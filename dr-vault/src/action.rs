//! The `vault.restore` plan step.
//!
//! ```toml
//! [[steps]]
//! name = "restore-vault"
//! action = "vault.restore"
//! params = { source = "vault", backup = "latest", force = false }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dr_core::plan::{Action, ActionContext, ActionOutput, ActionRegistry};
use dr_storage::{Identities, Repository};
use serde::Deserialize;

use crate::config::VaultConfig;
use crate::restore::{RestoreOptions, VaultRestorer};
use crate::source::SnapshotMetadata;

/// The action name.
pub const RESTORE_ACTION: &str = "vault.restore";

/// The parameters of a `vault.restore` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VaultRestoreParams {
    /// The source name the backups are listed under.
    pub source: String,
    /// The backup: an id or `latest` (default).
    #[serde(default = "latest")]
    pub backup: String,
    /// Use `snapshot-force` (a snapshot of a different cluster).
    #[serde(default)]
    pub force: bool,
    /// Another cluster than the front end's default one.
    #[serde(default)]
    pub vault: Option<VaultConfig>,
    /// Seconds to wait for the node to be active afterwards (default 120,
    /// bounded by the step's timeout).
    #[serde(default)]
    pub wait_secs: Option<f64>,
    /// Files each holding one unseal key share of the snapshot's cluster.
    #[serde(default)]
    pub unseal_key_files: Vec<PathBuf>,
}

fn latest() -> String {
    "latest".into()
}

/// What `vault.restore` steps work with: the repository, the keys that
/// decrypt it, and the default cluster.
#[derive(Debug, Clone)]
pub struct VaultActionEnv {
    /// The repository holding the backups.
    pub repository: Repository,
    /// Identities that decrypt it.
    pub identities: Identities,
    /// The cluster a step restores into unless it names another.
    pub vault: VaultConfig,
}

/// Registers `vault.restore` in `registry`.
pub fn register(registry: &mut ActionRegistry, env: VaultActionEnv) {
    let env = Arc::new(env);
    registry.register_typed::<VaultRestoreParams, _>(RESTORE_ACTION, move |p| {
        Ok(Arc::new(VaultRestoreAction::new(env.clone(), p)?) as Arc<dyn Action>)
    });
}

/// Restores a Vault backup and checks the node came back (`vault.restore`).
///
/// It has no rollback: a restore replaces the cluster's data; a step that
/// must be reversible takes a backup before it.
pub struct VaultRestoreAction {
    env: Arc<VaultActionEnv>,
    params: VaultRestoreParams,
    vault: VaultConfig,
}

impl fmt::Debug for VaultRestoreAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultRestoreAction")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl VaultRestoreAction {
    /// Builds the action, checking the parameters.
    ///
    /// # Errors
    /// [`dr_core::Error::InvalidConfig`] naming the parameter.
    pub fn new(env: Arc<VaultActionEnv>, params: VaultRestoreParams) -> dr_core::Result<Self> {
        let invalid = |key: &str, reason: String| dr_core::Error::InvalidConfig {
            key: format!("{RESTORE_ACTION}.{key}"),
            reason,
        };
        dr_storage::validate_source_name(&params.source)
            .map_err(|e| invalid("source", e.to_string()))?;
        if params.backup.trim().is_empty() {
            return Err(invalid("backup", "is empty".into()));
        }
        if let Some(w) = params.wait_secs {
            if !(w.is_finite() && w > 0.0) {
                return Err(invalid(
                    "wait_secs",
                    format!("{w} is not a positive number of seconds"),
                ));
            }
        }
        let mut vault = params.vault.clone().unwrap_or_else(|| env.vault.clone());
        if vault.token.is_none() {
            vault.token = env.vault.token.clone();
        }
        vault.validate().map_err(dr_core::Error::from)?;
        Ok(VaultRestoreAction { env, params, vault })
    }

    fn address(&self) -> String {
        self.vault
            .address_url()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Action for VaultRestoreAction {
    fn name(&self) -> &'static str {
        RESTORE_ACTION
    }

    fn describe(&self) -> String {
        format!(
            "restore Vault raft snapshot {} of source {} into {}{}, then wait until the node is unsealed and active and compare its cluster id",
            self.params.backup,
            self.params.source,
            self.address(),
            if self.params.force { " with snapshot-force" } else { "" }
        )
    }

    async fn run(&self, ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let manifest = self
            .env
            .repository
            .find_backup(Some(&self.params.source), &self.params.backup)
            .await?;
        let meta = SnapshotMetadata::from_manifest(&manifest)?;
        let mut wait = self
            .params
            .wait_secs
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(120));
        if let Some(left) = ctx.time_left() {
            wait = wait.min(left);
        }
        let options = RestoreOptions::default()
            .forced(self.params.force)
            .with_wait_timeout(wait)
            .with_unseal_key_files(self.params.unseal_key_files.clone());
        let restorer = VaultRestorer::new(&self.vault, options)?;
        let report = dr_core::job::restore(
            &self.env.repository,
            &manifest,
            &self.env.identities,
            &restorer,
        )
        .await?;
        let checks = dr_core::Restorer::check(&restorer, &manifest).await?;
        if !checks.ok() {
            return Err(dr_core::Error::VerificationFailed {
                what: format!(
                    "Vault {} after restoring backup {}",
                    self.address(),
                    manifest.backup_id
                ),
                reason: checks
                    .failures()
                    .map(|c| format!("{}: expected {}, found {}", c.name, c.expected, c.actual))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok(ActionOutput {
            summary: format!(
                "Vault {} restored from backup {} (raft index {}, term {}), active, cluster id {}",
                self.address(),
                manifest.backup_id,
                meta.snapshot.raft_index,
                meta.snapshot.raft_term,
                meta.cluster_id.as_deref().unwrap_or("unknown")
            ),
            state: serde_json::json!({
                "backup_id": manifest.backup_id,
                "source": manifest.source.name,
                "address": self.address(),
                "forced": self.params.force,
                "raft_index": meta.snapshot.raft_index,
                "raft_term": meta.snapshot.raft_term,
                "restore": report,
                "checks": checks,
            }),
            log: String::new(),
        })
    }
}
