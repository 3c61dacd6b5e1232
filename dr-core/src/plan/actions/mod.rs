//! The generic actions every front end has: `exec`, `wait`, `approve`, and
//! with the `http` feature `http.check` and `notify.webhook`.

mod approve;
mod exec;
#[cfg(feature = "http")]
mod http_check;
mod wait;
#[cfg(feature = "http")]
mod webhook;

pub use approve::{Approve, ApproveParams};
pub use exec::{Exec, ExecParams};
#[cfg(feature = "http")]
pub use http_check::{HttpCheck, HttpCheckParams};
pub use wait::{Wait, WaitParams};
#[cfg(feature = "http")]
pub use webhook::{Webhook, WebhookParams};

use super::ActionRegistry;

/// Adds the generic actions to `registry`: `exec`, `wait`, `approve`, and
/// with the `http` feature `http.check` and `notify.webhook`.
pub fn register(registry: &mut ActionRegistry) {
    exec::register(registry);
    wait::register(registry);
    approve::register(registry);
    #[cfg(feature = "http")]
    {
        http_check::register(registry);
        webhook::register(registry);
    }
}

/// A duration parameter (`"30s"`), parsed with the parameter named in the error.
pub(crate) fn param_duration(
    action: &str,
    key: &str,
    text: &str,
) -> crate::Result<std::time::Duration> {
    crate::serde_duration::parse(text).map_err(|reason| crate::Error::InvalidConfig {
        key: format!("{action}.{key}"),
        reason,
    })
}
