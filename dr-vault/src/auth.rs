//! Tokens: where they come from, when they are renewed or obtained again.
//!
//! - A static token (`VAULT_TOKEN`) is used as it is.
//! - A token file is read at first use and read again after the server
//!   refused the token (a Vault Agent rewrites its sink).
//! - AppRole and Kubernetes logins return a token with a lease; it is renewed
//!   (`auth/token/renew-self`) once two thirds of its TTL have passed, and
//!   obtained again by a new login when renewal fails, when it is not
//!   renewable, or when the server refuses it.
//!
//! Login endpoints: <https://openbao.org/api-docs/auth/approle/#login-with-approle>,
//! <https://openbao.org/api-docs/auth/kubernetes/#login>; renewal:
//! <https://openbao.org/api-docs/auth/token/#renew-a-token-self>.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{AuthConfig, VaultConfig, DEFAULT_K8S_JWT_FILE};
use crate::error::{Result, VaultError};

/// Where tokens come from.
#[derive(Debug, Clone)]
pub(crate) enum Credentials {
    Static(SecretString),
    TokenFile(PathBuf),
    AppRole {
        mount: String,
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
    },
    Kubernetes {
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
}

impl Credentials {
    pub(crate) fn from_config(cfg: &VaultConfig) -> Result<Self> {
        Ok(match &cfg.auth {
            AuthConfig::Token => match &cfg.token {
                Some(t) if !t.expose_secret().is_empty() => Credentials::Static(t.clone()),
                _ => {
                    return Err(VaultError::InvalidConfig {
                        key: "VAULT_TOKEN".into(),
                        reason: "no token: set VAULT_TOKEN or choose another vault.auth method"
                            .into(),
                    })
                }
            },
            AuthConfig::TokenFile { path } => Credentials::TokenFile(path.clone()),
            AuthConfig::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            } => Credentials::AppRole {
                mount: mount.clone().unwrap_or_else(|| "approle".into()),
                role_id_file: role_id_file.clone(),
                secret_id_file: secret_id_file.clone(),
            },
            AuthConfig::Kubernetes {
                role,
                jwt_file,
                mount,
            } => Credentials::Kubernetes {
                mount: mount.clone().unwrap_or_else(|| "kubernetes".into()),
                role: role.clone(),
                jwt_file: jwt_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_K8S_JWT_FILE)),
            },
        })
    }

    /// The method's name for logs and errors.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Credentials::Static(_) => "token",
            Credentials::TokenFile(_) => "token file",
            Credentials::AppRole { .. } => "approle",
            Credentials::Kubernetes { .. } => "kubernetes",
        }
    }

    /// Whether a refused token can be replaced by another one.
    pub(crate) fn can_reobtain(&self) -> bool {
        !matches!(self, Credentials::Static(_))
    }

    /// The login request (`auth/<mount>/login` and its JSON body), or `None`
    /// for token sources without a login.
    pub(crate) fn login_request(&self) -> Result<Option<(String, serde_json::Value)>> {
        Ok(match self {
            Credentials::Static(_) | Credentials::TokenFile(_) => None,
            Credentials::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                let role_id = read_secret_file("AppRole role id file", role_id_file)?;
                let secret_id = read_secret_file("AppRole secret id file", secret_id_file)?;
                Some((
                    format!("auth/{}/login", mount.trim_matches('/')),
                    serde_json::json!({
                        "role_id": role_id.expose_secret(),
                        "secret_id": secret_id.expose_secret(),
                    }),
                ))
            }
            Credentials::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = read_secret_file("Kubernetes service-account token file", jwt_file)?;
                Some((
                    format!("auth/{}/login", mount.trim_matches('/')),
                    serde_json::json!({ "role": role, "jwt": jwt.expose_secret() }),
                ))
            }
        })
    }
}

/// Reads a file holding one secret, trimmed; an empty file is an error.
pub(crate) fn read_secret_file(what: &'static str, path: &Path) -> Result<SecretString> {
    let text = std::fs::read_to_string(path).map_err(|source| VaultError::File {
        what,
        path: path.display().to_string(),
        source,
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(VaultError::InvalidConfig {
            key: path.display().to_string(),
            reason: format!("the {what} is empty"),
        });
    }
    Ok(SecretString::from(trimmed.to_string()))
}

/// A token in use and what is known of its lease.
#[derive(Debug, Clone)]
pub(crate) struct TokenState {
    pub(crate) token: SecretString,
    pub(crate) obtained: Instant,
    /// `None`: no lease known (static token, token file, root token).
    pub(crate) ttl: Option<Duration>,
    pub(crate) renewable: bool,
}

impl TokenState {
    pub(crate) fn without_lease(token: SecretString) -> Self {
        TokenState {
            token,
            obtained: Instant::now(),
            ttl: None,
            renewable: false,
        }
    }

    /// Whether two thirds of the lease have passed.
    pub(crate) fn needs_renewal(&self, now: Instant) -> bool {
        match self.ttl {
            Some(ttl) if !ttl.is_zero() => now.duration_since(self.obtained) >= ttl * 2 / 3,
            _ => false,
        }
    }
}

/// The `auth` block of a login or renewal response.
#[derive(Debug, Deserialize)]
pub(crate) struct AuthResponse {
    pub(crate) auth: Option<AuthBlock>,
}

/// <https://openbao.org/api-docs/auth/approle/#sample-response-8>
#[derive(Debug, Deserialize)]
pub(crate) struct AuthBlock {
    pub(crate) client_token: String,
    #[serde(default)]
    pub(crate) lease_duration: u64,
    #[serde(default)]
    pub(crate) renewable: bool,
}

impl AuthBlock {
    pub(crate) fn into_state(self) -> TokenState {
        TokenState {
            token: SecretString::from(self.client_token),
            obtained: Instant::now(),
            ttl: (self.lease_duration > 0).then(|| Duration::from_secs(self.lease_duration)),
            renewable: self.renewable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_after_two_thirds_of_the_ttl() {
        let t0 = Instant::now();
        let s = TokenState {
            token: SecretString::from("x".to_string()),
            obtained: t0,
            ttl: Some(Duration::from_secs(30)),
            renewable: true,
        };
        assert!(!s.needs_renewal(t0 + Duration::from_secs(19)));
        assert!(s.needs_renewal(t0 + Duration::from_secs(20)));
        assert!(
            !TokenState::without_lease(SecretString::from("x".to_string()))
                .needs_renewal(t0 + Duration::from_secs(1 << 20))
        );
    }

    #[test]
    fn empty_secret_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret-id");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            read_secret_file("AppRole secret id file", &p),
            Err(VaultError::InvalidConfig { .. })
        ));
        let missing = dir.path().join("nope");
        let err = read_secret_file("AppRole secret id file", &missing).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn a_token_auth_without_token_names_vault_token() {
        let err = Credentials::from_config(&VaultConfig::default()).unwrap_err();
        assert!(matches!(err, VaultError::InvalidConfig { ref key, .. } if key == "VAULT_TOKEN"));
    }
}
