//! Kubernetes and etcd for `dr`.
//!
//! - [`resources`]: the `kubernetes` backup source
//!   ([`KubernetesResources`]): aggregated discovery with a per-group
//!   fallback, namespace/resource/label selection, paged lists written as
//!   they arrive (one JSON line per object, one artifact per type); and the
//!   [`KubernetesRestorer`]: Velero's order, CRDs Established before their
//!   resources, server-side apply as field manager `dr`, namespace mapping,
//!   an existing-resource policy, a server-side dry run, and a result per
//!   item in [`RestoreReport::details`](dr_core::RestoreReport).
//! - [`steps`]: the `k8s.*` plan actions, added to a registry by
//!   [`register`].
//! - [`etcd`] (feature `etcd`, on by default): the `etcd` backup source
//!   ([`EtcdSnapshot`]) and [`EtcdSnapshotFile`].
//! - [`KubernetesSourceConfig`] and [`EtcdSourceConfig`]: the `dr.toml`
//!   sections.
//!
//! # Pointing it at a cluster
//! [`ClusterConfig`] loads what `kubectl` would: `KUBECONFIG` (or
//! `~/.kube/config`) and its current context, else the in-cluster service
//! account. The tests of this crate run against recorded API responses
//! served behind `kube::Client` (no API server runs on the test machines);
//! the same calls go to a real cluster through `KUBECONFIG`.
//!
//! # Features
//! - `etcd` (default): the etcd source, with `etcd-client` (tonic). Its build
//!   script runs `protoc` (Debian `protobuf-compiler`). A service that only
//!   needs Kubernetes turns it off.

mod client;
mod config;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod resources;
pub mod steps;

pub use client::ClusterConfig;
pub use config::KubernetesSourceConfig;
pub use error::{Error, Result};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdSnapshot, EtcdSnapshotFile, EtcdSourceConfig, KIND_ETCD};
pub use resources::{
    ExistingPolicy, KubernetesMetadata, KubernetesResources, KubernetesRestoreOptions,
    KubernetesRestorer, RestoreResults, Selection, KIND_KUBERNETES,
};
pub use steps::{register, KubeContext};
