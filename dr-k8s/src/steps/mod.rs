//! The `k8s.*` plan steps: [`Action`](dr_core::plan::Action)s over a
//! cluster, registered by [`register`].
//!
//! | action | does | rollback |
//! |---|---|---|
//! | `k8s.set_env` | sets a Deployment's environment variable (literal or from a Secret) | restores the old value, or removes it |
//! | `k8s.scale` | sets replicas of a Deployment or StatefulSet | restores the old count |
//! | `k8s.rollout_restart` | `kubectl rollout restart` | none |
//! | `k8s.wait_rollout` | waits until the new ReplicaSet's pods are ready, within a bound | none |
//! | `k8s.pods_ready` | checks that pods of a selector are Ready | none |
//! | `k8s.zone_spread` | counts ready pods per zone, fails on a missing zone or a skew past the limit | none |

use std::sync::Arc;

use dr_core::plan::ActionRegistry;
use kube::Client;
use tokio::sync::OnceCell;

use crate::client::ClusterConfig;
use crate::error::Result;

mod checks;
mod deployment;

pub use checks::{PodsReady, PodsReadyParams, ZoneSpread, ZoneSpreadParams, ZONE_LABEL};
pub use deployment::{
    RolloutRestart, RolloutRestartParams, Scale, ScaleParams, SecretKeyRef, SetEnv, SetEnvParams,
    WaitRollout, WaitRolloutParams,
};

/// The cluster the steps act on: a client made on first use (a plan that
/// never reaches a `k8s.*` step never needs a kubeconfig).
#[derive(Clone)]
pub struct KubeContext {
    cluster: ClusterConfig,
    client: Arc<OnceCell<Client>>,
}

impl std::fmt::Debug for KubeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeContext")
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl KubeContext {
    /// Steps on the cluster `cluster` describes.
    pub fn new(cluster: ClusterConfig) -> Self {
        KubeContext {
            cluster,
            client: Arc::new(OnceCell::new()),
        }
    }

    /// Steps on an existing client.
    pub fn from_client(client: Client) -> Self {
        KubeContext {
            cluster: ClusterConfig::default(),
            client: Arc::new(OnceCell::new_with(Some(client))),
        }
    }

    /// The client, made on first use.
    ///
    /// # Errors
    /// As [`ClusterConfig::client`].
    pub async fn client(&self) -> Result<Client> {
        self.client
            .get_or_try_init(|| self.cluster.client())
            .await
            .cloned()
    }
}

/// Adds the `k8s.*` actions to `registry`, acting on `cluster`.
pub fn register(registry: &mut ActionRegistry, cluster: KubeContext) {
    let c = cluster.clone();
    registry.register_typed("k8s.set_env", move |p: SetEnvParams| {
        Ok(Arc::new(SetEnv::new(c.clone(), p)?) as _)
    });
    let c = cluster.clone();
    registry.register_typed("k8s.scale", move |p: ScaleParams| {
        Ok(Arc::new(Scale::new(c.clone(), p)?) as _)
    });
    let c = cluster.clone();
    registry.register_typed("k8s.rollout_restart", move |p: RolloutRestartParams| {
        Ok(Arc::new(RolloutRestart::new(c.clone(), p)?) as _)
    });
    let c = cluster.clone();
    registry.register_typed("k8s.wait_rollout", move |p: WaitRolloutParams| {
        Ok(Arc::new(WaitRollout::new(c.clone(), p)?) as _)
    });
    let c = cluster.clone();
    registry.register_typed("k8s.pods_ready", move |p: PodsReadyParams| {
        Ok(Arc::new(PodsReady::new(c.clone(), p)?) as _)
    });
    let c = cluster;
    registry.register_typed("k8s.zone_spread", move |p: ZoneSpreadParams| {
        Ok(Arc::new(ZoneSpread::new(c.clone(), p)?) as _)
    });
}

/// A non-empty parameter, or [`dr_core::Error::InvalidConfig`] naming it.
pub(crate) fn required(action: &str, key: &str, value: &str) -> dr_core::Result<()> {
    if value.trim().is_empty() {
        return Err(dr_core::Error::InvalidConfig {
            key: format!("{action}.{key}"),
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}
