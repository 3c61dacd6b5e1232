//! A recovery plan built in Rust through dr-core's API, as a service that
//! embeds dr would build one: scenario 3 (data corruption) against a real,
//! throwaway PostgreSQL cluster, using the PostgreSQL plan actions to revoke
//! the application role's writes, check integrity, and grant them back —
//! with `exec` standing in for the switch of the application's settings.
//!
//! Run: `cargo run -p dr-examples --bin dr-plan-in-rust`.

use anyhow::{ensure, Result};
use dr_core::plan::{
    actions, check, ActionRegistry, CheckOptions, Executor, JournalStore, PlanSpec, RunStatus,
    StepSpec,
};
use dr_postgres::testing::TestCluster;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    let pg = TestCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE ROLE app LOGIN; CREATE TABLE orders (id int, amount int); \
         INSERT INTO orders SELECT g, g FROM generate_series(1, 100) g; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO app",
    );
    let dsn = pg.dsn("app");

    let mut registry = ActionRegistry::new();
    actions::register(&mut registry);
    dr_postgres::plan::register(&mut registry);

    let spec = PlanSpec::new("writes-frozen-check")
        .rto("5m")
        .step(
            StepSpec::new("revoke-writes", "postgres.revoke_writes")
                .param("dsn", dsn.as_str())
                .param("role", "app")
                .param("schemas", json!(["public"])),
        )
        .step(
            StepSpec::new("integrity", "postgres.sql_check")
                .param("dsn", dsn.as_str())
                .param("checks", json!([{ "name": "orders present", "query": "SELECT count(*) = 100 FROM orders" }]))
                .after(["revoke-writes"]),
        )
        .step(
            StepSpec::new("switch-app", "exec")
                .param("argv", json!(["echo", "DATABASE_URL switched"]))
                .after(["integrity"]),
        )
        .step(
            StepSpec::new("grant-writes", "postgres.grant_writes")
                .param("dsn", dsn.as_str())
                .param("from_step", "revoke-writes")
                .after(["switch-app"]),
        );
    let plan = check(&spec, &registry, &CheckOptions::default())?;
    println!("{}", plan.preview().to_text());

    let journal = tempfile::tempdir()?;
    let report = Executor::new(JournalStore::local(journal.path()))
        .run(&plan)
        .await?;
    println!("{}", report.to_markdown());
    ensure!(report.status == RunStatus::Succeeded, "the plan failed");
    ensure!(
        report.within_rto == Some(true),
        "the plan took longer than its RTO"
    );
    Ok(())
}
