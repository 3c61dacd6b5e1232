//! Age keys: recipients that encrypt, identities that decrypt.
//!
//! Backups are encrypted to X25519 recipients (`age1...`). Only reading data
//! needs an identity (`AGE-SECRET-KEY-1...`), from an identity file in the
//! format `age-keygen` writes. A repository made with a passphrase keeps its own
//! X25519 identity in `dr-repo.json`, encrypted with the passphrase (age scrypt
//! with a pinned work factor), so backups never need the passphrase and reading
//! needs it once per run.

use std::path::Path;
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The scrypt work factor (log2 N) pinned for passphrase-protected repositories:
/// age's own default target of about one second on a current machine.
pub const SCRYPT_WORK_FACTOR: u8 = 18;

/// Public keys backups are encrypted to.
#[derive(Clone)]
pub struct Recipients(pub(crate) Vec<x25519::Recipient>);

impl Recipients {
    /// Parses `age1...` recipient strings.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] naming the first string that is not a recipient, or
    /// when the list is empty.
    pub fn parse<S: AsRef<str>>(keys: &[S]) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::InvalidKey {
                what: "recipients".into(),
                reason: "at least one age recipient (age1...) is needed".into(),
            });
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let key = key.as_ref().trim();
            out.push(
                x25519::Recipient::from_str(key).map_err(|e| Error::InvalidKey {
                    what: format!("recipient {key:?}"),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(Recipients(out))
    }

    /// The recipients as `age1...` strings.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|r| r.to_string()).collect()
    }

    /// Short fingerprints (first 16 hex digits of the SHA-256 of each recipient).
    pub fn fingerprints(&self) -> Vec<String> {
        self.0.iter().map(|r| fingerprint(&r.to_string())).collect()
    }
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.to_strings()).finish()
    }
}

/// The fingerprint of a recipient string.
pub fn fingerprint(recipient: &str) -> String {
    hex::encode(&Sha256::digest(recipient.as_bytes())[..8])
}

/// Private keys that decrypt backups. Never printed: `Debug` shows only
/// fingerprints of the matching recipients.
#[derive(Clone)]
pub struct Identities(pub(crate) Vec<x25519::Identity>);

impl Identities {
    /// Reads an identity file: one `AGE-SECRET-KEY-1...` per line, `#` comments.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::InvalidKey`] when it
    /// holds no identity or a malformed one (the line number is given, never
    /// the key).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("identity file {}", path.display()),
            source,
        })?;
        Self::parse(&text, &format!("identity file {}", path.display()))
    }

    /// Parses identities from text in identity-file format; `what` names the
    /// origin in errors.
    ///
    /// # Errors
    /// As [`Identities::from_file`].
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = x25519::Identity::from_str(line).map_err(|_| Error::InvalidKey {
                what: what.to_string(),
                reason: format!("line {} is not an age X25519 identity", n + 1),
            })?;
            out.push(id);
        }
        if out.is_empty() {
            return Err(Error::InvalidKey {
                what: what.to_string(),
                reason: "no AGE-SECRET-KEY-1... line".into(),
            });
        }
        Ok(Identities(out))
    }

    /// Makes a new random identity.
    pub fn generate() -> Self {
        Identities(vec![x25519::Identity::generate()])
    }

    /// The public recipients of these identities.
    pub fn recipients(&self) -> Recipients {
        Recipients(self.0.iter().map(|i| i.to_public()).collect())
    }

    /// The identity file text (with a creation comment and the public key).
    pub fn to_file_text(&self) -> SecretString {
        let mut text = String::new();
        for id in &self.0 {
            text.push_str(&format!(
                "# created: {}\n# public key: {}\n{}\n",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                id.to_public(),
                id.to_string().expose_secret()
            ));
        }
        SecretString::from(text)
    }

    pub(crate) fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0.iter().map(|i| i as &dyn age::Identity)
    }
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("recipients", &self.recipients().fingerprints())
            .finish()
    }
}

/// Encrypts a repository identity with a passphrase (age scrypt, work factor
/// [`SCRYPT_WORK_FACTOR`]); returns the age file as hex.
pub(crate) fn seal_with_passphrase(
    identity: &Identities,
    passphrase: &SecretString,
) -> Result<String> {
    use std::io::Write;
    let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
    recipient.set_work_factor(SCRYPT_WORK_FACTOR);
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| Error::InvalidKey {
                what: "passphrase".into(),
                reason: e.to_string(),
            })?;
    let mut out = Vec::new();
    let mut w = encryptor
        .wrap_output(&mut out)
        .map_err(|source| Error::Io {
            what: "passphrase key".into(),
            source,
        })?;
    let text = identity.to_file_text();
    w.write_all(text.expose_secret().as_bytes())
        .and_then(|_| w.finish().map(|_| ()))
        .map_err(|source| Error::Io {
            what: "passphrase key".into(),
            source,
        })?;
    Ok(hex::encode(out))
}

/// Opens a repository identity sealed by [`seal_with_passphrase`].
pub(crate) fn open_with_passphrase(
    sealed_hex: &str,
    passphrase: &SecretString,
) -> Result<Identities> {
    use std::io::Read;
    let what = "dr-repo.json passphrase_key";
    let bytes = hex::decode(sealed_hex).map_err(|e| Error::InvalidKey {
        what: what.into(),
        reason: e.to_string(),
    })?;
    let decryptor = age::Decryptor::new(&bytes[..]).map_err(|e| Error::InvalidKey {
        what: what.into(),
        reason: e.to_string(),
    })?;
    let mut identity = age::scrypt::Identity::new(passphrase.clone());
    identity.set_max_work_factor(SCRYPT_WORK_FACTOR);
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| Error::Decrypt {
            object: what.into(),
            reason: format!("wrong passphrase? ({e})"),
        })?;
    let mut text = String::new();
    reader
        .read_to_string(&mut text)
        .map_err(|source| Error::Io {
            what: what.into(),
            source,
        })?;
    Identities::parse(&text, what)
}

/// Reads a passphrase from a file (first line, trailing newline removed).
///
/// # Errors
/// [`Error::Io`] naming the file; [`Error::InvalidKey`] when it is empty.
pub fn read_passphrase_file(path: &Path) -> Result<SecretString> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("passphrase file {}", path.display()),
        source,
    })?;
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.is_empty() {
        return Err(Error::InvalidKey {
            what: format!("passphrase file {}", path.display()),
            reason: "empty".into(),
        });
    }
    Ok(SecretString::from(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_round_trip_and_errors() {
        let ids = Identities::generate();
        let text = ids.to_file_text();
        let back = Identities::parse(text.expose_secret(), "test").unwrap();
        assert_eq!(
            back.recipients().to_strings(),
            ids.recipients().to_strings()
        );
        let err = Identities::parse("# nothing\n", "f").unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }));
        let err = Identities::parse("AGE-SECRET-KEY-1BOGUS\n", "f").unwrap_err();
        assert!(err.to_string().contains("line 1"));
        assert!(!format!("{ids:?}").contains("AGE-SECRET-KEY"));
    }

    #[test]
    fn recipients_refuse_garbage() {
        assert!(Recipients::parse::<&str>(&[]).is_err());
        let err = Recipients::parse(&["age1nope"]).unwrap_err();
        assert!(err.to_string().contains("age1nope"));
    }
}
