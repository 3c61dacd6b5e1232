//! A small Vault HTTP API client: the endpoints `dr` needs, with standby
//! redirects, namespaces, TLS settings and token renewal.
//!
//! Standbys answer `307 Temporary Redirect` to the active node
//! (<https://developer.hashicorp.com/vault/docs/concepts/ha#client-redirection>);
//! the client follows such redirects itself, re-creating the request body,
//! so a restore's stream is sent again from its start to the active node.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::header::{HeaderValue, LOCATION};
use reqwest::{Method, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::auth::{AuthResponse, Credentials, TokenState};
use crate::config::VaultConfig;
use crate::error::{Result, VaultError};

/// How many `307`s one request follows.
const MAX_REDIRECTS: usize = 5;

/// A request body that can be made again (for a redirect or a new token).
pub(crate) type BodyFn<'a> = dyn Fn() -> BoxFuture<'a, Result<reqwest::Body>> + Send + Sync + 'a;

/// A client for one Vault (or OpenBao) cluster.
///
/// Cheap to clone; clones share the token.
#[derive(Clone)]
pub struct VaultClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    address: Url,
    namespace: Option<String>,
    credentials: Credentials,
    token: tokio::sync::Mutex<Option<TokenState>>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("address", &self.inner.address.as_str())
            .field("namespace", &self.inner.namespace)
            .field("auth", &self.inner.credentials.method())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address_str())?;
        if let Some(ns) = &self.inner.namespace {
            write!(f, " (namespace {ns})")?;
        }
        Ok(())
    }
}

/// `GET sys/health` (<https://openbao.org/api-docs/system/health/>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Health {
    /// Whether the cluster is initialized.
    pub initialized: bool,
    /// Whether this node is sealed.
    pub sealed: bool,
    /// Whether this node is a standby.
    pub standby: bool,
    /// The cluster id (absent while sealed); a restore brings back the
    /// snapshot's cluster id.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The cluster name (absent while sealed).
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// The server version.
    #[serde(default)]
    pub version: Option<String>,
}

impl Health {
    /// Initialized, unsealed and the active node.
    pub fn is_active(&self) -> bool {
        self.initialized && !self.sealed && !self.standby
    }

    /// Initialized and unsealed: the active node or a standby.
    pub fn is_serving(&self) -> bool {
        self.initialized && !self.sealed
    }
}

/// `GET sys/seal-status` (<https://openbao.org/api-docs/system/seal-status/>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SealStatus {
    /// Whether the node is sealed.
    pub sealed: bool,
    /// Whether the cluster is initialized.
    pub initialized: bool,
    /// Unseal key shares needed.
    #[serde(default)]
    pub t: u32,
    /// Unseal key shares given so far.
    #[serde(default)]
    pub progress: u32,
    /// `shamir`, or an auto-unseal type.
    #[serde(default, rename = "type")]
    pub seal_type: Option<String>,
}

/// `GET sys/leader` (<https://openbao.org/api-docs/system/leader/>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Leader {
    /// Whether HA is enabled.
    #[serde(default)]
    pub ha_enabled: bool,
    /// Whether the node asked is the leader.
    #[serde(default)]
    pub is_self: bool,
    /// The leader's API address; empty without a leader.
    #[serde(default)]
    pub leader_address: String,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

impl VaultClient {
    /// A client for `config`. Reads the CA certificate file now; logs in on
    /// first use.
    ///
    /// # Errors
    /// [`VaultError::InvalidConfig`] for a bad address, a missing token, an
    /// unreadable or invalid CA file.
    pub fn new(config: &VaultConfig) -> Result<Self> {
        config.validate()?;
        let address = config.address_url()?;
        let credentials = Credentials::from_config(config)?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("dr-vault/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca).map_err(|source| VaultError::File {
                what: "CA certificate file",
                path: ca.display().to_string(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                VaultError::InvalidConfig {
                    key: "VAULT_CACERT".into(),
                    reason: format!("{} holds no usable PEM certificate: {e}", ca.display()),
                }
            })?;
            if certs.is_empty() {
                return Err(VaultError::InvalidConfig {
                    key: "VAULT_CACERT".into(),
                    reason: format!("{} holds no PEM certificate", ca.display()),
                });
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if config.skip_verify {
            tracing::warn!("TLS certificate verification of Vault is disabled (VAULT_SKIP_VERIFY)");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| VaultError::InvalidConfig {
            key: "vault".into(),
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        let initial = match &credentials {
            Credentials::Static(t) => Some(TokenState::without_lease(t.clone())),
            _ => None,
        };
        Ok(VaultClient {
            inner: Arc::new(Inner {
                http,
                address,
                namespace: config.namespace.clone(),
                credentials,
                token: tokio::sync::Mutex::new(initial),
            }),
        })
    }

    /// The API address, without trailing slash.
    pub fn address_str(&self) -> &str {
        self.inner.address.as_str().trim_end_matches('/')
    }

    /// The namespace sent with every request.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace.as_deref()
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.inner
            .address
            .join(&format!("v1/{path}"))
            .map_err(|e| VaultError::InvalidConfig {
                key: "vault.address".into(),
                reason: format!("cannot form the URL of {path}: {e}"),
            })
    }

    /// A valid token: obtained on first use, renewed or obtained again when
    /// two thirds of its lease have passed.
    async fn token(&self) -> Result<SecretString> {
        let mut slot = self.inner.token.lock().await;
        if let Some(state) = slot.as_ref() {
            if !state.needs_renewal(Instant::now()) {
                return Ok(state.token.clone());
            }
            let state = state.clone();
            let renewed = if state.renewable {
                match self.renew(&state).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::info!(error = %e, "token renewal failed; logging in again");
                        None
                    }
                }
            } else {
                None
            };
            let next = match renewed {
                Some(s) => s,
                None => self.obtain().await?,
            };
            *slot = Some(next.clone());
            return Ok(next.token);
        }
        let next = self.obtain().await?;
        *slot = Some(next.clone());
        Ok(next.token)
    }

    /// Forgets `refused` so that the next [`VaultClient::token`] obtains a new one.
    async fn invalidate(&self, refused: &SecretString) {
        let mut slot = self.inner.token.lock().await;
        if slot
            .as_ref()
            .is_some_and(|s| s.token.expose_secret() == refused.expose_secret())
        {
            *slot = None;
        }
    }

    async fn obtain(&self) -> Result<TokenState> {
        let creds = &self.inner.credentials;
        if let Credentials::TokenFile(path) = creds {
            let t = crate::auth::read_secret_file("token file", path)?;
            return Ok(TokenState::without_lease(t));
        }
        if let Credentials::Static(t) = creds {
            return Ok(TokenState::without_lease(t.clone()));
        }
        let (path, body) = creds
            .login_request()?
            .expect("login methods have a request");
        let body = serde_json::to_vec(&body).expect("JSON");
        let make = move || -> BoxFuture<'static, Result<reqwest::Body>> {
            let b = body.clone();
            Box::pin(async move { Ok(reqwest::Body::from(b)) })
        };
        let resp = self
            .send_raw(Method::POST, &path, None, Some(&make))
            .await
            .map_err(|e| match e {
                VaultError::Api { status, errors, .. }
                    if status == 400 || status == 403 || status == 401 =>
                {
                    VaultError::Auth {
                        method: creds.method().into(),
                        reason: errors.join("; "),
                    }
                }
                other => other,
            })?;
        let state = parse_auth(&format!("POST {path}"), resp).await?;
        tracing::info!(
            method = creds.method(),
            ttl_secs = state.ttl.map(|d| d.as_secs()),
            "logged in to Vault"
        );
        Ok(state)
    }

    async fn renew(&self, state: &TokenState) -> Result<TokenState> {
        let resp = self
            .send_raw(
                Method::POST,
                "auth/token/renew-self",
                Some(&state.token),
                None,
            )
            .await?;
        let renewed = parse_auth("POST auth/token/renew-self", resp).await?;
        tracing::info!(
            ttl_secs = renewed.ttl.map(|d| d.as_secs()),
            "Vault token renewed"
        );
        Ok(renewed)
    }

    /// Sends an authenticated request, following standby redirects and
    /// obtaining a new token once when the server refuses the current one.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&BodyFn<'_>>,
    ) -> Result<Response> {
        let mut refused_once = false;
        loop {
            let token = self.token().await?;
            match self
                .send_raw(method.clone(), path, Some(&token), body)
                .await
            {
                Err(VaultError::Api { status, .. })
                    if (status == 403 || status == 401)
                        && !refused_once
                        && self.inner.credentials.can_reobtain() =>
                {
                    refused_once = true;
                    tracing::info!(
                        method = self.inner.credentials.method(),
                        "Vault refused the token (expired or revoked); obtaining a new one"
                    );
                    self.invalidate(&token).await;
                }
                other => return other,
            }
        }
    }

    /// Sends an unauthenticated request, following standby redirects.
    pub(crate) async fn send_anonymous(
        &self,
        method: Method,
        path: &str,
        body: Option<&BodyFn<'_>>,
    ) -> Result<Response> {
        self.send_raw(method, path, None, body).await
    }

    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&SecretString>,
        body: Option<&BodyFn<'_>>,
    ) -> Result<Response> {
        let what = format!("{method} {path}");
        let mut url = self.url(path)?;
        for _hop in 0..=MAX_REDIRECTS {
            let mut req = self.inner.http.request(method.clone(), url.clone());
            if let Some(t) = token {
                let mut v = HeaderValue::from_str(t.expose_secret()).map_err(|_| {
                    VaultError::InvalidConfig {
                        key: "token".into(),
                        reason: "the token holds characters not allowed in an HTTP header".into(),
                    }
                })?;
                v.set_sensitive(true);
                req = req.header("X-Vault-Token", v);
            }
            if let Some(ns) = &self.inner.namespace {
                req = req.header("X-Vault-Namespace", ns.as_str());
            }
            if let Some(b) = body {
                req = req.body(b().await?);
            }
            let resp = req.send().await.map_err(|source| VaultError::Http {
                what: what.clone(),
                source,
            })?;
            let status = resp.status();
            if status == StatusCode::TEMPORARY_REDIRECT || status == StatusCode::PERMANENT_REDIRECT
            {
                let loc = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| VaultError::Response {
                        what: what.clone(),
                        reason: format!("{status} without a Location header"),
                    })?;
                let next = url.join(loc).map_err(|e| VaultError::Response {
                    what: what.clone(),
                    reason: format!("{status} with an invalid Location: {e}"),
                })?;
                tracing::info!(from = %origin(&url), to = %origin(&next), "standby redirected to the active node; following");
                url = next;
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            return Err(self.api_error(what, &url, resp).await);
        }
        Err(VaultError::TooManyRedirects {
            what,
            hops: MAX_REDIRECTS,
        })
    }

    async fn api_error(&self, what: String, url: &Url, resp: Response) -> VaultError {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let errors = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.errors)
            .unwrap_or_else(|_| {
                let t: String = text.chars().take(200).collect();
                if t.trim().is_empty() {
                    Vec::new()
                } else {
                    vec![t]
                }
            });
        if status == 503 {
            let joined = errors.join("; ");
            if joined.contains("sealed") {
                return VaultError::Sealed {
                    address: origin(url),
                    hint: "unseal it with its unseal keys (`bao operator unseal` / `vault operator unseal`), then retry"
                        .into(),
                };
            }
            return VaultError::NoLeader {
                address: origin(url),
                reason: if joined.is_empty() {
                    "503 Service Unavailable".into()
                } else {
                    joined
                },
            };
        }
        VaultError::Api {
            what,
            status,
            errors,
        }
    }

    /// `GET sys/health`, with every node state answered as 200 so that the
    /// body tells it.
    ///
    /// # Errors
    /// Transport errors; [`VaultError::Response`] for a body that is not a
    /// health document (a node in the middle of a restore).
    pub async fn health(&self) -> Result<Health> {
        let path = "sys/health?standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200&drsecondarycode=200&performancestandbycode=200";
        let resp = self.send_anonymous(Method::GET, path, None).await?;
        json(
            &format!("GET {}", path.split('?').next().unwrap_or(path)),
            resp,
        )
        .await
    }

    /// `GET sys/seal-status`.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn seal_status(&self) -> Result<SealStatus> {
        let resp = self
            .send_anonymous(Method::GET, "sys/seal-status", None)
            .await?;
        json("GET sys/seal-status", resp).await
    }

    /// `GET sys/leader`.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn leader(&self) -> Result<Leader> {
        let resp = self.send_anonymous(Method::GET, "sys/leader", None).await?;
        json("GET sys/leader", resp).await
    }

    /// `PUT sys/unseal` with one key share (<https://openbao.org/api-docs/system/unseal/>).
    ///
    /// # Errors
    /// Transport and API errors (a wrong key is a 400).
    pub async fn unseal(&self, key: &SecretString) -> Result<SealStatus> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "key": key.expose_secret() })).expect("JSON");
        let make = move || -> BoxFuture<'static, Result<reqwest::Body>> {
            let b = body.clone();
            Box::pin(async move { Ok(reqwest::Body::from(b)) })
        };
        let resp = self
            .send_anonymous(Method::PUT, "sys/unseal", Some(&make))
            .await?;
        json("PUT sys/unseal", resp).await
    }

    /// An authenticated `POST` of `body` to `path` (below `/v1/`) returning
    /// its JSON.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let body = serde_json::to_vec(body).expect("JSON");
        let make = move || -> BoxFuture<'static, Result<reqwest::Body>> {
            let b = body.clone();
            Box::pin(async move { Ok(reqwest::Body::from(b)) })
        };
        let resp = self.send(Method::POST, path, Some(&make)).await?;
        json(&format!("POST {path}"), resp).await
    }

    /// An authenticated `GET` of `path` (below `/v1/`) returning its JSON.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let resp = self.send(Method::GET, path, None).await?;
        json(&format!("GET {path}"), resp).await
    }
}

/// `scheme://host:port` of a URL, for logs and errors.
pub(crate) fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

async fn json<T: for<'de> Deserialize<'de>>(what: &str, resp: Response) -> Result<T> {
    let bytes = resp.bytes().await.map_err(|source| VaultError::Http {
        what: what.into(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| VaultError::Response {
        what: what.into(),
        reason: e.to_string(),
    })
}

async fn parse_auth(what: &str, resp: Response) -> Result<TokenState> {
    let body: AuthResponse = json(what, resp).await?;
    body.auth
        .map(|a| a.into_state())
        .ok_or_else(|| VaultError::Response {
            what: what.into(),
            reason: "no auth block in the response".into(),
        })
}
