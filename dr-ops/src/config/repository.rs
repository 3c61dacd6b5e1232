//! Repository selection and keys from the command line or the environment,
//! over `[repository]`.

use std::path::PathBuf;

use dr_storage::RepositorySettings;

/// Repository selection and keys given outside the file: flags, or the
/// `DR_REPO`, `DR_IDENTITY_FILE`, `DR_PASSPHRASE_FILE` variables. With the
/// `clap` feature a command line flattens it (`#[command(flatten)]`).
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct RepositoryArgs {
    /// Repository: a path, file://, s3://bucket/prefix, gs://, az:// (default ./dr-repo).
    #[cfg_attr(feature = "clap", arg(long, env = "DR_REPO", value_name = "URL"))]
    pub repo: Option<String>,
    /// Age identity file for reading backup data.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "DR_IDENTITY_FILE", value_name = "FILE")
    )]
    pub identity: Option<PathBuf>,
    /// File holding the repository passphrase (or set DR_PASSPHRASE).
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "DR_PASSPHRASE_FILE", value_name = "FILE")
    )]
    pub passphrase_file: Option<PathBuf>,
}

impl RepositoryArgs {
    /// Arguments that select `repo` (a URL or path) and nothing else.
    pub fn with_repo(repo: impl Into<String>) -> Self {
        RepositoryArgs {
            repo: Some(repo.into()),
            ..Default::default()
        }
    }

    /// With `identity` as the identity file.
    pub fn identity(mut self, identity: impl Into<PathBuf>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// The `[repository]` settings of the file with these applied over
    /// them: flags > environment > file.
    pub fn apply(&self, file: &RepositorySettings) -> RepositorySettings {
        let mut s = file.clone();
        if let Some(r) = &self.repo {
            s.url = Some(r.clone());
        }
        if let Some(i) = &self.identity {
            s.identity_file = Some(i.clone());
        }
        if let Some(p) = &self.passphrase_file {
            s.passphrase_file = Some(p.clone());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let file = RepositorySettings {
            url: Some("/file".into()),
            identity_file: Some("/file.key".into()),
            ..Default::default()
        };
        let s = RepositoryArgs::with_repo("/flag").apply(&file);
        assert_eq!(s.url.as_deref(), Some("/flag"));
        assert_eq!(s.identity_file, Some(PathBuf::from("/file.key")));
        let s = RepositoryArgs::default().identity("/k").apply(&file);
        assert_eq!(s.url.as_deref(), Some("/file"));
        assert_eq!(s.identity_file, Some(PathBuf::from("/k")));
    }
}
