//! `http.check`: an HTTP request that must answer as expected, retried until
//! it does or the time is up (an application's health endpoint after a
//! failover).
//!
//! - Changes nothing (use a safe method); no rollback needed.
//! - Success: the status is one of `expect_status` (default 200) and, when
//!   `body_contains` is set, the body contains it.
//! - Header values can come from the environment (`headers_env`), so tokens
//!   stay out of the plan; the URL's query and user info are never shown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::plan::{Action, ActionContext, ActionOutput, ActionRegistry, Preflight};

const NAME: &str = "http.check";

/// One status or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One status.
    One(u16),
    /// Several.
    Many(Vec<u16>),
}

/// Parameters of `http.check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckParams {
    /// The URL.
    pub url: String,
    /// The method (default `GET`).
    #[serde(default)]
    pub method: Option<String>,
    /// Expected status(es), default 200.
    #[serde(default)]
    pub expect_status: Option<OneOrMany>,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request headers whose values are read from environment variables
    /// (`{ Authorization = "HEALTH_TOKEN" }`).
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// How long to keep trying (default `"30s"`; never past the step's timeout).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Pause between tries (default `"2s"`).
    #[serde(default)]
    pub interval: Option<String>,
    /// Limit of one request (default `"10s"`).
    #[serde(default)]
    pub request_timeout: Option<String>,
}

/// The `http.check` action.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    url: reqwest::Url,
    method: reqwest::Method,
    expect: Vec<u16>,
    body_contains: Option<String>,
    headers: BTreeMap<String, String>,
    headers_env: BTreeMap<String, String>,
    timeout: Duration,
    interval: Duration,
    client: reqwest::Client,
}

/// `url` without user info and query, for logs and errors.
pub(crate) fn redact_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.to_string()
}

impl HttpCheck {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the parameter (`http.check.url`, ...).
    pub fn new(p: HttpCheckParams) -> Result<Self> {
        let bad = |key: &str, reason: String| Error::InvalidConfig {
            key: format!("{NAME}.{key}"),
            reason,
        };
        let url = reqwest::Url::parse(&p.url).map_err(|e| bad("url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("url", "the URL must be http:// or https://".into()));
        }
        let method = p.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| bad("method", format!("{method:?} is not a method")))?;
        let expect = match p.expect_status {
            None => vec![200],
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) if !v.is_empty() => v,
            Some(OneOrMany::Many(_)) => {
                return Err(bad("expect_status", "give at least one status".into()))
            }
        };
        if let Some(s) = expect.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(bad("expect_status", format!("{s} is not an HTTP status")));
        }
        for name in p.headers.keys().chain(p.headers_env.keys()) {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad("headers", format!("{name:?} is not a header name")))?;
        }
        let timeout =
            super::param_duration(NAME, "timeout", p.timeout.as_deref().unwrap_or("30s"))?;
        let interval =
            super::param_duration(NAME, "interval", p.interval.as_deref().unwrap_or("2s"))?;
        let request_timeout = super::param_duration(
            NAME,
            "request_timeout",
            p.request_timeout.as_deref().unwrap_or("10s"),
        )?;
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .build()
            .map_err(|e| Error::failed("building the HTTP client", e.to_string()))?;
        Ok(HttpCheck {
            url,
            method,
            expect,
            body_contains: p.body_contains,
            headers: p.headers,
            headers_env: p.headers_env,
            timeout,
            interval,
            client,
        })
    }

    /// One request: `Ok(status)` when it is as expected, else why not and
    /// whether the server could not be reached.
    async fn once(&self, ctx: &ActionContext) -> std::result::Result<u16, (String, bool)> {
        let mut req = self.client.request(self.method.clone(), self.url.clone());
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        for (k, var) in &self.headers_env {
            let v = ctx.env_var(var).ok_or_else(|| {
                (
                    format!("environment variable {var} (header {k}) is not set"),
                    false,
                )
            })?;
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| (format!("request failed: {}", e.without_url()), true))?;
        let status = resp.status().as_u16();
        if !self.expect.contains(&status) {
            return Err((
                format!("status {status}, expected {:?}", self.expect),
                false,
            ));
        }
        if let Some(needle) = &self.body_contains {
            let body = resp
                .text()
                .await
                .map_err(|e| (format!("reading the body: {}", e.without_url()), true))?;
            if !body.contains(needle.as_str()) {
                return Err((
                    format!("status {status} but the body does not contain {needle:?}"),
                    false,
                ));
            }
        }
        Ok(status)
    }
}

pub(super) fn register(registry: &mut ActionRegistry) {
    registry.register_typed(NAME, |p: HttpCheckParams| {
        Ok(Arc::new(HttpCheck::new(p)?) as Arc<dyn Action>)
    });
}

#[async_trait]
impl Action for HttpCheck {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Resolves the URL's host and opens a TCP connection to it; sends no
    /// request (the service may rightly be down before the steps before
    /// this one have run: a failure here is information, not a verdict).
    async fn preflight(&self) -> Result<Preflight> {
        let host = self.url.host_str().unwrap_or_default().to_string();
        let port = self.url.port_or_known_default().unwrap_or(80);
        let what = format!("{host}:{port} (of {})", redact_url(&self.url));
        match tokio::net::TcpStream::connect((host.as_str(), port)).await {
            Ok(_) => Ok(Preflight::Reached(format!("{what} accepts connections"))),
            Err(e) => Err(Error::Unavailable {
                what,
                source: Box::new(e),
            }),
        }
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "{} {} until status {:?}",
            self.method,
            redact_url(&self.url),
            self.expect
        );
        if let Some(b) = &self.body_contains {
            s.push_str(&format!(" and body contains {b:?}"));
        }
        s.push_str(&format!(
            " (for up to {})",
            humantime::format_duration(self.timeout)
        ));
        s
    }

    async fn run(&self, ctx: &ActionContext) -> Result<ActionOutput> {
        let started = tokio::time::Instant::now();
        let mut until = started + self.timeout;
        if let Some(d) = ctx.deadline {
            until = until.min(d);
        }
        let mut tries = 0u32;
        loop {
            tries += 1;
            match self.once(ctx).await {
                Ok(status) => {
                    return Ok(ActionOutput {
                        summary: format!(
                            "{} {} answered {status} after {tries} tries",
                            self.method,
                            redact_url(&self.url)
                        ),
                        state: serde_json::json!({ "status": status, "tries": tries, "secs": started.elapsed().as_secs_f64() }),
                        log: String::new(),
                    })
                }
                Err((why, unreachable)) => {
                    let now = tokio::time::Instant::now();
                    if now + self.interval >= until {
                        let what = format!("{NAME} {}", redact_url(&self.url));
                        tracing::info!(tries, reason = %why, "http check gave up");
                        return Err(if unreachable {
                            Error::Unavailable {
                                what,
                                source: format!("{why} (after {tries} tries)").into(),
                            }
                        } else {
                            Error::VerificationFailed {
                                what,
                                reason: format!("{why} (after {tries} tries)"),
                            }
                        });
                    }
                    tracing::debug!(tries, reason = %why, "http check not yet satisfied");
                    tokio::time::sleep(self.interval).await;
                }
            }
        }
    }
}
