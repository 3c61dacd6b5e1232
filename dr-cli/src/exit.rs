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
        let kind = if let Some(c) = cause.downcast_ref::<dr_core::Error>() {
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

/// The error and its causes, `: `-separated as anyhow's `{:#}` prints them,
/// leaving out a cause whose text the message already holds: some errors
/// (object_store's among them) print their source inside their own text,
/// which made one permission error read three times.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
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

    /// An error that prints its source inside its own text.
    #[derive(Debug)]
    struct Echoing {
        source: std::io::Error,
    }

    impl std::fmt::Display for Echoing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Unable to create dir /r/wal: {}", self.source)
        }
    }

    impl std::error::Error for Echoing {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = anyhow::Error::new(Echoing { source: io }).context("wal-push");
        assert_eq!(
            message(&e),
            "wal-push: Unable to create dir /r/wal: permission denied"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(message(&plain), "outer: inner");
    }
}
