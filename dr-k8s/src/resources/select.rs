//! What a Kubernetes backup takes: namespaces, resource types, a label
//! selector (Velero's `--include-namespaces`, `--exclude-namespaces`,
//! `--include-resources`, `--exclude-resources`, `--selector`,
//! `--include-cluster-resources`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::resources::discovery::{Discovered, ResourceType};

/// Types never backed up unless named in `include_resources`: they are
/// recreated by the cluster itself (Velero excludes the same by default).
pub const DEFAULT_EXCLUDED: &[&str] = &["events", "events.events.k8s.io", "nodes"];

/// The selection of a Kubernetes backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Namespaces to take; empty or `["*"]` means all.
    #[serde(default)]
    pub include_namespaces: Vec<String>,
    /// Namespaces to leave out.
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// Resource types to take (`deployments`, `deployments.apps`,
    /// `Deployment`); empty means all.
    #[serde(default)]
    pub include_resources: Vec<String>,
    /// Resource types to leave out.
    #[serde(default)]
    pub exclude_resources: Vec<String>,
    /// A label selector (`app=shop,tier!=cache`) for namespaced objects.
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Take Secrets (default true: the repository encrypts every artifact).
    #[serde(default = "yes")]
    pub include_secrets: bool,
    /// Cluster-scoped types: `None` takes only what the selected namespaces
    /// need (their Namespace objects, the CRDs of included custom resources,
    /// the PersistentVolumes bound to included claims); `true` takes every
    /// selected cluster-scoped type as well; `false` takes none of them.
    #[serde(default)]
    pub include_cluster_resources: Option<bool>,
}

fn yes() -> bool {
    true
}

impl Selection {
    /// A selection of everything, Secrets included.
    pub fn all() -> Self {
        Selection {
            include_secrets: true,
            ..Default::default()
        }
    }

    /// Whether every namespace is selected (no include list or `*`, no
    /// exclusions).
    pub fn all_namespaces(&self) -> bool {
        self.namespaces_wildcard() && self.exclude_namespaces.is_empty()
    }

    fn namespaces_wildcard(&self) -> bool {
        self.include_namespaces.is_empty() || self.include_namespaces.iter().any(|n| n == "*")
    }

    /// Whether namespace `name` is selected.
    pub fn namespace_selected(&self, name: &str) -> bool {
        (self.namespaces_wildcard() || self.include_namespaces.iter().any(|n| n == name))
            && !self.exclude_namespaces.iter().any(|n| n == name)
    }

    /// Checks the names against the discovered types.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming a resource type the cluster does not
    /// serve, or a namespace listed as both included and excluded.
    pub fn validate(&self, discovered: &Discovered) -> Result<()> {
        for (key, names) in [
            ("include_resources", &self.include_resources),
            ("exclude_resources", &self.exclude_resources),
        ] {
            for n in names {
                if n != "*" && discovered.find(n).is_none() {
                    return Err(Error::InvalidConfig {
                        key: key.into(),
                        reason: format!(
                            "the cluster serves no resource type {n:?} that can be listed, created and deleted"
                        ),
                    });
                }
            }
        }
        if let Some(n) = self
            .include_namespaces
            .iter()
            .find(|n| self.exclude_namespaces.contains(n))
        {
            return Err(Error::InvalidConfig {
                key: "exclude_namespaces".into(),
                reason: format!("namespace {n:?} is both included and excluded"),
            });
        }
        Ok(())
    }

    /// Whether the type is taken by the include/exclude lists and the
    /// Secrets switch (before the cluster-scoped rule).
    pub fn type_selected(&self, r: &ResourceType) -> bool {
        let named = |list: &[String]| list.iter().any(|n| n == "*" || r.matches(n));
        if named(&self.exclude_resources) {
            return false;
        }
        if r.group.is_empty() && r.plural == "secrets" && !self.include_secrets {
            return false;
        }
        if self.include_resources.is_empty() {
            !DEFAULT_EXCLUDED.iter().any(|d| r.matches(d))
        } else {
            named(&self.include_resources)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(group: &str, plural: &str, kind: &str) -> ResourceType {
        ResourceType {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced: true,
            verbs: vec![],
        }
    }

    #[test]
    fn names_match_like_kubectl() {
        let d = rt("apps", "deployments", "Deployment");
        assert!(
            d.matches("deployments") && d.matches("deployments.apps") && d.matches("Deployment")
        );
        assert!(!d.matches("deployment.apps"));
    }

    #[test]
    fn secrets_and_default_exclusions() {
        let mut s = Selection::all();
        assert!(s.type_selected(&rt("", "secrets", "Secret")));
        assert!(!s.type_selected(&rt("", "events", "Event")));
        s.include_secrets = false;
        assert!(!s.type_selected(&rt("", "secrets", "Secret")));
        s.include_resources = vec!["events".into()];
        assert!(s.type_selected(&rt("", "events", "Event")));
        assert!(!s.type_selected(&rt("", "configmaps", "ConfigMap")));
    }

    #[test]
    fn namespaces() {
        let s = Selection {
            include_namespaces: vec!["*".into()],
            exclude_namespaces: vec!["kube-system".into()],
            ..Selection::all()
        };
        assert!(s.namespace_selected("shop") && !s.namespace_selected("kube-system"));
        assert!(!s.all_namespaces());
        let s: Selection = serde_json::from_str(r#"{"include_namespaces":["shop"]}"#).unwrap();
        assert!(s.include_secrets, "secrets are included by default");
        assert!(s.namespace_selected("shop") && !s.namespace_selected("other"));
        assert!(serde_json::from_str::<Selection>(r#"{"namespace":["shop"]}"#).is_err());
    }
}
