//! Checks of running pods: readiness, and the spread over zones (the
//! runbook's validation after a zone failure).

use std::collections::BTreeMap;

use async_trait::async_trait;
use dr_core::plan::{Action, ActionContext, ActionOutput};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{required, KubeContext};
use crate::error::Error;

/// The well-known zone label of nodes (Kubernetes "Well-Known Labels,
/// Annotations and Taints": `topology.kubernetes.io/zone`).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Whether a pod is Ready (condition `Ready=True`) and not being deleted.
pub(crate) fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn pods(client: Client, namespace: &str, selector: &str) -> dr_core::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let mut out = Vec::new();
    let mut lp = ListParams::default().labels(selector).limit(500);
    loop {
        let page = api
            .list(&lp)
            .await
            .map_err(|e| Error::kube(format!("list pods {selector} in {namespace}"), e))?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => lp = lp.continue_token(&t),
            None => return Ok(out),
        }
    }
}

/// Parameters of `k8s.pods_ready`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PodsReadyParams {
    /// Namespace.
    pub namespace: String,
    /// Label selector of the pods (`app=web`).
    pub selector: String,
    /// Ready pods needed; when absent, every matching pod (and at least one).
    #[serde(default)]
    pub min_ready: Option<u32>,
}

/// `k8s.pods_ready`: checks that the pods of a selector are Ready.
#[derive(Debug)]
pub struct PodsReady {
    cluster: KubeContext,
    p: PodsReadyParams,
}

impl PodsReady {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`dr_core::Error::InvalidConfig`] naming the parameter.
    pub fn new(cluster: KubeContext, p: PodsReadyParams) -> dr_core::Result<Self> {
        required("k8s.pods_ready", "namespace", &p.namespace)?;
        required("k8s.pods_ready", "selector", &p.selector)?;
        Ok(PodsReady { cluster, p })
    }
}

#[async_trait]
impl Action for PodsReady {
    fn name(&self) -> &'static str {
        "k8s.pods_ready"
    }

    fn describe(&self) -> String {
        match self.p.min_ready {
            Some(n) => format!(
                "check that at least {n} pods {} in {} are Ready",
                self.p.selector, self.p.namespace
            ),
            None => format!(
                "check that every pod {} in {} is Ready",
                self.p.selector, self.p.namespace
            ),
        }
    }

    async fn run(&self, _ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let all = pods(
            self.cluster.client().await?,
            &self.p.namespace,
            &self.p.selector,
        )
        .await?;
        let ready = all.iter().filter(|p| pod_ready(p)).count();
        let summary = format!(
            "{ready} of {} pods {} in {} Ready",
            all.len(),
            self.p.selector,
            self.p.namespace
        );
        let ok = match self.p.min_ready {
            Some(n) => ready >= n as usize,
            None => ready > 0 && ready == all.len(),
        };
        if !ok {
            return Err(dr_core::Error::VerificationFailed {
                what: format!("pods {} in {}", self.p.selector, self.p.namespace),
                reason: summary,
            });
        }
        Ok(ActionOutput {
            summary,
            state: json!({"ready": ready, "total": all.len()}),
            log: String::new(),
        })
    }
}

/// Parameters of `k8s.zone_spread`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpreadParams {
    /// Namespace.
    pub namespace: String,
    /// Label selector of the pods.
    pub selector: String,
    /// The zones that must have ready pods (the healthy ones). When empty,
    /// the zones of the cluster's nodes.
    #[serde(default)]
    pub expected_zones: Vec<String>,
    /// The largest allowed difference between the most and the least
    /// populated expected zone (the meaning of `maxSkew` in topology spread
    /// constraints). Default 1.
    #[serde(default = "one")]
    pub max_skew: u32,
    /// Ready pods each expected zone needs at least. Default 1.
    #[serde(default = "one")]
    pub min_per_zone: u32,
    /// The node label holding the zone.
    #[serde(default = "zone_label")]
    pub zone_label: String,
}

fn one() -> u32 {
    1
}

fn zone_label() -> String {
    ZONE_LABEL.into()
}

/// `k8s.zone_spread`: counts the ready pods of a selector per zone of their
/// nodes; fails when an expected zone has fewer than `min_per_zone` or the
/// skew passes `max_skew`.
#[derive(Debug)]
pub struct ZoneSpread {
    cluster: KubeContext,
    p: ZoneSpreadParams,
}

/// What a zone count found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneCount {
    /// Ready pods per zone (expected zones included with 0).
    pub zones: BTreeMap<String, u32>,
    /// Ready pods on nodes without the zone label, or not yet scheduled.
    pub unzoned: u32,
    /// Pods matching the selector that are not Ready.
    pub not_ready: u32,
}

impl ZoneSpread {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`dr_core::Error::InvalidConfig`] naming the parameter.
    pub fn new(cluster: KubeContext, p: ZoneSpreadParams) -> dr_core::Result<Self> {
        required("k8s.zone_spread", "namespace", &p.namespace)?;
        required("k8s.zone_spread", "selector", &p.selector)?;
        required("k8s.zone_spread", "zone_label", &p.zone_label)?;
        if let Some(z) = p.expected_zones.iter().find(|z| z.trim().is_empty()) {
            return Err(dr_core::Error::InvalidConfig {
                key: "k8s.zone_spread.expected_zones".into(),
                reason: format!("{z:?} is not a zone name"),
            });
        }
        Ok(ZoneSpread { cluster, p })
    }

    /// Counts ready pods per zone.
    ///
    /// # Errors
    /// API errors.
    pub async fn count(&self) -> dr_core::Result<ZoneCount> {
        let client = self.cluster.client().await?;
        let nodes: Api<Node> = Api::all(client.clone());
        let node_zone: BTreeMap<String, Option<String>> = nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube("list nodes", e))?
            .items
            .into_iter()
            .map(|n| {
                let zone = n
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(&self.p.zone_label))
                    .cloned();
                (n.metadata.name.unwrap_or_default(), zone)
            })
            .collect();
        let mut count = ZoneCount::default();
        let expected: Vec<String> = if self.p.expected_zones.is_empty() {
            let mut z: Vec<String> = node_zone.values().flatten().cloned().collect();
            z.sort();
            z.dedup();
            z
        } else {
            self.p.expected_zones.clone()
        };
        for z in &expected {
            count.zones.insert(z.clone(), 0);
        }
        for p in pods(client, &self.p.namespace, &self.p.selector).await? {
            if !pod_ready(&p) {
                count.not_ready += 1;
                continue;
            }
            let zone = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .and_then(|n| node_zone.get(n).cloned().flatten());
            match zone {
                Some(z) => *count.zones.entry(z).or_default() += 1,
                None => count.unzoned += 1,
            }
        }
        Ok(count)
    }

    /// The failures of `count` against the parameters, none when it passes.
    pub fn judge(&self, count: &ZoneCount) -> Vec<String> {
        let expected: Vec<&String> = if self.p.expected_zones.is_empty() {
            count.zones.keys().collect()
        } else {
            self.p.expected_zones.iter().collect()
        };
        let mut failures = Vec::new();
        if expected.is_empty() {
            failures.push(format!(
                "no node carries the zone label {}",
                self.p.zone_label
            ));
            return failures;
        }
        let n = |z: &String| count.zones.get(z).copied().unwrap_or(0);
        for z in &expected {
            if n(z) < self.p.min_per_zone {
                failures.push(format!(
                    "zone {z} has {} ready pods, fewer than {}",
                    n(z),
                    self.p.min_per_zone
                ));
            }
        }
        let max = expected.iter().map(|z| n(z)).max().unwrap_or(0);
        let min = expected.iter().map(|z| n(z)).min().unwrap_or(0);
        if max - min > self.p.max_skew {
            failures.push(format!(
                "skew {} exceeds max_skew {}",
                max - min,
                self.p.max_skew
            ));
        }
        failures
    }
}

#[async_trait]
impl Action for ZoneSpread {
    fn name(&self) -> &'static str {
        "k8s.zone_spread"
    }

    fn describe(&self) -> String {
        format!(
            "check that ready pods {} in {} are spread over {} (max skew {}, at least {} per zone)",
            self.p.selector,
            self.p.namespace,
            if self.p.expected_zones.is_empty() {
                "every zone of the nodes".to_string()
            } else {
                self.p.expected_zones.join(", ")
            },
            self.p.max_skew,
            self.p.min_per_zone
        )
    }

    async fn run(&self, _ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let count = self.count().await?;
        let spread = count
            .zones
            .iter()
            .map(|(z, n)| format!("{z}={n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let summary = format!(
            "ready pods {} in {} per zone: {spread} ({} not ready, {} without zone)",
            self.p.selector, self.p.namespace, count.not_ready, count.unzoned
        );
        let failures = self.judge(&count);
        if !failures.is_empty() {
            return Err(dr_core::Error::VerificationFailed {
                what: format!(
                    "zone spread of pods {} in {}",
                    self.p.selector, self.p.namespace
                ),
                reason: format!("{}; {summary}", failures.join("; ")),
            });
        }
        Ok(ActionOutput {
            summary,
            state: serde_json::to_value(&count).expect("count serialises"),
            log: String::new(),
        })
    }
}
