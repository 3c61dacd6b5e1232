//! Discovery of the resource types a cluster serves.
//!
//! First the aggregated discovery documents (`GET /api` and `GET /apis` with
//! `Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`,
//! KEP-3352, GA in Kubernetes 1.30): two requests for the whole cluster. A
//! server that does not offer them answers with the legacy `APIVersions` /
//! `APIGroupList`, and discovery falls back to the per-group walk
//! (`GET /api/v1`, `GET /apis/<group>/<version>`), each group with its own
//! time bound, several at a time. A group that fails (an aggregated API whose
//! backing service is down answers 503) is a warning and is left out; it
//! does not fail the backup, and it cannot stall it past the bound.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIResourceList, APIVersions};
use kube::Client;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `Accept` header of aggregated discovery, v2 then v2beta1, then the
/// legacy documents.
pub const AGGREGATED_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

/// One resource type the cluster serves, in its group's preferred version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: String,
    /// Version (`v1`).
    pub version: String,
    /// Kind (`Deployment`).
    pub kind: String,
    /// Plural resource name (`deployments`).
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// The verbs the server allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
}

impl ResourceType {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name selections use, as `kubectl` does: `deployments.apps`, or
    /// `configmaps` for the core group.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether `name` designates this type: the plural, `plural.group`, or
    /// the kind, case-insensitively.
    pub fn matches(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(&self.plural)
            || name.eq_ignore_ascii_case(&self.qualified_name())
            || name.eq_ignore_ascii_case(&self.kind)
    }

    /// Whether the server allows `verb` on this type.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// kube's description of the type, for dynamic API calls.
    pub fn api_resource(&self) -> kube::discovery::ApiResource {
        kube::discovery::ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }
}

/// How discovery runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiscoveryOptions {
    /// Bound of each request of the walk (and of the aggregated documents).
    pub group_timeout: Duration,
    /// Groups queried at once in the walk.
    pub concurrency: usize,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            group_timeout: Duration::from_secs(10),
            concurrency: 4,
        }
    }
}

/// What discovery found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Discovered {
    /// Every resource type that can be listed, created and deleted, sorted.
    pub resources: Vec<ResourceType>,
    /// Groups that failed or are stale, one line each.
    pub warnings: Vec<String>,
    /// Whether the aggregated documents were used.
    pub aggregated: bool,
}

impl Discovered {
    /// The type named `name` (see [`ResourceType::matches`]).
    pub fn find(&self, name: &str) -> Option<&ResourceType> {
        self.resources.iter().find(|r| r.matches(name))
    }

    /// The type of `group` and `kind`.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&ResourceType> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind)
    }
}

// apidiscovery.k8s.io/v2 (k8s.io/api/apidiscovery/v2/types.go), only the
// fields used.
#[derive(Deserialize)]
struct GroupDiscoveryList {
    #[serde(default)]
    items: Vec<GroupDiscovery>,
}

#[derive(Deserialize)]
struct GroupDiscovery {
    #[serde(default)]
    metadata: NameMeta,
    #[serde(default)]
    versions: Vec<VersionDiscovery>,
}

#[derive(Deserialize, Default)]
struct NameMeta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct VersionDiscovery {
    version: String,
    #[serde(default)]
    resources: Vec<ResourceDiscovery>,
    #[serde(default)]
    freshness: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceDiscovery {
    resource: String,
    #[serde(default)]
    response_kind: Option<GroupVersionKind>,
    scope: String,
    #[serde(default)]
    verbs: Vec<String>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    kind: String,
}

/// Whether a type can take part in a backup and a restore: listed, created
/// and deleted (Velero's rule for backed-up resources).
fn usable(r: &ResourceType) -> bool {
    !r.plural.contains('/') && r.allows("list") && r.allows("create") && r.allows("delete")
}

/// Discovers the resource types of the cluster.
///
/// # Errors
/// Only when the core group (`/api`) or the group list (`/apis`) cannot be
/// read: without them nothing can be backed up. A failed group is a warning
/// in [`Discovered::warnings`].
pub async fn discover(client: &Client, options: &DiscoveryOptions) -> Result<Discovered> {
    let core = get_json(client, "/api", AGGREGATED_ACCEPT, options.group_timeout).await?;
    let groups = get_json(client, "/apis", AGGREGATED_ACCEPT, options.group_timeout).await?;
    let aggregated =
        core["kind"] == "APIGroupDiscoveryList" && groups["kind"] == "APIGroupDiscoveryList";
    let mut found = if aggregated {
        let mut d = Discovered {
            aggregated: true,
            ..Default::default()
        };
        for doc in [core, groups] {
            let list: GroupDiscoveryList =
                serde_json::from_value(doc).map_err(|e| Error::Malformed {
                    object: "aggregated discovery document".into(),
                    reason: e.to_string(),
                })?;
            from_aggregated(list, &mut d);
        }
        d
    } else {
        tracing::info!("aggregated discovery not offered; walking the API groups");
        walk(client, core, groups, options).await?
    };
    found.resources.retain(usable);
    found.resources.sort();
    found.resources.dedup();
    for w in &found.warnings {
        tracing::warn!(warning = %w, "discovery");
    }
    Ok(found)
}

fn from_aggregated(list: GroupDiscoveryList, d: &mut Discovered) {
    for g in list.items {
        // Versions are listed in preference order; the first is preferred.
        let Some(v) = g.versions.into_iter().next() else {
            continue;
        };
        if v.freshness.as_deref() == Some("Stale") {
            d.warnings.push(format!(
                "API group {}/{} is stale (its aggregated API server is not answering); its resources are left out",
                if g.metadata.name.is_empty() { "core" } else { &g.metadata.name },
                v.version
            ));
            continue;
        }
        for r in v.resources {
            d.resources.push(ResourceType {
                group: g.metadata.name.clone(),
                version: v.version.clone(),
                kind: r.response_kind.map(|k| k.kind).unwrap_or_default(),
                plural: r.resource,
                namespaced: r.scope == "Namespaced",
                verbs: r.verbs,
            });
        }
    }
}

async fn walk(
    client: &Client,
    core: serde_json::Value,
    groups: serde_json::Value,
    options: &DiscoveryOptions,
) -> Result<Discovered> {
    let core: APIVersions = serde_json::from_value(core).map_err(|e| Error::Malformed {
        object: "GET /api".into(),
        reason: e.to_string(),
    })?;
    let groups: APIGroupList = serde_json::from_value(groups).map_err(|e| Error::Malformed {
        object: "GET /apis".into(),
        reason: e.to_string(),
    })?;
    let mut targets: Vec<(String, String)> = Vec::new();
    if let Some(v) = core.versions.first() {
        targets.push((String::new(), v.clone()));
    }
    for g in groups.groups {
        let preferred = g
            .preferred_version
            .map(|p| p.version)
            .or_else(|| g.versions.first().map(|v| v.version.clone()));
        if let Some(v) = preferred {
            targets.push((g.name, v));
        }
    }
    let timeout = options.group_timeout;
    let results: Vec<_> = futures::stream::iter(targets)
        .map(|(group, version)| async move {
            let path = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let r = get_json(client, &path, "application/json", timeout)
                .await
                .and_then(|v| {
                    serde_json::from_value::<APIResourceList>(v).map_err(|e| Error::Malformed {
                        object: format!("GET {path}"),
                        reason: e.to_string(),
                    })
                });
            (group, version, r)
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    let mut d = Discovered::default();
    for (group, version, r) in results {
        match r {
            Ok(list) => {
                for r in list.resources {
                    d.resources.push(ResourceType {
                        group: r.group.unwrap_or_else(|| group.clone()),
                        version: r.version.unwrap_or_else(|| version.clone()),
                        kind: r.kind,
                        plural: r.name,
                        namespaced: r.namespaced,
                        verbs: r.verbs,
                    });
                }
            }
            Err(e) if group.is_empty() => return Err(e),
            Err(e) => d
                .warnings
                .push(format!("API group {group}/{version} left out: {e}")),
        }
    }
    Ok(d)
}

async fn get_json(
    client: &Client,
    path: &str,
    accept: &str,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let req = http::Request::get(path)
        .header(http::header::ACCEPT, accept)
        .body(Vec::new())
        .map_err(|e| Error::InvalidConfig {
            key: "discovery".into(),
            reason: e.to_string(),
        })?;
    match tokio::time::timeout(timeout, client.request::<serde_json::Value>(req)).await {
        Ok(r) => r.map_err(|e| Error::kube(format!("GET {path}"), e)),
        Err(_) => Err(Error::Timeout {
            what: format!("GET {path}"),
            after: timeout,
        }),
    }
}
