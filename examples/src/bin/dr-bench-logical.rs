//! Benchmark of `dr backup` (logical) against the runbook's pipeline
//! `pg_dump -Fc | gzip > file` and against `pg_dump -Fc > file`, on the same
//! databases in one run: pgbench data (which compresses absurdly: blank
//! padding) and a table of random text. Prints wall time and size ratios and
//! dr's peak RSS as a Markdown table.
//!
//! `DR_BENCH_SCALE` sets the pgbench scale (default 50); `DR_BENCH_TEXT_ROWS`
//! the rows of random text (default 1,500,000, about 200 MiB).

use std::process::Command;

use anyhow::{Context, Result};
use dr_examples::{dr_binary, mib, run_timed, Timed};
use dr_postgres::testing::TestCluster;

struct Row {
    data: &'static str,
    tool: &'static str,
    timed: Timed,
    size: u64,
}

fn sh(pg: &TestCluster, script: &str) -> Result<Timed> {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .env("PATH", format!("{}:/usr/bin:/bin", pg.bin().display()));
    run_timed(cmd)
}

fn main() -> Result<()> {
    let scale: u32 = std::env::var("DR_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let text_rows: u64 = std::env::var("DR_BENCH_TEXT_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_500_000);
    let work = tempfile::Builder::new().prefix("dr-bench").tempdir()?;
    let pg = TestCluster::start();
    eprintln!("preparing pgbench scale {scale} and {text_rows} rows of random text ...");
    pg.pgbench_init("pgbench", scale);
    pg.psql("postgres", "CREATE DATABASE randtext");
    pg.psql(
        "randtext",
        &format!(
            "CREATE TABLE docs AS SELECT g AS id, md5(random()::text) || ' ' || md5(random()::text) || ' ' || \
             md5(random()::text) AS body, (random() * 1e9)::bigint AS n FROM generate_series(1, {text_rows}) g"
        ),
    );
    pg.psql("randtext", "VACUUM ANALYZE docs");
    let key = work.path().join("key.txt");
    let dr = dr_binary();
    let out = Command::new(&dr)
        .args(["key", "generate", "--output"])
        .arg(&key)
        .output()?;
    let recipient = String::from_utf8(out.stdout)?.trim().to_string();
    let repo = format!("file://{}", work.path().join("repo").display());
    let st = Command::new(&dr)
        .args(["repo", "init", "--repo", &repo, "--recipient", &recipient])
        .status()?;
    anyhow::ensure!(st.success(), "repo init failed");

    let mut rows = Vec::new();
    for db in ["pgbench", "randtext"] {
        let data: &'static str = if db == "pgbench" {
            "pgbench"
        } else {
            "random text"
        };
        let dsn = pg.dsn(db);
        // Warm the cache once so that the first contender is not penalised.
        sh(&pg, &format!("pg_dump -Fc -d '{dsn}' > /dev/null"))?;

        let mut cmd = Command::new(&dr);
        cmd.args([
            "backup",
            "--repo",
            &repo,
            "--postgres",
            &dsn,
            "--no-globals",
            "--json",
            "--no-progress",
        ]);
        let timed = run_timed(cmd)?;
        let m: serde_json::Value = serde_json::from_str(&timed.stdout)?;
        let size = m[0]["artifacts"]
            .as_array()
            .context("artifacts")?
            .iter()
            .map(|a| a["stored_size"].as_u64().unwrap_or(0))
            .sum();
        rows.push(Row {
            data,
            tool: "dr backup (zstd 3 + age)",
            timed,
            size,
        });

        let gz = work.path().join(format!("{db}.dump.gz"));
        let timed = sh(
            &pg,
            &format!(
                "set -o pipefail; pg_dump -Fc -d '{dsn}' | gzip > '{}'",
                gz.display()
            ),
        )?;
        rows.push(Row {
            data,
            tool: "pg_dump -Fc | gzip",
            timed,
            size: std::fs::metadata(&gz)?.len(),
        });

        let fc = work.path().join(format!("{db}.dump"));
        let timed = sh(&pg, &format!("pg_dump -Fc -d '{dsn}' > '{}'", fc.display()))?;
        rows.push(Row {
            data,
            tool: "pg_dump -Fc",
            timed,
            size: std::fs::metadata(&fc)?.len(),
        });
    }

    println!("| data | tool | wall time | stored size | time vs pg_dump -Fc \\| gzip | size vs pg_dump -Fc \\| gzip | peak RSS |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for chunk in rows.chunks(3) {
        let base = &chunk[1];
        for r in chunk {
            println!(
                "| {} | {} | {:.2} s | {} | {:.2}x | {:.2}x | {} |",
                r.data,
                r.tool,
                r.timed.elapsed.as_secs_f64(),
                mib(r.size),
                r.timed.elapsed.as_secs_f64() / base.timed.elapsed.as_secs_f64(),
                r.size as f64 / base.size as f64,
                if r.tool.starts_with("dr") {
                    r.timed.peak_rss.map(mib).unwrap_or_default()
                } else {
                    "-".into()
                }
            );
        }
    }
    Ok(())
}
