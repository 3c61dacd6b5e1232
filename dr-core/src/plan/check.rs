//! Checking a plan before anything runs: names, actions and their parameters,
//! variables, the dependency graph. Every problem is reported, each pointing
//! at its step and key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::spec::{DrillCheck, OnFailure, PlanSpec, RetryOn, RollbackSpec, StepSpec};
use super::vars::{self, Ref, Scope};
use super::{Action, ActionOutput, ActionRegistry, Preflight};
use crate::error::{Error, Result};
use crate::serde_duration;

/// The timeout of a step that sets none.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(3600);
/// The first retry delay of a step that sets none.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts, however many retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Independent steps run at once when the plan sets no `max_parallel`.
pub const DEFAULT_MAX_PARALLEL: usize = 4;

/// One problem found in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanIssue {
    /// The step, when the problem is in one.
    pub step: Option<String>,
    /// The key (`params.role`, `after`, `timeout`, `variables.target_time`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PlanIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(step) => write!(f, "step {step:?}, {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Every problem found in a plan (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanErrors {
    /// The problems, in plan order.
    pub issues: Vec<PlanIssue>,
}

impl PlanErrors {
    pub(crate) fn one(issue: PlanIssue) -> Self {
        PlanErrors {
            issues: vec![issue],
        }
    }
}

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the plan has {} problem(s):", self.issues.len())?;
        for i in &self.issues {
            write!(f, "\n  - {i}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanErrors {}

impl From<PlanErrors> for Error {
    fn from(e: PlanErrors) -> Self {
        let first = &e.issues[0];
        let key = match &first.step {
            Some(s) => format!("step.{s}.{}", first.key),
            None => first.key.clone(),
        };
        Error::InvalidConfig {
            key,
            reason: e.to_string(),
        }
    }
}

/// How to check a plan.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Variable values given on the command line (`--set k=v`); they win over
    /// the environment and the defaults.
    pub set: BTreeMap<String, String>,
    /// The environment to read variables from; `None` reads the process's.
    pub env: Option<BTreeMap<String, String>>,
    /// Accept variables without a value (`dr plan check` of a plan whose
    /// values come at run time); they read as `<name>`.
    pub allow_missing_values: bool,
    /// Use the plan's `[drill]` values (below `set`).
    pub drill: bool,
}

impl CheckOptions {
    /// Options with `--set` values.
    pub fn with_set(set: BTreeMap<String, String>) -> Self {
        CheckOptions {
            set,
            ..Default::default()
        }
    }

    /// Uses the plan's `[drill]` values (for `dr drill`).
    pub fn drill(mut self, drill: bool) -> Self {
        self.drill = drill;
        self
    }

    /// Accepts variables without a value (for `dr plan check`).
    pub fn allow_missing_values(mut self, allow: bool) -> Self {
        self.allow_missing_values = allow;
        self
    }

    /// Reads variables from `env` instead of the process environment.
    pub fn env(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = Some(env);
        self
    }
}

/// Parses `k=v` (`--set`).
///
/// # Errors
/// [`Error::InvalidConfig`] with key `--set` when there is no `=` or the name
/// is empty.
pub fn parse_set(arg: &str) -> Result<(String, String)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(Error::InvalidConfig {
            key: "--set".into(),
            reason: format!("expected name=value, got {arg:?}"),
        }),
    }
}

/// A step's rollback, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CheckedRollback {
    /// The action's own [`Action::rollback`].
    Own,
    /// Another action.
    Action {
        /// Its name.
        action: String,
        /// Its parameters (JSON, references unresolved).
        params: Value,
    },
}

/// A step that passed the checks.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedStep {
    /// Name.
    pub name: String,
    /// Action name.
    pub action: String,
    /// Parameters as written (references unresolved).
    pub params: Value,
    /// Direct dependencies.
    pub after: Vec<String>,
    /// Time limit of one attempt.
    #[serde(with = "crate::serde_duration::secs")]
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// First retry delay (doubled each time, at most [`MAX_BACKOFF`]).
    #[serde(with = "crate::serde_duration::secs")]
    pub backoff: Duration,
    /// Which errors are retried.
    pub retry_on: RetryOn,
    /// What a failure does.
    pub on_failure: OnFailure,
    /// The rollback, if any.
    pub rollback: Option<CheckedRollback>,
    /// Drill checklist items proved by this step.
    pub drill: Vec<DrillCheck>,
    /// What the step would do (the action's `describe`, secrets masked).
    pub description: String,
    /// What the rollback would do.
    pub rollback_description: Option<String>,
    /// Depth in the graph: 0 for steps with no dependencies; steps of equal
    /// depth may run at once.
    pub level: usize,
}

/// One step's [`CheckedPlan::preflight`]. Serialised flat: `{"step",
/// "action", "result": "reached" | "not_checked" | "failed", "detail"}`.
#[derive(Debug, Clone)]
pub struct StepPreflight {
    /// The step.
    pub step: String,
    /// Its action.
    pub action: String,
    /// What was reached or why nothing was, or what could not be reached.
    pub outcome: std::result::Result<Preflight, String>,
}

impl Serialize for StepPreflight {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (result, detail) = match &self.outcome {
            Ok(Preflight::Reached(d)) => ("reached", d),
            Ok(Preflight::NotChecked(d)) => ("not_checked", d),
            Err(e) => ("failed", e),
        };
        let mut st = serializer.serialize_struct("StepPreflight", 4)?;
        st.serialize_field("step", &self.step)?;
        st.serialize_field("action", &self.action)?;
        st.serialize_field("result", result)?;
        st.serialize_field("detail", detail)?;
        st.end()
    }
}

impl StepPreflight {
    /// Whether what the step will work on could not be reached.
    pub fn failed(&self) -> bool {
        self.outcome.is_err()
    }
}

/// A plan that passed every check: the steps in an order that respects
/// dependencies, with variables resolved. Print it, serialise it, run it.
#[derive(Debug, Clone)]
pub struct CheckedPlan {
    spec: PlanSpec,
    steps: Vec<CheckedStep>,
    order: Vec<usize>,
    variables: BTreeMap<String, String>,
    secrets: BTreeSet<String>,
    rto: Option<Duration>,
    max_parallel: usize,
    registry: ActionRegistry,
}

/// Parses and checks a plan file.
///
/// # Errors
/// [`PlanErrors`]: the file cannot be read or parsed (with line and column),
/// or [`check`] found problems.
pub fn check_file(
    path: &Path,
    registry: &ActionRegistry,
    options: &CheckOptions,
) -> Result<CheckedPlan, PlanErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PlanErrors::one(PlanIssue {
            step: None,
            key: path.display().to_string(),
            message: format!("cannot read the plan: {e}"),
        })
    })?;
    let spec = PlanSpec::from_toml(&text).map_err(|mut e| {
        for i in &mut e.issues {
            i.key = path.display().to_string();
        }
        e
    })?;
    check(&spec, registry, options)
}

fn valid_name(s: &str, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (dots && c == '.'))
}

/// Checks `spec` against the actions in `registry`: every step's action
/// exists and accepts its parameters, every variable referenced is declared
/// and has a value, `after` names existing steps, the graph has no cycle,
/// durations parse. Returns the plan ready to run.
///
/// # Errors
/// [`PlanErrors`] listing every problem found, each with its step and key.
pub fn check(
    spec: &PlanSpec,
    registry: &ActionRegistry,
    options: &CheckOptions,
) -> Result<CheckedPlan, PlanErrors> {
    let mut issues = Vec::new();
    macro_rules! issue {
        (None, $key:expr, $message:expr $(,)?) => {
            issues.push(PlanIssue {
                step: None,
                key: ($key).to_string(),
                message: $message,
            })
        };
        (Some($step:expr), $key:expr, $message:expr $(,)?) => {
            issues.push(PlanIssue {
                step: Some(($step).to_string()),
                key: ($key).to_string(),
                message: $message,
            })
        };
    }

    if !valid_name(&spec.name, true) {
        issue!(
            None,
            "name",
            format!(
                "{:?} is not a plan name: use letters, digits, '.', '_' and '-' (at most 64)",
                spec.name
            )
        );
    }
    let rto = match spec.rto.as_deref().map(serde_duration::parse) {
        Some(Err(e)) => {
            issue!(None, "rto", e);
            None
        }
        Some(Ok(d)) => Some(d),
        None => None,
    };
    let default_timeout = match spec.default_timeout.as_deref().map(serde_duration::parse) {
        Some(Err(e)) => {
            issue!(None, "default_timeout", e);
            DEFAULT_STEP_TIMEOUT
        }
        Some(Ok(d)) => d,
        None => DEFAULT_STEP_TIMEOUT,
    };
    let max_parallel = spec.max_parallel.unwrap_or(DEFAULT_MAX_PARALLEL);
    if max_parallel == 0 {
        issue!(None, "max_parallel", "must be at least 1".into());
    }

    // Variables: --set > environment > [drill] > default.
    let mut variables = BTreeMap::new();
    let mut secrets = BTreeSet::new();
    for name in options.set.keys() {
        if !spec.variables.contains_key(name) {
            issue!(
                None,
                &format!("--set {name}"),
                format!("the plan declares no variable {name:?}")
            );
        }
    }
    if let Some(drill) = &spec.drill {
        for name in drill.variables.keys() {
            if !spec.variables.contains_key(name) {
                issue!(
                    None,
                    &format!("drill.variables.{name}"),
                    format!("the plan declares no variable {name:?}")
                );
            }
        }
    }
    for (name, var) in &spec.variables {
        if !valid_name(name, false)
            || name.contains('-')
            || vars::BUILTINS.contains(&name.as_str())
            || name == "steps"
        {
            issue!(
                None,
                &format!("variables.{name}"),
                "a variable name is letters, digits and _, and not run_id, plan or steps".into()
            );
            continue;
        }
        let env_name = var
            .env
            .clone()
            .unwrap_or_else(|| format!("DR_VAR_{}", name.to_ascii_uppercase()));
        let from_env = match &options.env {
            Some(env) => env.get(&env_name).cloned(),
            None => std::env::var(&env_name).ok(),
        };
        let drill_value = options
            .drill
            .then(|| {
                spec.drill
                    .as_ref()
                    .and_then(|d| d.variables.get(name).cloned())
            })
            .flatten();
        let value = options
            .set
            .get(name)
            .cloned()
            .or(from_env)
            .or(drill_value)
            .or_else(|| var.default.clone());
        match value {
            Some(v) => {
                variables.insert(name.clone(), v);
            }
            None if options.allow_missing_values => {
                variables.insert(name.clone(), format!("<{name}>"));
            }
            None => issue!(
                None,
                &format!("variables.{name}"),
                format!("no value: pass --set {name}=..., set {env_name}, or give a default"),
            ),
        }
        if var.secret {
            secrets.insert(name.clone());
        }
    }
    let mut scope_vars = variables.clone();
    scope_vars.insert("run_id".into(), "<run_id>".into());
    scope_vars.insert("plan".into(), spec.name.clone());

    // Names.
    let mut index = BTreeMap::new();
    for (i, step) in spec.steps.iter().enumerate() {
        if !valid_name(&step.name, false) {
            issue!(
                Some(&step.name),
                "name",
                "a step name is letters, digits, '_' and '-' (at most 64)".into()
            );
        }
        if index.insert(step.name.as_str(), i).is_some() {
            issue!(
                Some(&step.name),
                "name",
                "another step has the same name".into()
            );
        }
    }
    if spec.steps.is_empty() {
        issue!(None, "step", "the plan has no steps".into());
    }

    // Graph.
    let n = spec.steps.len();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, step) in spec.steps.iter().enumerate() {
        for a in &step.after {
            match index.get(a.as_str()) {
                Some(&j) if j == i => issue!(
                    Some(&step.name),
                    "after",
                    "a step cannot come after itself".into()
                ),
                Some(&j) => {
                    if !deps[i].contains(&j) {
                        deps[i].push(j);
                    }
                }
                None => issue!(Some(&step.name), "after", format!("no step named {a:?}")),
            }
        }
    }
    let (order, levels) = topo_order(&deps);
    if order.len() < n {
        let placed: BTreeSet<usize> = order.iter().copied().collect();
        let mut reported = BTreeSet::new();
        for i in 0..n {
            if placed.contains(&i) || reported.contains(&i) {
                continue;
            }
            if let Some(cycle) = find_cycle(i, &deps, &placed) {
                let names: Vec<&str> = cycle.iter().map(|&c| spec.steps[c].name.as_str()).collect();
                issue!(
                    Some(&spec.steps[i].name),
                    "after",
                    format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
                );
                reported.extend(cycle);
            }
        }
        for i in 0..n {
            if !placed.contains(&i) && !reported.contains(&i) {
                issue!(
                    Some(&spec.steps[i].name),
                    "after",
                    "unreachable: the step depends on a dependency cycle and can never run".into(),
                );
            }
        }
    }
    let ancestors = ancestors(&deps);

    // Steps: durations, references, actions and their parameters.
    let check_scope = Scope {
        vars: &scope_vars,
        outputs: None,
    };
    let mask = |text: String| mask_secrets(text, &variables, &secrets);
    let mut steps = Vec::with_capacity(n);
    for (i, step) in spec.steps.iter().enumerate() {
        let name = step.name.as_str();
        let mut dur = |key: &str, v: &Option<String>, default: Duration| match v
            .as_deref()
            .map(serde_duration::parse)
        {
            Some(Ok(d)) if d.is_zero() => {
                issue!(Some(name), key, "must be more than zero".into());
                default
            }
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                issue!(Some(name), key, e);
                default
            }
            None => default,
        };
        let timeout = dur("timeout", &step.timeout, default_timeout);
        let backoff = dur("backoff", &step.backoff, DEFAULT_BACKOFF);

        let params = toml_to_json(&step.params);
        let check_refs = |value: &Value, prefix: &str, issues: &mut Vec<PlanIssue>| {
            let mut refs = Vec::new();
            vars::references(value, prefix, &mut refs);
            for (path, r) in refs {
                let problem = match r {
                    Err(e) => Some(e),
                    // A declared variable without a value is reported once,
                    // under `variables.<name>`, not at every reference.
                    Ok(Ref::Var(v))
                        if !scope_vars.contains_key(&v) && !spec.variables.contains_key(&v) =>
                    {
                        Some(format!(
                            "unknown variable ${{{v}}}; declared: {}",
                            spec.variables.keys().cloned().collect::<Vec<_>>().join(", ")
                        ))
                    }
                    Ok(Ref::Step { step: s, .. }) => match index.get(s.as_str()) {
                        None => Some(format!("${{steps.{s}...}}: no step named {s:?}")),
                        Some(&j) if j != i && !ancestors[i].contains(&j) => Some(format!(
                            "${{steps.{s}...}}: {s:?} must be among this step's `after` (directly or not) to be read"
                        )),
                        Some(&j) if j == i && !prefix.starts_with("rollback") => {
                            Some("a step cannot read its own output in its parameters".into())
                        }
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(message) = problem {
                    issues.push(PlanIssue {
                        step: Some(name.to_string()),
                        key: path,
                        message,
                    });
                }
            }
        };
        let mut step_issues = Vec::new();
        check_refs(&params, "params", &mut step_issues);

        let mut description = String::new();
        let mut built: Option<Arc<dyn Action>> = None;
        if step_issues.is_empty() {
            match check_scope.substitute(&params, "params") {
                Ok(resolved) => match registry.build(&step.action, &resolved) {
                    Ok(action) => {
                        description = mask(action.describe());
                        built = Some(action);
                    }
                    Err(e) => step_issues.push(action_issue(name, &step.action, "params", e)),
                },
                Err((path, message)) => step_issues.push(PlanIssue {
                    step: Some(name.into()),
                    key: path,
                    message,
                }),
            }
        }

        let mut rollback_description = None;
        let rollback = match &step.rollback {
            None | Some(RollbackSpec::Own(false)) => None,
            Some(RollbackSpec::Own(true)) => {
                if let Some(action) = &built {
                    if action.has_rollback() {
                        rollback_description = Some(format!("undo: {}", description));
                    } else {
                        step_issues.push(PlanIssue {
                            step: Some(name.into()),
                            key: "rollback".into(),
                            message: format!(
                                "action {} has no rollback of its own; give `rollback = {{ action = ..., params = ... }}`",
                                step.action
                            ),
                        });
                    }
                }
                Some(CheckedRollback::Own)
            }
            Some(RollbackSpec::Action(rb)) => {
                let rparams = toml_to_json(&rb.params);
                let before = step_issues.len();
                check_refs(&rparams, "rollback.params", &mut step_issues);
                if step_issues.len() == before {
                    match check_scope.substitute(&rparams, "rollback.params") {
                        Ok(resolved) => match registry.build(&rb.action, &resolved) {
                            Ok(action) => rollback_description = Some(mask(action.describe())),
                            Err(e) => step_issues.push(action_issue(
                                name,
                                &rb.action,
                                "rollback.params",
                                e,
                            )),
                        },
                        Err((path, message)) => step_issues.push(PlanIssue {
                            step: Some(name.into()),
                            key: path,
                            message,
                        }),
                    }
                }
                Some(CheckedRollback::Action {
                    action: rb.action.clone(),
                    params: rparams,
                })
            }
        };
        issues.extend(step_issues);
        steps.push(CheckedStep {
            name: step.name.clone(),
            action: step.action.clone(),
            params,
            after: step.after.clone(),
            timeout,
            retries: step.retries,
            backoff,
            retry_on: step.retry_on,
            on_failure: step.on_failure,
            rollback,
            drill: step.drill.clone(),
            description,
            rollback_description,
            level: levels[i],
        });
    }

    if !issues.is_empty() {
        return Err(PlanErrors { issues });
    }
    Ok(CheckedPlan {
        spec: spec.clone(),
        steps,
        order,
        variables,
        secrets,
        rto,
        max_parallel,
        registry: registry.clone(),
    })
}

/// An action's parameter error as an issue on `step`, keyed by the parameter.
fn action_issue(step: &str, action: &str, prefix: &str, e: Error) -> PlanIssue {
    let (key, message) = match e {
        Error::InvalidConfig { key, reason } => {
            let key = if key == "action" {
                if prefix == "params" {
                    "action".to_string()
                } else {
                    "rollback.action".to_string()
                }
            } else {
                match key.strip_prefix(&format!("{action}.")) {
                    Some(field) => format!("{prefix}.{field}"),
                    None if key == action => prefix.to_string(),
                    None => format!("{prefix}.{key}"),
                }
            };
            (key, reason)
        }
        other => (prefix.to_string(), other.to_string()),
    };
    PlanIssue {
        step: Some(step.to_string()),
        key,
        message,
    }
}

fn mask_secrets(
    mut text: String,
    vars: &BTreeMap<String, String>,
    secrets: &BTreeSet<String>,
) -> String {
    for s in secrets {
        if let Some(v) = vars.get(s) {
            if !v.is_empty() {
                text = text.replace(v.as_str(), "***");
            }
        }
    }
    text
}

/// Kahn's algorithm, ties broken by plan order. Returns the order and each
/// step's level.
fn topo_order(deps: &[Vec<usize>]) -> (Vec<usize>, Vec<usize>) {
    let n = deps.len();
    let mut remaining: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut level = vec![0usize; n];
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while let Some(i) = (0..n).find(|&i| !done[i] && remaining[i] == 0) {
        done[i] = true;
        order.push(i);
        for (j, d) in deps.iter().enumerate() {
            if d.contains(&i) {
                remaining[j] -= 1;
                level[j] = level[j].max(level[i] + 1);
            }
        }
    }
    (order, level)
}

/// A cycle through `start` among the unplaced steps, if any.
fn find_cycle(start: usize, deps: &[Vec<usize>], placed: &BTreeSet<usize>) -> Option<Vec<usize>> {
    fn dfs(
        node: usize,
        start: usize,
        deps: &[Vec<usize>],
        placed: &BTreeSet<usize>,
        path: &mut Vec<usize>,
        seen: &mut BTreeSet<usize>,
    ) -> bool {
        for &d in &deps[node] {
            if placed.contains(&d) {
                continue;
            }
            if d == start {
                return true;
            }
            if seen.insert(d) {
                path.push(d);
                if dfs(d, start, deps, placed, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start]);
    if dfs(start, start, deps, placed, &mut path, &mut seen) {
        // `path` follows `after` edges (dependencies); show it in run order.
        path.reverse();
        path.rotate_right(1);
        Some(path)
    } else {
        None
    }
}

fn ancestors(deps: &[Vec<usize>]) -> Vec<BTreeSet<usize>> {
    (0..deps.len())
        .map(|i| {
            let mut seen = BTreeSet::new();
            let mut stack = deps[i].clone();
            while let Some(d) = stack.pop() {
                if seen.insert(d) {
                    stack.extend(deps[d].iter().copied());
                }
            }
            seen
        })
        .collect()
}

pub(crate) fn toml_to_json(t: &toml::Table) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

impl CheckedPlan {
    /// The plan as written.
    pub fn spec(&self) -> &PlanSpec {
        &self.spec
    }

    /// The plan's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The recovery time objective, if the plan has one.
    pub fn rto(&self) -> Option<Duration> {
        self.rto
    }

    /// How many independent steps may run at once.
    pub fn max_parallel(&self) -> usize {
        self.max_parallel
    }

    /// The steps in plan order.
    pub fn steps(&self) -> &[CheckedStep] {
        &self.steps
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&CheckedStep> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The steps in an order that respects every `after`.
    pub fn ordered(&self) -> impl Iterator<Item = &CheckedStep> {
        self.order.iter().map(|&i| &self.steps[i])
    }

    /// Resolved variable values; secret ones read `***`.
    pub fn variables(&self) -> BTreeMap<String, String> {
        self.variables
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if self.secrets.contains(k) {
                        "***".into()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    }

    /// Variables that may be written to a journal (not the secret ones).
    pub(crate) fn journal_variables(&self) -> BTreeMap<String, String> {
        self.variables
            .iter()
            .filter(|(k, _)| !self.secrets.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Masks secret variable values in `text`.
    pub(crate) fn mask(&self, text: String) -> String {
        mask_secrets(text, &self.variables, &self.secrets)
    }

    /// The registry the plan was checked against.
    pub fn registry(&self) -> &ActionRegistry {
        &self.registry
    }

    fn scope_vars(&self, run_id: &str) -> BTreeMap<String, String> {
        let mut vars = self.variables.clone();
        vars.insert("run_id".into(), run_id.into());
        vars.insert("plan".into(), self.spec.name.clone());
        vars
    }

    /// Builds `step`'s action with references resolved against the run's
    /// completed outputs.
    pub(crate) fn build_action(
        &self,
        step: &CheckedStep,
        run_id: &str,
        outputs: &BTreeMap<String, ActionOutput>,
    ) -> Result<Arc<dyn Action>> {
        self.build(&step.action, &step.params, "params", step, run_id, outputs)
    }

    /// Builds `step`'s rollback action (its own action for
    /// [`CheckedRollback::Own`]).
    pub(crate) fn build_rollback(
        &self,
        step: &CheckedStep,
        run_id: &str,
        outputs: &BTreeMap<String, ActionOutput>,
    ) -> Result<Option<Arc<dyn Action>>> {
        Ok(match &step.rollback {
            None => None,
            Some(CheckedRollback::Own) => Some(self.build_action(step, run_id, outputs)?),
            Some(CheckedRollback::Action { action, params }) => {
                Some(self.build(action, params, "rollback.params", step, run_id, outputs)?)
            }
        })
    }

    fn build(
        &self,
        action: &str,
        params: &Value,
        prefix: &str,
        step: &CheckedStep,
        run_id: &str,
        outputs: &BTreeMap<String, ActionOutput>,
    ) -> Result<Arc<dyn Action>> {
        let vars = self.scope_vars(run_id);
        let scope = Scope {
            vars: &vars,
            outputs: Some(outputs),
        };
        let resolved =
            scope
                .substitute(params, prefix)
                .map_err(|(key, reason)| Error::InvalidConfig {
                    key: format!("step.{}.{key}", step.name),
                    reason,
                })?;
        self.registry.build(action, &resolved)
    }

    /// Touches the world for every step, in order, changing nothing
    /// ([`Action::preflight`], at most `limit` each): a step whose
    /// parameters use an earlier step's output is not checked, since they
    /// are known only when that step has run.
    pub async fn preflight(&self, limit: Duration) -> Vec<StepPreflight> {
        let scope = Scope {
            vars: &self.variables,
            outputs: None,
        };
        let mut out = Vec::new();
        for step in self.ordered() {
            let mut refs = Vec::new();
            vars::references(&step.params, "params", &mut refs);
            let needs: BTreeSet<&str> = refs
                .iter()
                .filter_map(|(_, r)| match r {
                    Ok(Ref::Step { step, .. }) => Some(step.as_str()),
                    _ => None,
                })
                .collect();
            let outcome = if !needs.is_empty() {
                Ok(Preflight::NotChecked(format!(
                    "its parameters use the output of {}",
                    needs.into_iter().collect::<Vec<_>>().join(", ")
                )))
            } else {
                match scope
                    .substitute(&step.params, "params")
                    .map_err(|(path, e)| format!("{path}: {e}"))
                    .and_then(|params| {
                        self.registry
                            .build(&step.action, &params)
                            .map_err(|e| crate::error_chain(&e))
                    }) {
                    Err(e) => Err(e),
                    Ok(action) => match tokio::time::timeout(limit, action.preflight()).await {
                        Ok(Ok(p)) => Ok(p),
                        Ok(Err(e)) => Err(crate::error_chain(&e)),
                        Err(_) => Err(format!("no answer within {limit:?}")),
                    },
                }
            };
            out.push(StepPreflight {
                step: step.name.clone(),
                action: step.action.clone(),
                outcome,
            });
        }
        out
    }

    /// The plan as a step list for `plan check` and `--dry-run`: what each
    /// step would do, in order.
    pub fn preview(&self) -> PlanPreview {
        PlanPreview {
            plan: self.spec.name.clone(),
            description: self.spec.description.clone(),
            rto_secs: self.rto.map(|d| d.as_secs_f64()),
            variables: self.variables(),
            steps: self.ordered().cloned().collect(),
        }
    }
}

/// What a plan would do, step by step, in run order (serialisable for `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct PlanPreview {
    /// Plan name.
    pub plan: String,
    /// Plan description.
    pub description: Option<String>,
    /// RTO in seconds.
    pub rto_secs: Option<f64>,
    /// Resolved variables (secrets masked).
    pub variables: BTreeMap<String, String>,
    /// Steps in run order.
    pub steps: Vec<CheckedStep>,
}

impl PlanPreview {
    /// The preview as plain text, one block per step.
    pub fn to_text(&self) -> String {
        let mut out = format!("plan {}", self.plan);
        if let Some(rto) = self.rto_secs {
            out.push_str(&format!(
                " (RTO {})",
                humantime::format_duration(Duration::from_secs_f64(rto))
            ));
        }
        out.push('\n');
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!("{:>3}. {} [{}]", i + 1, s.name, s.action));
            if !s.after.is_empty() {
                out.push_str(&format!(" after {}", s.after.join(", ")));
            }
            out.push_str(&format!(
                "  timeout {}",
                humantime::format_duration(s.timeout)
            ));
            if s.retries > 0 {
                out.push_str(&format!(", {} retries", s.retries));
            }
            if s.on_failure == OnFailure::Continue {
                out.push_str(", continue on failure");
            }
            out.push('\n');
            for line in s.description.lines() {
                out.push_str(&format!("       {line}\n"));
            }
            if let Some(rb) = &s.rollback_description {
                out.push_str(&format!("       rollback: {rb}\n"));
            }
        }
        out
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<CheckedPlan>();
    f::<StepSpec>();
}
