//! `dr wal-push` and `dr wal-fetch`: their exit codes follow PostgreSQL's
//! rules (`dr_postgres::wal::push_exit_code`, `fetch_exit_code`), so errors
//! are printed here and not mapped again by the caller.

use std::io::Write;

use dr_ops::Ops;

use crate::args::{WalFetchArgs, WalPushArgs};

/// Runs `dr wal-push`; returns the exit code (0, or 1..=125).
pub async fn push(ops: &Ops, a: &WalPushArgs, json: bool) -> i32 {
    let result = ops.wal_push(&a.source, &a.path, &a.options).await;
    report(&result, json, "wal-push");
    dr_postgres::wal::push_exit_code(&result)
}

/// Runs `dr wal-fetch`; returns the exit code (0; 1 not archived; 200 stop
/// recovery).
pub async fn fetch(ops: &Ops, a: &WalFetchArgs, json: bool) -> i32 {
    let result = ops.wal_fetch(&a.source, &a.name, &a.dest, &a.options).await;
    report(&result, json, "wal-fetch");
    dr_postgres::wal::fetch_exit_code(&result, a.options.standby)
}

fn report<T: serde::Serialize>(result: &Result<T, dr_postgres::WalError>, json: bool, what: &str) {
    match result {
        Ok(r) if json => {
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string(r).unwrap_or_default()
            );
        }
        Ok(_) => {}
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: {what}: {}",
                dr_core::error_chain(e)
            );
        }
    }
}
