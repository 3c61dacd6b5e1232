//! Plan actions: the executable steps that system crates provide.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};

/// What an action returned: a line for humans and the state that a rollback
/// (or a later step) needs, recorded in the run's journal.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActionOutput {
    /// One line for the report (`DNS api.example.com A 10.0.0.1 -> 10.1.0.1`).
    pub summary: String,
    /// Machine-readable state (previous values for rollback, ids, timings).
    pub state: serde_json::Value,
    /// Captured output (commands' stdout/stderr), bounded by the executor.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log: String,
}

impl ActionOutput {
    /// An output with a summary and no state.
    pub fn summary(summary: impl Into<String>) -> Self {
        ActionOutput {
            summary: summary.into(),
            ..Default::default()
        }
    }

    /// The same output with `state` recorded as its JSON form: an action
    /// keeps what its rollback needs in a `#[derive(Serialize, Deserialize)]`
    /// struct and reads it back with [`state_as`](ActionOutput::state_as).
    ///
    /// # Errors
    /// [`Error::Failed`] when `state` cannot be written as JSON (a map whose
    /// keys are not strings).
    pub fn with_state<T: Serialize>(mut self, state: &T) -> Result<Self> {
        self.state = serde_json::to_value(state)
            .map_err(|e| Error::failed("recording the state of a plan step", e.to_string()))?;
        Ok(self)
    }

    /// The recorded [`state`](ActionOutput::state) as `T`, the type that
    /// `action` (`k8s.scale`) recorded with
    /// [`with_state`](ActionOutput::with_state).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with key `<action> state` when the state does
    /// not have `T`'s shape (a journal edited by hand, or written by another
    /// action); the reason is serde's, naming the missing or mistyped field.
    pub fn state_as<T: DeserializeOwned>(&self, action: &str) -> Result<T> {
        T::deserialize(&self.state).map_err(|e| Error::InvalidConfig {
            key: format!("{action} state"),
            reason: format!("the recorded state is not the output of {action}: {e}"),
        })
    }
}

/// What a running action can see of its run.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ActionContext {
    /// The plan run id.
    pub run_id: String,
    /// The step name.
    pub step: String,
    /// Outputs of the steps completed so far, by step name.
    pub outputs: BTreeMap<String, ActionOutput>,
    /// Seconds of the RTO budget left, when the plan has an objective.
    pub rto_left_secs: Option<f64>,
    /// Whether approvals are given in advance (`--yes`).
    pub assume_yes: bool,
    /// When the current attempt's time runs out (the step's `timeout`). An
    /// action that polls (`http.check`) stops polling before it.
    pub deadline: Option<tokio::time::Instant>,
    /// Where an action records state before it changes anything, so that a
    /// re-run after a crash knows what the interrupted attempt saw (see
    /// [`Checkpoint`]). `None` outside the executor.
    pub checkpoint: Option<Checkpoint>,
    /// Who answers `approve` steps; `None` when nobody can (no terminal, no
    /// approval file).
    pub approver: Option<Arc<dyn super::Approver>>,
    /// Environment variables given to the run ([`super::Executor::with_env`]),
    /// read before the process environment by the actions that take a
    /// variable's name (`notify.webhook`'s `url_env`, `http.check`'s
    /// `headers_env`): see [`ActionContext::env_var`].
    pub env: BTreeMap<String, String>,
}

impl ActionContext {
    /// A context for running an action outside a plan (tests, ad-hoc use).
    pub fn new(run_id: impl Into<String>, step: impl Into<String>) -> Self {
        ActionContext {
            run_id: run_id.into(),
            step: step.into(),
            ..Default::default()
        }
    }

    /// The value of environment variable `name`: the run's own
    /// ([`ActionContext::env`]) first, then the process's.
    pub fn env_var(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    /// The time left before [`deadline`](ActionContext::deadline), if any.
    pub fn time_left(&self) -> Option<std::time::Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }
}

/// Durable per-step state that survives a crash: an action saves what it is
/// about to change *before* changing it (`postgres.revoke_writes` saves the
/// privileges it found), the executor writes it to the run's journal at once,
/// and a re-run of the step after a crash finds it in
/// [`previous`](Checkpoint::previous).
#[derive(Clone)]
pub struct Checkpoint {
    previous: Option<serde_json::Value>,
    sink: Arc<dyn CheckpointSink>,
}

impl Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("previous", &self.previous.is_some())
            .finish()
    }
}

/// Where a [`Checkpoint`] writes (the executor's journal).
#[async_trait]
pub trait CheckpointSink: Send + Sync + 'static {
    /// Stores `state` durably before returning.
    ///
    /// # Errors
    /// The journal could not be written; the action must not go on changing
    /// things it could not record.
    async fn save(&self, state: serde_json::Value) -> Result<()>;
}

impl Checkpoint {
    /// A checkpoint writing into `sink`, with the state an earlier attempt saved.
    pub fn new(previous: Option<serde_json::Value>, sink: Arc<dyn CheckpointSink>) -> Self {
        Checkpoint { previous, sink }
    }

    /// What an earlier, interrupted attempt of this step saved.
    pub fn previous(&self) -> Option<&serde_json::Value> {
        self.previous.as_ref()
    }

    /// Saves `state` durably (in the run journal) before returning.
    ///
    /// # Errors
    /// The journal could not be written.
    pub async fn save(&self, state: serde_json::Value) -> Result<()> {
        self.sink.save(state).await
    }
}

/// One executable action of a recovery plan (`postgres.revoke_writes`,
/// `dns.failover`, `exec`, ...), built from a step's parameters by an
/// [`ActionFactory`].
///
/// # Contract
/// - [`describe`](Action::describe) changes nothing; it says what `run` would
///   do, for `--dry-run` and `plan check`.
/// - [`run`](Action::run) does the work and returns what a rollback needs in
///   [`ActionOutput::state`]. It is idempotent where the system allows: running
///   it again after a crash gives the same end state.
/// - [`rollback`](Action::rollback) undoes `run` from its recorded output. An
///   action without a rollback returns [`Error::Unsupported`] and says so in
///   [`has_rollback`](Action::has_rollback).
/// - Time limits and retries are the executor's; an action does not loop
///   forever on its own.
#[async_trait]
pub trait Action: Debug + Send + Sync + 'static {
    /// The action name, `system.verb` (`dns.failover`).
    fn name(&self) -> &'static str;

    /// What `run` would do, resolved, in one or a few lines.
    fn describe(&self) -> String;

    /// Performs the action.
    ///
    /// # Errors
    /// Whatever failed; [`Error::is_retryable`] tells the executor whether to
    /// try again.
    async fn run(&self, ctx: &ActionContext) -> Result<ActionOutput>;

    /// Touches what [`run`](Action::run) will touch, changing nothing (the
    /// server answers, the provider reads the record, the program exists),
    /// for `dr plan check --preflight`. The default reaches nothing.
    ///
    /// # Errors
    /// What could not be reached, and why.
    async fn preflight(&self) -> Result<Preflight> {
        Ok(Preflight::NotChecked(
            "nothing to reach before it runs".into(),
        ))
    }

    /// Whether [`rollback`](Action::rollback) is implemented.
    fn has_rollback(&self) -> bool {
        false
    }

    /// Undoes `run`, given the output it returned.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default.
    async fn rollback(&self, _ctx: &ActionContext, _output: &ActionOutput) -> Result<ActionOutput> {
        Err(Error::Unsupported {
            what: format!("rollback of {}", self.name()),
        })
    }
}

/// What [`Action::preflight`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Preflight {
    /// What the step will work on answered; what was reached.
    Reached(String),
    /// Not checked ahead, and why (nothing to reach, or parameters known
    /// only when earlier steps have run).
    NotChecked(String),
}

/// Builds an [`Action`] from a step's parameters (a JSON object, already
/// variable-substituted). Parameter errors are [`Error::InvalidConfig`] whose
/// `key` names the parameter.
pub type ActionFactory = Arc<dyn Fn(&serde_json::Value) -> Result<Arc<dyn Action>> + Send + Sync>;

/// The actions a front end knows, by name. Each system crate offers a
/// `register(&mut ActionRegistry, ...)` function that adds its own.
#[derive(Default, Clone)]
pub struct ActionRegistry {
    factories: BTreeMap<String, ActionFactory>,
}

impl Debug for ActionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl ActionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the factory of action `name`.
    pub fn register(&mut self, name: &str, factory: ActionFactory) {
        self.factories.insert(name.to_string(), factory);
    }

    /// Adds an action whose parameters deserialize into `P` (use
    /// `#[serde(deny_unknown_fields)]` on `P`) and which is built by `build`.
    pub fn register_typed<P, F>(&mut self, name: &str, build: F)
    where
        P: DeserializeOwned + 'static,
        F: Fn(P) -> Result<Arc<dyn Action>> + Send + Sync + 'static,
    {
        let action = name.to_string();
        self.register(
            name,
            Arc::new(move |params: &serde_json::Value| {
                let p: P = parse_params(&action, params)?;
                build(p)
            }),
        );
    }

    /// The registered action names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Builds action `name` from `params`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unknown action or bad parameters.
    pub fn build(&self, name: &str, params: &serde_json::Value) -> Result<Arc<dyn Action>> {
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| Error::InvalidConfig {
                key: "action".into(),
                reason: format!(
                    "unknown action {name:?}; known: {}",
                    self.names().collect::<Vec<_>>().join(", ")
                ),
            })?;
        factory(params)
    }
}

/// Deserializes an action's parameters, naming the action and the offending
/// key in the error.
///
/// # Errors
/// [`Error::InvalidConfig`] with `key` = `<action>.<field>` where serde names it.
pub fn parse_params<P: DeserializeOwned>(action: &str, params: &serde_json::Value) -> Result<P> {
    P::deserialize(params).map_err(|e| {
        let msg = e.to_string();
        // serde names the field in backticks: "missing field `zone`".
        let key = msg
            .split('`')
            .nth(1)
            .map(|f| format!("{action}.{f}"))
            .unwrap_or_else(|| action.to_string());
        Error::InvalidConfig { key, reason: msg }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Replicas {
        previous_replicas: i32,
    }

    #[test]
    fn typed_state_round_trips_and_names_a_mismatch() {
        let out = ActionOutput::summary("scaled 3 -> 0")
            .with_state(&Replicas {
                previous_replicas: 3,
            })
            .unwrap();
        assert_eq!(out.state, serde_json::json!({"previous_replicas": 3}));
        assert_eq!(
            out.state_as::<Replicas>("k8s.scale").unwrap(),
            Replicas {
                previous_replicas: 3
            }
        );
        let other = ActionOutput::summary("x");
        let e = other.state_as::<Replicas>("k8s.scale").unwrap_err();
        match &e {
            Error::InvalidConfig { key, .. } => assert_eq!(key, "k8s.scale state"),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
        let wrong = ActionOutput {
            state: serde_json::json!({"previous": []}),
            ..ActionOutput::default()
        };
        let e = wrong.state_as::<Replicas>("k8s.scale").unwrap_err();
        assert!(e.to_string().contains("previous_replicas"), "{e}");
    }
}
