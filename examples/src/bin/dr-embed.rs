//! A Rust service embedding dr through its operations layer, `dr-ops`: the
//! same calls `dr` and `dr-agent` make. Against a throwaway PostgreSQL
//! cluster and a local repository in a temporary directory it runs backup →
//! verify (with a restore into a scratch database, compared table by table)
//! → prune → status, and prints what each returned.
//!
//! Run: `cargo run -p dr-examples --bin dr-embed`.

use anyhow::{ensure, Result};
use dr_ops::{BackupTarget, DrConfig, Ops, PruneOptions, RepositoryArgs, VerifyOptions};
use dr_postgres::testing::TestCluster;

#[tokio::main]
async fn main() -> Result<()> {
    let pg = TestCluster::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, note text); \
         INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
    );
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("key.txt");
    let recipient = dr_ops::generate_key(&key_file, false)?;

    // The configuration a service would read from its own settings; the
    // same model as dr.toml (unknown keys are errors).
    let config = DrConfig::parse(&format!(
        r#"
        [repository]
        url = "{repo}"
        recipients = ["{recipient}"]
        identity_file = "{key}"

        [sources.shop]
        kind = "postgres"
        dsn = "{dsn}"
        globals = false

        [sources.shop.retention]
        keep_last = 2

        [objectives]
        rpo = "15m"
        "#,
        repo = dir.path().join("repo").display(),
        key = key_file.display(),
        dsn = pg.dsn("shop"),
    ))?;
    let ops = Ops::new(config, RepositoryArgs::default());
    ops.init_repository(&[]).await?;

    for _ in 0..3 {
        let done = ops
            .backup(
                &BackupTarget::Source("shop".into()),
                std::future::pending(),
                |m| {
                    println!(
                        "backup {} of {}: {} bytes stored",
                        m.backup_id,
                        m.source.name,
                        m.stored_size()
                    )
                },
            )
            .await?;
        ensure!(done.len() == 1, "one backup per run");
    }

    let verified = ops
        .verify(
            Some("shop"),
            "latest",
            &VerifyOptions::default().with_restore(None),
            std::future::pending(),
        )
        .await?;
    println!("verify: {}", verified.summary());
    ensure!(verified.ok(), "the newest backup did not verify");

    let pruned = ops.prune(&PruneOptions::default()).await?;
    println!("prune: {}", pruned.summary());
    ensure!(
        pruned.report.backups_deleted.len() == 1,
        "keep_last = 2 of 3 backups deletes one"
    );

    let status = ops.status().await?;
    for s in &status.sources {
        println!(
            "status: {} has {} backup(s), RPO {} ({}), last verification {}",
            s.source,
            s.backups,
            if s.rpo_met { "met" } else { "VIOLATED" },
            s.rpo_seconds,
            s.last_verify
                .as_ref()
                .map_or("none".to_string(), |v| format!("{:?} ok={}", v.level, v.ok))
        );
    }
    ensure!(status.ok(), "every objective is met");
    Ok(())
}
