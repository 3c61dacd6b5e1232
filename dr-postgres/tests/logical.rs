//! Logical backups against real PostgreSQL clusters made with initdb/pg_ctl.

use dr_core::{conformance, job, Error as CoreError, Restorer};
use dr_postgres::testing::{should_run, TestCluster};
use dr_postgres::{
    LogicalMetadata, LogicalRestoreOptions, PostgresLogical, PostgresLogicalRestorer,
};
use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions};

async fn repo() -> (Repository, Identities, tempfile::TempDir) {
    let key = Identities::generate();
    let dir = tempfile::tempdir().unwrap();
    let loc = Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap();
    let repo = Repository::init(
        &loc,
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    (repo, key, dir)
}

fn metadata(m: &dr_storage::Manifest) -> LogicalMetadata {
    serde_json::from_value(m.metadata.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_database_conforms() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("bench", 2);
    let (repo, key, _d) = repo().await;
    let source = PostgresLogical::new(pg.settings("bench"));
    let target = PostgresLogicalRestorer::new(
        pg.settings("bench_restored"),
        LogicalRestoreOptions::default(),
    );
    let scratch = PostgresLogicalRestorer::scratch(
        &pg.settings("postgres"),
        LogicalRestoreOptions::default(),
    );
    conformance::all(&repo, &key, &source, "bench", &target, &scratch).await;

    let m = repo.find_backup(Some("bench"), "latest").await.unwrap();
    let meta = metadata(&m);
    assert_eq!(meta.row_counts["public.pgbench_accounts"], 200_000);
    assert_eq!(meta.database, "bench");
    assert!(meta.system_identifier.is_some());
    assert!(m.artifact("globals.sql").is_some());
    assert_eq!(
        pg.psql("bench_restored", "SELECT count(*) FROM pgbench_accounts"),
        "200000"
    );
    // The scratch database of the verify was dropped.
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'dr\\_%'"
        ),
        "0"
    );
}

const AWKWARD: &str = r#"
CREATE ROLE app_owner NOLOGIN;
CREATE SCHEMA "Sales Dept";
CREATE TABLE "Sales Dept"."Orders ""2026"" = Q1" (id serial PRIMARY KEY, "Amount €" numeric, note text);
INSERT INTO "Sales Dept"."Orders ""2026"" = Q1" ("Amount €", note) SELECT g, 'row ' || g FROM generate_series(1, 1234) g;
CREATE TABLE "ünïcødé" (k text PRIMARY KEY);
INSERT INTO "ünïcødé" VALUES ('ä'), ('ß'), ('漢');
CREATE TABLE measurements (at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measurements SELECT DATE '2025-06-01' + (g % 400), g FROM generate_series(1, 5000) g;
CREATE SEQUENCE invoice_no START 1000;
SELECT nextval('invoice_no') FROM generate_series(1, 42);
CREATE VIEW big_orders AS SELECT * FROM "Sales Dept"."Orders ""2026"" = Q1" WHERE "Amount €" > 1000;
CREATE MATERIALIZED VIEW order_total AS SELECT sum("Amount €") AS total FROM "Sales Dept"."Orders ""2026"" = Q1";
CREATE TABLE owned (x int);
INSERT INTO owned SELECT generate_series(1, 10);
ALTER TABLE owned OWNER TO app_owner;
SELECT lo_from_bytea(0, 'large object one'), lo_from_bytea(0, 'large object two');
"#;

#[tokio::test(flavor = "multi_thread")]
async fn awkward_schema_restores_into_a_fresh_cluster_with_globals() {
    if !should_run() {
        return;
    }
    let src = TestCluster::start();
    src.psql("postgres", "CREATE DATABASE shop");
    src.psql("shop", AWKWARD);
    let (repo, key, _d) = repo().await;
    let m = job::backup(&repo, &PostgresLogical::new(src.settings("shop")), "shop")
        .await
        .unwrap();
    let counts = metadata(&m).row_counts;
    assert_eq!(counts[r#""Sales Dept"."Orders ""2026"" = Q1""#], 1234);
    assert_eq!(counts[r#"public."ünïcødé""#], 3);
    // A partitioned table is counted through its leaves, once.
    assert_eq!(
        counts["public.measurements_2025"] + counts["public.measurements_2026"],
        5000
    );
    assert!(!counts.contains_key("public.measurements"));
    assert_eq!(counts["(large objects)"], 2);

    let dst = TestCluster::start();
    let mut opts = LogicalRestoreOptions::default();
    opts.globals = true;
    let restorer = PostgresLogicalRestorer::new(dst.settings("shop"), opts);
    let report = job::restore(&repo, &m, &key, &restorer).await.unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let check = restorer.check(&m).await.unwrap();
    assert!(check.ok(), "{:?}", check.failures().collect::<Vec<_>>());
    assert_eq!(
        dst.psql("shop", "SELECT last_value FROM invoice_no"),
        "1041"
    );
    assert_eq!(
        dst.psql(
            "shop",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'"
        ),
        "app_owner"
    );
    assert_eq!(dst.psql("shop", "SELECT count(*) FROM big_orders"), "234");
    assert_eq!(dst.psql("shop", "SELECT total FROM order_total"), "761995");
    assert_eq!(
        dst.psql("shop", "SELECT string_agg(convert_from(lo_get(oid), 'UTF8'), ',' ORDER BY oid) FROM pg_largeobject_metadata"),
        "large object one,large object two"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn row_counts_and_dump_share_one_snapshot_under_writes() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.psql("postgres", "CREATE DATABASE busy");
    pg.psql("busy", "CREATE TABLE events (id bigserial PRIMARY KEY, payload text); INSERT INTO events (payload) SELECT repeat('x', 200) FROM generate_series(1, 50000)");
    let (repo, key, _d) = repo().await;
    let writer_conn = pg.settings("busy");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = tokio::spawn(async move {
        let client = writer_conn.connect().await.unwrap();
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            client
                .execute(
                    "INSERT INTO events (payload) SELECT 'w' FROM generate_series(1, 50)",
                    &[],
                )
                .await
                .unwrap();
            n += 50;
        }
        n
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let m = job::backup(&repo, &PostgresLogical::new(pg.settings("busy")), "busy")
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0, "the writer ran during the backup");
    let restorer =
        PostgresLogicalRestorer::new(pg.settings("busy_copy"), LogicalRestoreOptions::default());
    job::restore(&repo, &m, &key, &restorer).await.unwrap();
    let check = restorer.check(&m).await.unwrap();
    assert!(check.ok(), "{:?}", check.failures().collect::<Vec<_>>());
    let live: i64 = pg
        .psql("busy", "SELECT count(*) FROM events")
        .parse()
        .unwrap();
    assert!(
        live > metadata(&m).row_counts["public.events"],
        "writes continued after the snapshot"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_clear_and_leave_targets_untouched() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("bench", 1);
    let (repo, key, _d) = repo().await;

    // A database that does not exist.
    let err = job::backup(&repo, &PostgresLogical::new(pg.settings("nope")), "nope")
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("database \"nope\""), "{err}");
    assert!(repo.list_backups(None).await.unwrap().is_empty());

    let m = job::backup(&repo, &PostgresLogical::new(pg.settings("bench")), "bench")
        .await
        .unwrap();

    // Wrong identity: clear error, no database created.
    let restorer =
        PostgresLogicalRestorer::new(pg.settings("fresh"), LogicalRestoreOptions::default());
    let err = job::restore(&repo, &m, &Identities::generate(), &restorer)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::Storage(dr_storage::Error::Decrypt { .. })),
        "{err:?}"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'fresh%'"
        ),
        "0"
    );

    // A non-empty target is refused and stays as it was.
    pg.psql("postgres", "CREATE DATABASE busy");
    pg.psql(
        "busy",
        "CREATE TABLE keep (x int); INSERT INTO keep VALUES (7)",
    );
    let restorer =
        PostgresLogicalRestorer::new(pg.settings("busy"), LogicalRestoreOptions::default());
    let err = job::restore(&repo, &m, &key, &restorer).await.unwrap_err();
    assert!(matches!(err, CoreError::Conflict { .. }), "{err:?}");
    assert_eq!(pg.psql("busy", "SELECT x FROM keep"), "7");

    // With clean it is replaced, only after the new copy is complete.
    let mut opts = LogicalRestoreOptions::default();
    opts.clean = true;
    let restorer = PostgresLogicalRestorer::new(pg.settings("busy"), opts);
    job::restore(&repo, &m, &key, &restorer).await.unwrap();
    assert_eq!(
        pg.psql("busy", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );
    assert_eq!(
        pg.psql(
            "busy",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'keep'"
        ),
        "0"
    );

    // --clean swaps in one transaction: when the target cannot be renamed
    // (a session is connected to it), the restore fails and the target is
    // still there under its name, as it was; nothing of the restore is left.
    pg.psql(
        "busy",
        "CREATE TABLE marker (x int); INSERT INTO marker VALUES (1)",
    );
    let (holder, connection) = tokio_postgres::connect(&pg.dsn("busy"), tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut opts = LogicalRestoreOptions::default();
    opts.clean = true;
    let restorer = PostgresLogicalRestorer::new(pg.settings("busy"), opts.clone());
    let err = job::restore(&repo, &m, &key, &restorer).await.unwrap_err();
    let chain = dr_core::error_chain(&err);
    assert!(chain.contains("busy in use"), "{chain}");
    assert_eq!(pg.psql("busy", "SELECT x FROM marker"), "1");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'busy%'"
        ),
        "busy"
    );
    drop(holder);
    let _ = connection.await;

    // An old copy that an interrupted swap left is reported and kept.
    pg.psql("postgres", "CREATE DATABASE busy_dr_0a1b2c_old");
    let report = job::restore(&repo, &m, &key, &restorer).await.unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("busy_dr_0a1b2c_old") && w.contains("moved aside")),
        "{:?}",
        report.warnings
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'busy%'"
        ),
        "busy,busy_dr_0a1b2c_old"
    );
    assert_eq!(
        pg.psql(
            "busy",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        ),
        "0"
    );
    pg.psql("postgres", "DROP DATABASE busy_dr_0a1b2c_old");

    // A corrupt dump: the restore fails, the target does not exist, no
    // temporary database is left.
    let info = m.artifact("database.pgdump").unwrap();
    let path = dr_storage::object_store::path::Path::from(info.object.as_str());
    let mut bytes = repo
        .store()
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    repo.store().put(&path, bytes.into()).await.unwrap();
    let restorer =
        PostgresLogicalRestorer::new(pg.settings("broken"), LogicalRestoreOptions::default());
    let err = job::restore(&repo, &m, &key, &restorer).await.unwrap_err();
    assert!(err.to_string().contains("database.pgdump"), "{err}");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'broken%'"
        ),
        "0"
    );

    // A restored table that differs is reported by name.
    let report = job::verify(&repo, &m, Some(&key), None).await.unwrap();
    assert!(!report.ok());
    pg.psql("busy", "DELETE FROM pgbench_branches");
    let check = PostgresLogicalRestorer::new(pg.settings("busy"), LogicalRestoreOptions::default())
        .check(&m)
        .await
        .unwrap();
    let failures: Vec<_> = check.failures().map(|c| c.name.clone()).collect();
    assert_eq!(failures, vec!["public.pgbench_branches".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_restore_stages_and_cleans_up() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("bench", 1);
    let (repo, key, _d) = repo().await;
    let m = job::backup(&repo, &PostgresLogical::new(pg.settings("bench")), "bench")
        .await
        .unwrap();
    let staging = tempfile::tempdir().unwrap();
    let mut opts = LogicalRestoreOptions::default();
    opts.jobs = 2;
    opts.staging_dir = Some(staging.path().to_path_buf());
    let restorer = PostgresLogicalRestorer::new(pg.settings("par"), opts);
    job::restore(&repo, &m, &key, &restorer).await.unwrap();
    assert!(restorer.check(&m).await.unwrap().ok());
    assert_eq!(
        std::fs::read_dir(staging.path()).unwrap().count(),
        0,
        "staged dump removed"
    );
}

/// A configured directory whose pg_dump is older than the server is passed
/// over (issue 17: a too-old candidate is skipped, not fatal): the backup
/// uses the installed pg_dump of the server's version. (When nothing fits,
/// the error lists every candidate: `dr_postgres::tools`' unit tests.)
#[tokio::test(flavor = "multi_thread")]
async fn a_pg_dump_older_than_the_server_is_passed_over() {
    if !should_run() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let pg = TestCluster::start();
    let bin = tempfile::tempdir().unwrap();
    for tool in ["pg_dump", "pg_dumpall"] {
        let path = bin.path().join(tool);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{tool} (PostgreSQL) 9.6.24'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (repo, _key, _d) = repo().await;
    let source =
        PostgresLogical::new(pg.settings("postgres")).with_bin_dir(Some(bin.path().to_path_buf()));
    let m = job::backup(&repo, &source, "old").await.unwrap();
    let server_major = pg
        .psql(
            "postgres",
            "SELECT current_setting('server_version_num')::int / 10000",
        )
        .parse::<u64>()
        .unwrap();
    let used = m.metadata["pg_dump_major"].as_u64().unwrap();
    assert!(
        used >= server_major,
        "pg_dump {used} for a {server_major} server"
    );
    assert_eq!(repo.list_backups(None).await.unwrap().len(), 1);
}

/// A restore killed mid-way leaves its temporary database `<target>_dr_<hex>`
/// behind (the target itself is never half-written). The next restore into
/// the same target drops it when the mark says its process on this host is
/// gone, keeps (and reports) one of a restore on another host, and never
/// touches other databases whose names merely look alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_restores_temporary_database_is_dropped_by_the_next_one() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("src", 1);
    let (repo, key, _d) = repo().await;
    let m = job::backup(&repo, &PostgresLogical::new(pg.settings("src")), "src")
        .await
        .unwrap();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    // A dead process on this host (above any pid_max), another host, and a
    // look-alike without the mark.
    pg.psql("postgres", "CREATE DATABASE copy_dr_0a0b0c");
    pg.psql(
        "postgres",
        &format!(
            "COMMENT ON DATABASE copy_dr_0a0b0c IS 'dr restore in progress: pid 4194305 on {host}'"
        ),
    );
    pg.psql("postgres", "CREATE DATABASE copy_dr_1a1b1c");
    pg.psql(
        "postgres",
        "COMMENT ON DATABASE copy_dr_1a1b1c IS 'dr restore in progress: pid 4194305 on another-host'",
    );
    pg.psql("postgres", "CREATE DATABASE copy_dr_2a2b2c");
    let restorer =
        PostgresLogicalRestorer::new(pg.settings("copy"), LogicalRestoreOptions::default());
    let report = job::restore(&repo, &m, &key, &restorer).await.unwrap();
    let names = pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'copy%'",
    );
    assert_eq!(names, "copy,copy_dr_1a1b1c,copy_dr_2a2b2c");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("dropped copy_dr_0a0b0c")),
        "{:?}",
        report.warnings
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("copy_dr_1a1b1c") && w.contains("left alone")),
        "{:?}",
        report.warnings
    );
    // The restored database carries no mark, so it is never taken for a
    // temporary one.
    assert_eq!(
        pg.psql("postgres", "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = 'copy'"),
        ""
    );
}

/// Issue 22: a LATIN1 / C database (named with `=`, which libpq's tools
/// would read as a connection string) with non-ASCII text, a large object,
/// an owner, `REVOKE CONNECT ... FROM PUBLIC`, settings for the database and
/// for a role in it, a connection limit and a comment comes back as it was,
/// property by property; a target that cannot take it is refused before
/// anything is created, or with `ignore_database_properties` restored with
/// the dropped properties listed.
#[tokio::test(flavor = "multi_thread")]
async fn a_latin1_database_comes_back_with_its_properties() {
    if !should_run() {
        return;
    }
    const DB: &str = "legacy=latin1";
    let src = TestCluster::start();
    src.psql(
        "postgres",
        r#"CREATE ROLE dr_owner LOGIN; CREATE ROLE "dr reader" LOGIN"#,
    );
    src.psql(
        "postgres",
        r#"CREATE DATABASE "legacy=latin1" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 OWNER dr_owner CONNECTION LIMIT 17"#,
    );
    src.psql(
        "postgres",
        r#"REVOKE CONNECT, TEMPORARY ON DATABASE "legacy=latin1" FROM PUBLIC;
           GRANT CONNECT, TEMPORARY ON DATABASE "legacy=latin1" TO dr_owner;
           GRANT CONNECT ON DATABASE "legacy=latin1" TO "dr reader";
           ALTER DATABASE "legacy=latin1" SET work_mem = '7MB';
           ALTER DATABASE "legacy=latin1" SET search_path = "$user", public, "Odd, schema";
           ALTER ROLE "dr reader" IN DATABASE "legacy=latin1" SET statement_timeout = '42s';
           COMMENT ON DATABASE "legacy=latin1" IS 'Légacy data, ß'"#,
    );
    src.psql(
        DB,
        r#"CREATE TABLE people (name text);
           INSERT INTO people VALUES (U&'M\00FCller'), (U&'\00C5ngstr\00F6m'), (U&'fa\00E7ade \00FF');
           SELECT lo_from_bytea(4242, '\x00e9ff4c41'::bytea)"#,
    );
    // What is compared on both sides.
    let database = |pg: &TestCluster, db: &str| {
        pg.psql(
            "postgres",
            &format!(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype, \
                 pg_get_userbyid(datdba), datconnlimit, datallowconn, datistemplate, datacl::text, \
                 shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{db}'; \
                 SELECT coalesce(r.rolname, '-'), s.setconfig::text FROM pg_db_role_setting s \
                 JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole \
                 WHERE d.datname = '{db}' ORDER BY 1"
            ),
        )
    };
    let data = |pg: &TestCluster, db: &str| {
        pg.psql(
            db,
            "SELECT string_agg(octet_length(name) || ':' || md5(name), ',' ORDER BY name) FROM people; \
             SELECT encode(lo_get(4242), 'hex'), pg_get_userbyid(lomowner) FROM pg_largeobject_metadata",
        )
    };
    let want_db = database(&src, DB);
    let want_data = data(&src, DB);
    // LATIN1: one byte per letter.
    assert!(want_data.starts_with("6:"), "{want_data}");

    let (repo, key, _d) = repo().await;
    let m = job::backup(&repo, &PostgresLogical::new(src.settings(DB)), "legacy")
        .await
        .unwrap();
    let props = metadata(&m).database_properties.expect("recorded");
    assert_eq!(
        (
            props.encoding.as_str(),
            props.collate.as_str(),
            props.ctype.as_str()
        ),
        ("LATIN1", "C", "C")
    );
    assert_eq!(props.locale_provider, "libc");
    assert_eq!(props.owner, "dr_owner");
    assert_eq!(props.connection_limit, 17);
    assert_eq!(props.comment.as_deref(), Some("Légacy data, ß"));
    assert_eq!(
        props.acl.as_deref().unwrap(),
        ["dr_owner=CTc/dr_owner", "\"dr reader\"=c/dr_owner"]
    );
    assert!(props.settings.contains(&"work_mem=7MB".to_string()));
    assert_eq!(props.role_settings["dr reader"], ["statement_timeout=42s"]);

    let dst = TestCluster::start();
    let count_dbs = |pg: &TestCluster| {
        pg.psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
        )
    };
    let before = count_dbs(&dst);
    let options = |globals: bool, clean: bool, ignore: bool| {
        let mut o = LogicalRestoreOptions::default();
        o.globals = globals;
        o.clean = clean;
        o.ignore_database_properties = ignore;
        o
    };
    let settings = |db: &str| dst.settings("postgres").with_database(db);

    // The owner role does not exist there and no globals are applied:
    // refused before anything is created, naming the property.
    let restorer = PostgresLogicalRestorer::new(settings(DB), options(false, false, false));
    let err = job::restore(&repo, &m, &key, &restorer).await.unwrap_err();
    assert!(matches!(err, CoreError::Conflict { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("owner") && text.contains("dr_owner"),
        "{text}"
    );
    assert_eq!(count_dbs(&dst), before);

    // With ignore_database_properties it restores and lists what it dropped.
    let restorer = PostgresLogicalRestorer::new(settings("loose"), options(false, false, true));
    let report = job::restore(&repo, &m, &key, &restorer).await.unwrap();
    let dropped = report.warnings.join("\n");
    for what in ["owner", "privileges", "statement_timeout of role dr reader"] {
        assert!(dropped.contains(what), "{what} not in {dropped}");
    }
    assert_eq!(
        dst.psql("postgres", "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate || ' ' || pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'loose'"),
        "LATIN1 C postgres"
    );
    let check = restorer.check(&m).await.unwrap();
    let failures: Vec<_> = check.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(
        failures,
        [
            "database owner",
            "database privileges",
            "database settings of role dr reader"
        ]
    );

    // A pre-created UTF8 target is refused, with --clean too, and kept.
    dst.psql("postgres", r#"CREATE DATABASE "legacy=latin1""#);
    let restorer = PostgresLogicalRestorer::new(settings(DB), options(true, true, false));
    let err = job::restore(&repo, &m, &key, &restorer).await.unwrap_err();
    assert!(matches!(err, CoreError::Conflict { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("encoding and locale") && text.contains("UTF8") && text.contains("LATIN1"),
        "{text}"
    );
    assert_eq!(
        dst.psql(
            "postgres",
            "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'legacy=latin1'"
        ),
        "UTF8"
    );
    // Nothing was applied: not even the globals.
    assert_eq!(
        dst.psql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'dr_owner'"
        ),
        "0"
    );
    dst.psql("postgres", r#"DROP DATABASE "legacy=latin1""#);

    // With the globals it comes back as it was, property by property.
    let restorer = PostgresLogicalRestorer::new(settings(DB), options(true, false, false));
    let report = job::restore(&repo, &m, &key, &restorer).await.unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(database(&dst, DB), want_db);
    assert_eq!(data(&dst, DB), want_data);
    let check = restorer.check(&m).await.unwrap();
    assert!(check.ok(), "{:?}", check.failures().collect::<Vec<_>>());
    for name in [
        "database encoding",
        "database LC_COLLATE",
        "database owner",
        "database privileges",
        "database comment",
        "database settings",
        "database settings of role dr reader",
    ] {
        assert!(
            check.checks.iter().any(|c| c.name == name),
            "{name} not checked"
        );
    }
    // --clean onto the matching target replaces it, properties and all.
    let restorer = PostgresLogicalRestorer::new(settings(DB), options(true, true, false));
    job::restore(&repo, &m, &key, &restorer).await.unwrap();
    assert_eq!(database(&dst, DB), want_db);

    // A locale the target server lacks (the backup as if taken where
    // xx_YY.UTF-8 exists): refused by the CREATE DATABASE itself, which
    // leaves nothing; with ignore_database_properties the encoding is kept
    // and the locale falls back, with a warning.
    let mut elsewhere = m.clone();
    for key in ["collate", "ctype"] {
        elsewhere.metadata["database_properties"][key] = "xx_YY.UTF-8".into();
    }
    let before = count_dbs(&dst);
    let restorer = PostgresLogicalRestorer::new(settings("nolocale"), options(false, false, false));
    let err = job::restore(&repo, &elsewhere, &key, &restorer)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Conflict { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("encoding and locale") && text.contains("xx_YY.UTF-8"),
        "{text}"
    );
    assert_eq!(count_dbs(&dst), before);
    let restorer = PostgresLogicalRestorer::new(settings("nolocale"), options(false, false, true));
    let report = job::restore(&repo, &elsewhere, &key, &restorer)
        .await
        .unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("encoding and locale dropped") && w.contains("xx_YY.UTF-8")),
        "{:?}",
        report.warnings
    );
    assert_eq!(
        dst.psql("postgres", "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate FROM pg_database WHERE datname = 'nolocale'"),
        "LATIN1 C"
    );

    // A property that differs is reported by verify.
    dst.psql(
        "postgres",
        r#"ALTER DATABASE "legacy=latin1" RESET work_mem"#,
    );
    let check = PostgresLogicalRestorer::new(settings(DB), options(false, false, false))
        .check(&m)
        .await
        .unwrap();
    let failures: Vec<_> = check.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(failures, ["database settings"]);

    // verify --restore: a scratch restore without globals on the source's
    // server compares the properties but the owner and the privileges.
    let mut o = LogicalRestoreOptions::default();
    o.no_owner = true;
    let scratch = PostgresLogicalRestorer::scratch(&src.settings("postgres"), o);
    let report = job::verify(&repo, &m, Some(&key), Some(&scratch))
        .await
        .unwrap();
    assert!(report.ok(), "{report:?}");
    let checks = report.checks.unwrap();
    assert!(checks
        .checks
        .iter()
        .any(|c| c.name == "database encoding" && c.actual == "LATIN1"));
    assert!(!checks.checks.iter().any(|c| c.name == "database owner"));

    // An ICU database (PostgreSQL 15+ built with ICU) keeps its provider
    // and ICU locale.
    let icu = "SELECT current_setting('server_version_num')::int >= 150000 \
               AND EXISTS (SELECT 1 FROM pg_collation WHERE collprovider = 'i')";
    if src.psql("postgres", icu) != "t" {
        return;
    }
    src.psql(
        "postgres",
        "CREATE DATABASE icu_db LOCALE_PROVIDER icu ICU_LOCALE 'und' TEMPLATE template0",
    );
    let m = job::backup(&repo, &PostgresLogical::new(src.settings("icu_db")), "icu")
        .await
        .unwrap();
    let props = metadata(&m).database_properties.unwrap();
    assert_eq!(
        (props.locale_provider.as_str(), props.locale.as_deref()),
        ("icu", Some("und"))
    );
    let restorer = PostgresLogicalRestorer::new(settings("icu_db"), options(false, false, false));
    job::restore(&repo, &m, &key, &restorer).await.unwrap();
    let provider = "SELECT datlocprovider FROM pg_database WHERE datname = 'icu_db'";
    assert_eq!(dst.psql("postgres", provider), "i");
    assert_eq!(database(&dst, "icu_db"), database(&src, "icu_db"));
    // The check compares the ICU locale (daticulocale, datlocale from 17).
    let check = restorer.check(&m).await.unwrap();
    assert!(check.ok(), "{:?}", check.failures().collect::<Vec<_>>());
    assert!(check
        .checks
        .iter()
        .any(|c| c.name == "database locale" && c.actual == "und"));
}
