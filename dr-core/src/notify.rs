//! Notifications of job outcomes (feature `notify`): a webhook taking
//! Slack-compatible JSON, and email over SMTP (the `lettre` crate, rustls),
//! behind a [`RateLimiter`] so a failing job does not flood anyone.
//!
//! - Webhook: `POST` of a JSON object whose `text` field is the message, as
//!   Slack incoming webhooks take it (<https://api.slack.com/messaging/webhooks>);
//!   with `format = "json"` the object also carries the event's fields
//!   (`job`, `source`, `outcome`, `at`, `detail`, `suppressed`). The URL of a
//!   Slack webhook is a credential: it is read from the config or a file and
//!   never logged, nor kept in errors.
//! - Email: one plain-text message per event, over SMTP with STARTTLS (port
//!   587, the default), implicit TLS (465, RFC 8314) or, on loopback only
//!   sensibly, none. The password is read from a file.
//!
//! ```toml
//! [agent.notify]
//! on_success = false
//! min_interval = "30m"
//! [agent.notify.webhook]
//! url_file = "/run/secrets/slack-webhook"
//! [agent.notify.email]
//! host = "smtp.example.com"
//! from = "dr-agent <dr@example.com>"
//! to = ["oncall@example.com"]
//! username = "dr"
//! password_file = "/run/secrets/smtp-password"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Errors of notifications.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// A configuration value is wrong.
    #[error("invalid configuration {key}: {reason}")]
    InvalidConfig {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The webhook could not be reached (its URL is left out: it is a secret).
    #[error("webhook is unavailable")]
    WebhookUnavailable(#[source] reqwest::Error),
    /// The webhook answered with an error status.
    #[error("webhook answered HTTP {status}")]
    WebhookStatus {
        /// The HTTP status.
        status: u16,
    },
    /// The email could not be built (an address is malformed).
    #[error("building the email failed")]
    Email(#[source] lettre::error::Error),
    /// The SMTP server refused or could not be reached.
    #[error("sending email through {host} failed")]
    Smtp {
        /// The SMTP host.
        host: String,
        /// The cause.
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

impl From<NotifyError> for crate::Error {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::InvalidConfig { key, reason } => {
                crate::Error::InvalidConfig { key, reason }
            }
            NotifyError::WebhookUnavailable(_) => crate::Error::Unavailable {
                what: "webhook".into(),
                source: Box::new(e),
            },
            NotifyError::Smtp {
                ref host,
                ref source,
            } if source.is_transient() || source.is_timeout() => crate::Error::Unavailable {
                what: format!("SMTP server {host}"),
                source: Box::new(e),
            },
            other => crate::Error::Failed {
                what: "notification".into(),
                source: Box::new(other),
            },
        }
    }
}

fn default_min_interval() -> Duration {
    Duration::from_secs(30 * 60)
}

/// `[agent.notify]`: where to send notifications, and how often at most.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Notify of successes too (default: failures only).
    #[serde(default)]
    pub on_success: bool,
    /// At most one notification per job, source and outcome in this
    /// interval (default 30 minutes); the ones held back are counted in the
    /// next.
    #[serde(
        default = "default_min_interval",
        with = "crate::serde_duration::human"
    )]
    pub min_interval: Duration,
    /// `[agent.notify.webhook]`.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// `[agent.notify.email]`.
    #[serde(default)]
    pub email: Option<EmailConfig>,
}

/// The body a webhook gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFormat {
    /// `{"text": "..."}`, as Slack incoming webhooks take it.
    #[default]
    Slack,
    /// `text` plus the event's fields.
    Json,
}

/// `[agent.notify.webhook]`: one of `url` and `url_file`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL (a credential for Slack: prefer `url_file`).
    #[serde(default)]
    pub url: Option<SecretString>,
    /// A file holding the URL.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// The body format.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Request timeout (default 10 s).
    #[serde(default, with = "crate::serde_duration::human_option")]
    pub timeout: Option<Duration>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
            .field("url_file", &self.url_file)
            .field("format", &self.format)
            .finish()
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// STARTTLS on the submission port (587), required.
    #[default]
    Starttls,
    /// Implicit TLS (465).
    Tls,
    /// Plain text (a local relay on loopback).
    None,
}

/// `[agent.notify.email]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host name.
    pub host: String,
    /// Port (default 587 for STARTTLS, 465 for TLS, 25 for none).
    #[serde(default)]
    pub port: Option<u16>,
    /// Transport security.
    #[serde(default)]
    pub tls: SmtpTls,
    /// Sender (`"dr-agent <dr@example.com>"`).
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// SMTP user; with `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the SMTP password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Connection timeout (default 30 s).
    #[serde(default, with = "crate::serde_duration::human_option")]
    pub timeout: Option<Duration>,
}

/// Whether a job run succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It failed.
    Failure,
}

/// One job outcome to tell people about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The job: `backup`, `verify`, `prune`.
    pub job: String,
    /// The source, for per-source jobs.
    pub source: Option<String>,
    /// Success or failure.
    pub outcome: Outcome,
    /// When the run ended.
    pub at: DateTime<Utc>,
    /// What happened: the backup id, or the error with its causes.
    pub detail: String,
}

impl Event {
    /// A one-line summary (the email subject, the first line of the text).
    pub fn summary(&self) -> String {
        let what = match &self.source {
            Some(s) => format!("{} of {s}", self.job),
            None => self.job.clone(),
        };
        match self.outcome {
            Outcome::Success => format!("dr: {what} succeeded"),
            Outcome::Failure => format!("dr: {what} FAILED"),
        }
    }

    /// The message text; `suppressed` notes the events the rate limit held back.
    pub fn text(&self, suppressed: u64) -> String {
        let mut t = format!(
            "{}\n{}\nat {}",
            self.summary(),
            self.detail,
            self.at.to_rfc3339()
        );
        if suppressed > 0 {
            t.push_str(&format!(
                "\n({suppressed} similar notification(s) held back by the rate limit)"
            ));
        }
        t
    }
}

/// What [`RateLimiter::admit`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it; `suppressed` similar events were held back since the last one sent.
    Send {
        /// Events held back since the last sent.
        suppressed: u64,
    },
    /// Hold it back.
    Suppress,
}

type LimitKey = (String, Option<String>, Outcome);

/// At most one notification per (job, source, outcome) per interval. Pure:
/// the caller passes the time.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    interval: Duration,
    /// Per (job, source, outcome): when one was last sent, how many held back since.
    state: BTreeMap<LimitKey, (DateTime<Utc>, u64)>,
}

impl RateLimiter {
    /// A limiter allowing one notification per key per `interval`.
    pub fn new(interval: Duration) -> Self {
        RateLimiter {
            interval,
            state: BTreeMap::new(),
        }
    }

    /// Whether `event` may be sent at `now`.
    pub fn admit(&mut self, event: &Event, now: DateTime<Utc>) -> Admission {
        let key = (event.job.clone(), event.source.clone(), event.outcome);
        let interval = chrono::Duration::from_std(self.interval).unwrap_or(chrono::Duration::MAX);
        match self.state.get_mut(&key) {
            Some((last, held)) if now < *last + interval => {
                *held += 1;
                Admission::Suppress
            }
            Some((last, held)) => {
                let suppressed = std::mem::take(held);
                *last = now;
                Admission::Send { suppressed }
            }
            None => {
                self.state.insert(key, (now, 0));
                Admission::Send { suppressed: 0 }
            }
        }
    }
}

/// The channels a [`Notifier`] sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The webhook.
    Webhook,
    /// Email.
    Email,
}

struct Webhook {
    client: reqwest::Client,
    url: SecretString,
    format: WebhookFormat,
}

struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    host: String,
    from: Mailbox,
    to: Vec<Mailbox>,
}

/// Sends [`Event`]s to the configured channels, through the rate limit.
pub struct Notifier {
    on_success: bool,
    limiter: std::sync::Mutex<RateLimiter>,
    webhook: Option<Webhook>,
    email: Option<Email>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("on_success", &self.on_success)
            .field("webhook", &self.webhook.is_some())
            .field("email", &self.email.as_ref().map(|e| &e.host))
            .finish()
    }
}

fn read_secret(key: &str, path: &Path) -> Result<SecretString, NotifyError> {
    let text = std::fs::read_to_string(path).map_err(|e| NotifyError::InvalidConfig {
        key: key.into(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return Err(NotifyError::InvalidConfig {
            key: key.into(),
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(SecretString::from(text.to_string()))
}

fn mailbox(key: &str, s: &str) -> Result<Mailbox, NotifyError> {
    s.parse().map_err(|e| NotifyError::InvalidConfig {
        key: key.into(),
        reason: format!("{s:?} is not an email address: {e}"),
    })
}

impl Notifier {
    /// Builds the channels of `config`: reads secret files, parses
    /// addresses, checks the URL. Nothing is sent.
    ///
    /// # Errors
    /// [`NotifyError::InvalidConfig`] naming the key that is wrong.
    pub fn new(config: &NotifyConfig) -> Result<Self, NotifyError> {
        let webhook = config.webhook.as_ref().map(Self::webhook).transpose()?;
        let email = config.email.as_ref().map(Self::email).transpose()?;
        Ok(Notifier {
            on_success: config.on_success,
            limiter: std::sync::Mutex::new(RateLimiter::new(config.min_interval)),
            webhook,
            email,
        })
    }

    fn webhook(c: &WebhookConfig) -> Result<Webhook, NotifyError> {
        const KEY: &str = "agent.notify.webhook";
        let url = match (&c.url, &c.url_file) {
            (Some(u), None) => u.clone(),
            (None, Some(f)) => read_secret("agent.notify.webhook.url_file", f)?,
            _ => {
                return Err(NotifyError::InvalidConfig {
                    key: KEY.into(),
                    reason: "set exactly one of url and url_file".into(),
                })
            }
        };
        match reqwest::Url::parse(url.expose_secret()) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
            // The URL itself is not repeated: it is a credential.
            _ => {
                return Err(NotifyError::InvalidConfig {
                    key: format!("{KEY}.url"),
                    reason: "not an http(s) URL".into(),
                })
            }
        }
        let client = reqwest::Client::builder()
            .timeout(c.timeout.unwrap_or(Duration::from_secs(10)))
            .build()
            .map_err(|e| NotifyError::InvalidConfig {
                key: KEY.into(),
                reason: e.without_url().to_string(),
            })?;
        Ok(Webhook {
            client,
            url,
            format: c.format,
        })
    }

    fn email(c: &EmailConfig) -> Result<Email, NotifyError> {
        const KEY: &str = "agent.notify.email";
        let from = mailbox(&format!("{KEY}.from"), &c.from)?;
        if c.to.is_empty() {
            return Err(NotifyError::InvalidConfig {
                key: format!("{KEY}.to"),
                reason: "no recipient".into(),
            });
        }
        let to =
            c.to.iter()
                .map(|t| mailbox(&format!("{KEY}.to"), t))
                .collect::<Result<Vec<_>, _>>()?;
        let smtp_err = |e: lettre::transport::smtp::Error| NotifyError::InvalidConfig {
            key: format!("{KEY}.host"),
            reason: e.to_string(),
        };
        let builder = match c.tls {
            SmtpTls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host).map_err(smtp_err)?
            }
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host).map_err(smtp_err)?
            }
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host).port(25)
            }
        };
        let mut builder = builder.timeout(Some(c.timeout.unwrap_or(Duration::from_secs(30))));
        if let Some(p) = c.port {
            builder = builder.port(p);
        }
        match (&c.username, &c.password_file) {
            (Some(u), Some(p)) => {
                let password = read_secret(&format!("{KEY}.password_file"), p)?;
                builder = builder.credentials(Credentials::new(
                    u.clone(),
                    password.expose_secret().to_string(),
                ));
            }
            (None, None) => {}
            _ => {
                return Err(NotifyError::InvalidConfig {
                    key: KEY.into(),
                    reason: "username and password_file go together".into(),
                })
            }
        }
        Ok(Email {
            transport: builder.build(),
            host: c.host.clone(),
            from,
            to,
        })
    }

    /// Sends `event` to every channel unless it is a success and successes
    /// are not wanted, or the rate limit holds it back. Returns what each
    /// channel did (empty when nothing was sent). A channel failing does not
    /// stop the others.
    pub async fn notify(
        &self,
        event: &Event,
        now: DateTime<Utc>,
    ) -> Vec<(Channel, Result<(), NotifyError>)> {
        if event.outcome == Outcome::Success && !self.on_success {
            return Vec::new();
        }
        let admission = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(event, now);
        let Admission::Send { suppressed } = admission else {
            tracing::info!(job = %event.job, source = ?event.source, "notification held back by the rate limit");
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(w) = &self.webhook {
            out.push((Channel::Webhook, send_webhook(w, event, suppressed).await));
        }
        if let Some(e) = &self.email {
            out.push((Channel::Email, send_email(e, event, suppressed).await));
        }
        out
    }
}

async fn send_webhook(w: &Webhook, event: &Event, suppressed: u64) -> Result<(), NotifyError> {
    let text = event.text(suppressed);
    let body = match w.format {
        WebhookFormat::Slack => serde_json::json!({ "text": text }),
        WebhookFormat::Json => serde_json::json!({
            "text": text,
            "job": event.job,
            "source": event.source,
            "outcome": event.outcome,
            "at": event.at,
            "detail": event.detail,
            "suppressed": suppressed,
        }),
    };
    let response = w
        .client
        .post(w.url.expose_secret())
        .json(&body)
        .send()
        .await
        .map_err(|e| NotifyError::WebhookUnavailable(e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(NotifyError::WebhookStatus {
            status: status.as_u16(),
        });
    }
    Ok(())
}

async fn send_email(e: &Email, event: &Event, suppressed: u64) -> Result<(), NotifyError> {
    let mut builder = Message::builder()
        .from(e.from.clone())
        .subject(event.summary());
    for to in &e.to {
        builder = builder.to(to.clone());
    }
    let message = builder
        .header(ContentType::TEXT_PLAIN)
        .body(event.text(suppressed))
        .map_err(NotifyError::Email)?;
    e.transport
        .send(message)
        .await
        .map_err(|source| NotifyError::Smtp {
            host: e.host.clone(),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(outcome: Outcome, at: DateTime<Utc>) -> Event {
        Event {
            job: "backup".into(),
            source: Some("app-db".into()),
            outcome,
            at,
            detail: "connection refused".into(),
        }
    }

    #[test]
    fn rate_limit_holds_back_and_counts() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let min = |m: i64| t0 + chrono::Duration::minutes(m);
        let mut l = RateLimiter::new(Duration::from_secs(30 * 60));
        let fail = event(Outcome::Failure, t0);
        assert_eq!(l.admit(&fail, min(0)), Admission::Send { suppressed: 0 });
        assert_eq!(l.admit(&fail, min(10)), Admission::Suppress);
        assert_eq!(l.admit(&fail, min(29)), Admission::Suppress);
        // Another source, or another outcome, has its own budget.
        let mut other = fail.clone();
        other.source = Some("vault".into());
        assert_eq!(l.admit(&other, min(10)), Admission::Send { suppressed: 0 });
        assert_eq!(
            l.admit(&event(Outcome::Success, t0), min(10)),
            Admission::Send { suppressed: 0 }
        );
        assert_eq!(l.admit(&fail, min(30)), Admission::Send { suppressed: 2 });
        assert_eq!(l.admit(&fail, min(31)), Admission::Suppress);
    }

    #[test]
    fn text_is_slack_friendly_and_counts_held_back() {
        let e = event(Outcome::Failure, DateTime::from_timestamp(0, 0).unwrap());
        assert_eq!(e.summary(), "dr: backup of app-db FAILED");
        let t = e.text(3);
        assert!(
            t.contains("connection refused") && t.contains("3 similar"),
            "{t}"
        );
    }

    #[test]
    fn config_errors_name_the_key_and_hide_the_url() {
        let c: NotifyConfig =
            toml::from_str("[webhook]\nurl = \"hooks.example/T0/SECRET\"\n").unwrap();
        let e = Notifier::new(&c).unwrap_err().to_string();
        assert!(
            e.contains("agent.notify.webhook.url") && !e.contains("SECRET"),
            "{e}"
        );
        assert!(format!("{:?}", c.webhook.unwrap()).contains("redacted"));
        let c: NotifyConfig = toml::from_str("[webhook]\n").unwrap();
        assert!(Notifier::new(&c)
            .unwrap_err()
            .to_string()
            .contains("exactly one"));
        let c: NotifyConfig =
            toml::from_str("[email]\nhost = \"h\"\nfrom = \"not an address\"\nto = [\"a@b.c\"]\n")
                .unwrap();
        assert!(Notifier::new(&c)
            .unwrap_err()
            .to_string()
            .contains("agent.notify.email.from"));
        let c: NotifyConfig =
            toml::from_str("[email]\nhost = \"h\"\nfrom = \"a@b.c\"\nto = []\n").unwrap();
        assert!(Notifier::new(&c)
            .unwrap_err()
            .to_string()
            .contains("agent.notify.email.to"));
        assert!(toml::from_str::<NotifyConfig>("min_intervall = \"1m\"").is_err());
        let c: NotifyConfig = toml::from_str("").unwrap();
        assert_eq!(c.min_interval, Duration::from_secs(1800));
    }
}
