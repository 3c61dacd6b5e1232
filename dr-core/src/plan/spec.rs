//! The plan file: what a recovery plan says, as written (TOML or Rust).
//!
//! ```toml
//! name = "data-corruption"
//! description = "Scenario 3: PITR to before a bad write"
//! rto = "1h"
//!
//! [variables.target_time]
//! description = "a time just before the corruption (RFC 3339)"
//!
//! [[steps]]
//! name = "revoke"
//! action = "postgres.revoke_writes"
//! rollback = true                    # the action's own rollback
//! params = { dsn = "${app_dsn}", role = "app", schemas = ["public"] }
//!
//! [[steps]]
//! name = "notify"
//! action = "notify.webhook"
//! after = ["revoke"]
//! on_failure = "continue"
//! retries = 3
//! backoff = "2s"
//! params = { url_env = "SLACK_WEBHOOK_URL", text = "writes revoked" }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A recovery plan as written. [`check`](super::check) turns it into a
/// [`CheckedPlan`](super::CheckedPlan).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// The plan's name (`[A-Za-z0-9._-]+`), used in run ids and reports.
    pub name: String,
    /// What the plan is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The recovery time objective the run is measured against
    /// (`"1h"`, `"15m"`; humantime syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<String>,
    /// At most this many independent steps run at once (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
    /// The timeout of a step that sets none (default `"1h"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_timeout: Option<String>,
    /// Declared variables; `${name}` in a parameter must name one of these
    /// (or a built-in: `run_id`, `plan`, `steps.<step>.state.<key>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, VariableSpec>,
    /// Variable values that `dr drill` uses: the scratch targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillSpec>,
    /// The steps, in the order written (the order ties are broken in).
    #[serde(default, rename = "steps", alias = "step")]
    pub steps: Vec<StepSpec>,
}

/// A declared variable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct VariableSpec {
    /// What the value means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The value when neither `--set` nor the environment gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The environment variable to read (default `DR_VAR_<NAME>`, upper case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A secret value (a password, a token): never written to the journal or
    /// a report; on resume it is read again from the environment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// What `dr drill` changes in a plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DrillSpec {
    /// Variable values for drills (scratch databases, a test DNS name);
    /// `--set` still wins.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

/// What happens to the run when a step fails for good.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop starting steps, let running ones finish, roll back (default).
    #[default]
    Abort,
    /// Record the failure and go on; dependent steps still run.
    Continue,
}

/// Which errors a step retries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// Only errors that say so ([`Error::is_retryable`](crate::Error::is_retryable):
    /// unavailable, timeout); a refused permission is not retried (default).
    #[default]
    Retryable,
    /// Every error except invalid configuration (a command's non-zero exit).
    Any,
}

/// The item of the drill checklist that a step proves when it succeeds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DrillCheck {
    /// The backup exists and is readable.
    Backup,
    /// The restore completes without errors.
    Restore,
    /// Data integrity is verified.
    Integrity,
    /// The application connects.
    App,
}

impl DrillCheck {
    /// All checklist items, in the runbook's order.
    pub const ALL: [DrillCheck; 4] = [
        DrillCheck::Backup,
        DrillCheck::Restore,
        DrillCheck::Integrity,
        DrillCheck::App,
    ];

    /// The runbook's words for the item.
    pub fn description(self) -> &'static str {
        match self {
            DrillCheck::Backup => "backup exists and is readable",
            DrillCheck::Restore => "restore completes without errors",
            DrillCheck::Integrity => "data integrity verified",
            DrillCheck::App => "the application connects",
        }
    }
}

/// One step as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique name (`[A-Za-z0-9_-]+`).
    pub name: String,
    /// The action (`exec`, `postgres.revoke_writes`, ...).
    pub action: String,
    /// The action's parameters; strings may hold `${variable}`.
    #[serde(default = "empty_table", skip_serializing_if = "is_empty_table")]
    pub params: toml::Table,
    /// Steps that must have completed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Time limit of one attempt (`"5m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Attempts after the first (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Wait before the first retry, doubled at each further one (default `"1s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// Which errors are retried.
    #[serde(default, skip_serializing_if = "is_default")]
    pub retry_on: RetryOn,
    /// What a failure does to the run.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_failure: OnFailure,
    /// The rollback: `true` for the action's own, or a table
    /// `{ action = "...", params = { ... } }` for another action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackSpec>,
    /// The drill checklist items this step proves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drill: Vec<DrillCheck>,
}

/// A step's rollback as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RollbackSpec {
    /// `true`: the action's own rollback; `false`: none.
    Own(bool),
    /// Another action run with its own parameters.
    Action(RollbackAction),
}

/// A separate rollback action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RollbackAction {
    /// The action name.
    pub action: String,
    /// Its parameters; `${steps.<this step>.state.<key>}` reads what the step returned.
    #[serde(default = "empty_table")]
    pub params: toml::Table,
}

fn empty_table() -> toml::Table {
    toml::Table::new()
}
fn is_empty_table(t: &toml::Table) -> bool {
    t.is_empty()
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl PlanSpec {
    /// Parses a plan file's text.
    ///
    /// # Errors
    /// [`PlanErrors`](super::PlanErrors) with the TOML error (line, column and
    /// key: a misspelt field is an error, not a silent default).
    pub fn from_toml(text: &str) -> Result<PlanSpec, super::PlanErrors> {
        toml::from_str(text).map_err(|e| {
            super::PlanErrors::one(super::PlanIssue {
                step: None,
                key: "plan".into(),
                message: e.to_string().trim_end().to_string(),
            })
        })
    }

    /// The plan as TOML text.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] if a value cannot be written as TOML.
    pub fn to_toml(&self) -> crate::Result<String> {
        toml::to_string_pretty(self).map_err(|e| crate::Error::InvalidConfig {
            key: "plan".into(),
            reason: e.to_string(),
        })
    }

    /// The step named `name`.
    pub fn find_step(&self, name: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Building plans in Rust.
///
/// ```
/// use dr_core::plan::{PlanSpec, StepSpec};
/// let plan = PlanSpec::new("smoke")
///     .rto("15m")
///     .step(StepSpec::new("ping", "exec").param("argv", serde_json::json!(["true"])))
///     .step(StepSpec::new("pause", "wait").param("duration", "1s").after(["ping"]));
/// assert_eq!(plan.steps.len(), 2);
/// ```
impl PlanSpec {
    /// An empty plan named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        PlanSpec {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Sets the RTO (`"1h"`).
    pub fn rto(mut self, rto: impl Into<String>) -> Self {
        self.rto = Some(rto.into());
        self
    }

    /// Declares a variable with an optional default.
    pub fn variable(mut self, name: impl Into<String>, default: Option<&str>) -> Self {
        self.variables.insert(
            name.into(),
            VariableSpec {
                default: default.map(str::to_string),
                ..Default::default()
            },
        );
        self
    }

    /// Appends a step.
    pub fn step(mut self, step: StepSpec) -> Self {
        self.steps.push(step);
        self
    }
}

impl StepSpec {
    /// A step running `action`, without parameters.
    pub fn new(name: impl Into<String>, action: impl Into<String>) -> Self {
        StepSpec {
            name: name.into(),
            action: action.into(),
            params: toml::Table::new(),
            ..Default::default()
        }
    }

    /// Sets parameter `key` (any JSON value TOML can hold: no nulls).
    ///
    /// # Panics
    /// When `value` holds a JSON `null`, which TOML cannot represent.
    pub fn param(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        let v: toml::Value =
            serde_json::from_value(value.into()).expect("a parameter TOML can hold (no null)");
        self.params.insert(key.to_string(), v);
        self
    }

    /// Adds dependencies.
    pub fn after<I: IntoIterator<Item = S>, S: Into<String>>(mut self, steps: I) -> Self {
        self.after.extend(steps.into_iter().map(Into::into));
        self
    }

    /// Sets the timeout of an attempt (`"5m"`).
    pub fn timeout(mut self, t: impl Into<String>) -> Self {
        self.timeout = Some(t.into());
        self
    }

    /// Sets retries and the first backoff.
    pub fn retries(mut self, retries: u32, backoff: impl Into<String>) -> Self {
        self.retries = retries;
        self.backoff = Some(backoff.into());
        self
    }

    /// Sets which errors are retried.
    pub fn retry_on(mut self, r: RetryOn) -> Self {
        self.retry_on = r;
        self
    }

    /// Sets what a failure does.
    pub fn on_failure(mut self, f: OnFailure) -> Self {
        self.on_failure = f;
        self
    }

    /// Uses the action's own rollback.
    pub fn rollback_own(mut self) -> Self {
        self.rollback = Some(RollbackSpec::Own(true));
        self
    }

    /// Rolls back with another action.
    ///
    /// # Panics
    /// When `params` holds a JSON `null` or is not an object.
    pub fn rollback_with(mut self, action: impl Into<String>, params: serde_json::Value) -> Self {
        let params: toml::Table =
            serde_json::from_value(params).expect("rollback params: an object without nulls");
        self.rollback = Some(RollbackSpec::Action(RollbackAction {
            action: action.into(),
            params,
        }));
        self
    }

    /// Marks the drill checklist items this step proves.
    pub fn drill(mut self, items: &[DrillCheck]) -> Self {
        self.drill.extend_from_slice(items);
        self
    }
}
