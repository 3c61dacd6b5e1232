//! Where the Vault server is and how to log in: the `[vault]` table of
//! `dr.toml`, and the environment variables every Vault user knows.
//!
//! The variables follow the Vault CLI
//! (<https://developer.hashicorp.com/vault/docs/commands#configure-environment-variables>):
//! `VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_NAMESPACE`, `VAULT_CACERT`,
//! `VAULT_SKIP_VERIFY`. A token is never part of the file: it comes from
//! `VAULT_TOKEN`, from a token file, or from a login (AppRole, Kubernetes).

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Result, VaultError};

/// The Vault CLI's default address.
pub const DEFAULT_ADDRESS: &str = "https://127.0.0.1:8200";

/// The path where Kubernetes mounts a pod's service-account token.
pub const DEFAULT_K8S_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How to reach and log in to one Vault (or OpenBao) cluster.
///
/// ```
/// let cfg: dr_vault::VaultConfig = toml::from_str(r#"
///     address = "https://vault.internal:8200"
///     ca_cert = "/etc/dr/vault-ca.pem"
///     [auth]
///     method = "approle"
///     role_id_file = "/etc/dr/role-id"
///     secret_id_file = "/etc/dr/secret-id"
/// "#).unwrap();
/// assert_eq!(cfg.address.as_deref(), Some("https://vault.internal:8200"));
/// ```
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VaultConfig {
    /// The API address (`VAULT_ADDR`), default [`DEFAULT_ADDRESS`].
    #[serde(default)]
    pub address: Option<String>,
    /// The namespace sent as `X-Vault-Namespace` (`VAULT_NAMESPACE`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// A PEM file of CA certificates to trust (`VAULT_CACERT`).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Skip TLS certificate verification (`VAULT_SKIP_VERIFY`); for tests only.
    #[serde(default)]
    pub skip_verify: bool,
    /// How to obtain a token.
    #[serde(default)]
    pub auth: AuthConfig,
    /// A token given programmatically (tests, an embedding service); never
    /// read from or written to a file.
    #[serde(skip)]
    pub token: Option<SecretString>,
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultConfig")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("ca_cert", &self.ca_cert)
            .field("skip_verify", &self.skip_verify)
            .field("auth", &self.auth)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// How `dr` obtains its Vault token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum AuthConfig {
    /// The token in `VAULT_TOKEN` (or [`VaultConfig::token`]). It is used as
    /// it is: not renewed.
    #[default]
    Token,
    /// A file holding the token (a Vault Agent sink, a mounted secret). It is
    /// read again when the server refuses the token, so a rotated file is picked up.
    TokenFile {
        /// The file.
        path: PathBuf,
    },
    /// AppRole login (<https://openbao.org/api-docs/auth/approle/#login-with-approle>)
    /// with the role id and secret id read from files.
    #[serde(rename = "approle")]
    AppRole {
        /// The file holding the role id.
        role_id_file: PathBuf,
        /// The file holding the secret id.
        secret_id_file: PathBuf,
        /// The auth mount, default `approle`.
        #[serde(default)]
        mount: Option<String>,
    },
    /// Kubernetes login (<https://openbao.org/api-docs/auth/kubernetes/#login>)
    /// with the pod's service-account JWT.
    Kubernetes {
        /// The Vault role.
        role: String,
        /// The JWT file, default [`DEFAULT_K8S_JWT_FILE`].
        #[serde(default)]
        jwt_file: Option<PathBuf>,
        /// The auth mount, default `kubernetes`.
        #[serde(default)]
        mount: Option<String>,
    },
}

impl VaultConfig {
    /// A configuration from the environment alone (`VAULT_ADDR`, `VAULT_TOKEN`,
    /// `VAULT_NAMESPACE`, `VAULT_CACERT`, `VAULT_SKIP_VERIFY`).
    ///
    /// # Errors
    /// [`VaultError::InvalidConfig`] naming the variable when one cannot be used.
    pub fn from_env() -> Result<Self> {
        Self::default().with_env()
    }

    /// This configuration with the Vault environment variables that are set
    /// taking precedence, as the Vault CLI gives them precedence.
    ///
    /// # Errors
    /// [`VaultError::InvalidConfig`] naming the variable when one cannot be used.
    pub fn with_env(self) -> Result<Self> {
        self.with_lookup(|k| std::env::var(k).ok())
    }

    /// As [`VaultConfig::with_env`], reading variables through `lookup`.
    ///
    /// # Errors
    /// [`VaultError::InvalidConfig`] naming the variable when one cannot be used.
    pub fn with_lookup(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |k: &str| lookup(k).filter(|v| !v.is_empty());
        if let Some(a) = var("VAULT_ADDR") {
            self.address = Some(a);
        }
        if let Some(n) = var("VAULT_NAMESPACE") {
            self.namespace = Some(n);
        }
        if let Some(c) = var("VAULT_CACERT") {
            self.ca_cert = Some(PathBuf::from(c));
        }
        if let Some(s) = var("VAULT_SKIP_VERIFY") {
            self.skip_verify = parse_bool(&s).ok_or_else(|| VaultError::InvalidConfig {
                key: "VAULT_SKIP_VERIFY".into(),
                reason: format!("{s:?} is not a boolean (true/false/1/0)"),
            })?;
        }
        if let Some(t) = var("VAULT_TOKEN") {
            self.token = Some(SecretString::from(t.trim().to_string()));
        }
        self.validate()?;
        Ok(self)
    }

    /// The configured address, parsed, or [`DEFAULT_ADDRESS`].
    ///
    /// # Errors
    /// [`VaultError::InvalidConfig`] for an address that is not an
    /// `http(s)://host[:port]` URL, or that carries credentials.
    pub fn address_url(&self) -> Result<Url> {
        let raw = self.address.as_deref().unwrap_or(DEFAULT_ADDRESS);
        let bad = |reason: &str| VaultError::InvalidConfig {
            key: "vault.address".into(),
            reason: reason.to_string(),
        };
        let mut url = Url::parse(raw).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not contain credentials; use the auth settings"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        Ok(url)
    }

    /// Checks what can be checked without a server.
    ///
    /// # Errors
    /// [`VaultError::InvalidConfig`] naming the key.
    pub fn validate(&self) -> Result<()> {
        self.address_url()?;
        if let Some(ns) = &self.namespace {
            if ns.trim_matches('/').is_empty() {
                return Err(VaultError::InvalidConfig {
                    key: "vault.namespace".into(),
                    reason: "is empty".into(),
                });
            }
        }
        let mount_ok = |m: &Option<String>, key: &str| -> Result<()> {
            match m {
                Some(m) if m.trim_matches('/').is_empty() || m.contains("..") => {
                    Err(VaultError::InvalidConfig {
                        key: key.into(),
                        reason: format!("{m:?} is not an auth mount path"),
                    })
                }
                _ => Ok(()),
            }
        };
        match &self.auth {
            AuthConfig::AppRole { mount, .. } => mount_ok(mount, "vault.auth.mount"),
            AuthConfig::Kubernetes { mount, role, .. } => {
                if role.is_empty() {
                    return Err(VaultError::InvalidConfig {
                        key: "vault.auth.role".into(),
                        reason: "is empty".into(),
                    });
                }
                mount_ok(mount, "vault.auth.mount")
            }
            AuthConfig::Token | AuthConfig::TokenFile { .. } => Ok(()),
        }
    }
}

/// Go's `strconv.ParseBool`, which the Vault CLI uses for `VAULT_SKIP_VERIFY`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |k| v.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone())
    }

    #[test]
    fn environment_overrides_the_file() {
        let cfg: VaultConfig =
            toml::from_str("address = \"https://file:8200\"\nnamespace = \"ops\"").unwrap();
        let cfg = cfg
            .with_lookup(env(&[
                ("VAULT_ADDR", "http://127.0.0.1:8200"),
                ("VAULT_TOKEN", "s.secret\n"),
                ("VAULT_CACERT", "/ca.pem"),
                ("VAULT_SKIP_VERIFY", "true"),
            ]))
            .unwrap();
        assert_eq!(cfg.address.as_deref(), Some("http://127.0.0.1:8200"));
        assert_eq!(cfg.namespace.as_deref(), Some("ops"));
        assert_eq!(cfg.ca_cert, Some(PathBuf::from("/ca.pem")));
        assert!(cfg.skip_verify);
        assert_eq!(cfg.token.as_ref().unwrap().expose_secret(), "s.secret");
        assert!(
            !format!("{cfg:?}").contains("s.secret"),
            "Debug never shows the token"
        );
    }

    #[test]
    fn bad_variables_are_named() {
        let err = VaultConfig::default()
            .with_lookup(env(&[("VAULT_SKIP_VERIFY", "maybe")]))
            .unwrap_err();
        assert!(
            matches!(err, VaultError::InvalidConfig { ref key, .. } if key == "VAULT_SKIP_VERIFY")
        );
        let err = VaultConfig::default()
            .with_lookup(env(&[("VAULT_ADDR", "ftp://x")]))
            .unwrap_err();
        assert!(matches!(err, VaultError::InvalidConfig { ref key, .. } if key == "vault.address"));
        let err = VaultConfig::default()
            .with_lookup(env(&[("VAULT_ADDR", "https://user:pw@vault:8200")]))
            .unwrap_err();
        assert!(!err.to_string().contains("pw"));
    }

    #[test]
    fn auth_methods_parse_and_typos_are_refused() {
        let cfg: VaultConfig =
            toml::from_str("[auth]\nmethod = \"kubernetes\"\nrole = \"dr\"\nmount = \"k8s-prod\"")
                .unwrap();
        assert_eq!(
            cfg.auth,
            AuthConfig::Kubernetes {
                role: "dr".into(),
                jwt_file: None,
                mount: Some("k8s-prod".into())
            }
        );
        let cfg: VaultConfig =
            toml::from_str("[auth]\nmethod = \"token_file\"\npath = \"/run/token\"").unwrap();
        assert_eq!(
            cfg.auth,
            AuthConfig::TokenFile {
                path: "/run/token".into()
            }
        );
        assert!(toml::from_str::<VaultConfig>("adress = \"x\"").is_err());
        assert!(toml::from_str::<VaultConfig>("[auth]\nmethod = \"approle\"\nrole_id_file = \"a\"\nsecret_id_file = \"b\"\nsecret_id = \"c\"").is_err());
        assert!(
            toml::from_str::<VaultConfig>("token = \"s.x\"").is_err(),
            "a token is never read from the file"
        );
    }

    #[test]
    fn address_gets_a_trailing_slash() {
        let cfg = VaultConfig {
            address: Some("http://127.0.0.1:8200".into()),
            ..Default::default()
        };
        assert_eq!(
            cfg.address_url()
                .unwrap()
                .join("v1/sys/health")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8200/v1/sys/health"
        );
    }
}
