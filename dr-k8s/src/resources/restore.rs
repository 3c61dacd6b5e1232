//! The restorer of `kubernetes` backups: ordered, server-side applied, with
//! namespace mapping, an existing-resource policy, a dry run, and a result
//! for every item.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dr_core::{BackupReader, Check, CheckReport, RestoreReport};
use dr_storage::Manifest;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::error::{Error, Result};
use crate::resources::backup::{KubernetesMetadata, Pager, KIND_KUBERNETES};
use crate::resources::discovery::{discover, Discovered, DiscoveryOptions, ResourceType};
use crate::resources::order::{is_crd, rank};
use crate::resources::strip::{controller_of, is_subset, map_namespaces, strip, StripOptions};

/// The field manager of dr's server-side applies.
pub const FIELD_MANAGER: &str = "dr";

/// What to do with an object that exists in the target already.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExistingPolicy {
    /// Leave it: `skipped` when equal to the backup, `warning` when different
    /// (Velero's `none`).
    #[default]
    Report,
    /// Apply the backed-up version over it (forcing field ownership) when it
    /// differs (Velero's `update`).
    Update,
}

/// Options of a Kubernetes restore (the `dr restore` flags).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KubernetesRestoreOptions {
    /// Backed-up namespace -> target namespace.
    #[serde(default)]
    pub namespace_mapping: BTreeMap<String, String>,
    /// Restore only these backed-up namespaces (empty: all).
    #[serde(default)]
    pub include_namespaces: Vec<String>,
    /// What to do with existing objects.
    #[serde(default)]
    pub existing: ExistingPolicy,
    /// Server-side dry run (`dryRun=All`): nothing is changed.
    #[serde(default)]
    pub dry_run: bool,
    /// Keep Services' cluster IPs.
    #[serde(default)]
    pub keep_cluster_ips: bool,
    /// Keep Services' node ports.
    #[serde(default)]
    pub keep_node_ports: bool,
    /// Restore objects that a controller owns (ReplicaSets of Deployments,
    /// Pods of ReplicaSets); by default the controllers make them again.
    #[serde(default)]
    pub restore_owned: bool,
    /// Bound of the wait for restored CRDs to be Established, seconds.
    #[serde(default = "default_crd_wait")]
    pub crd_wait_secs: u64,
    /// Items listed one by one in the report per namespace; beyond, counts.
    #[serde(default = "default_max_items")]
    pub max_items_per_namespace: usize,
}

fn default_crd_wait() -> u64 {
    60
}

fn default_max_items() -> usize {
    10_000
}

impl Default for KubernetesRestoreOptions {
    fn default() -> Self {
        KubernetesRestoreOptions {
            namespace_mapping: BTreeMap::new(),
            include_namespaces: Vec::new(),
            existing: ExistingPolicy::default(),
            dry_run: false,
            keep_cluster_ips: false,
            keep_node_ports: false,
            restore_owned: false,
            crd_wait_secs: default_crd_wait(),
            max_items_per_namespace: default_max_items(),
        }
    }
}

impl KubernetesRestoreOptions {
    fn target_namespace<'a>(&'a self, ns: &'a str) -> &'a str {
        self.namespace_mapping
            .get(ns)
            .map(String::as_str)
            .unwrap_or(ns)
    }

    fn namespace_included(&self, ns: &str) -> bool {
        self.include_namespaces.is_empty() || self.include_namespaces.iter().any(|n| n == ns)
    }
}

/// The outcome of one item.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Created or updated (in a dry run: would be).
    Restored,
    /// Left alone on purpose (equal, owned by a controller).
    Skipped,
    /// Left alone, and the operator should look (differs from the backup).
    Warning,
    /// Not restored.
    Error,
}

/// The result of one item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemResult {
    /// `deployments.apps`.
    pub resource: String,
    /// Target namespace; `None` for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why, for anything but a plain restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The results of one namespace (or of the cluster-scoped objects).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamespaceResults {
    /// Items restored.
    pub restored: u64,
    /// Items skipped.
    pub skipped: u64,
    /// Items with a warning.
    pub warnings: u64,
    /// Items that failed.
    pub errors: u64,
    /// The items, up to the configured bound.
    pub items: Vec<ItemResult>,
    /// Whether `items` stopped at the bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Everything a Kubernetes restore did, stored in [`RestoreReport::details`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreResults {
    /// Whether this was a server-side dry run.
    pub dry_run: bool,
    /// Whether every item was restored or deliberately skipped.
    pub complete: bool,
    /// Results by target namespace; cluster-scoped objects under `""`.
    pub namespaces: BTreeMap<String, NamespaceResults>,
    /// Target namespaces found Terminating (their items were not attempted).
    pub terminating_namespaces: Vec<String>,
    /// Warnings of discovery and of the restore as a whole.
    pub warnings: Vec<String>,
}

impl RestoreResults {
    fn record(&mut self, item: ItemResult, max: usize) {
        let ns = self
            .namespaces
            .entry(item.namespace.clone().unwrap_or_default())
            .or_default();
        match item.outcome {
            Outcome::Restored => ns.restored += 1,
            Outcome::Skipped => ns.skipped += 1,
            Outcome::Warning => ns.warnings += 1,
            Outcome::Error => ns.errors += 1,
        }
        match item.outcome {
            Outcome::Error => {
                tracing::warn!(resource = %item.resource, namespace = ?item.namespace, name = %item.name, message = ?item.message, "not restored")
            }
            Outcome::Warning => {
                tracing::warn!(resource = %item.resource, namespace = ?item.namespace, name = %item.name, message = ?item.message, "left as found")
            }
            _ => {
                tracing::debug!(resource = %item.resource, namespace = ?item.namespace, name = %item.name, outcome = ?item.outcome, "item")
            }
        }
        if ns.items.len() < max {
            ns.items.push(item);
        } else {
            ns.truncated = true;
        }
    }

    /// Items of every namespace with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.namespaces
            .values()
            .map(|n| match outcome {
                Outcome::Restored => n.restored,
                Outcome::Skipped => n.skipped,
                Outcome::Warning => n.warnings,
                Outcome::Error => n.errors,
            })
            .sum()
    }

    /// The item results, in restore order within each namespace.
    pub fn items(&self) -> impl Iterator<Item = &ItemResult> {
        self.namespaces.values().flat_map(|n| n.items.iter())
    }
}

#[derive(Debug, Default)]
struct State {
    /// (qualified type, target namespace) -> names restored or found equal.
    present: BTreeMap<(String, String), BTreeSet<String>>,
    /// (qualified type, target namespace) -> items skipped as controller-owned.
    owned: BTreeMap<(String, String), u64>,
    /// What this restore created, in order, for `discard`.
    created: Vec<(ResourceType, Option<String>, String)>,
}

/// Restores `kubernetes` backups into a cluster.
pub struct KubernetesRestorer {
    client: Client,
    options: KubernetesRestoreOptions,
    discovery: DiscoveryOptions,
    state: Mutex<State>,
}

impl std::fmt::Debug for KubernetesRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRestorer")
            .field("options", &self.options)
            .finish()
    }
}

impl std::fmt::Display for KubernetesRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kubernetes cluster{}",
            if self.options.dry_run {
                " (dry run)"
            } else {
                ""
            }
        )
    }
}

fn meta_of(manifest: &Manifest) -> Result<KubernetesMetadata> {
    serde_json::from_value(manifest.metadata.clone()).map_err(|e| Error::Malformed {
        object: format!("manifest of backup {}", manifest.backup_id),
        reason: e.to_string(),
    })
}

impl KubernetesRestorer {
    /// A restorer into the cluster of `client`.
    pub fn new(client: Client, options: KubernetesRestoreOptions) -> Self {
        KubernetesRestorer {
            client,
            options,
            discovery: DiscoveryOptions::default(),
            state: Mutex::new(State::default()),
        }
    }

    /// Discovery bounds.
    pub fn with_discovery(mut self, options: DiscoveryOptions) -> Self {
        self.discovery = options;
        self
    }

    /// The options.
    pub fn options(&self) -> &KubernetesRestoreOptions {
        &self.options
    }

    fn api(&self, r: &ResourceType, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if r.namespaced => {
                Api::namespaced_with(self.client.clone(), ns, &r.api_resource())
            }
            _ => Api::all_with(self.client.clone(), &r.api_resource()),
        }
    }

    /// Restores the backup and returns every item's result.
    ///
    /// # Errors
    /// Only what stops the whole restore: an unreadable backup, discovery of
    /// the target failing. Item failures are in the results.
    pub async fn restore_items(&self, backup: &BackupReader) -> Result<(RestoreResults, u64)> {
        let meta = meta_of(backup.manifest())?;
        let mut results = RestoreResults {
            dry_run: self.options.dry_run,
            ..Default::default()
        };
        let mut discovered = discover(&self.client, &self.discovery).await?;
        results.warnings.extend(discovered.warnings.iter().cloned());

        let mut types = meta.resources.clone();
        types.sort_by_key(|t| (rank(&t.resource), t.resource.qualified_name()));

        // The target namespaces: a Terminating one is found once here, and
        // its items are reported without a request each.
        let mut existing_ns: BTreeSet<String> = BTreeSet::new();
        let mut terminating: BTreeSet<String> = BTreeSet::new();
        let ns_api: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &discovered
                .by_kind("", "Namespace")
                .ok_or_else(|| Error::NotFound {
                    what: "resource type namespaces in the target cluster".into(),
                })?
                .api_resource(),
        );
        for ns in meta
            .namespaces
            .iter()
            .filter(|n| self.options.namespace_included(n))
        {
            let target = self.options.target_namespace(ns).to_string();
            if let Some(live) = ns_api
                .get_opt(&target)
                .await
                .map_err(|e| Error::kube(format!("get namespace {target}"), e))?
            {
                if live.metadata.deletion_timestamp.is_some()
                    || live.data["status"]["phase"] == "Terminating"
                {
                    results.warnings.push(format!(
                        "target namespace {target} is Terminating: none of its items were restored"
                    ));
                    terminating.insert(target.clone());
                } else {
                    existing_ns.insert(target);
                }
            }
        }
        results.terminating_namespaces = terminating.iter().cloned().collect();

        let mut bytes = 0u64;
        let mut namespaces_ensured = false;
        for t in &types {
            if !namespaces_ensured && rank(&t.resource) > rank(&namespace_type()) {
                self.ensure_namespaces(&meta, &mut existing_ns, &terminating, &mut results)
                    .await;
                namespaces_ensured = true;
            }
            let target_type = discovered
                .by_kind(&t.resource.group, &t.resource.kind)
                .cloned();
            let mut crds_applied = Vec::new();
            let mut reader =
                tokio::io::BufReader::new(backup.open(&t.artifact).await.map_err(dr_error)?);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .await
                    .map_err(|e| dr_storage::Error::from_io(e, t.artifact.clone()))?;
                if n == 0 {
                    break;
                }
                bytes += n as u64;
                let mut obj: Value = serde_json::from_str(&line).map_err(|e| Error::Malformed {
                    object: t.artifact.clone(),
                    reason: e.to_string(),
                })?;
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let source_ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
                let (ns_filter, target_ns) = match (
                    &source_ns,
                    t.resource.plural.as_str(),
                    t.resource.group.is_empty(),
                ) {
                    (Some(ns), _, _) => (
                        Some(ns.clone()),
                        Some(self.options.target_namespace(ns).to_string()),
                    ),
                    (None, "namespaces", true) => (Some(name.clone()), None),
                    _ => (None, None),
                };
                if ns_filter
                    .as_deref()
                    .is_some_and(|n| !self.options.namespace_included(n))
                {
                    continue;
                }
                let qualified = t.resource.qualified_name();
                let mut item = ItemResult {
                    resource: qualified.clone(),
                    namespace: target_ns.clone(),
                    name: name.clone(),
                    outcome: Outcome::Restored,
                    message: None,
                };
                let in_terminating = target_ns.as_ref().is_some_and(|n| terminating.contains(n))
                    || (source_ns.is_none()
                        && t.resource.plural == "namespaces"
                        && terminating.contains(self.options.target_namespace(&name)));
                if in_terminating {
                    item.outcome = Outcome::Error;
                    item.message = Some("target namespace is Terminating".into());
                    results.record(item, self.options.max_items_per_namespace);
                    continue;
                }
                if let (false, Some(owner)) = (self.options.restore_owned, controller_of(&obj)) {
                    item.outcome = Outcome::Skipped;
                    item.message = Some(format!("owned by {owner}, which makes it again"));
                    *self
                        .state
                        .lock()
                        .expect("state")
                        .owned
                        .entry((qualified, target_ns.unwrap_or_default()))
                        .or_default() += 1;
                    results.record(item, self.options.max_items_per_namespace);
                    continue;
                }
                let Some(target_type) = &target_type else {
                    item.outcome = Outcome::Error;
                    item.message = Some(format!(
                        "the target cluster serves no {} {} (after discovery)",
                        t.resource.api_version(),
                        t.resource.kind
                    ));
                    results.record(item, self.options.max_items_per_namespace);
                    continue;
                };
                strip(
                    &mut obj,
                    StripOptions {
                        keep_cluster_ips: self.options.keep_cluster_ips,
                        keep_node_ports: self.options.keep_node_ports,
                    },
                );
                map_namespaces(&mut obj, &self.options.namespace_mapping);
                let target_name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                item.name = target_name.clone();
                let pending_ns = self.options.dry_run
                    && target_ns.as_ref().is_some_and(|n| !existing_ns.contains(n));
                let (outcome, message) = if pending_ns {
                    (
                        Outcome::Restored,
                        Some("would be created with its namespace".into()),
                    )
                } else {
                    self.apply(target_type, target_ns.as_deref(), &target_name, &obj)
                        .await
                };
                item.outcome = outcome;
                item.message = message;
                if matches!(outcome, Outcome::Restored | Outcome::Skipped) {
                    self.state
                        .lock()
                        .expect("state")
                        .present
                        .entry((qualified, target_ns.clone().unwrap_or_default()))
                        .or_default()
                        .insert(target_name.clone());
                    if source_ns.is_none()
                        && t.resource.plural == "namespaces"
                        && !self.options.dry_run
                    {
                        existing_ns.insert(target_name.clone());
                    }
                    if is_crd(&t.resource) {
                        crds_applied.push(target_name.clone());
                    }
                }
                results.record(item, self.options.max_items_per_namespace);
            }
            if is_crd(&t.resource) && !crds_applied.is_empty() && !self.options.dry_run {
                self.wait_established(target_type.as_ref(), &crds_applied, &mut results)
                    .await;
                discovered = discover(&self.client, &self.discovery).await?;
            }
        }
        if !namespaces_ensured {
            self.ensure_namespaces(&meta, &mut existing_ns, &terminating, &mut results)
                .await;
        }
        let errors = results.count(Outcome::Error);
        results.complete = errors == 0;
        Ok((results, bytes))
    }

    /// Creates target namespaces that the backup did not carry a Namespace
    /// object for (mapped ones, or a backup without cluster resources).
    async fn ensure_namespaces(
        &self,
        meta: &KubernetesMetadata,
        existing: &mut BTreeSet<String>,
        terminating: &BTreeSet<String>,
        results: &mut RestoreResults,
    ) {
        let ns_type = namespace_type();
        for ns in meta
            .namespaces
            .iter()
            .filter(|n| self.options.namespace_included(n))
        {
            let target = self.options.target_namespace(ns).to_string();
            if existing.contains(&target) || terminating.contains(&target) || self.options.dry_run {
                continue;
            }
            let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target}});
            let (outcome, message) = self.apply(&ns_type, None, &target, &obj).await;
            if outcome == Outcome::Restored {
                existing.insert(target.clone());
            }
            results.record(
                ItemResult {
                    resource: "namespaces".into(),
                    namespace: None,
                    name: target,
                    outcome,
                    message,
                },
                self.options.max_items_per_namespace,
            );
        }
    }

    /// Applies one object under the existing-resource policy.
    async fn apply(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> (Outcome, Option<String>) {
        let api = self.api(r, ns);
        let what = format!(
            "{} {}{}",
            r.qualified_name(),
            ns.map(|n| format!("{n}/")).unwrap_or_default(),
            name
        );
        let live = match api.get_opt(name).await {
            Ok(l) => l,
            Err(e) => {
                return (
                    Outcome::Error,
                    Some(Error::kube(format!("get {what}"), e).to_string()),
                )
            }
        };
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if self.options.dry_run {
            params = params.dry_run();
        }
        let verb = match &live {
            None => "created",
            Some(live) => {
                let live = serde_json::to_value(live).unwrap_or_default();
                if is_subset(obj, &live) {
                    return (
                        Outcome::Skipped,
                        Some("exists and equals the backup".into()),
                    );
                }
                if self.options.existing == ExistingPolicy::Report {
                    return (
                        Outcome::Warning,
                        Some("exists and differs from the backup; left as found (existing policy: report)".into()),
                    );
                }
                params = params.force();
                "updated"
            }
        };
        match api.patch(name, &params, &Patch::Apply(obj)).await {
            Ok(_) => {
                if live.is_none() && !self.options.dry_run {
                    self.state.lock().expect("state").created.push((
                        r.clone(),
                        ns.map(str::to_string),
                        name.to_string(),
                    ));
                }
                let msg = match (self.options.dry_run, verb) {
                    (true, v) => Some(format!("would be {v} (server-side dry run)")),
                    (false, "updated") => Some("updated to the backed-up version".into()),
                    _ => None,
                };
                (Outcome::Restored, msg)
            }
            Err(e) => (
                Outcome::Error,
                Some(Error::kube(format!("apply {what}"), e).to_string()),
            ),
        }
    }

    /// Waits until every CRD in `names` is Established; a CRD that is not
    /// within the bound is reported as an error.
    async fn wait_established(
        &self,
        crd_type: Option<&ResourceType>,
        names: &[String],
        results: &mut RestoreResults,
    ) {
        let Some(crd_type) = crd_type else { return };
        let api = self.api(crd_type, None);
        let bound = Duration::from_secs(self.options.crd_wait_secs);
        let started = Instant::now();
        let mut waiting: BTreeSet<&String> = names.iter().collect();
        while !waiting.is_empty() {
            let mut done = Vec::new();
            for n in &waiting {
                if let Ok(Some(crd)) = api.get_opt(n).await {
                    let established =
                        crd.data["status"]["conditions"]
                            .as_array()
                            .is_some_and(|c| {
                                c.iter()
                                    .any(|c| c["type"] == "Established" && c["status"] == "True")
                            });
                    if established {
                        done.push(*n);
                    }
                }
            }
            for n in done {
                waiting.remove(n);
            }
            if waiting.is_empty() {
                break;
            }
            if started.elapsed() >= bound {
                for n in waiting {
                    results.record(
                        ItemResult {
                            resource: crd_type.qualified_name(),
                            namespace: None,
                            name: n.clone(),
                            outcome: Outcome::Error,
                            message: Some(format!(
                                "not Established within {bound:?}; its custom resources fail"
                            )),
                        },
                        self.options.max_items_per_namespace,
                    );
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tracing::info!(crds = names.len(), waited = ?started.elapsed(), "CRDs established");
    }
}

fn namespace_type() -> ResourceType {
    ResourceType {
        group: String::new(),
        version: "v1".into(),
        kind: "Namespace".into(),
        plural: "namespaces".into(),
        namespaced: false,
        verbs: Vec::new(),
    }
}

fn dr_error(e: dr_core::Error) -> Error {
    match e {
        dr_core::Error::Storage(s) => Error::Storage(s),
        other => Error::Malformed {
            object: "backup".into(),
            reason: other.to_string(),
        },
    }
}

#[async_trait]
impl dr_core::Restorer for KubernetesRestorer {
    fn accepts(&self, kind: &str) -> bool {
        kind == KIND_KUBERNETES
    }

    async fn restore(&self, backup: &BackupReader) -> dr_core::Result<RestoreReport> {
        // A wrong key fails here, before the cluster is touched.
        if let Some(first) = backup.manifest().artifacts.first() {
            backup.open(&first.name).await?;
        }
        let (results, bytes) = self.restore_items(backup).await?;
        let mut report = RestoreReport::new(self.to_string());
        report.bytes_read = bytes;
        report.warnings = results.warnings.clone();
        for (ns, r) in &results.namespaces {
            if r.errors > 0 || r.warnings > 0 {
                report.warnings.push(format!(
                    "{}: {} restored, {} skipped, {} warnings, {} errors",
                    if ns.is_empty() { "cluster-scoped" } else { ns },
                    r.restored,
                    r.skipped,
                    r.warnings,
                    r.errors
                ));
            }
        }
        if !results.complete {
            report.warnings.push(format!(
                "partial restore: {} items failed",
                results.count(Outcome::Error)
            ));
        }
        tracing::info!(
            restored = results.count(Outcome::Restored),
            skipped = results.count(Outcome::Skipped),
            warnings = results.count(Outcome::Warning),
            errors = results.count(Outcome::Error),
            dry_run = results.dry_run,
            "kubernetes restore finished"
        );
        report.complete = results.complete;
        report.details = serde_json::to_value(&results).expect("results serialise");
        Ok(report)
    }

    async fn check(&self, manifest: &Manifest) -> dr_core::Result<CheckReport> {
        let meta = meta_of(manifest)?;
        let discovered = discover(&self.client, &self.discovery).await?;
        let (present, owned) = {
            let s = self.state.lock().expect("state");
            (s.present.clone(), s.owned.clone())
        };
        let mut checks = Vec::new();
        for t in &meta.resources {
            let q = t.resource.qualified_name();
            let scopes: Vec<(String, u64)> = if t.resource.namespaced {
                t.namespaces
                    .iter()
                    .filter(|(ns, _)| self.options.namespace_included(ns))
                    .map(|(ns, c)| (self.options.target_namespace(ns).to_string(), *c))
                    .collect()
            } else {
                vec![(String::new(), t.count)]
            };
            for (ns, backed_up) in scopes {
                let key = (q.clone(), ns.clone());
                let expected = backed_up - owned.get(&key).copied().unwrap_or(0);
                let actual = match discovered.by_kind(&t.resource.group, &t.resource.kind) {
                    None => "type not served".to_string(),
                    Some(r) => {
                        let scope = (!ns.is_empty()).then_some(ns.as_str());
                        let live = Pager::new(&self.client, &r.api_resource(), scope, None, 500)
                            .collect()
                            .await?;
                        let names = present.get(&key);
                        live.iter()
                            .filter_map(|o| o.metadata.name.as_ref())
                            .filter(|n| names.is_none_or(|s| s.contains(*n)))
                            .count()
                            .to_string()
                    }
                };
                checks.push(Check {
                    name: format!("{q} in {}", if ns.is_empty() { "cluster" } else { &ns }),
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        Ok(CheckReport { checks })
    }

    async fn discard(&self) -> dr_core::Result<()> {
        let created = std::mem::take(&mut self.state.lock().expect("state").created);
        for (r, ns, name) in created.into_iter().rev() {
            match self
                .api(&r, ns.as_deref())
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(
                        Error::kube(format!("delete {} {name}", r.qualified_name()), e).into(),
                    )
                }
            }
        }
        self.state.lock().expect("state").present.clear();
        Ok(())
    }
}

/// Whether the discovery has `r`'s type (helper for callers planning a
/// restore).
pub fn served(discovered: &Discovered, r: &ResourceType) -> bool {
    discovered.by_kind(&r.group, &r.kind).is_some()
}
