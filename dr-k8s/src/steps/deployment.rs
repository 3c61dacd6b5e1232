//! Steps on Deployments: environment, scale, restart, rollout wait.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use dr_core::plan::{Action, ActionContext, ActionOutput};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{required, KubeContext};
use crate::error::Error;

/// A key of a Secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret, in the Deployment's namespace.
    pub name: String,
    /// The key.
    pub key: String,
}

/// Parameters of `k8s.set_env`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetEnvParams {
    /// Namespace of the Deployment.
    pub namespace: String,
    /// The Deployment.
    pub deployment: String,
    /// The container; when absent, the only container, or every container
    /// that already has the variable.
    #[serde(default)]
    pub container: Option<String>,
    /// The variable (`DATABASE_URL`).
    pub name: String,
    /// A literal value. It is never logged, but it is recorded in the run's
    /// journal for rollback: prefer `secret` for credentials.
    #[serde(default)]
    pub value: Option<String>,
    /// The value from a Secret's key (`valueFrom.secretKeyRef`).
    #[serde(default)]
    pub secret: Option<SecretKeyRef>,
}

/// `k8s.set_env`: sets a Deployment's environment variable, as
/// `kubectl set env` does; the rollback puts back the old value.
#[derive(Debug)]
pub struct SetEnv {
    cluster: KubeContext,
    p: SetEnvParams,
}

/// The previous definition of the variable in one container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PreviousEnv {
    container: String,
    previous: Option<EnvVar>,
}

/// What `k8s.set_env` records for its rollback: `{"previous": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct SetEnvState {
    previous: Vec<PreviousEnv>,
}

impl SetEnv {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`dr_core::Error::InvalidConfig`] naming the parameter.
    pub fn new(cluster: KubeContext, p: SetEnvParams) -> dr_core::Result<Self> {
        required("k8s.set_env", "namespace", &p.namespace)?;
        required("k8s.set_env", "deployment", &p.deployment)?;
        required("k8s.set_env", "name", &p.name)?;
        if p.name.contains('=') {
            return Err(dr_core::Error::InvalidConfig {
                key: "k8s.set_env.name".into(),
                reason: "an environment variable name cannot contain '='".into(),
            });
        }
        if p.value.is_some() == p.secret.is_some() {
            return Err(dr_core::Error::InvalidConfig {
                key: "k8s.set_env.value".into(),
                reason: "give exactly one of `value` and `secret`".into(),
            });
        }
        Ok(SetEnv { cluster, p })
    }

    fn new_var(&self) -> EnvVar {
        match (&self.p.value, &self.p.secret) {
            (Some(v), _) => EnvVar {
                name: self.p.name.clone(),
                value: Some(v.clone()),
                value_from: None,
            },
            (None, s) => {
                let s = s.as_ref().expect("checked in new");
                EnvVar {
                    name: self.p.name.clone(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: s.name.clone(),
                            key: s.key.clone(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                }
            }
        }
    }

    fn what(&self) -> String {
        format!("deployment {}/{}", self.p.namespace, self.p.deployment)
    }

    /// Sets (`Some`) or removes (`None`) the variable per container, with an
    /// optimistic-concurrency replace (a concurrent change gives 409, which
    /// the executor may retry).
    async fn apply(
        &self,
        changes: &[(String, Option<EnvVar>)],
    ) -> dr_core::Result<Vec<PreviousEnv>> {
        let client = self.cluster.client().await?;
        let api: Api<Deployment> = Api::namespaced(client, &self.p.namespace);
        let mut d = api
            .get(&self.p.deployment)
            .await
            .map_err(|e| Error::kube(format!("get {}", self.what()), e))?;
        let containers = &mut d
            .spec
            .as_mut()
            .ok_or_else(|| Error::NotFound {
                what: format!("spec of {}", self.what()),
            })?
            .template
            .spec
            .as_mut()
            .ok_or_else(|| Error::NotFound {
                what: format!("pod spec of {}", self.what()),
            })?
            .containers;
        let mut previous = Vec::new();
        for (container, var) in changes {
            let c = containers
                .iter_mut()
                .find(|c| &c.name == container)
                .ok_or_else(|| Error::NotFound {
                    what: format!("container {container} of {}", self.what()),
                })?;
            let env = c.env.get_or_insert_with(Vec::new);
            let old = env.iter().position(|e| e.name == self.p.name);
            previous.push(PreviousEnv {
                container: container.clone(),
                previous: old.map(|i| env[i].clone()),
            });
            match (old, var) {
                (Some(i), Some(v)) => env[i] = v.clone(),
                (None, Some(v)) => env.push(v.clone()),
                (Some(i), None) => {
                    env.remove(i);
                }
                (None, None) => {}
            }
        }
        api.replace(&self.p.deployment, &PostParams::default(), &d)
            .await
            .map_err(|e| Error::kube(format!("update {}", self.what()), e))?;
        Ok(previous)
    }

    /// The containers to change, from the live Deployment.
    async fn containers(&self) -> dr_core::Result<Vec<String>> {
        if let Some(c) = &self.p.container {
            return Ok(vec![c.clone()]);
        }
        let client = self.cluster.client().await?;
        let api: Api<Deployment> = Api::namespaced(client, &self.p.namespace);
        let d = api
            .get(&self.p.deployment)
            .await
            .map_err(|e| Error::kube(format!("get {}", self.what()), e))?;
        let containers = d
            .spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers)
            .unwrap_or_default();
        if containers.len() == 1 {
            return Ok(vec![containers[0].name.clone()]);
        }
        let with_var: Vec<String> = containers
            .iter()
            .filter(|c| c.env.iter().flatten().any(|e| e.name == self.p.name))
            .map(|c| c.name.clone())
            .collect();
        if with_var.is_empty() {
            return Err(dr_core::Error::InvalidConfig {
                key: "k8s.set_env.container".into(),
                reason: format!(
                    "{} has {} containers and none defines {}: name the container",
                    self.what(),
                    containers.len(),
                    self.p.name
                ),
            });
        }
        Ok(with_var)
    }

    fn source(&self) -> String {
        match &self.p.secret {
            Some(s) => format!("from secret {}/{} key {}", self.p.namespace, s.name, s.key),
            None => "to a literal value (not shown)".into(),
        }
    }
}

#[async_trait]
impl Action for SetEnv {
    fn name(&self) -> &'static str {
        "k8s.set_env"
    }

    fn describe(&self) -> String {
        format!("set {} on {} {}", self.p.name, self.what(), self.source())
    }

    async fn run(&self, _ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let containers = self.containers().await?;
        let var = self.new_var();
        let changes: Vec<_> = containers
            .iter()
            .map(|c| (c.clone(), Some(var.clone())))
            .collect();
        let previous = self.apply(&changes).await?;
        tracing::info!(deployment = %self.what(), variable = %self.p.name, "environment variable set");
        ActionOutput::summary(format!(
            "{} set on {} ({}) {}",
            self.p.name,
            self.what(),
            containers.join(", "),
            self.source()
        ))
        .with_state(&SetEnvState { previous })
    }

    fn has_rollback(&self) -> bool {
        true
    }

    async fn rollback(
        &self,
        _ctx: &ActionContext,
        output: &ActionOutput,
    ) -> dr_core::Result<ActionOutput> {
        let state: SetEnvState = output.state_as(self.name())?;
        let changes: Vec<_> = state
            .previous
            .iter()
            .map(|p| (p.container.clone(), p.previous.clone()))
            .collect();
        self.apply(&changes).await?;
        Ok(ActionOutput::summary(format!(
            "{} on {} restored to its previous definition",
            self.p.name,
            self.what()
        )))
    }
}

/// Parameters of `k8s.scale`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScaleParams {
    /// Namespace.
    pub namespace: String,
    /// `deployment` (default) or `statefulset`.
    #[serde(default = "deployment_kind")]
    pub kind: String,
    /// The object.
    pub name: String,
    /// The replica count.
    pub replicas: i32,
}

fn deployment_kind() -> String {
    "deployment".into()
}

/// What `k8s.scale` records for its rollback: `{"previous_replicas": 3}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct ScaleState {
    previous_replicas: i32,
}

/// `k8s.scale`: sets replicas through the `scale` subresource; the rollback
/// puts back the old count.
#[derive(Debug)]
pub struct Scale {
    cluster: KubeContext,
    p: ScaleParams,
}

impl Scale {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`dr_core::Error::InvalidConfig`] naming the parameter.
    pub fn new(cluster: KubeContext, p: ScaleParams) -> dr_core::Result<Self> {
        required("k8s.scale", "namespace", &p.namespace)?;
        required("k8s.scale", "name", &p.name)?;
        if !matches!(p.kind.as_str(), "deployment" | "statefulset") {
            return Err(dr_core::Error::InvalidConfig {
                key: "k8s.scale.kind".into(),
                reason: format!("{:?} is neither `deployment` nor `statefulset`", p.kind),
            });
        }
        if p.replicas < 0 {
            return Err(dr_core::Error::InvalidConfig {
                key: "k8s.scale.replicas".into(),
                reason: "must not be negative".into(),
            });
        }
        Ok(Scale { cluster, p })
    }

    async fn set(&self, replicas: i32) -> dr_core::Result<i32> {
        let client = self.cluster.client().await?;
        let what = format!("{} {}/{}", self.p.kind, self.p.namespace, self.p.name);
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        let pp = PatchParams::default();
        let old = if self.p.kind == "statefulset" {
            let api: Api<StatefulSet> = Api::namespaced(client, &self.p.namespace);
            let old = api
                .get_scale(&self.p.name)
                .await
                .map_err(|e| Error::kube(format!("get scale of {what}"), e))?;
            api.patch_scale(&self.p.name, &pp, &patch)
                .await
                .map_err(|e| Error::kube(format!("scale {what}"), e))?;
            old
        } else {
            let api: Api<Deployment> = Api::namespaced(client, &self.p.namespace);
            let old = api
                .get_scale(&self.p.name)
                .await
                .map_err(|e| Error::kube(format!("get scale of {what}"), e))?;
            api.patch_scale(&self.p.name, &pp, &patch)
                .await
                .map_err(|e| Error::kube(format!("scale {what}"), e))?;
            old
        };
        Ok(old.spec.and_then(|s| s.replicas).unwrap_or(0))
    }
}

#[async_trait]
impl Action for Scale {
    fn name(&self) -> &'static str {
        "k8s.scale"
    }

    fn describe(&self) -> String {
        format!(
            "scale {} {}/{} to {}",
            self.p.kind, self.p.namespace, self.p.name, self.p.replicas
        )
    }

    async fn run(&self, _ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let old = self.set(self.p.replicas).await?;
        ActionOutput::summary(format!(
            "{} {}/{} scaled {old} -> {}",
            self.p.kind, self.p.namespace, self.p.name, self.p.replicas
        ))
        .with_state(&ScaleState {
            previous_replicas: old,
        })
    }

    fn has_rollback(&self) -> bool {
        true
    }

    async fn rollback(
        &self,
        _ctx: &ActionContext,
        output: &ActionOutput,
    ) -> dr_core::Result<ActionOutput> {
        let ScaleState {
            previous_replicas: old,
        } = output.state_as(self.name())?;
        self.set(old).await?;
        Ok(ActionOutput::summary(format!(
            "{} {}/{} scaled back to {old}",
            self.p.kind, self.p.namespace, self.p.name
        )))
    }
}

/// Parameters of `k8s.rollout_restart` (and the target of `k8s.wait_rollout`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RolloutRestartParams {
    /// Namespace.
    pub namespace: String,
    /// The Deployment.
    pub deployment: String,
}

/// `k8s.rollout_restart`: what `kubectl rollout restart` does, a new
/// `kubectl.kubernetes.io/restartedAt` annotation on the pod template.
#[derive(Debug)]
pub struct RolloutRestart {
    cluster: KubeContext,
    p: RolloutRestartParams,
}

impl RolloutRestart {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`dr_core::Error::InvalidConfig`] naming the parameter.
    pub fn new(cluster: KubeContext, p: RolloutRestartParams) -> dr_core::Result<Self> {
        required("k8s.rollout_restart", "namespace", &p.namespace)?;
        required("k8s.rollout_restart", "deployment", &p.deployment)?;
        Ok(RolloutRestart { cluster, p })
    }
}

#[async_trait]
impl Action for RolloutRestart {
    fn name(&self) -> &'static str {
        "k8s.rollout_restart"
    }

    fn describe(&self) -> String {
        format!(
            "restart the pods of deployment {}/{}",
            self.p.namespace, self.p.deployment
        )
    }

    async fn run(&self, _ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let client = self.cluster.client().await?;
        let api: Api<Deployment> = Api::namespaced(client, &self.p.namespace);
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}}});
        api.patch(
            &self.p.deployment,
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .map_err(|e| {
            Error::kube(
                format!(
                    "restart deployment {}/{}",
                    self.p.namespace, self.p.deployment
                ),
                e,
            )
        })?;
        Ok(ActionOutput {
            summary: format!(
                "deployment {}/{} restarted at {at}",
                self.p.namespace, self.p.deployment
            ),
            state: json!({"restarted_at": at}),
            log: String::new(),
        })
    }
}

/// Parameters of `k8s.wait_rollout`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WaitRolloutParams {
    /// Namespace.
    pub namespace: String,
    /// The Deployment.
    pub deployment: String,
    /// The bound, seconds (default 600).
    #[serde(default = "default_wait")]
    pub timeout_secs: u64,
    /// Seconds between two looks (default 2).
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
}

fn default_wait() -> u64 {
    600
}

fn default_poll() -> u64 {
    2
}

/// `k8s.wait_rollout`: waits until the Deployment's rollout is complete,
/// with the rule of `kubectl rollout status` (kubectl
/// `pkg/polymorphichelpers/rollout_status.go`): the controller observed the
/// latest generation, every replica is updated, no old replica is left, and
/// the updated ones are available. `ProgressDeadlineExceeded` fails at once.
#[derive(Debug)]
pub struct WaitRollout {
    cluster: KubeContext,
    p: WaitRolloutParams,
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RolloutState {
    Done,
    Waiting(String),
    Failed(String),
}

pub(crate) fn rollout_state(d: &Deployment) -> RolloutState {
    let generation = d.metadata.generation.unwrap_or(0);
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = &d.status else {
        return RolloutState::Waiting("no status yet".into());
    };
    if st.observed_generation.unwrap_or(0) < generation {
        return RolloutState::Waiting(
            "waiting for the controller to observe the new generation".into(),
        );
    }
    if let Some(c) = st.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return RolloutState::Failed(format!(
            "progress deadline exceeded: {}",
            c.message.clone().unwrap_or_default()
        ));
    }
    let updated = st.updated_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    if updated < replicas {
        return RolloutState::Waiting(format!("{updated} of {replicas} new replicas updated"));
    }
    if total > updated {
        return RolloutState::Waiting(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < updated {
        return RolloutState::Waiting(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    RolloutState::Done
}

impl WaitRollout {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`dr_core::Error::InvalidConfig`] naming the parameter.
    pub fn new(cluster: KubeContext, p: WaitRolloutParams) -> dr_core::Result<Self> {
        required("k8s.wait_rollout", "namespace", &p.namespace)?;
        required("k8s.wait_rollout", "deployment", &p.deployment)?;
        if p.timeout_secs == 0 {
            return Err(dr_core::Error::InvalidConfig {
                key: "k8s.wait_rollout.timeout_secs".into(),
                reason: "must be positive".into(),
            });
        }
        Ok(WaitRollout { cluster, p })
    }
}

#[async_trait]
impl Action for WaitRollout {
    fn name(&self) -> &'static str {
        "k8s.wait_rollout"
    }

    fn describe(&self) -> String {
        format!(
            "wait up to {}s for the rollout of deployment {}/{}",
            self.p.timeout_secs, self.p.namespace, self.p.deployment
        )
    }

    async fn run(&self, _ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let client = self.cluster.client().await?;
        let api: Api<Deployment> = Api::namespaced(client, &self.p.namespace);
        let what = format!(
            "rollout of deployment {}/{}",
            self.p.namespace, self.p.deployment
        );
        let bound = Duration::from_secs(self.p.timeout_secs);
        let started = Instant::now();
        loop {
            let d = api.get(&self.p.deployment).await.map_err(|e| {
                Error::kube(
                    format!("get deployment {}/{}", self.p.namespace, self.p.deployment),
                    e,
                )
            })?;
            match rollout_state(&d) {
                RolloutState::Done => {
                    return Ok(ActionOutput {
                        summary: format!(
                            "{what} complete after {:.1}s",
                            started.elapsed().as_secs_f64()
                        ),
                        state: json!({"waited_secs": started.elapsed().as_secs_f64()}),
                        log: String::new(),
                    })
                }
                RolloutState::Failed(reason) => {
                    return Err(dr_core::Error::VerificationFailed { what, reason });
                }
                RolloutState::Waiting(why) => {
                    if started.elapsed() >= bound {
                        tracing::warn!(%what, last = %why, "rollout did not complete");
                        return Err(dr_core::Error::Timeout {
                            what: format!("{what} ({why})"),
                            after: bound,
                        });
                    }
                    tracing::debug!(%what, %why, "waiting");
                }
            }
            tokio::time::sleep(Duration::from_secs(self.p.poll_secs.max(1)).min(bound)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_state_keeps_its_journal_shape() {
        let out = ActionOutput::summary("scaled")
            .with_state(&ScaleState {
                previous_replicas: 3,
            })
            .unwrap();
        assert_eq!(out.state, json!({"previous_replicas": 3}));
        let recorded = ActionOutput {
            state: json!({"previous": [
                {"container": "app", "previous": {"name": "DATABASE_URL", "value": "old"}},
                {"container": "sidecar", "previous": null},
            ]}),
            ..ActionOutput::default()
        };
        let s: SetEnvState = recorded.state_as("k8s.set_env").unwrap();
        assert_eq!(s.previous.len(), 2);
        assert_eq!(
            s.previous[0].previous.as_ref().unwrap().value.as_deref(),
            Some("old")
        );
        assert_eq!(s.previous[1].previous, None);
        let e = recorded.state_as::<ScaleState>("k8s.scale").unwrap_err();
        assert!(
            matches!(&e, dr_core::Error::InvalidConfig { key, .. } if key == "k8s.scale state"),
            "{e:?}"
        );
    }
}
