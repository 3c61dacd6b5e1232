//! Exit codes (documented in README.md):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | verification failed (a digest, a decryption, a row count) |
//! | 2 | usage or configuration error (bad flag, config key, key file, URL) |
//! | 3 | any other failure (server, tool, store unreachable) |

use dr_core::ErrorKind;

/// Success.
pub const EXIT_OK: i32 = 0;
/// A verification found the backup wrong.
pub const EXIT_VERIFY_FAILED: i32 = 1;
/// Bad usage or configuration.
pub const EXIT_USAGE: i32 = 2;
/// Any other failure.
pub const EXIT_FAILED: i32 = 3;

/// Marks an error as a usage or configuration error; shows as the error it
/// wraps.
#[derive(Debug)]
pub struct Usage(anyhow::Error);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Usage {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Usage {
    /// A usage error with a message.
    pub fn msg(m: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Usage(anyhow::anyhow!(m.into())))
    }

    /// Marks `e` as a usage error (keeping its chain).
    pub fn wrap(e: impl Into<anyhow::Error>) -> anyhow::Error {
        anyhow::Error::new(Usage(e.into()))
    }

    /// Marks a storage error as usage when it is about keys or names.
    pub fn wrap_storage(e: dr_storage::Error) -> anyhow::Error {
        match dr_core::storage_error_kind(&e) {
            ErrorKind::Usage => Self::wrap(e),
            _ => e.into(),
        }
    }
}

/// The exit code for an error: the first classifiable error in the chain.
pub fn code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.is::<Usage>() {
            return EXIT_USAGE;
        }
        let kind = if let Some(c) = cause.downcast_ref::<dr_ops::Error>() {
            Some(c.kind())
        } else if let Some(c) = cause.downcast_ref::<dr_core::Error>() {
            Some(c.kind())
        } else {
            cause
                .downcast_ref::<dr_storage::Error>()
                .map(dr_core::storage_error_kind)
        };
        match kind {
            Some(ErrorKind::Usage) => return EXIT_USAGE,
            Some(ErrorKind::VerificationFailed) => return EXIT_VERIFY_FAILED,
            Some(_) => return EXIT_FAILED,
            None => {}
        }
    }
    EXIT_FAILED
}

/// The error and its causes, `: `-separated, each cause once
/// ([`dr_core::error_chain`]).
pub fn message(e: &anyhow::Error) -> String {
    dr_core::error_chain(&**e)
}

/// Whether the error is a write to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_first_classified_cause() {
        let usage = anyhow::Error::new(dr_ops::Error::usage("no target")).context("restore");
        assert_eq!(code(&usage), EXIT_USAGE);
        let verify = anyhow::Error::new(dr_ops::Error::from(dr_core::Error::VerificationFailed {
            what: "a".into(),
            reason: "b".into(),
        }));
        assert_eq!(code(&verify), EXIT_VERIFY_FAILED);
        assert_eq!(code(&anyhow::anyhow!("other")), EXIT_FAILED);
        assert_eq!(code(&Usage::msg("bad")), EXIT_USAGE);
        assert_eq!(
            message(&anyhow::anyhow!("inner").context("outer")),
            "outer: inner"
        );
    }
}
