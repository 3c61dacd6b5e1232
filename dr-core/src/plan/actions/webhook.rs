//! `notify.webhook`: posts a JSON message to a webhook, Slack-compatible
//! (`{"text": "..."}` plus any extra fields).
//!
//! - Changes nothing in the platform; no rollback. Not idempotent: a retry may
//!   post the message twice, which is the better failure for a notification.
//! - The URL is a secret for most chat services: give it through `url_env`
//!   (an environment variable's name); only its host is ever shown.
//! - A 5xx or 429 answer is retryable ([`Error::Unavailable`]), another
//!   non-2xx is not.
//!   (Slack incoming webhooks: <https://api.slack.com/messaging/webhooks>.)

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::plan::{Action, ActionContext, ActionOutput, ActionRegistry};

const NAME: &str = "notify.webhook";

/// Parameters of `notify.webhook`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookParams {
    /// The webhook URL (prefer `url_env`).
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// The message (`text` of the JSON body).
    pub text: String,
    /// Other fields of the JSON body (`channel`, `blocks`, ...).
    #[serde(default)]
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// Limit of the request (default `"10s"`).
    #[serde(default)]
    pub request_timeout: Option<String>,
}

#[derive(Debug, Clone)]
enum Target {
    Url(reqwest::Url),
    Env(String),
}

/// The `notify.webhook` action.
#[derive(Debug, Clone)]
pub struct Webhook {
    target: Target,
    body: serde_json::Value,
    client: reqwest::Client,
}

fn parse_url(text: &str, key: &str) -> Result<reqwest::Url> {
    let url = reqwest::Url::parse(text).map_err(|e| Error::InvalidConfig {
        key: key.into(),
        reason: format!("not a URL: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidConfig {
            key: key.into(),
            reason: "the URL must be http:// or https://".into(),
        });
    }
    Ok(url)
}

impl Webhook {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the parameter: neither or both of
    /// `url` and `url_env`, a bad URL, `text` inside `payload`.
    pub fn new(p: WebhookParams) -> Result<Self> {
        let target = match (p.url, p.url_env) {
            (Some(u), None) => Target::Url(parse_url(&u, &format!("{NAME}.url"))?),
            (None, Some(var)) if !var.is_empty() => Target::Env(var),
            _ => {
                return Err(Error::InvalidConfig {
                    key: format!("{NAME}.url_env"),
                    reason: "give exactly one of url and url_env".into(),
                })
            }
        };
        if p.payload.contains_key("text") {
            return Err(Error::InvalidConfig {
                key: format!("{NAME}.payload"),
                reason: "the message goes in `text`, not in payload".into(),
            });
        }
        let mut body = p.payload;
        body.insert("text".into(), serde_json::Value::String(p.text));
        let request_timeout = super::param_duration(
            NAME,
            "request_timeout",
            p.request_timeout.as_deref().unwrap_or("10s"),
        )?;
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .build()
            .map_err(|e| Error::failed("building the HTTP client", e.to_string()))?;
        Ok(Webhook {
            target,
            body: serde_json::Value::Object(body),
            client,
        })
    }

    fn url(&self, ctx: &ActionContext) -> Result<reqwest::Url> {
        match &self.target {
            Target::Url(u) => Ok(u.clone()),
            Target::Env(var) => {
                let text = ctx.env_var(var).ok_or_else(|| Error::InvalidConfig {
                    key: var.clone(),
                    reason: "the webhook URL's environment variable is not set".into(),
                })?;
                parse_url(&text, var)
            }
        }
    }
}

pub(super) fn register(registry: &mut ActionRegistry) {
    registry.register_typed(NAME, |p: WebhookParams| {
        Ok(Arc::new(Webhook::new(p)?) as Arc<dyn Action>)
    });
}

#[async_trait]
impl Action for Webhook {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> String {
        let to = match &self.target {
            Target::Url(u) => u.host_str().unwrap_or("?").to_string(),
            Target::Env(v) => format!("the URL in ${v}"),
        };
        format!(
            "post to {to}: {}",
            self.body["text"].as_str().unwrap_or_default()
        )
    }

    async fn run(&self, ctx: &ActionContext) -> Result<ActionOutput> {
        let url = self.url(ctx)?;
        let host = url.host_str().unwrap_or("?").to_string();
        let what = format!("webhook at {host}");
        let resp = self
            .client
            .post(url)
            .json(&self.body)
            .send()
            .await
            .map_err(|e| Error::Unavailable {
                what: what.clone(),
                source: e.without_url().to_string().into(),
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(ActionOutput {
                summary: format!("posted to {host} ({})", status.as_u16()),
                state: serde_json::json!({ "status": status.as_u16() }),
                log: String::new(),
            });
        }
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let reason = format!("answered {}: {body}", status.as_u16());
        if status.is_server_error() || status.as_u16() == 429 {
            Err(Error::Unavailable {
                what,
                source: reason.into(),
            })
        } else {
            Err(Error::failed(what, reason))
        }
    }
}
