//! The agent's jobs, typed.

use std::fmt;

/// One scheduled job of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Job {
    /// The backup of a source.
    Backup(String),
    /// `prune` over the whole repository.
    Prune,
    /// The verification of each scheduled source's newest backup.
    Verify,
}

impl Job {
    /// The job's kind, as the metrics and notifications name it
    /// (`backup`, `prune`, `verify`).
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Backup(_) => "backup",
            Job::Prune => "prune",
            Job::Verify => "verify",
        }
    }

    /// The source of a backup job.
    pub fn source(&self) -> Option<&str> {
        match self {
            Job::Backup(s) => Some(s),
            _ => None,
        }
    }
}

/// The scheduler's name of the job: `backup:NAME`, `prune`, `verify`.
impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Backup(s) => write!(f, "backup:{s}"),
            other => f.write_str(other.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kinds() {
        let b = Job::Backup("db".into());
        assert_eq!(b.to_string(), "backup:db");
        assert_eq!((b.kind(), b.source()), ("backup", Some("db")));
        assert_eq!(Job::Prune.to_string(), "prune");
        assert_eq!((Job::Verify.kind(), Job::Verify.source()), ("verify", None));
    }
}
