//! `postgres.revoke_writes` and `postgres.grant_writes`.
//!
//! The privileges are read from the catalog, not guessed: for every table,
//! view and foreign table of the schemas (what `GRANT ... ON ALL TABLES IN
//! SCHEMA` covers), the entries of `pg_class.relacl` expanded with
//! `aclexplode` (a NULL ACL meaning the default, `acldefault('r', owner)`)
//! whose grantee is the role and whose privilege is INSERT, UPDATE, DELETE or
//! TRUNCATE, each with its grantor and grant option. (PostgreSQL docs:
//! "5.7. Privileges", "9.26. System Information Functions" for `aclexplode`
//! and `acldefault`.)
//!
//! A privilege is revoked and granted as its recorded grantor (`SET LOCAL
//! ROLE grantor`), because a REVOKE only removes grants made by the role that
//! runs it (docs: "REVOKE", notes). The connecting user must therefore be a
//! superuser or a member of every grantor (the tables' owner, usually).
//!
//! Revoking runs in one transaction that first saves the recorded privileges
//! in the run journal (a re-run after a crash merges them with what it finds,
//! so the originals are never lost), then revokes, then checks with
//! `has_table_privilege` that the role can no longer write to any table; if
//! it still can (through PUBLIC, a role it belongs to, ownership or being a
//! superuser), the transaction is rolled back and the step fails: a revoke
//! that leaves writes open is not reported as done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use dr_core::plan::{Action, ActionContext, ActionOutput, ActionRegistry};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

use super::error::PlanError;
use crate::ConnectionSettings;

/// The name of the revoke action.
pub const REVOKE_WRITES: &str = "postgres.revoke_writes";
/// The name of the grant action.
pub const GRANT_WRITES: &str = "postgres.grant_writes";
/// The privileges that allow writing to a table.
pub const WRITE_PRIVILEGES: [&str; 4] = ["INSERT", "UPDATE", "DELETE", "TRUNCATE"];

/// One privilege on one table, as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableGrant {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// `INSERT`, `UPDATE`, `DELETE` or `TRUNCATE`.
    pub privilege: String,
    /// The role that granted it.
    pub grantor: String,
    /// Whether it was granted `WITH GRANT OPTION`.
    pub grantable: bool,
}

/// What `revoke_writes` recorded: its output state, and its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritePrivileges {
    /// The role.
    pub role: String,
    /// The schemas.
    pub schemas: Vec<String>,
    /// The database (without password).
    pub target: String,
    /// The privileges the role held.
    pub grants: Vec<TableGrant>,
}

/// Parameters of `postgres.revoke_writes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeWritesParams {
    /// The database (a DSN without password: libpq's environment supplies it).
    pub dsn: String,
    /// The role whose writes are revoked.
    pub role: String,
    /// The schemas whose tables are covered (default `["public"]`).
    #[serde(default = "public")]
    pub schemas: Vec<String>,
}

fn public() -> Vec<String> {
    vec!["public".into()]
}

/// Parameters of `postgres.grant_writes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantWritesParams {
    /// The database to grant on: the original or a restored copy.
    pub dsn: String,
    /// The completed `postgres.revoke_writes` step whose recorded privileges
    /// are granted (it must be among this step's `after`).
    pub from_step: String,
}

/// `postgres.revoke_writes`. Changes: removes the role's write privileges on
/// the schemas' tables. Rollback: grants back exactly what was recorded.
/// Idempotent: a re-run finds nothing left to revoke and keeps the recorded
/// originals from its checkpoint.
#[derive(Debug, Clone)]
pub struct RevokeWrites {
    settings: ConnectionSettings,
    role: String,
    schemas: Vec<String>,
}

/// `postgres.grant_writes`. Changes: grants the recorded privileges.
/// Rollback: revokes those of them that it added (not those already there).
/// Idempotent: granting a held privilege changes nothing.
#[derive(Debug, Clone)]
pub struct GrantWrites {
    settings: ConnectionSettings,
    from_step: String,
}

fn invalid(action: &str, key: &str, reason: impl Into<String>) -> PlanError {
    PlanError::InvalidParam {
        key: format!("{action}.{key}"),
        reason: reason.into(),
    }
}

fn settings(action: &str, dsn: &str) -> Result<ConnectionSettings, PlanError> {
    ConnectionSettings::from_dsn(check_time_dsn(dsn))
        .map_err(|e| invalid(action, "dsn", e.to_string()))
}

impl RevokeWrites {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`PlanError::InvalidParam`] for a bad DSN, an empty role or schema list.
    pub fn new(p: RevokeWritesParams) -> Result<Self, PlanError> {
        if p.role.trim().is_empty() {
            return Err(invalid(REVOKE_WRITES, "role", "empty role name"));
        }
        if p.schemas.is_empty() || p.schemas.iter().any(|s| s.is_empty()) {
            return Err(invalid(
                REVOKE_WRITES,
                "schemas",
                "give at least one non-empty schema name",
            ));
        }
        Ok(RevokeWrites {
            settings: settings(REVOKE_WRITES, &p.dsn)?,
            role: p.role,
            schemas: p.schemas,
        })
    }
}

impl GrantWrites {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`PlanError::InvalidParam`] for a bad DSN or an empty `from_step`.
    pub fn new(p: GrantWritesParams) -> Result<Self, PlanError> {
        if p.from_step.is_empty() {
            return Err(invalid(
                GRANT_WRITES,
                "from_step",
                "name the revoke_writes step",
            ));
        }
        Ok(GrantWrites {
            settings: settings(GRANT_WRITES, &p.dsn)?,
            from_step: p.from_step,
        })
    }
}

pub(super) fn register(registry: &mut ActionRegistry) {
    registry.register_typed(REVOKE_WRITES, |p: RevokeWritesParams| {
        Ok(Arc::new(RevokeWrites::new(p)?) as Arc<dyn Action>)
    });
    registry.register_typed(GRANT_WRITES, |p: GrantWritesParams| {
        Ok(Arc::new(GrantWrites::new(p)?) as Arc<dyn Action>)
    });
}

/// `"name"` with inner quotes doubled (PostgreSQL docs 4.1.1, quoted identifiers).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The relkinds `ON ALL TABLES IN SCHEMA` covers: tables, partitioned
/// tables, views, materialized views and foreign tables (catalogs: pg_class).
const TABLE_KINDS: &str = "ARRAY['r','p','v','m','f']::\"char\"[]";

async fn check_role_and_schemas(
    client: &impl GenericClient,
    target: &str,
    role: &str,
    schemas: &[String],
) -> Result<(), PlanError> {
    let row = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(|e| PlanError::query("looking up the role", target, e))?;
    if row.is_none() {
        return Err(PlanError::NoSuchRole {
            role: role.into(),
            target: target.into(),
        });
    }
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1)",
            &[&schemas],
        )
        .await
        .map_err(|e| PlanError::query("looking up the schemas", target, e))?;
    let found: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    if let Some(missing) = schemas.iter().find(|s| !found.contains(*s)) {
        return Err(PlanError::NoSuchObject {
            object: format!("schema {missing:?}"),
            target: target.into(),
        });
    }
    Ok(())
}

/// The role's write privileges on the schemas' tables.
async fn read_grants(
    client: &impl GenericClient,
    target: &str,
    role: &str,
    schemas: &[String],
) -> Result<Vec<TableGrant>, PlanError> {
    let privileges: Vec<&str> = WRITE_PRIVILEGES.to_vec();
    let sql = format!(
        "SELECT n.nspname, c.relname, a.privilege_type, g.rolname, a.is_grantable \
         FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         CROSS JOIN LATERAL aclexplode(COALESCE(c.relacl, acldefault('r', c.relowner))) a \
         JOIN pg_roles g ON g.oid = a.grantor \
         WHERE n.nspname = ANY($1) AND c.relkind = ANY({TABLE_KINDS}) \
           AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $2) \
           AND a.privilege_type = ANY($3) \
         ORDER BY 1, 2, 3, 4"
    );
    let rows = client
        .query(&sql, &[&schemas, &role, &privileges])
        .await
        .map_err(|e| PlanError::query("reading the role's privileges", target, e))?;
    Ok(rows
        .iter()
        .map(|r| TableGrant {
            schema: r.get(0),
            table: r.get(1),
            privilege: r.get(2),
            grantor: r.get(3),
            grantable: r.get(4),
        })
        .collect())
}

/// Tables of the schemas the role can still write to, by any path.
async fn writable_tables(
    client: &impl GenericClient,
    target: &str,
    role: &str,
    schemas: &[String],
) -> Result<Vec<String>, PlanError> {
    let sql = format!(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = ANY($1) AND c.relkind = ANY({TABLE_KINDS}) \
           AND has_table_privilege($2, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') \
         ORDER BY 1"
    );
    let rows = client
        .query(&sql, &[&schemas, &role])
        .await
        .map_err(|e| PlanError::query("checking the role's remaining privileges", target, e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Runs `GRANT` or `REVOKE` for each grant, as its grantor, in `tx`.
async fn apply(
    tx: &tokio_postgres::Transaction<'_>,
    target: &str,
    role: &str,
    grants: &[TableGrant],
    grant: bool,
) -> Result<(), PlanError> {
    let mut by_grantor: BTreeMap<&str, Vec<&TableGrant>> = BTreeMap::new();
    for g in grants {
        if !WRITE_PRIVILEGES.contains(&g.privilege.as_str()) {
            return Err(PlanError::InvalidParam {
                key: "privilege".into(),
                reason: format!("{:?} is not a write privilege", g.privilege),
            });
        }
        by_grantor.entry(g.grantor.as_str()).or_default().push(g);
    }
    for (grantor, grants) in by_grantor {
        tx.batch_execute(&format!("SET LOCAL ROLE {}", ident(grantor)))
            .await
            .map_err(|e| PlanError::query(format!("acting as grantor {grantor}"), target, e))?;
        for g in grants {
            let on = format!("{}.{}", ident(&g.schema), ident(&g.table));
            let sql = if grant {
                format!(
                    "GRANT {} ON TABLE {on} TO {}{}",
                    g.privilege,
                    ident(role),
                    if g.grantable {
                        " WITH GRANT OPTION"
                    } else {
                        ""
                    }
                )
            } else {
                format!("REVOKE {} ON TABLE {on} FROM {}", g.privilege, ident(role))
            };
            tx.batch_execute(&sql).await.map_err(|e| {
                PlanError::query(
                    format!(
                        "{} {} on {on}",
                        if grant { "GRANT" } else { "REVOKE" },
                        g.privilege
                    ),
                    target,
                    e,
                )
            })?;
        }
    }
    tx.batch_execute("RESET ROLE")
        .await
        .map_err(|e| PlanError::query("RESET ROLE", target, e))?;
    Ok(())
}

fn merge(a: &[TableGrant], b: &[TableGrant]) -> Vec<TableGrant> {
    let set: BTreeSet<TableGrant> = a.iter().chain(b).cloned().collect();
    set.into_iter().collect()
}

/// Grants `recorded.grants` to `recorded.role` on the database of `settings`,
/// returning the grants that were not already there.
async fn grant_all(
    settings: &ConnectionSettings,
    recorded: &WritePrivileges,
) -> Result<Vec<TableGrant>, PlanError> {
    let target = settings.target();
    let mut client = settings.connect().await?;
    check_role_and_schemas(&client, &target, &recorded.role, &recorded.schemas).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| PlanError::query("BEGIN", &target, e))?;
    let before: BTreeSet<TableGrant> = read_grants(&tx, &target, &recorded.role, &recorded.schemas)
        .await?
        .into_iter()
        .collect();
    let added: Vec<TableGrant> = recorded
        .grants
        .iter()
        .filter(|g| !before.contains(*g))
        .cloned()
        .collect();
    apply(&tx, &target, &recorded.role, &added, true).await?;
    tx.commit()
        .await
        .map_err(|e| PlanError::query("COMMIT", &target, e))?;
    Ok(added)
}

fn parse_recorded(state: &serde_json::Value, step: &str) -> Result<WritePrivileges, PlanError> {
    serde_json::from_value(state.clone())
        .map_err(|_| PlanError::NothingRecorded { step: step.into() })
}

fn output(summary: String, state: &impl Serialize) -> ActionOutput {
    ActionOutput {
        summary,
        state: serde_json::to_value(state).expect("serialisable"),
        log: String::new(),
    }
}

impl RevokeWrites {
    async fn revoke(&self, ctx: &ActionContext) -> Result<WritePrivileges, PlanError> {
        let target = self.settings.target();
        let mut client = self.settings.connect().await?;
        check_role_and_schemas(&client, &target, &self.role, &self.schemas).await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| PlanError::query("BEGIN", &target, e))?;
        let found = read_grants(&tx, &target, &self.role, &self.schemas).await?;
        // An interrupted earlier attempt may have revoked already: what it
        // recorded is the truth about the original privileges.
        let previous: Vec<TableGrant> = ctx
            .checkpoint
            .as_ref()
            .and_then(|c| c.previous())
            .and_then(|v| serde_json::from_value::<WritePrivileges>(v.clone()).ok())
            .filter(|p| p.role == self.role)
            .map(|p| p.grants)
            .unwrap_or_default();
        let recorded = WritePrivileges {
            role: self.role.clone(),
            schemas: self.schemas.clone(),
            target: target.clone(),
            grants: merge(&previous, &found),
        };
        if let Some(cp) = &ctx.checkpoint {
            cp.save(serde_json::to_value(&recorded).expect("serialisable"))
                .await
                .map_err(|e| PlanError::InvalidParam {
                    key: "journal".into(),
                    reason: format!("cannot record the privileges before revoking them: {e}"),
                })?;
        }
        apply(&tx, &target, &self.role, &found, false).await?;
        let still = writable_tables(&tx, &target, &self.role, &self.schemas).await?;
        if !still.is_empty() {
            // Dropping the transaction rolls it back: nothing changed.
            let shown: Vec<_> = still.iter().take(10).cloned().collect();
            return Err(PlanError::StillWritable {
                role: self.role.clone(),
                tables: format!(
                    "{}{}",
                    shown.join(", "),
                    if still.len() > 10 {
                        format!(" and {} more", still.len() - 10)
                    } else {
                        String::new()
                    }
                ),
                target,
            });
        }
        tx.commit()
            .await
            .map_err(|e| PlanError::query("COMMIT", &target, e))?;
        tracing::info!(role = %self.role, revoked = found.len(), recorded = recorded.grants.len(), target = %target, "write privileges revoked");
        Ok(recorded)
    }
}

#[async_trait]
impl Action for RevokeWrites {
    fn name(&self) -> &'static str {
        REVOKE_WRITES
    }

    /// Connects with the step's settings, changing nothing.
    async fn preflight(&self) -> dr_core::Result<dr_core::plan::Preflight> {
        super::reach(&self.settings).await
    }

    fn describe(&self) -> String {
        format!(
            "revoke INSERT, UPDATE, DELETE, TRUNCATE on all tables of schema(s) {} from role {:?} on {} (privileges recorded first)",
            self.schemas.join(", "),
            self.role,
            self.settings.target()
        )
    }

    async fn run(&self, ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let recorded = self.revoke(ctx).await?;
        let tables: BTreeSet<_> = recorded
            .grants
            .iter()
            .map(|g| (&g.schema, &g.table))
            .collect();
        Ok(output(
            format!(
                "revoked writes of {:?} on {} table(s) ({} privilege(s) recorded) on {}",
                self.role,
                tables.len(),
                recorded.grants.len(),
                recorded.target
            ),
            &recorded,
        ))
    }

    fn has_rollback(&self) -> bool {
        true
    }

    async fn rollback(
        &self,
        _ctx: &ActionContext,
        output: &ActionOutput,
    ) -> dr_core::Result<ActionOutput> {
        let recorded = parse_recorded(&output.state, REVOKE_WRITES)?;
        let added = grant_all(&self.settings, &recorded).await?;
        Ok(output_added(&recorded, &added, &self.settings.target()))
    }
}

fn output_added(recorded: &WritePrivileges, added: &[TableGrant], target: &str) -> ActionOutput {
    output(
        format!(
            "granted {} recorded privilege(s) back to {:?} on {target} ({} were missing)",
            recorded.grants.len(),
            recorded.role,
            added.len()
        ),
        &serde_json::json!({ "role": recorded.role, "schemas": recorded.schemas, "target": target, "added": added }),
    )
}

#[async_trait]
impl Action for GrantWrites {
    fn name(&self) -> &'static str {
        GRANT_WRITES
    }

    /// Connects with the step's settings, changing nothing.
    async fn preflight(&self) -> dr_core::Result<dr_core::plan::Preflight> {
        super::reach(&self.settings).await
    }

    fn describe(&self) -> String {
        format!(
            "grant on {} exactly the write privileges step {:?} recorded",
            self.settings.target(),
            self.from_step
        )
    }

    async fn run(&self, ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        let state = ctx
            .outputs
            .get(&self.from_step)
            .map(|o| &o.state)
            .ok_or_else(|| PlanError::NothingRecorded {
                step: self.from_step.clone(),
            })?;
        let recorded = parse_recorded(state, &self.from_step)?;
        let added = grant_all(&self.settings, &recorded).await?;
        tracing::info!(role = %recorded.role, added = added.len(), "write privileges granted");
        Ok(output_added(&recorded, &added, &self.settings.target()))
    }

    fn has_rollback(&self) -> bool {
        true
    }

    async fn rollback(
        &self,
        _ctx: &ActionContext,
        output: &ActionOutput,
    ) -> dr_core::Result<ActionOutput> {
        #[derive(Deserialize)]
        struct Added {
            role: String,
            added: Vec<TableGrant>,
        }
        let a: Added = serde_json::from_value(output.state.clone()).map_err(|_| {
            PlanError::NothingRecorded {
                step: GRANT_WRITES.into(),
            }
        })?;
        let target = self.settings.target();
        let mut client = self.settings.connect().await.map_err(PlanError::from)?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| PlanError::query("BEGIN", &target, e))?;
        apply(&tx, &target, &a.role, &a.added, false).await?;
        tx.commit()
            .await
            .map_err(|e| PlanError::query("COMMIT", &target, e))?;
        Ok(ActionOutput::summary(format!(
            "revoked the {} privilege(s) this step had granted to {:?} on {target}",
            a.added.len(),
            a.role
        )))
    }
}

/// A DSN taken from an earlier step's output (`${steps.X.state.dsn}`) is only
/// known at run time; `dr plan check` builds the action with the placeholder
/// `<steps.X.state.dsn>`, which stands for a well-formed DSN here. The
/// executor builds the action again with the real value before it runs.
pub(crate) fn check_time_dsn(dsn: &str) -> &str {
    if dsn.starts_with("<steps.") && dsn.ends_with('>') {
        "postgresql://check@127.0.0.1:1/check"
    } else {
        dsn
    }
}
