//! `approve`: a human decision point ("promote the DR database?").
//!
//! - Changes nothing; no rollback needed.
//! - Approved by `--yes` ([`ActionContext::assume_yes`]) or by the run's
//!   [`Approver`](crate::plan::Approver) (a terminal prompt, an approval file).
//!   With neither, the step fails with a configuration error, so automation
//!   never hangs on a question nobody can answer.
//! - A refusal fails the step with [`Error::PermissionDenied`].

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::plan::{Action, ActionContext, ActionOutput, ActionRegistry, ApprovalRequest};

const NAME: &str = "approve";

/// Parameters of `approve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveParams {
    /// The question.
    pub prompt: String,
}

/// The `approve` action.
#[derive(Debug, Clone)]
pub struct Approve {
    prompt: String,
}

impl Approve {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with key `approve.prompt` for an empty prompt.
    pub fn new(params: ApproveParams) -> Result<Self> {
        if params.prompt.trim().is_empty() {
            return Err(Error::InvalidConfig {
                key: format!("{NAME}.prompt"),
                reason: "say what is being approved".into(),
            });
        }
        Ok(Approve {
            prompt: params.prompt,
        })
    }
}

pub(super) fn register(registry: &mut ActionRegistry) {
    registry.register_typed(NAME, |p: ApproveParams| {
        Ok(Arc::new(Approve::new(p)?) as Arc<dyn Action>)
    });
}

#[async_trait]
impl Action for Approve {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> String {
        format!("ask for approval: {}", self.prompt)
    }

    async fn run(&self, ctx: &ActionContext) -> Result<ActionOutput> {
        if ctx.assume_yes {
            return Ok(ActionOutput::summary("approved in advance (--yes)"));
        }
        let Some(approver) = &ctx.approver else {
            return Err(Error::InvalidConfig {
                key: format!("step.{}", ctx.step),
                reason: "this step needs an approval: run on a terminal, pass --yes, or give an approval file".into(),
            });
        };
        let request = ApprovalRequest {
            run_id: ctx.run_id.clone(),
            step: ctx.step.clone(),
            prompt: self.prompt.clone(),
        };
        if approver.approve(&request).await? {
            Ok(ActionOutput::summary(format!("approved: {}", self.prompt)))
        } else {
            Err(Error::PermissionDenied {
                what: format!("step {}", ctx.step),
                reason: "approval refused".into(),
            })
        }
    }
}
