//! The restored server's lifecycle: the recovery configuration written
//! into the data directory (`recovery.signal` and the settings in
//! `postgresql.auto.conf`, PostgreSQL 15 docs §26.3.4 and §20.5.5), then
//! `pg_ctl start` as the data directory's owner, the wait until recovery
//! ends (promoted, paused or shut down at the target), and `pg_ctl stop`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::PitrError;
use super::plan::{PitrOptions, PitrPlan};
use super::target::TargetAction;
use crate::conn::ConnectionSettings;
use crate::format::{read_control, Lsn};
use crate::host::default_owner;

/// The start of the line [`write_recovery_config`] adds to
/// `postgresql.auto.conf`, followed by the backup id and the target: how a
/// later run recognises a data directory this restore wrote.
pub(crate) const RESTORE_MARKER: &str = "# written by dr: point-in-time restore of backup";

/// Where recovery ended.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryPoint {
    /// The WAL position of the server after recovery.
    pub lsn: String,
    /// Its timeline.
    pub timeline: u32,
    /// The commit time of the last transaction replayed.
    pub last_replayed_commit: Option<DateTime<Utc>>,
    /// Whether the server is still in recovery (paused at the target).
    pub in_recovery: bool,
}

/// The SQL expression of the recovery pause state (`'paused'`, `'pause
/// requested'` or `'not paused'`) on a server of `major`:
/// `pg_get_wal_replay_pause_state()` from PostgreSQL 14 on; before, from
/// `pg_is_wal_replay_paused()`, which says only whether a pause was asked
/// for (PostgreSQL 13 docs, §9.27.4 "Recovery Control Functions"). Reaching
/// a target with `recovery_target_action = 'pause'` is the only pause dr
/// asks for, so on 13 a requested pause is a reached one.
pub(super) fn pause_state_sql(major: u32) -> &'static str {
    if major >= 14 {
        "pg_get_wal_replay_pause_state()"
    } else {
        "CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END"
    }
}

/// `postgresql.conf` string quoting: single quotes doubled.
fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The server programs' directory for `major`: `opts.bin_dir` when its
/// programs are of that major, else the first found by
/// [`crate::tools::server_bin_dir`]'s search.
///
/// # Errors
/// [`PitrError::Postgres`] naming what was searched when no server of
/// that major is installed.
pub(super) async fn server_bin(opts: &PitrOptions, major: u32) -> Result<PathBuf, PitrError> {
    Ok(crate::tools::server_bin_dir(opts.bin_dir.as_deref(), major).await?)
}

/// Runs `pg_ctl` as the owner.
///
/// # Errors
/// [`PitrError::Io`] when `pg_ctl` cannot be run; its exit status is
/// returned, with its output, as `(success, output)`.
pub(crate) async fn pg_ctl(
    bin: &Path,
    owner: Option<(u32, u32)>,
    args: &[&str],
) -> Result<(bool, String), PitrError> {
    let path = bin.join("pg_ctl");
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    // The server inherits this directory; make it one the owner can enter.
    cmd.current_dir("/");
    let out = cmd.output().await.map_err(PitrError::io(&path))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// The server log of a restored cluster, inside its data directory.
pub(super) fn log_path(pgdata: &Path) -> PathBuf {
    pgdata.join("dr-restore.log")
}

/// The last 15 lines of [`log_path`].
fn log_tail(pgdata: &Path) -> String {
    let text = std::fs::read_to_string(log_path(pgdata)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Where a started server listens, read from its `postmaster.pid` (lines 4
/// and 5: the port and the first Unix socket directory; PostgreSQL source,
/// `src/include/utils/pidfile.h`): what the server really uses, whatever
/// configuration file set it (a restored `postgresql.conf` may set a port).
pub(super) fn listening_address(pgdata: &Path) -> Option<(u16, PathBuf)> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let port = lines.get(3)?.trim().parse().ok()?;
    let sock = lines.get(4)?.trim();
    (!sock.is_empty()).then(|| (port, PathBuf::from(sock)))
}

/// What the server log says about why a server did not start, as a hint
/// naming the cause.
fn start_failure_hint(log: &str) -> &'static str {
    if log.contains("could not bind") || log.contains("Address already in use") {
        "the port is in use: choose another with --port"
    } else if log.contains("No space left on device") {
        "a file system is full: free space and start it again"
    } else if log.contains("invalid checkpoint record")
        || log.contains("could not locate a valid checkpoint record")
        || log.contains("invalid record length")
        || log.contains("incorrect resource manager data checksum")
    {
        "the WAL needed to start is damaged or missing: check the archive (dr status, dr verify --wal)"
    } else if log.contains("Permission denied") {
        "the server's user cannot read or write a file it needs: check the owner and modes"
    } else {
        "see the server log above"
    }
}

/// How many times a start on a port dr chose ([`PitrOptions::port_chosen`])
/// is tried, each on a new free port, when the port is found taken.
pub const PORT_ATTEMPTS: u32 = 3;

/// Whether what the server logged after byte `from` of `log` says it could
/// not bind its port.
fn port_clash(log: &str, from: u64) -> bool {
    let text = std::fs::read(log).unwrap_or_default();
    let new = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]);
    new.contains("could not bind") || new.contains("Address already in use")
}

/// Replaces the `port` written after the [`RESTORE_MARKER`] in
/// `postgresql.auto.conf` (the last setting of a name wins, PostgreSQL 15
/// docs §20.1.2).
fn set_port(pgdata: &Path, port: u16) -> Result<(), PitrError> {
    let auto = pgdata.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&auto).map_err(PitrError::io(&auto))?;
    let marker = text.rfind(RESTORE_MARKER).unwrap_or(text.len());
    let (before, ours) = text.split_at(marker);
    let mut lines: Vec<String> = ours
        .lines()
        .filter(|l| !l.trim_start().starts_with("port ="))
        .map(String::from)
        .collect();
    lines.push(format!("port = {}", conf_quote(&port.to_string())));
    let text = format!("{before}{}\n", lines.join("\n"));
    std::fs::write(&auto, text).map_err(PitrError::io(&auto))
}

/// Starts the restored server as `owner` (socket in `sock`, on `port` when
/// the restore wrote one, else where its configuration says) and waits,
/// bounded by `opts.wait_timeout`, until recovery ends the way `opts.action`
/// says: promoted, paused at the target, or shut down there. Returns where
/// recovery ended and the port and socket directory the server listens on
/// ([`listening_address`]).
///
/// A failure after the server started stops it (`pg_ctl stop -m fast`):
/// nothing is left running; the data directory is kept for inspection.
///
/// # Errors
/// [`PitrError::RecoveryFailed`] with the end of the server log and a hint
/// naming the cause (the server did not start, stopped during recovery, or
/// shut down without reaching the target); [`PitrError::Timeout`].
pub(super) async fn start_and_wait(
    plan: &PitrPlan,
    opts: &PitrOptions,
    owner: Option<(u32, u32)>,
    port: u16,
    sock: &Path,
) -> Result<(RecoveryPoint, u16, PathBuf), PitrError> {
    let result = start_and_wait_inner(plan, opts, owner, port, sock).await;
    if result.is_err() && opts.pgdata.join("postmaster.pid").exists() {
        let pgdata = opts.pgdata.to_string_lossy().to_string();
        let stopped = match server_bin(opts, plan.backup.server_version_num / 10000).await {
            Ok(bin) => pg_ctl(&bin, owner, &["-D", &pgdata, "-m", "fast", "-w", "stop"]).await,
            Err(e) => Err(e),
        };
        match stopped {
            Ok((true, _)) => {
                tracing::info!(pgdata = %pgdata, "the restored server was stopped after the failure")
            }
            Ok((false, out)) => {
                tracing::warn!(pgdata = %pgdata, output = %out.trim(), "the restored server could not be stopped")
            }
            Err(e) => {
                tracing::warn!(pgdata = %pgdata, error = %e, "the restored server could not be stopped")
            }
        }
    }
    result
}

async fn start_and_wait_inner(
    plan: &PitrPlan,
    opts: &PitrOptions,
    owner: Option<(u32, u32)>,
    port: u16,
    sock: &Path,
) -> Result<(RecoveryPoint, u16, PathBuf), PitrError> {
    let bin = server_bin(opts, plan.backup.server_version_num / 10000).await?;
    let pgdata = opts.pgdata.to_string_lossy().to_string();
    let log = log_path(&opts.pgdata).to_string_lossy().to_string();
    let timeout = opts.wait_timeout.as_secs().max(1).to_string();
    let failed = |reason: String| PitrError::RecoveryFailed {
        dir: opts.pgdata.clone(),
        reason,
    };
    let mut port = port;
    let mut attempt = 1;
    let (ok, out) = loop {
        let logged = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let (ok, out) = pg_ctl(
            &bin,
            owner,
            &["-D", &pgdata, "-l", &log, "-w", "-t", &timeout, "start"],
        )
        .await?;
        if ok || !opts.port_chosen || attempt == PORT_ATTEMPTS || !port_clash(&log, logged) {
            break (ok, out);
        }
        // The port dr chose was taken before the server bound it: nothing
        // was replayed yet (the postmaster binds before it starts recovery).
        let next = crate::host::free_port().map_err(PitrError::io(&opts.pgdata))?;
        tracing::info!(
            taken = port,
            next,
            "the chosen port was taken; starting on another"
        );
        set_port(&opts.pgdata, next)?;
        port = next;
        attempt += 1;
    };
    if opts.action == TargetAction::Shutdown {
        // The server shuts down at the target; pg_ctl may or may not have
        // seen it accept connections first.
        let deadline = Instant::now() + opts.wait_timeout;
        while opts.pgdata.join("postmaster.pid").exists() {
            if Instant::now() > deadline {
                return Err(PitrError::Timeout {
                    what: "recovery to the target".into(),
                    after: opts.wait_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Only the postmaster's "shutdown at recovery target" (exit status 3
        // of the startup process, src/backend/postmaster/postmaster.c) means
        // the target was reached; "database system is shut down" also ends a
        // recovery that failed ("recovery ended before configured recovery
        // target was reached").
        let tail = log_tail(&opts.pgdata);
        if !tail.contains("shutdown at recovery target")
            || tail.contains("recovery ended before configured recovery target was reached")
        {
            return Err(failed(format!(
                "the server shut down without reaching the recovery target\n{out}\n{tail}"
            )));
        }
        let control = read_control(&opts.pgdata)?;
        let point = RecoveryPoint {
            lsn: control.checkpoint.to_string(),
            timeline: control.timeline,
            last_replayed_commit: None,
            in_recovery: true,
        };
        return Ok((point, port, sock.to_path_buf()));
    }
    if !ok {
        let tail = log_tail(&opts.pgdata);
        return Err(failed(format!(
            "pg_ctl start: {}\nserver log:\n{tail}\nThe server did not start: {}. The restored data directory is \
             left in place: fix the cause and start it with `pg_ctl -D {} start`, or remove it to restore again.",
            out.trim(),
            start_failure_hint(&tail),
            opts.pgdata.display()
        )));
    }
    // Where the server listens: a port the restore did not write comes
    // from the restored configuration, not 5432.
    let (port, sock) =
        listening_address(&opts.pgdata).unwrap_or_else(|| (port, sock.to_path_buf()));
    let conn = ConnectionSettings::from_dsn(&format!(
        "host={} port={port} user={} dbname=postgres",
        sock.display(),
        opts.user
    ))?;
    // A server that stops during recovery (the target is past the end of
    // the archive, a WAL file cannot be fetched) closes the connection: its
    // log says why, the closed connection does not.
    let died = |e: String| {
        let tail = log_tail(&opts.pgdata);
        if tail.contains("recovery ended before configured recovery target was reached") {
            failed(format!(
                "recovery ended before the target was reached (the archive holds no WAL up to it)\n{tail}"
            ))
        } else {
            failed(format!("the server stopped during recovery ({e})\n{tail}"))
        }
    };
    let client = match conn.connect().await {
        Ok(c) => c,
        Err(_) if !opts.pgdata.join("postmaster.pid").exists() => {
            return Err(died("it was not running".into()))
        }
        Err(e) => return Err(e.into()),
    };
    let deadline = Instant::now() + opts.wait_timeout;
    loop {
        let row = match client
            .query_one(
                &format!(
                    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN {} ELSE 'not paused' END",
                    pause_state_sql(plan.backup.server_version_num / 10000)
                ),
                &[],
            )
            .await
        {
            Ok(row) => row,
            Err(e) if e.is_closed() || client.is_closed() => {
                // Give the postmaster a moment to write its last lines.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Err(died(e.to_string()));
            }
            Err(e) => {
                return Err(PitrError::Postgres(crate::Error::Query {
                    what: "waiting for recovery".into(),
                    target: conn.target(),
                    source: e,
                }))
            }
        };
        let in_recovery: bool = row.get(0);
        let pause: String = row.get(1);
        if !in_recovery || (opts.action == TargetAction::Pause && pause == "paused") {
            break;
        }
        if !opts.pgdata.join("postmaster.pid").exists() {
            return Err(failed(log_tail(&opts.pgdata)));
        }
        if Instant::now() > deadline {
            return Err(PitrError::Timeout {
                what: "recovery to the target".into(),
                after: opts.wait_timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let q = |e| {
        PitrError::Postgres(crate::Error::Query {
            what: "reading the recovery point".into(),
            target: conn.target(),
            source: e,
        })
    };
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(q)?
        .get(0);
    if !in_recovery {
        client.batch_execute("CHECKPOINT").await.map_err(q)?;
    }
    let row = client
        .query_one(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
             (SELECT timeline_id FROM pg_control_checkpoint()), pg_last_xact_replay_timestamp()",
            &[],
        )
        .await
        .map_err(q)?;
    let lsn: String = row.get(0);
    let _: Lsn = lsn.parse()?;
    let point = RecoveryPoint {
        lsn,
        timeline: row.get::<_, i32>(1) as u32,
        last_replayed_commit: row
            .get::<_, Option<std::time::SystemTime>>(2)
            .map(Into::into),
        in_recovery,
    };
    Ok((point, port, sock))
}

/// Stops a server started by [`pitr_restore`](super::pitr_restore) (fast
/// shutdown), running `pg_ctl` of `server_major` as `opts.owner` (default
/// when root: the `postgres` user).
///
/// # Errors
/// [`PitrError::RecoveryFailed`] when `pg_ctl stop` fails and the server
/// still runs; [`PitrError::Io`] when `pg_ctl` cannot be run.
pub async fn stop_server(opts: &PitrOptions, server_major: u32) -> Result<(), PitrError> {
    let bin = server_bin(opts, server_major).await?;
    let owner = opts.owner.or_else(default_owner);
    let pgdata = opts.pgdata.to_string_lossy().to_string();
    let (ok, out) = pg_ctl(&bin, owner, &["-D", &pgdata, "-m", "fast", "-w", "stop"]).await?;
    if !ok && opts.pgdata.join("postmaster.pid").exists() {
        return Err(PitrError::RecoveryFailed {
            dir: opts.pgdata.clone(),
            reason: format!("pg_ctl stop: {out}"),
        });
    }
    Ok(())
}

/// Makes the restored data directory start as a recovery
/// (PostgreSQL 15 docs §26.3.4 steps 7 and 8): removes `postmaster.pid` and
/// `postmaster.opts` left from the source, creates `recovery.signal` (mode
/// 0600, as the server's own files) and appends the plan's settings to
/// `postgresql.auto.conf` after a [`RESTORE_MARKER`] line.
///
/// # Errors
/// [`PitrError::Io`] naming the file.
pub(super) fn write_recovery_config(pgdata: &Path, plan: &PitrPlan) -> Result<(), PitrError> {
    use std::os::unix::fs::OpenOptionsExt;
    // Files that must not survive into the restored cluster.
    for stale in ["postmaster.pid", "postmaster.opts"] {
        let _ = std::fs::remove_file(pgdata.join(stale));
    }
    let signal = pgdata.join("recovery.signal");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&signal)
        .map_err(PitrError::io(&signal))?;
    let auto = pgdata.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&format!(
        "\n{RESTORE_MARKER} {} to {}\n",
        plan.backup_id, plan.target
    ));
    for (k, v) in &plan.settings {
        text.push_str(&format!("{k} = {}\n", conf_quote(v)));
    }
    std::fs::write(&auto, text).map_err(PitrError::io(&auto))
}
