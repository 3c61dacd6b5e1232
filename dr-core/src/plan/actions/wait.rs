//! `wait`: waits for a duration (DNS TTLs to expire, caches to drain).
//!
//! - Changes nothing; no rollback needed. Idempotent.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::error::Result;
use crate::plan::{Action, ActionContext, ActionOutput, ActionRegistry};

const NAME: &str = "wait";

/// Parameters of `wait`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    /// How long (`"30s"`, `"5m"`).
    pub duration: String,
    /// Why, for the report.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The `wait` action.
#[derive(Debug, Clone)]
pub struct Wait {
    duration: Duration,
    reason: Option<String>,
}

impl Wait {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] with key `wait.duration` when it does not parse.
    pub fn new(params: WaitParams) -> Result<Self> {
        Ok(Wait {
            duration: super::param_duration(NAME, "duration", &params.duration)?,
            reason: params.reason,
        })
    }
}

pub(super) fn register(registry: &mut ActionRegistry) {
    registry.register_typed(NAME, |p: WaitParams| {
        Ok(Arc::new(Wait::new(p)?) as Arc<dyn Action>)
    });
}

#[async_trait]
impl Action for Wait {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> String {
        let d = humantime::format_duration(self.duration);
        match &self.reason {
            Some(r) => format!("wait {d} ({r})"),
            None => format!("wait {d}"),
        }
    }

    async fn run(&self, _ctx: &ActionContext) -> Result<ActionOutput> {
        tokio::time::sleep(self.duration).await;
        Ok(ActionOutput::summary(format!(
            "waited {}",
            humantime::format_duration(self.duration)
        )))
    }
}
