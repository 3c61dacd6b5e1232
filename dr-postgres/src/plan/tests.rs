//! The PostgreSQL plan steps against a real, throwaway PostgreSQL cluster.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dr_core::plan::{
    check, ActionContext, ActionOutput, ActionRegistry, CheckOptions, Checkpoint, CheckpointSink,
    Executor, JournalStore, PlanSpec, RunStatus, StepSpec, StepStatus,
};
use dr_core::Error;
use serde_json::json;

use crate::testing::{should_run, TestCluster};

/// Keeps what a step checkpointed.
#[derive(Default)]
struct Capture(Mutex<Vec<serde_json::Value>>);

#[async_trait]
impl CheckpointSink for Capture {
    async fn save(&self, state: serde_json::Value) -> dr_core::Result<()> {
        self.0.lock().unwrap().push(state);
        Ok(())
    }
}

fn registry() -> ActionRegistry {
    let mut r = ActionRegistry::new();
    dr_core::plan::actions::register(&mut r);
    super::register(&mut r);
    r
}

fn ctx(previous: Option<serde_json::Value>, sink: &Arc<Capture>) -> ActionContext {
    let mut c = ActionContext::new("test-run", "revoke");
    c.checkpoint = Some(Checkpoint::new(previous, sink.clone()));
    c
}

const SETUP: &str = "
CREATE ROLE app LOGIN;
CREATE ROLE owner2;
CREATE ROLE reporting;
CREATE TABLE t1 (id int PRIMARY KEY, v text);
CREATE TABLE t2 (id int PRIMARY KEY);
ALTER TABLE t2 OWNER TO owner2;
CREATE VIEW v1 AS SELECT * FROM t1;
CREATE SCHEMA other;
CREATE TABLE other.o1 (id int);
GRANT SELECT, INSERT, UPDATE ON t1 TO app;
GRANT SELECT ON v1 TO app;
GRANT INSERT ON v1 TO app;
GRANT ALL ON other.o1 TO app;
GRANT SELECT ON t1 TO reporting;
SET ROLE owner2;
GRANT INSERT, DELETE ON t2 TO app WITH GRANT OPTION;
RESET ROLE;
GRANT USAGE ON SCHEMA other TO app;
";

/// Every ACL item (grantee=privileges/grantor) of the schemas' tables and
/// views, sorted: equal strings mean exactly the same privileges.
fn acls(pg: &TestCluster, db: &str) -> String {
    pg.psql(
        db,
        "SELECT string_agg(x, ' ' ORDER BY x) FROM ( \
           SELECT n.nspname || '.' || c.relname || ':' || a::text AS x \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           CROSS JOIN LATERAL unnest(coalesce(c.relacl, acldefault('r', c.relowner))) a \
           WHERE n.nspname IN ('public', 'other') AND c.relkind IN ('r', 'v')) s",
    )
}

/// Whether `app` can insert into `table` (as itself, over TCP).
async fn app_can_insert(pg: &TestCluster, db: &str, table: &str, id: i32) -> bool {
    let app = crate::ConnectionSettings::from_dsn(&format!(
        "postgresql://app@127.0.0.1:{}/{db}",
        pg.port()
    ))
    .unwrap();
    let client = app.connect().await.unwrap();
    match client
        .execute(&format!("INSERT INTO {table} (id) VALUES ($1)"), &[&id])
        .await
    {
        Ok(_) => true,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            false
        }
        Err(e) => panic!("unexpected error inserting into {table}: {e}"),
    }
}

fn cluster() -> Option<TestCluster> {
    if !should_run() {
        return None;
    }
    let pg = TestCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql("app", SETUP);
    Some(pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_records_exactly_and_rollback_restores_exactly() {
    let Some(pg) = cluster() else { return };
    let before = acls(&pg, "app");
    assert!(app_can_insert(&pg, "app", "t1", 1).await);

    let r = registry();
    let action = r
        .build(
            "postgres.revoke_writes",
            &json!({ "dsn": pg.dsn("app"), "role": "app", "schemas": ["public"] }),
        )
        .unwrap();
    assert!(
        action.describe().contains("127.0.0.1"),
        "{}",
        action.describe()
    );
    let sink = Arc::new(Capture::default());
    let out = action.run(&ctx(None, &sink)).await.unwrap();

    // Writes refused on the schema's tables, reads still allowed, other schemas untouched.
    assert!(!app_can_insert(&pg, "app", "t1", 2).await);
    assert!(!app_can_insert(&pg, "app", "t2", 2).await);
    assert!(app_can_insert(&pg, "app", "other.o1", 2).await);
    assert_eq!(
        pg.psql("app", "SELECT has_table_privilege('app', 't1', 'SELECT')"),
        "t"
    );
    assert_eq!(
        pg.psql(
            "app",
            "SELECT has_table_privilege('reporting', 't1', 'SELECT')"
        ),
        "t"
    );

    // What was recorded: each privilege with its grantor and grant option.
    let grants = out.state["grants"].as_array().unwrap();
    let g: Vec<String> = grants
        .iter()
        .map(|g| {
            format!(
                "{}.{} {} by {}{}",
                g["schema"].as_str().unwrap(),
                g["table"].as_str().unwrap(),
                g["privilege"].as_str().unwrap(),
                g["grantor"].as_str().unwrap(),
                if g["grantable"].as_bool().unwrap() {
                    " grantable"
                } else {
                    ""
                }
            )
        })
        .collect();
    assert_eq!(
        g,
        [
            "public.t1 INSERT by postgres",
            "public.t1 UPDATE by postgres",
            "public.t2 DELETE by owner2 grantable",
            "public.t2 INSERT by owner2 grantable",
            "public.v1 INSERT by postgres",
        ]
    );
    // Recorded in the journal before anything was revoked.
    assert_eq!(*sink.0.lock().unwrap(), vec![out.state.clone()]);

    // A re-run after a crash (checkpoint present, privileges already gone)
    // keeps the originals.
    let again = action
        .run(&ctx(Some(out.state.clone()), &sink))
        .await
        .unwrap();
    assert_eq!(again.state["grants"], out.state["grants"]);

    // Rollback: the ACLs are back exactly as they were.
    assert!(action.has_rollback());
    action.rollback(&ctx(None, &sink), &again).await.unwrap();
    assert_eq!(acls(&pg, "app"), before);
    assert!(app_can_insert(&pg, "app", "t1", 3).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_writes_applies_the_recorded_privileges_to_a_restored_copy() {
    let Some(pg) = cluster() else { return };
    let before = acls(&pg, "app");
    // A "restored copy": same tables and roles, none of the grants.
    pg.psql("postgres", "CREATE DATABASE copy");
    pg.psql(
        "copy",
        "CREATE TABLE t1 (id int PRIMARY KEY, v text); CREATE TABLE t2 (id int PRIMARY KEY); ALTER TABLE t2 OWNER TO owner2; \
         CREATE VIEW v1 AS SELECT * FROM t1; GRANT SELECT ON t1 TO reporting; GRANT SELECT ON v1 TO app; GRANT SELECT ON t1 TO app; \
         CREATE SCHEMA other; CREATE TABLE other.o1 (id int); GRANT ALL ON other.o1 TO app; GRANT USAGE ON SCHEMA other TO app;",
    );
    assert!(!app_can_insert(&pg, "copy", "t1", 1).await);

    let spec = PlanSpec::new("grant")
        .step(
            StepSpec::new("revoke", "postgres.revoke_writes")
                .param("dsn", pg.dsn("app"))
                .param("role", "app"),
        )
        .step(
            StepSpec::new("grant", "postgres.grant_writes")
                .param("dsn", pg.dsn("copy"))
                .param("from_step", "revoke")
                .after(["revoke"]),
        );
    let plan =
        check(&spec, &registry(), &CheckOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let report = Executor::new(JournalStore::local(dir.path()))
        .run(&plan)
        .await
        .unwrap();
    assert_eq!(
        report.status,
        RunStatus::Succeeded,
        "{}",
        report.to_markdown()
    );
    assert_eq!(
        acls(&pg, "copy"),
        before,
        "the copy has exactly the original privileges"
    );
    assert!(app_can_insert(&pg, "copy", "t1", 1).await);
    assert!(
        !app_can_insert(&pg, "app", "t1", 1).await,
        "the original stays read-only"
    );

    // grant_writes' own rollback removes only what it added.
    let r = registry();
    let grant = r
        .build(
            "postgres.grant_writes",
            &json!({ "dsn": pg.dsn("copy"), "from_step": "revoke" }),
        )
        .unwrap();
    let journal = JournalStore::local(dir.path())
        .load(&report.run_id)
        .await
        .unwrap();
    let output: ActionOutput = journal.step("grant").unwrap().output.clone().unwrap();
    grant
        .rollback(&ActionContext::new("r", "grant"), &output)
        .await
        .unwrap();
    assert!(!app_can_insert(&pg, "copy", "t1", 2).await);
    assert_eq!(
        pg.psql("copy", "SELECT has_table_privilege('app', 't1', 'SELECT')"),
        "t"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_that_leaves_writes_open_changes_nothing_and_fails() {
    let Some(pg) = cluster() else { return };
    pg.psql("app", "GRANT INSERT ON t1 TO PUBLIC");
    let before = acls(&pg, "app");
    let r = registry();
    let action = r
        .build(
            "postgres.revoke_writes",
            &json!({ "dsn": pg.dsn("app"), "role": "app" }),
        )
        .unwrap();
    let sink = Arc::new(Capture::default());
    let err = action.run(&ctx(None, &sink)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("public.t1"), "{err}");
    assert_eq!(acls(&pg, "app"), before, "the transaction was rolled back");

    let missing = r
        .build(
            "postgres.revoke_writes",
            &json!({ "dsn": pg.dsn("app"), "role": "nobody" }),
        )
        .unwrap()
        .run(&ctx(None, &sink))
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");
    let no_schema = r
        .build(
            "postgres.revoke_writes",
            &json!({ "dsn": pg.dsn("app"), "role": "app", "schemas": ["nope"] }),
        )
        .unwrap()
        .run(&ctx(None, &sink))
        .await
        .unwrap_err();
    assert!(matches!(no_schema, Error::NotFound { .. }), "{no_schema}");
    match r.build(
        "postgres.revoke_writes",
        &json!({ "dsn": "postgresql://x@h:notaport/db", "role": "app" }),
    ) {
        Err(Error::InvalidConfig { key, .. }) => assert_eq!(key, "postgres.revoke_writes.dsn"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_checks_pass_fail_and_cannot_write() {
    let Some(pg) = cluster() else { return };
    pg.psql("app", "INSERT INTO t1 VALUES (1, 'a'), (2, 'b')");
    let r = registry();
    let ok = r
        .build(
            "postgres.sql_check",
            &json!({ "dsn": pg.dsn("app"), "checks": [
                { "name": "rows", "query": "SELECT count(*) FROM t1", "expect": 2 },
                { "name": "no nulls", "query": "SELECT bool_and(v IS NOT NULL) FROM t1;" },
                { "name": "text", "query": "SELECT v FROM t1 WHERE id = 2", "expect": "b" },
                { "name": "numeric", "query": "SELECT 2.50::numeric", "expect": 2.5 },
            ]}),
        )
        .unwrap();
    let out = ok.run(&ActionContext::new("r", "check")).await.unwrap();
    assert!(out.summary.contains("4 check(s) passed"), "{}", out.summary);

    let bad = r
        .build(
            "postgres.sql_check",
            &json!({ "dsn": pg.dsn("app"), "checks": [
                { "name": "rows", "query": "SELECT count(*) FROM t1", "expect": 3 },
                { "name": "writes", "query": "INSERT INTO t1 VALUES (9, 'x') RETURNING true" },
                { "name": "two rows", "query": "SELECT true FROM t1" },
                { "name": "fine", "query": "SELECT true" },
            ]}),
        )
        .unwrap();
    let err = bad
        .run(&ActionContext::new("r", "check"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::VerificationFailed { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("3 of 4"), "{text}");
    assert!(text.contains("returned 2, expected 3"), "{text}");
    assert!(text.contains("more than one row"), "{text}");
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM t1"),
        "2",
        "a check cannot write"
    );

    match r.build(
        "postgres.sql_check",
        &json!({ "dsn": pg.dsn("app"), "checks": [] }),
    ) {
        Err(Error::InvalidConfig { key, .. }) => assert_eq!(key, "postgres.sql_check.checks"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_plan_gives_writes_back() {
    let Some(pg) = cluster() else { return };
    let before = acls(&pg, "app");
    let spec = PlanSpec::new("fails-after-revoke")
        .step(
            StepSpec::new("revoke", "postgres.revoke_writes")
                .param("dsn", pg.dsn("app"))
                .param("role", "app")
                .rollback_own(),
        )
        .step(
            StepSpec::new("verify", "postgres.sql_check")
                .param("dsn", pg.dsn("app"))
                .param("checks", json!([{ "name": "writes revoked", "query": "SELECT NOT has_table_privilege('app', 't1', 'INSERT')" }]))
                .after(["revoke"]),
        )
        .step(StepSpec::new("boom", "exec").param("argv", json!(["false"])).after(["verify"]));
    let plan = check(&spec, &registry(), &CheckOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = Executor::new(JournalStore::local(dir.path()))
        .run(&plan)
        .await
        .unwrap();
    assert_eq!(
        report.status,
        RunStatus::RolledBack,
        "{}",
        report.to_markdown()
    );
    assert_eq!(report.steps[1].status, StepStatus::Succeeded);
    assert_eq!(report.steps[0].status, StepStatus::RolledBack);
    assert_eq!(acls(&pg, "app"), before);
    assert!(app_can_insert(&pg, "app", "t1", 5).await);
}
