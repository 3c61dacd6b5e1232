//! `dr check` against real PostgreSQL clusters and a local repository: a
//! host set up right passes (and its WAL switch arrives), and each broken
//! setting produces the FAIL or WARN line that names it, with exit 1 (plain)
//! or the Nagios codes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{archiving, code, init_repo, run, scratch, wait_until, DR};
use dr_postgres::testing::{self, TestCluster};

/// The findings of `dr check --json` as (status, subject, check, detail).
fn findings(dir: &Path, args: &[&str]) -> (i32, Vec<(String, String, String, String)>) {
    let mut all = vec!["--json", "check"];
    all.extend_from_slice(args);
    let out = run(dir, &[], &all);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let lines = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("subject"), s("check"), s("detail"))
        })
        .collect();
    (code(&out), lines)
}

/// The one finding of `subject` and `check`.
fn line<'a>(
    all: &'a [(String, String, String, String)],
    subject: &str,
    check: &str,
) -> &'a (String, String, String, String) {
    all.iter()
        .find(|f| f.1 == subject && f.2 == check)
        .unwrap_or_else(|| panic!("no {subject} {check} in {all:#?}"))
}

/// Sets `setting` on the cluster and waits until new sessions see it.
fn set(c: &TestCluster, setting: &str, value: &str) {
    c.psql(
        "postgres",
        &format!("ALTER SYSTEM SET {setting} = '{value}'"),
    );
    c.psql("postgres", "SELECT pg_reload_conf()");
    wait_until(setting, Duration::from_secs(10), || {
        c.psql("postgres", &format!("SHOW {setting}")) == value
    });
}

#[test]
fn each_broken_setting_is_a_line_that_names_it() {
    if !testing::should_run() {
        return;
    }
    let dir = scratch("drchk");
    let repo = dir.path().join("repo");
    let key = init_repo(dir.path(), &[], repo.to_str().unwrap());
    let mut opts = archiving(&repo, "base");
    opts.conf.push("archive_timeout = '60s'".into());
    let pg = TestCluster::start_with(opts);
    let config = |extra: &str| {
        format!(
            "[repository]\nurl = {repo:?}\nidentity_file = {key:?}\n\n\
             [objectives]\nrpo = \"15m\"\n[objectives.sources.app]\nrpo = \"1h\"\n\n\
             [sources.base]\nkind = \"postgres-physical\"\ndsn = \"{}\"\n\n\
             [sources.app]\nkind = \"postgres\"\ndsn = \"{}\"\nbin_dir = {:?}\n{extra}",
            pg.dsn("postgres"),
            pg.dsn("postgres"),
            pg.client_bin()
        )
    };
    let write = |text: String| std::fs::write(dir.path().join("dr.toml"), text).unwrap();

    // Set up right: every line OK, the forced WAL switch arrives.
    write(config("schedule = \"0 * * * *\"\n"));
    let (exit, all) = findings(dir.path(), &["--switch-wal"]);
    let not_ok: Vec<_> = all.iter().filter(|f| f.0 != "ok").collect();
    assert!(not_ok.is_empty(), "{not_ok:#?}");
    assert_eq!(exit, 0);
    for check in [
        "archive_mode",
        "archive_command",
        "archive_timeout",
        "wal_level",
        "WAL switch",
    ] {
        line(&all, "source base", check);
    }
    line(&all, "source app", "pg_dump");
    line(&all, "source app", "schedule");
    line(&all, "repository", "writable");
    let nagios = run(dir.path(), &[], &["check", "--nagios"]);
    assert_eq!(code(&nagios), 0);
    assert!(String::from_utf8_lossy(&nagios.stdout).starts_with("DR OK - "));

    // A schedule that leaves more than the RPO between backups.
    write(config("schedule = \"0 2 * * *\"\n"));
    let (exit, all) = findings(dir.path(), &[]);
    let s = line(&all, "source app", "schedule");
    assert_eq!(s.0, "fail", "{s:?}");
    assert!(s.3.contains("up to 1day between backups"), "{s:?}");
    assert_eq!(exit, 1);
    // No schedule at all: a warning, exit 0; Nagios WARNING.
    write(config(""));
    let (exit, all) = findings(dir.path(), &[]);
    assert_eq!(line(&all, "source app", "schedule").0, "warn");
    assert_eq!(exit, 0);
    let nagios = run(dir.path(), &[], &["check", "--nagios"]);
    assert_eq!(code(&nagios), 1);
    assert!(String::from_utf8_lossy(&nagios.stdout)
        .starts_with("DR WARNING - 0 failed, 1 warning(s): source app schedule"));
    write(config("schedule = \"0 * * * *\"\n"));

    // archive_command archiving under another source's name.
    let good_command = pg.psql("postgres", "SHOW archive_command");
    set(
        &pg,
        "archive_command",
        &good_command.replace("--source base", "--source other"),
    );
    let (exit, all) = findings(dir.path(), &[]);
    let a = line(&all, "source base", "archive_command");
    assert_eq!(a.0, "fail");
    assert!(a.3.contains("\"other\""), "{a:?}");
    assert_eq!(exit, 1);
    let nagios = run(dir.path(), &[], &["check", "--nagios"]);
    assert_eq!(code(&nagios), 2);
    assert!(
        String::from_utf8_lossy(&nagios.stdout)
            .starts_with("DR CRITICAL - 1 failed, 0 warning(s): source base archive_command"),
        "{}",
        String::from_utf8_lossy(&nagios.stdout)
    );
    set(&pg, "archive_command", &good_command);

    // archive_timeout: off is a warning under an RPO, longer than it a failure.
    set(&pg, "archive_timeout", "0");
    let (_, all) = findings(dir.path(), &[]);
    assert_eq!(line(&all, "source base", "archive_timeout").0, "warn");
    set(&pg, "archive_timeout", "1h");
    let (exit, all) = findings(dir.path(), &[]);
    let t = line(&all, "source base", "archive_timeout");
    assert_eq!(t.0, "fail", "{t:?}");
    assert!(t.3.contains("longer than the RPO (15m)"), "{t:?}");
    assert_eq!(exit, 1);
    set(&pg, "archive_timeout", "1min");

    // What the server's user cannot read or run (only checkable as root,
    // where the server runs as another user).
    if pg.owner().is_some() {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (exit, all) = findings(dir.path(), &[]);
        let k = line(&all, "source base", "key file");
        assert_eq!(k.0, "fail", "{k:?}");
        assert!(k.3.contains("no read permission (mode 600"), "{k:?}");
        assert_eq!(exit, 1);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::copy(DR, private.join("dr")).unwrap();
        set(
            &pg,
            "archive_command",
            &good_command.replace(DR, private.join("dr").to_str().unwrap()),
        );
        let (_, all) = findings(dir.path(), &[]);
        let p = line(&all, "source base", "dr program");
        assert_eq!(p.0, "fail", "{p:?}");
        assert!(
            p.3.contains("no search permission on the directory") && p.3.contains("private"),
            "{p:?}"
        );
        set(&pg, "archive_command", &good_command);
    }

    // A key the repository was not made for.
    let other_key = dir.path().join("other.key");
    common::ok(
        "key generate",
        run(
            dir.path(),
            &[],
            &["key", "generate", "--output", other_key.to_str().unwrap()],
        ),
    );
    let (exit, all) = findings(dir.path(), &["--identity", other_key.to_str().unwrap()]);
    assert_eq!(line(&all, "key", "opens the repository").0, "fail");
    assert_eq!(exit, 1);

    // No repository there.
    let (exit, all) = findings(
        dir.path(),
        &["--repo", dir.path().join("absent").to_str().unwrap()],
    );
    let r = line(&all, "repository", "reachable");
    assert_eq!(r.0, "fail");
    assert!(r.3.contains("absent"), "{r:?}");
    assert_eq!(exit, 1);

    // A server with archiving off, and one that is not running.
    let plain = TestCluster::start();
    let stopped = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres",
        dr_postgres::testing::free_port()
    );
    write(format!(
        "{}\n[sources.plain]\nkind = \"postgres-physical\"\ndsn = \"{}\"\n\n\
         [sources.down]\nkind = \"postgres-physical\"\ndsn = \"{stopped}\"\n",
        config("schedule = \"0 * * * *\"\n"),
        plain.dsn("postgres")
    ));
    let (exit, all) = findings(dir.path(), &[]);
    let m = line(&all, "source plain", "archive_mode");
    assert_eq!(m.0, "fail");
    assert!(m.3.starts_with("off"), "{m:?}");
    assert_eq!(line(&all, "source plain", "archive_command").0, "fail");
    let d = line(&all, "source down", "reachable");
    assert_eq!(d.0, "fail");
    assert!(
        d.3.contains(&stopped[stopped.find('@').unwrap() + 1..stopped.rfind('/').unwrap()]),
        "{d:?}"
    );
    assert_eq!(exit, 1);

    // A configuration that does not load: Nagios UNKNOWN.
    std::fs::write(dir.path().join("dr.toml"), "[repository\n").unwrap();
    let nagios = run(dir.path(), &[], &["check", "--nagios"]);
    assert_eq!(code(&nagios), 3);
    assert!(String::from_utf8_lossy(&nagios.stdout).starts_with("DR UNKNOWN - "));
}
