//! The `dr.toml` section of a PostgreSQL source.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::conn::ConnectionSettings;
use crate::error::Result;
use crate::logical::PostgresLogical;

/// `[sources.NAME]` with `kind = "postgres"`:
///
/// ```toml
/// [sources.shop]
/// kind = "postgres"
/// dsn = "postgresql://backup@db.internal:5432/shop"   # or PG* variables
/// password_file = "/run/secrets/pg-backup"            # optional
/// globals = true                                      # pg_dumpall --globals-only
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// A DSN; missing parts come from the libpq environment.
    #[serde(default)]
    pub dsn: Option<String>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Directory of the PostgreSQL client programs.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Take the cluster's globals too (default true).
    #[serde(default = "yes")]
    pub globals: bool,
}

fn yes() -> bool {
    true
}

impl PostgresSourceConfig {
    /// The connection settings this section describes.
    ///
    /// # Errors
    /// A DSN that does not parse, an unreadable password file.
    pub fn connection(&self) -> Result<ConnectionSettings> {
        let conn = match &self.dsn {
            Some(dsn) => ConnectionSettings::from_dsn(dsn)?,
            None => ConnectionSettings::from_env()?,
        };
        match &self.password_file {
            Some(f) => conn.with_password_file(f),
            None => Ok(conn),
        }
    }

    /// The logical backup source this section describes.
    ///
    /// # Errors
    /// As [`PostgresSourceConfig::connection`].
    pub fn logical_source(&self) -> Result<PostgresLogical> {
        Ok(PostgresLogical::new(self.connection()?)
            .with_bin_dir(self.bin_dir.clone())
            .with_globals(self.globals))
    }
}
