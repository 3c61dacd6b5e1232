//! The `dns.failover` plan step.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dr_core::dns::{DnsProvider, WaitOptions};
use dr_core::plan::{Action, ActionContext, ActionOutput, ActionRegistry, Preflight};
use dr_core::{Error, Result};

use crate::failover::{failover, rollback, FailoverOptions, FailoverReport, FailoverSpec};

/// The name of the failover step.
pub const FAILOVER_ACTION: &str = "dns.failover";

/// Adds `dns.failover` to `registry`, switching records on `provider`.
///
/// Parameters: a [`FailoverSpec`] (unknown keys are errors). The step's
/// output state is the [`FailoverReport`]; its rollback restores the recorded
/// value.
pub fn register(registry: &mut ActionRegistry, provider: Arc<dyn DnsProvider>) {
    registry.register_typed::<FailoverSpec, _>(FAILOVER_ACTION, move |spec| {
        spec.validate()?;
        Ok(Arc::new(DnsFailover {
            provider: provider.clone(),
            spec,
        }) as Arc<dyn Action>)
    });
}

/// `dns.failover`: switches one record set to its DR values, waits for sync,
/// confirms; rollback switches it back.
#[derive(Debug)]
pub struct DnsFailover {
    provider: Arc<dyn DnsProvider>,
    spec: FailoverSpec,
}

impl DnsFailover {
    /// The step for `spec` on `provider`.
    pub fn new(provider: Arc<dyn DnsProvider>, spec: FailoverSpec) -> Self {
        DnsFailover { provider, spec }
    }
}

#[async_trait]
impl Action for DnsFailover {
    fn name(&self) -> &'static str {
        FAILOVER_ACTION
    }

    /// Reads the record set from the provider (credentials, zone, name),
    /// changing nothing.
    async fn preflight(&self) -> Result<Preflight> {
        let key = self.spec.key()?;
        Ok(Preflight::Reached(match self.provider.get(&key).await? {
            Some(set) if set.values.is_empty() => format!(
                "{} {} on {} is an alias",
                key.name, key.rtype, self.provider
            ),
            Some(set) => format!(
                "{} {} on {} is now {}",
                key.name,
                key.rtype,
                self.provider,
                set.values.join(",")
            ),
            None => format!(
                "{} on {} answers; {} {} does not exist yet",
                self.provider, key.name, key.name, key.rtype
            ),
        }))
    }

    fn describe(&self) -> String {
        let from = match &self.spec.from {
            Some(f) => format!(" from {}", f.join(",")),
            None => String::new(),
        };
        format!(
            "switch DNS {} {}{from} to {} on {} (wait up to {}{})",
            self.spec.name.trim_end_matches('.'),
            self.spec.rtype,
            self.spec.to.join(","),
            self.provider,
            humantime::format_duration(self.spec.wait_timeout),
            if self.spec.confirm {
                ", then confirm"
            } else {
                ""
            },
        )
    }

    async fn run(&self, ctx: &ActionContext) -> Result<ActionOutput> {
        let mut options = FailoverOptions::default().rto_left(
            ctx.rto_left_secs
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
        );
        options.checkpoint = ctx.checkpoint.clone();
        options.deadline = ctx.deadline;
        let report = failover(self.provider.as_ref(), &self.spec, &options).await?;
        output_of(&report)
    }

    fn has_rollback(&self) -> bool {
        true
    }

    async fn rollback(&self, _ctx: &ActionContext, output: &ActionOutput) -> Result<ActionOutput> {
        let report: FailoverReport =
            serde_json::from_value(output.state.clone()).map_err(|e| Error::InvalidConfig {
                key: "state".into(),
                reason: format!(
                    "the recorded output of {FAILOVER_ACTION} is not a failover report: {e}"
                ),
            })?;
        let wait = WaitOptions::new(self.spec.poll_interval, self.spec.wait_timeout);
        let back = rollback(self.provider.as_ref(), &report, &wait).await?;
        output_of(&back)
    }
}

fn output_of(report: &FailoverReport) -> Result<ActionOutput> {
    let state = serde_json::to_value(report)
        .map_err(|e| Error::failed("serialising the DNS report", e.to_string()))?;
    let mut log = String::new();
    for w in &report.warnings {
        log.push_str("warning: ");
        log.push_str(w);
        log.push('\n');
    }
    Ok(ActionOutput {
        summary: format!("DNS {}", report.summary()),
        state,
        log,
    })
}
