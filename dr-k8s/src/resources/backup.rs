//! The `kubernetes` backup source: every selected object, listed page by page
//! and written as it arrives, one JSON document per line, one artifact per
//! resource type.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use dr_storage::{BackupWriter, RecordedArtifact};
use kube::api::{ApiResource, DynamicObject, ListParams, TypeMeta};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::resources::discovery::{discover, Discovered, DiscoveryOptions, ResourceType};
use crate::resources::select::Selection;

/// The kind recorded in manifests.
pub const KIND_KUBERNETES: &str = "kubernetes";

/// Objects per list request (`limit`), Kubernetes' API chunking.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

/// One resource type in a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackedUpType {
    /// The type.
    #[serde(rename = "type")]
    pub resource: ResourceType,
    /// The artifact holding its objects (JSON lines).
    pub artifact: String,
    /// Objects taken.
    pub count: u64,
    /// Objects taken per namespace (empty for cluster-scoped types).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, u64>,
}

/// What a Kubernetes backup records in its manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KubernetesMetadata {
    /// The API server's `gitVersion` (`v1.30.2`).
    pub server_version: String,
    /// The selection the backup was taken with.
    pub selection: Selection,
    /// The namespaces taken.
    pub namespaces: Vec<String>,
    /// The resource types taken, with counts.
    pub resources: Vec<BackedUpType>,
    /// Objects per kind (`Deployment: 3`).
    pub counts_by_kind: BTreeMap<String, u64>,
    /// All objects.
    pub total: u64,
    /// Whether aggregated discovery was used.
    pub aggregated_discovery: bool,
    /// What the operator should know (groups left out, missing namespaces).
    pub warnings: Vec<String>,
}

/// Backs up the resources of a cluster (kind `kubernetes`).
#[derive(Clone)]
pub struct KubernetesResources {
    client: Client,
    selection: Selection,
    page_size: u32,
    discovery: DiscoveryOptions,
}

impl std::fmt::Debug for KubernetesResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesResources")
            .field("selection", &self.selection)
            .field("page_size", &self.page_size)
            .finish()
    }
}

impl std::fmt::Display for KubernetesResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.selection.all_namespaces() {
            f.write_str("kubernetes resources of all namespaces")
        } else {
            write!(
                f,
                "kubernetes resources of namespaces {:?}",
                self.selection.include_namespaces
            )
        }
    }
}

impl KubernetesResources {
    /// A source over `client` taking `selection`.
    pub fn new(client: Client, selection: Selection) -> Self {
        KubernetesResources {
            client,
            selection,
            page_size: DEFAULT_PAGE_SIZE,
            discovery: DiscoveryOptions::default(),
        }
    }

    /// Objects per list request (at least 1).
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Discovery bounds.
    pub fn with_discovery(mut self, options: DiscoveryOptions) -> Self {
        self.discovery = options;
        self
    }

    /// The selection.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }
}

/// The artifact name of a type: `resources/<group or core>/<plural>.jsonl`,
/// with a digest in place of a segment too long for a repository name.
pub fn artifact_name(r: &ResourceType) -> String {
    fn segment(s: &str) -> String {
        if s.len() <= 58
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            s.to_string()
        } else {
            format!("h-{}", &hex::encode(Sha256::digest(s.as_bytes()))[..32])
        }
    }
    let group = if r.group.is_empty() { "core" } else { &r.group };
    format!("resources/{}/{}.jsonl", segment(group), segment(&r.plural))
}

/// Writes objects of one type into its artifact, opened on the first object.
struct TypeWriter<'a> {
    backup: &'a BackupWriter,
    rtype: ResourceType,
    artifact: Option<RecordedArtifact>,
    namespaces: BTreeMap<String, u64>,
    count: u64,
}

impl<'a> TypeWriter<'a> {
    fn new(backup: &'a BackupWriter, rtype: ResourceType) -> Self {
        TypeWriter {
            backup,
            rtype,
            artifact: None,
            namespaces: BTreeMap::new(),
            count: 0,
        }
    }

    async fn write(&mut self, mut obj: DynamicObject) -> Result<()> {
        // List items carry no apiVersion/kind; a restore needs them.
        obj.types = Some(TypeMeta {
            api_version: self.rtype.api_version(),
            kind: self.rtype.kind.clone(),
        });
        let mut line = serde_json::to_vec(&obj).map_err(|e| Error::Malformed {
            object: self.rtype.qualified_name(),
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        if self.artifact.is_none() {
            self.artifact = Some(self.backup.artifact(&artifact_name(&self.rtype))?);
        }
        let a = self.artifact.as_mut().expect("opened");
        let object = artifact_name(&self.rtype);
        a.writer()
            .write_all(&line)
            .await
            .map_err(|e| dr_storage::Error::from_io(e, object))?;
        if let Some(ns) = &obj.metadata.namespace {
            *self.namespaces.entry(ns.clone()).or_default() += 1;
        }
        self.count += 1;
        Ok(())
    }

    async fn finish(self) -> Result<Option<BackedUpType>> {
        let Some(a) = self.artifact else {
            return Ok(None);
        };
        let info = a.finish().await?;
        Ok(Some(BackedUpType {
            artifact: info.name,
            resource: ResourceType {
                verbs: Vec::new(),
                ..self.rtype
            },
            count: self.count,
            namespaces: self.namespaces,
        }))
    }
}

/// Lists the objects of one type page by page with `limit`/`continue`
/// (Kubernetes API chunking, "Retrieving large results sets in chunks" in
/// the API concepts): one page in memory at a time.
pub struct Pager {
    api: Api<DynamicObject>,
    what: String,
    params: ListParams,
    token: Option<String>,
    done: bool,
    pages: u32,
}

impl Pager {
    /// A pager over `ar` in `namespace` (all namespaces when `None`).
    pub fn new(
        client: &Client,
        ar: &ApiResource,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        page_size: u32,
    ) -> Self {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        };
        let mut params = ListParams::default().limit(page_size.max(1));
        if let Some(sel) = label_selector {
            params = params.labels(sel);
        }
        Pager {
            api,
            what: format!(
                "list {} {}{}",
                ar.api_version,
                ar.plural,
                namespace.map(|n| format!(" in {n}")).unwrap_or_default()
            ),
            params,
            token: None,
            done: false,
            pages: 0,
        }
    }

    /// The next page, `None` after the last.
    ///
    /// # Errors
    /// The API server's errors, naming the list.
    pub async fn next_page(&mut self) -> Result<Option<Vec<DynamicObject>>> {
        if self.done {
            return Ok(None);
        }
        let mut lp = self.params.clone();
        if let Some(t) = &self.token {
            lp = lp.continue_token(t);
        }
        let page = self
            .api
            .list(&lp)
            .await
            .map_err(|e| Error::kube(&self.what, e))?;
        self.pages += 1;
        self.token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        self.done = self.token.is_none();
        if self.done {
            tracing::debug!(what = %self.what, pages = self.pages, "listed");
        }
        Ok(Some(page.items))
    }

    /// Pages read so far.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Every object (for small lists: namespaces, CRDs).
    ///
    /// # Errors
    /// As [`Pager::next_page`].
    pub async fn collect(mut self) -> Result<Vec<DynamicObject>> {
        let mut out = Vec::new();
        while let Some(page) = self.next_page().await? {
            out.extend(page);
        }
        Ok(out)
    }
}

#[async_trait]
impl dr_core::BackupSource for KubernetesResources {
    fn kind(&self) -> &'static str {
        KIND_KUBERNETES
    }

    async fn backup(&self, backup: &BackupWriter) -> dr_core::Result<serde_json::Value> {
        Ok(serde_json::to_value(self.take(backup).await?).expect("metadata serialises"))
    }
}

impl KubernetesResources {
    async fn take(&self, backup: &BackupWriter) -> Result<KubernetesMetadata> {
        let version = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| Error::kube("GET /version", e))?;
        let discovered = discover(&self.client, &self.discovery).await?;
        self.selection.validate(&discovered)?;
        let mut meta = KubernetesMetadata {
            server_version: version.git_version,
            selection: self.selection.clone(),
            aggregated_discovery: discovered.aggregated,
            warnings: discovered.warnings.clone(),
            ..Default::default()
        };

        // The namespaces: their objects are kept for the Namespace artifact.
        let ns_type = discovered
            .by_kind("", "Namespace")
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: "resource type namespaces in the cluster's discovery".into(),
            })?;
        let mut namespaces = Pager::new(
            &self.client,
            &ns_type.api_resource(),
            None,
            None,
            self.page_size,
        )
        .collect()
        .await?;
        namespaces.retain(|ns| {
            self.selection
                .namespace_selected(ns.metadata.name.as_deref().unwrap_or_default())
        });
        let names: BTreeSet<String> = namespaces
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        for wanted in &self.selection.include_namespaces {
            if wanted != "*" && !names.contains(wanted) {
                meta.warnings.push(format!(
                    "namespace {wanted} does not exist; nothing taken from it"
                ));
            }
        }
        meta.namespaces = names.iter().cloned().collect();
        tracing::info!(
            namespaces = names.len(),
            types = discovered.resources.len(),
            "backing up"
        );

        let crds = self.crd_names(&discovered).await?;
        let mut custom_taken: BTreeSet<String> = BTreeSet::new();
        let mut claimed_volumes: BTreeSet<String> = BTreeSet::new();
        let selector = self.selection.label_selector.as_deref();

        // Namespaced types.
        for r in discovered.resources.iter().filter(|r| r.namespaced) {
            if !self.selection.type_selected(r) || names.is_empty() {
                continue;
            }
            let mut w = TypeWriter::new(backup, r.clone());
            let ar = r.api_resource();
            let is_pvc = r.group.is_empty() && r.plural == "persistentvolumeclaims";
            let scopes: Vec<Option<&str>> = if self.selection.all_namespaces() {
                vec![None]
            } else {
                names.iter().map(|n| Some(n.as_str())).collect()
            };
            for scope in scopes {
                let mut pager = Pager::new(&self.client, &ar, scope, selector, self.page_size);
                while let Some(page) = pager.next_page().await? {
                    for obj in page {
                        if is_pvc {
                            if let Some(v) = obj.data["spec"]["volumeName"].as_str() {
                                claimed_volumes.insert(v.to_string());
                            }
                        }
                        w.write(obj).await?;
                    }
                }
            }
            if let Some(t) = w.finish().await? {
                if crds.contains(&r.qualified_name()) {
                    custom_taken.insert(r.qualified_name());
                }
                meta.resources.push(t);
            }
        }

        // Cluster-scoped: what the namespaces need, or everything selected.
        let mut ns_writer = TypeWriter::new(backup, ns_type.clone());
        if self.selection.include_cluster_resources != Some(false) {
            for ns in namespaces {
                ns_writer.write(ns).await?;
            }
        }
        if let Some(t) = ns_writer.finish().await? {
            meta.resources.push(t);
        }
        match self.selection.include_cluster_resources {
            Some(false) => {}
            None => {
                self.take_named(
                    backup,
                    &discovered,
                    "customresourcedefinitions.apiextensions.k8s.io",
                    &custom_taken,
                    &mut meta,
                )
                .await?;
                self.take_named(
                    backup,
                    &discovered,
                    "persistentvolumes",
                    &claimed_volumes,
                    &mut meta,
                )
                .await?;
            }
            Some(true) => {
                for r in discovered.resources.iter().filter(|r| !r.namespaced) {
                    if r.group.is_empty() && r.plural == "namespaces"
                        || !self.selection.type_selected(r)
                    {
                        continue;
                    }
                    let mut w = TypeWriter::new(backup, r.clone());
                    let mut pager =
                        Pager::new(&self.client, &r.api_resource(), None, None, self.page_size);
                    while let Some(page) = pager.next_page().await? {
                        for o in page {
                            w.write(o).await?;
                        }
                    }
                    if let Some(t) = w.finish().await? {
                        meta.resources.push(t);
                    }
                }
            }
        }

        for t in &meta.resources {
            *meta
                .counts_by_kind
                .entry(t.resource.kind.clone())
                .or_default() += t.count;
            meta.total += t.count;
        }
        if meta.total == 0 {
            return Err(Error::NotFound {
                what: "objects matching the selection".into(),
            });
        }
        tracing::info!(
            objects = meta.total,
            types = meta.resources.len(),
            "kubernetes backup taken"
        );
        Ok(meta)
    }

    /// The qualified names of the types defined by CRDs.
    async fn crd_names(&self, discovered: &Discovered) -> Result<BTreeSet<String>> {
        let Some(crd) = discovered.find("customresourcedefinitions.apiextensions.k8s.io") else {
            return Ok(BTreeSet::new());
        };
        Ok(Pager::new(
            &self.client,
            &crd.api_resource(),
            None,
            None,
            self.page_size,
        )
        .collect()
        .await?
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect())
    }

    /// Takes the objects `names` of the cluster-scoped type `type_name`.
    async fn take_named(
        &self,
        backup: &BackupWriter,
        discovered: &Discovered,
        type_name: &str,
        names: &BTreeSet<String>,
        meta: &mut KubernetesMetadata,
    ) -> Result<()> {
        let Some(r) = discovered.find(type_name) else {
            return Ok(());
        };
        if names.is_empty() {
            return Ok(());
        }
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &r.api_resource());
        let mut w = TypeWriter::new(backup, r.clone());
        for n in names {
            match api
                .get_opt(n)
                .await
                .map_err(|e| Error::kube(format!("get {type_name} {n}"), e))?
            {
                Some(o) => w.write(o).await?,
                None => meta
                    .warnings
                    .push(format!("{type_name} {n} is gone; not taken")),
            }
        }
        if let Some(t) = w.finish().await? {
            meta.resources.push(t);
        }
        Ok(())
    }
}
