//! `postgres.sql_check`: queries that must return `true` or an expected
//! value (the runbook's `verify.sql`).
//!
//! - Changes nothing: every query runs in a `READ ONLY` transaction, so a
//!   check cannot write even by mistake. No rollback needed; idempotent.
//! - A query returns one row of one column; the value is compared as JSON
//!   (`row_to_json`, so booleans, numbers and text compare by type; numbers
//!   numerically). All checks run; the step fails with every failure listed.

use std::sync::Arc;

use async_trait::async_trait;
use dr_core::plan::{Action, ActionContext, ActionOutput, ActionRegistry};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::PlanError;
use crate::ConnectionSettings;

/// The action name.
pub const SQL_CHECK: &str = "postgres.sql_check";

/// One check.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheckItem {
    /// What it proves, for the report.
    pub name: String,
    /// A query returning one row with one column.
    pub query: String,
    /// The expected value (default `true`).
    #[serde(default)]
    pub expect: Option<Value>,
}

/// Parameters of `postgres.sql_check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheckParams {
    /// The database (a DSN without password).
    pub dsn: String,
    /// The checks.
    pub checks: Vec<SqlCheckItem>,
}

/// The `postgres.sql_check` action.
#[derive(Debug, Clone)]
pub struct SqlCheck {
    settings: ConnectionSettings,
    checks: Vec<SqlCheckItem>,
}

impl SqlCheck {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`PlanError::InvalidParam`] for a bad DSN, no checks, an empty query.
    pub fn new(p: SqlCheckParams) -> Result<Self, PlanError> {
        let invalid = |key: &str, reason: String| PlanError::InvalidParam {
            key: format!("{SQL_CHECK}.{key}"),
            reason,
        };
        let settings = ConnectionSettings::from_dsn(super::privileges::check_time_dsn(&p.dsn))
            .map_err(|e| invalid("dsn", e.to_string()))?;
        if p.checks.is_empty() {
            return Err(invalid("checks", "give at least one check".into()));
        }
        for (i, c) in p.checks.iter().enumerate() {
            if c.query.trim().trim_end_matches(';').trim().is_empty() {
                return Err(invalid(&format!("checks[{i}].query"), "empty query".into()));
            }
            if c.expect
                .as_ref()
                .is_some_and(|v| v.is_object() || v.is_array())
            {
                return Err(invalid(
                    &format!("checks[{i}].expect"),
                    "expect a boolean, number or string".into(),
                ));
            }
        }
        Ok(SqlCheck {
            settings,
            checks: p.checks,
        })
    }
}

pub(super) fn register(registry: &mut ActionRegistry) {
    registry.register_typed(SQL_CHECK, |p: SqlCheckParams| {
        Ok(Arc::new(SqlCheck::new(p)?) as Arc<dyn Action>)
    });
}

fn same(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        // A numeric column may be compared with a string written in the plan.
        (Value::String(a), Value::Number(b)) | (Value::Number(b), Value::String(a)) => {
            a.parse::<f64>().ok() == b.as_f64()
        }
        (a, b) => a == b,
    }
}

#[async_trait]
impl Action for SqlCheck {
    fn name(&self) -> &'static str {
        SQL_CHECK
    }

    fn describe(&self) -> String {
        let names: Vec<_> = self.checks.iter().map(|c| c.name.as_str()).collect();
        format!(
            "run {} read-only check(s) on {}: {}",
            self.checks.len(),
            self.settings.target(),
            names.join("; ")
        )
    }

    /// Connects with the step's settings (address, credentials, database).
    async fn preflight(&self) -> dr_core::Result<dr_core::plan::Preflight> {
        super::reach(&self.settings).await
    }

    async fn run(&self, _ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let target = self.settings.target();
        let mut client = self.settings.connect().await.map_err(PlanError::from)?;
        let mut results = Vec::new();
        let mut failures = Vec::new();
        for c in &self.checks {
            let expected = c.expect.clone().unwrap_or(Value::Bool(true));
            let query = c.query.trim().trim_end_matches(';');
            let tx = client
                .build_transaction()
                .read_only(true)
                .start()
                .await
                .map_err(|e| PlanError::query("BEGIN READ ONLY", &target, e))?;
            let sql = format!("SELECT row_to_json(q)::text FROM ({query}\n) AS q LIMIT 2");
            let outcome = match tx.query(&sql, &[]).await {
                Err(e) => Err(match e.as_db_error() {
                    Some(db) => format!("the query failed: {}", db.message()),
                    None => {
                        return Err(
                            PlanError::query(format!("check {:?}", c.name), &target, e).into()
                        )
                    }
                }),
                Ok(rows) if rows.is_empty() => Err("the query returned no row".to_string()),
                Ok(rows) if rows.len() > 1 => {
                    Err("the query returned more than one row".to_string())
                }
                Ok(rows) => {
                    let text: String = rows[0].get(0);
                    let obj: serde_json::Map<String, Value> =
                        serde_json::from_str(&text).unwrap_or_default();
                    if obj.len() != 1 {
                        Err(format!(
                            "the query returned {} columns; it must return one",
                            obj.len()
                        ))
                    } else {
                        let got = obj
                            .into_iter()
                            .next()
                            .map(|(_, v)| v)
                            .unwrap_or(Value::Null);
                        if same(&expected, &got) {
                            Ok(got)
                        } else {
                            Err(format!("returned {got}, expected {expected}"))
                        }
                    }
                }
            };
            // Read-only: nothing to keep.
            let _ = tx.rollback().await;
            match outcome {
                Ok(got) => {
                    results.push(serde_json::json!({ "name": c.name, "value": got, "ok": true }))
                }
                Err(why) => {
                    tracing::warn!(check = %c.name, reason = %why, "SQL check failed");
                    results.push(serde_json::json!({ "name": c.name, "error": why, "ok": false }));
                    failures.push(format!("{}: {why}", c.name));
                }
            }
        }
        if !failures.is_empty() {
            return Err(PlanError::CheckFailed {
                failed: failures.len(),
                total: self.checks.len(),
                target,
                details: failures.join("; "),
            }
            .into());
        }
        Ok(ActionOutput {
            summary: format!("{} check(s) passed on {target}", self.checks.len()),
            state: serde_json::json!({ "target": target, "results": results }),
            log: String::new(),
        })
    }
}
