//! Connecting to a cluster: `KUBECONFIG` (or `~/.kube/config`), a named
//! context, or the in-cluster service account, as `kubectl` does.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which cluster to talk to. Empty means what `kubectl` would use:
/// `KUBECONFIG` / `~/.kube/config` with its current context, else the
/// in-cluster service account (kube's `Config::infer`).
///
/// Credentials stay in the kubeconfig file or the service account; they are
/// never part of this struct or of a log line.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// A kubeconfig file other than `KUBECONFIG`'s.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig other than its current one.
    #[serde(default)]
    pub context: Option<String>,
}

impl ClusterConfig {
    /// Builds a client.
    ///
    /// # Errors
    /// [`Error::Config`] when no configuration is found or it is invalid;
    /// [`Error::InvalidConfig`] for an unreadable kubeconfig file.
    pub async fn client(&self) -> Result<Client> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| Error::InvalidConfig {
                    key: "kubeconfig".into(),
                    reason: format!("{}: {e}", path.display()),
                })?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| Error::InvalidConfig {
                        key: "kubeconfig".into(),
                        reason: format!("{}: {e}", path.display()),
                    })?
            }
            None if self.context.is_some() => {
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| Error::InvalidConfig {
                        key: "context".into(),
                        reason: e.to_string(),
                    })?
            }
            None => Config::infer()
                .await
                .map_err(|e| Error::Config(Box::new(kube::Error::InferConfig(e))))?,
        };
        tracing::debug!(cluster = %config.cluster_url, "kubernetes client configured");
        Client::try_from(config).map_err(|e| Error::Config(Box::new(e)))
    }
}
