//! The `BASE_BACKUP` client against a real PostgreSQL 15 server: SCRAM and
//! MD5 logins over TCP, the Unix socket, refused logins, and the archive
//! stream of a cluster with a tablespace.

use std::time::Duration;

use dr_postgres::basebackup::{
    BackupEvent, BaseBackupOptions, ReplicationConnection, ReplicationError,
};
use dr_postgres::testing::{self, TestCluster};
use dr_postgres::ConnectionSettings;

/// Puts password lines for the two test roles before initdb's trust lines.
fn require_passwords(c: &TestCluster) {
    c.psql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 's:cr\"am pw'; \
         SET password_encryption = 'md5'; \
         CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5-pw'",
    );
    let hba = c.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    let text = format!(
        "host replication scram_user 127.0.0.1/32 scram-sha-256\n\
         host replication md5_user 127.0.0.1/32 md5\n{text}"
    );
    std::fs::write(&hba, text).unwrap();
    let before = c.psql("postgres", "SELECT pg_conf_load_time()");
    c.psql("postgres", "SELECT pg_reload_conf()");
    // The postmaster reloads on SIGHUP, asynchronously: a new backend shows
    // the new load time once it has (and then uses the new pg_hba.conf).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while c
        .psql(
            "postgres",
            &format!(
                "SELECT pg_conf_load_time() > '{}'::timestamptz",
                before.trim()
            ),
        )
        .trim()
        != "t"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_hba.conf not reloaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn settings(c: &TestCluster, user: &str, password: Option<&str>) -> ConnectionSettings {
    let dsn = match password {
        Some(p) => format!(
            "host=127.0.0.1 port={} user={user} password='{}' dbname=postgres",
            c.port(),
            p.replace('\'', "\\'")
        ),
        None => format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres",
            c.port()
        ),
    };
    ConnectionSettings::from_dsn(&dsn).unwrap()
}

#[tokio::test]
async fn logins_scram_md5_socket_and_refusals() {
    if !testing::should_run() {
        return;
    }
    let c = TestCluster::start();
    require_passwords(&c);

    let conn =
        ReplicationConnection::connect(&settings(&c, "scram_user", Some("s:cr\"am pw")), "dr_test")
            .await
            .unwrap();
    assert_eq!(conn.server_major(), Some(15));
    conn.close().await;
    ReplicationConnection::connect(&settings(&c, "md5_user", Some("md5-pw")), "dr_test")
        .await
        .unwrap()
        .close()
        .await;
    // The Unix socket (trust for the superuser).
    let sock = ConnectionSettings::from_dsn(&format!(
        "host={} port={} user=postgres",
        c.dir().display(),
        c.port()
    ))
    .unwrap();
    ReplicationConnection::connect(&sock, "dr_test")
        .await
        .unwrap()
        .close()
        .await;

    for (user, pw) in [("scram_user", "wrong-secret"), ("md5_user", "wrong-secret")] {
        let err = ReplicationConnection::connect(&settings(&c, user, Some(pw)), "dr_test")
            .await
            .unwrap_err();
        assert!(matches!(err, ReplicationError::Auth { .. }), "{err:?}");
        let text = format!("{err} {err:?}");
        assert!(text.contains("28P01"), "{text}");
        assert!(
            !text.contains("wrong-secret"),
            "password in the error: {text}"
        );
    }
    // No password at all (none from PGPASSWORD or a password file either).
    let none = settings(&c, "scram_user", None).without_password();
    let err = ReplicationConnection::connect(&none, "dr_test")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ReplicationError::Auth { message, .. } if message.contains("none is set")),
        "{err:?}"
    );
    // Nothing listens: an I/O error, retryable.
    let dead = ConnectionSettings::from_dsn("host=127.0.0.1 port=1 user=x").unwrap();
    let err = ReplicationConnection::connect(&dead, "dr_test")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn archive_stream_of_a_cluster_with_a_tablespace() {
    if !testing::should_run() {
        return;
    }
    let c = TestCluster::start();
    let ts = c.dir().join("ts");
    std::fs::create_dir(&ts).unwrap();
    if let Some((uid, gid)) = c.owner() {
        std::os::unix::fs::chown(&ts, Some(uid), Some(gid)).unwrap();
    }
    c.psql(
        "postgres",
        &format!("CREATE TABLESPACE tsx LOCATION '{}'", ts.display()),
    );
    c.psql(
        "postgres",
        "CREATE TABLE big (id int, v text) TABLESPACE tsx; \
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
    );
    let oid: u32 = c
        .psql(
            "postgres",
            "SELECT oid FROM pg_tablespace WHERE spcname = 'tsx'",
        )
        .parse()
        .unwrap();
    let mut conn = ReplicationConnection::connect(&c.settings("postgres"), "dr_test")
        .await
        .unwrap();
    let mut o = BaseBackupOptions::new("stream test");
    o.wait_for_wal_archive = false;
    o.progress = true;
    let mut backup = conn.base_backup(&o).await.unwrap();
    let headers = backup.tablespaces().to_vec();
    assert_eq!(headers.len(), 2, "{headers:?}");
    assert_eq!(headers[0].oid, Some(oid));
    assert_eq!(headers[0].location.as_deref(), Some(ts.to_str().unwrap()));
    assert!(headers[0].size_kb.unwrap() > 1000, "{headers:?}");
    assert_eq!(headers[1].oid, None);
    let start = backup.start_lsn();
    let mut archives: Vec<(String, Option<String>, Vec<u8>)> = Vec::new();
    let mut manifest = Vec::new();
    let mut in_manifest = false;
    let mut progress = 0;
    while let Some(e) = backup.next_event().await.unwrap() {
        match e {
            BackupEvent::Archive { name, location } => archives.push((name, location, Vec::new())),
            BackupEvent::Data(b) if in_manifest => manifest.extend_from_slice(&b),
            BackupEvent::Data(b) => archives.last_mut().unwrap().2.extend_from_slice(&b),
            BackupEvent::Manifest => in_manifest = true,
            BackupEvent::Progress(p) => progress = p,
        }
    }
    let (stop, tli) = backup.finish().await.unwrap();
    assert!(stop > start && tli == 1);
    assert!(progress > 0);
    let names: Vec<&str> = archives.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(names, vec![format!("{oid}.tar").as_str(), "base.tar"]);
    assert_eq!(archives[0].1.as_deref(), Some(ts.to_str().unwrap()));
    // Real tars: the tablespace's holds the table's files under
    // PG_15_*, the main one backup_label and tablespace_map naming it.
    let entries = |data: &[u8]| -> Vec<String> {
        tar::Archive::new(data)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    };
    let ts_entries = entries(&archives[0].2);
    assert!(
        ts_entries.iter().any(|p| p.starts_with("PG_15_")),
        "{ts_entries:?}"
    );
    let base_entries = entries(&archives[1].2);
    assert!(base_entries.contains(&"backup_label".to_string()));
    assert!(base_entries.contains(&"tablespace_map".to_string()));
    let text = String::from_utf8(manifest).unwrap();
    assert!(
        text.contains("\"WAL-Ranges\""),
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(
        text.contains(&format!("pg_tblspc/{oid}/")),
        "manifest lists the tablespace's files"
    );
    conn.close().await;
}

/// A libpq program run by dr gets the password from an in-memory password
/// file: the server requires SCRAM, the program runs with `--no-password`,
/// and nothing is written under TMPDIR (so nothing is left even when dr is
/// killed with SIGKILL).
#[tokio::test]
async fn a_libpq_program_reads_its_password_from_memory_only() {
    if !testing::should_run() {
        return;
    }
    let c = TestCluster::start();
    c.psql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE pw_user LOGIN PASSWORD 'p:w x'",
    );
    let hba = c.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all pw_user 127.0.0.1/32 scram-sha-256\n{text}"),
    )
    .unwrap();
    c.psql("postgres", "SELECT pg_reload_conf()");
    let psql = |password: Option<&str>| {
        let s = settings(&c, "pw_user", password);
        let (mut cmd, guard) = s.command(&c.bin().join("psql")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        cmd.args(["--dbname", "postgres", "-XAtc", "SELECT current_user"])
            .env("TMPDIR", tmp.path());
        (cmd, guard, tmp)
    };
    // Until the reload is seen, trust still lets pw_user in without one.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (mut cmd, _guard, _tmp) = psql(None);
        let out = cmd
            .env("PGPASSFILE", "/nonexistent")
            .output()
            .await
            .unwrap();
        if !out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pg_hba.conf not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut cmd, guard, tmp) = psql(Some("p:w x"));
    let guard = guard.unwrap();
    assert!(
        guard.path().starts_with("/proc/"),
        "{}",
        guard.path().display()
    );
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pw_user");
    assert!(!stderr.contains("WARNING"), "{stderr}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    // The wrong password is refused: the file really is what logs in.
    let (mut cmd, _guard, _tmp) = psql(Some("wrong"));
    assert!(!cmd.output().await.unwrap().status.success());
}
