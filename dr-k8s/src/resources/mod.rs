//! Kubernetes resources: discovery, selection, the `kubernetes` backup
//! source and its restorer.

mod backup;
mod discovery;
mod order;
mod restore;
mod select;
mod strip;

pub use backup::{
    artifact_name, BackedUpType, KubernetesMetadata, KubernetesResources, Pager, DEFAULT_PAGE_SIZE,
    KIND_KUBERNETES,
};
pub use discovery::{discover, Discovered, DiscoveryOptions, ResourceType, AGGREGATED_ACCEPT};
pub use order::{is_crd, rank, PRIORITIES};
pub use restore::{
    served, ExistingPolicy, ItemResult, KubernetesRestoreOptions, KubernetesRestorer,
    NamespaceResults, Outcome, RestoreResults, FIELD_MANAGER,
};
pub use select::{Selection, DEFAULT_EXCLUDED};
pub use strip::{controller_of, is_subset, map_namespaces, strip, StripOptions};
