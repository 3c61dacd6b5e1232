//! The PostgreSQL steps of recovery plans.
//!
//! - `postgres.revoke_writes` ([`RevokeWrites`]): takes INSERT, UPDATE,
//!   DELETE and TRUNCATE on every table of the given schemas away from a
//!   role, after recording exactly which privileges it held (grantor and
//!   grant option included). Its rollback grants back exactly those.
//! - `postgres.grant_writes` ([`GrantWrites`]): grants back, on any database
//!   (the original or a restored copy), exactly the privileges a
//!   `revoke_writes` step recorded.
//! - `postgres.sql_check` ([`SqlCheck`]): read-only queries that must return
//!   `true` or an expected value (the runbook's `verify.sql`).
//!
//! Register them with [`register`]. Connections use
//! [`ConnectionSettings`](crate::ConnectionSettings): a DSN without password,
//! completed from the libpq environment (`PGPASSWORD`, `.pgpass`).
//!
//! ```toml
//! [[steps]]
//! name = "revoke-writes"
//! action = "postgres.revoke_writes"
//! rollback = true
//! params = { dsn = "postgresql://postgres@db:5432/app", role = "app", schemas = ["public"] }
//!
//! [[steps]]
//! name = "grant-writes"
//! action = "postgres.grant_writes"
//! after = ["revoke-writes"]
//! params = { dsn = "postgresql://postgres@db:5432/app", from_step = "revoke-writes" }
//! ```

mod error;
pub(crate) mod privileges;
mod sql_check;
#[cfg(all(test, feature = "test-cluster"))]
mod tests;

pub use error::PlanError;
pub use privileges::{
    GrantWrites, GrantWritesParams, RevokeWrites, RevokeWritesParams, TableGrant, WritePrivileges,
    GRANT_WRITES, REVOKE_WRITES, WRITE_PRIVILEGES,
};
pub use sql_check::{SqlCheck, SqlCheckItem, SqlCheckParams, SQL_CHECK};

use dr_core::plan::ActionRegistry;

/// The preflight of a step on a database: connect with its settings and
/// read the server's version, changing nothing.
///
/// # Errors
/// The connection or the query fails (address, credentials, database).
pub(crate) async fn reach(
    settings: &crate::ConnectionSettings,
) -> dr_core::Result<dr_core::plan::Preflight> {
    let client = settings.connect().await?;
    let version: String = client
        .query_one("SELECT current_setting('server_version')", &[])
        .await
        .map_err(|e| dr_core::Error::Failed {
            what: format!("reading the server version of {}", settings.target()),
            source: Box::new(e),
        })?
        .get(0);
    Ok(dr_core::plan::Preflight::Reached(format!(
        "connected to {} (PostgreSQL {version})",
        settings.target()
    )))
}

/// Adds `postgres.revoke_writes`, `postgres.grant_writes` and
/// `postgres.sql_check` to `registry`.
pub fn register(registry: &mut ActionRegistry) {
    privileges::register(registry);
    sql_check::register(registry);
}
