//! The `dr.toml` sections of the Kubernetes and etcd sources.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::client::ClusterConfig;
use crate::error::Result;
use crate::resources::{DiscoveryOptions, KubernetesResources, Selection, DEFAULT_PAGE_SIZE};

/// `[sources.NAME]` with `kind = "kubernetes"` (the front end reads `kind`
/// and hands the other keys to this struct):
///
/// ```toml
/// [sources.cluster]
/// kind = "kubernetes"
/// kubeconfig = "/etc/dr/kubeconfig"     # optional; else KUBECONFIG, ~/.kube/config, in-cluster
/// context = "prod-eu"                   # optional
/// include_namespaces = ["shop", "payments"]
/// exclude_resources = ["pods"]
/// label_selector = "backup!=skip"
/// include_secrets = true
/// page_size = 500
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSourceConfig {
    /// A kubeconfig other than `KUBECONFIG`'s.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// A context other than the current one.
    #[serde(default)]
    pub context: Option<String>,
    /// See [`Selection::include_namespaces`].
    #[serde(default)]
    pub include_namespaces: Vec<String>,
    /// See [`Selection::exclude_namespaces`].
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// See [`Selection::include_resources`].
    #[serde(default)]
    pub include_resources: Vec<String>,
    /// See [`Selection::exclude_resources`].
    #[serde(default)]
    pub exclude_resources: Vec<String>,
    /// See [`Selection::label_selector`].
    #[serde(default)]
    pub label_selector: Option<String>,
    /// See [`Selection::include_secrets`] (default true).
    #[serde(default = "yes")]
    pub include_secrets: bool,
    /// See [`Selection::include_cluster_resources`].
    #[serde(default)]
    pub include_cluster_resources: Option<bool>,
    /// Objects per list request.
    #[serde(default = "page_size")]
    pub page_size: u32,
    /// Bound of each discovery request, seconds.
    #[serde(default = "group_timeout")]
    pub discovery_timeout_secs: u64,
}

fn yes() -> bool {
    true
}

fn page_size() -> u32 {
    DEFAULT_PAGE_SIZE
}

fn group_timeout() -> u64 {
    10
}

impl Default for KubernetesSourceConfig {
    fn default() -> Self {
        KubernetesSourceConfig {
            kubeconfig: None,
            context: None,
            include_namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
            include_resources: Vec::new(),
            exclude_resources: Vec::new(),
            label_selector: None,
            include_secrets: true,
            include_cluster_resources: None,
            page_size: DEFAULT_PAGE_SIZE,
            discovery_timeout_secs: group_timeout(),
        }
    }
}

impl KubernetesSourceConfig {
    /// The cluster this section points at.
    pub fn cluster(&self) -> ClusterConfig {
        ClusterConfig {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    /// The selection this section describes.
    pub fn selection(&self) -> Selection {
        Selection {
            include_namespaces: self.include_namespaces.clone(),
            exclude_namespaces: self.exclude_namespaces.clone(),
            include_resources: self.include_resources.clone(),
            exclude_resources: self.exclude_resources.clone(),
            label_selector: self.label_selector.clone(),
            include_secrets: self.include_secrets,
            include_cluster_resources: self.include_cluster_resources,
        }
    }

    /// The source over an existing client.
    pub fn source_with(&self, client: kube::Client) -> KubernetesResources {
        KubernetesResources::new(client, self.selection())
            .with_page_size(self.page_size)
            .with_discovery(DiscoveryOptions {
                group_timeout: std::time::Duration::from_secs(self.discovery_timeout_secs.max(1)),
                ..DiscoveryOptions::default()
            })
    }

    /// Connects and builds the source.
    ///
    /// # Errors
    /// As [`ClusterConfig::client`].
    pub async fn source(&self) -> Result<KubernetesResources> {
        Ok(self.source_with(self.cluster().client().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_typos() {
        let c: KubernetesSourceConfig = serde_json::from_value(serde_json::json!({
            "include_namespaces": ["shop"], "label_selector": "app=web", "include_secrets": false
        }))
        .unwrap();
        assert_eq!(c.selection().include_namespaces, ["shop"]);
        assert!(!c.selection().include_secrets);
        assert_eq!(c.page_size, 500);
        let e = serde_json::from_value::<KubernetesSourceConfig>(
            serde_json::json!({"namespaces": ["x"]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("namespaces"), "{e}");
    }
}
