//! `dr plan check` on every example plan of the runbook, through the built
//! binary with every action dr knows registered (a repository and its key, and
//! a `[dns]` section, so that repository and DNS steps are checked too).

use std::path::Path;

use assert_cmd::Command;

fn dr(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("dr").unwrap();
    c.current_dir(dir)
        .env_remove("DR_REPO")
        .env("DR_CONFIG", dir.join("dr.toml"));
    c
}

/// `dr key generate --output key.txt` in `dir`; returns the recipient.
fn generate_key(dir: &std::path::Path) -> String {
    let out = dr(dir)
        .env_remove("DR_CONFIG")
        .args(["key", "generate", "--output", "key.txt"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn every_example_plan_checks() {
    let dir = tempfile::tempdir().unwrap();
    let recipient = generate_key(dir.path());
    std::fs::write(
        dir.path().join("tsig.secret"),
        "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dr.toml"),
        format!(
            "[repository]\nurl = \"{repo}\"\nrecipients = [\"{recipient}\"]\nidentity_file = \"{key}\"\n\n\
             [dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:53\"\nzone = \"example.com.\"\nkey_name = \"k\"\n\
             secret_file = \"{tsig}\"\n",
            repo = dir.path().join("repo").display(),
            key = dir.path().join("key.txt").display(),
            tsig = dir.path().join("tsig.secret").display(),
        ),
    )
    .unwrap();
    let out = dr(dir.path()).args(["repo", "init"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plans = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plans");
    let cases: &[(&str, &[&str])] = &[
        (
            "single-az-failure.toml",
            &["zone_a=eu-west-1b", "zone_b=eu-west-1c"],
        ),
        (
            "region-failure.toml",
            &[
                "dr_dsn=postgresql://app@127.0.0.1/app",
                "primary_ip=10.0.0.1",
                "dr_ip=10.1.0.1",
            ],
        ),
        (
            "data-corruption.toml",
            &[
                "app_dsn=postgresql://app@127.0.0.1/app",
                "target_time=2026-11-29 14:00:00+00",
                "app_env_file=/tmp/app.env",
            ],
        ),
        (
            "cluster-loss.toml",
            &[
                "app_dsn=postgresql://app@127.0.0.1/app",
                "billing_dsn=postgresql://app@127.0.0.1/billing",
                "old_ip=10.0.0.1",
                "new_ip=10.1.0.1",
            ],
        ),
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(&plans).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".toml") {
            seen += 1;
            assert!(
                cases.iter().any(|(n, _)| *n == name),
                "example plan {name} has no check case"
            );
        }
    }
    assert_eq!(seen, cases.len());
    for (name, sets) in cases {
        let mut cmd = dr(dir.path());
        cmd.args(["plan", "check"]).arg(plans.join(name));
        for s in *sets {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "dr plan check {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("1. "),
            "{name}: the ordered plan is printed: {text}"
        );
        // A missing value is an error that names the variable, exit 2.
        let out = dr(dir.path())
            .args(["plan", "check"])
            .arg(plans.join(name))
            .output()
            .unwrap();
        if !sets.is_empty() {
            assert_eq!(out.status.code(), Some(2), "{name}");
            let var = sets[0].split('=').next().unwrap();
            assert!(String::from_utf8_lossy(&out.stderr).contains(var), "{name}");
        }
    }
    // A broken plan: unknown action and a cycle, each named.
    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"bad\"\n[[steps]]\nname = \"a\"\naction = \"postgres.frobnicate\"\nafter = [\"b\"]\n\
         [[steps]]\nname = \"b\"\naction = \"wait\"\nafter = [\"a\"]\nparams = { duration = \"1s\" }\n",
    )
    .unwrap();
    let out = dr(dir.path())
        .args(["plan", "check", "bad.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("postgres.frobnicate") && err.contains("cycle"),
        "{err}"
    );
}

/// `dr plan check` with a Route53 `[dns]` section validates offline: the
/// endpoint is a closed port and the instance metadata service is off, so
/// any connection at check time would fail it. `dr dns` commands, which
/// need the server, still report the failure to connect.
#[test]
fn a_route53_plan_checks_offline() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        dir.path().join("dr.toml"),
        format!(
            "[dns]\nprovider = \"route53\"\nzone_name = \"example.com.\"\n\
             endpoint_url = \"http://127.0.0.1:{port}\"\nmax_attempts = 1\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("failover.toml"),
        "name = \"failover\"\n[[steps]]\nname = \"dns\"\naction = \"dns.failover\"\nrollback = true\n\
         params = { name = \"api.example.com.\", type = \"A\", from = [\"10.0.0.1\"], to = [\"10.1.0.1\"], ttl = 60 }\n",
    )
    .unwrap();
    let offline = |c: &mut Command| {
        c.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .timeout(std::time::Duration::from_secs(60));
    };
    let mut cmd = dr(dir.path());
    offline(&mut cmd);
    let out = cmd
        .args(["plan", "check", "failover.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = dr(dir.path());
    offline(&mut cmd);
    let out = cmd
        .args(["dns", "get", "www.example.com."])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ListHostedZonesByName example.com."),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dr plan check --preflight` against a real PostgreSQL and a real
/// repository: a database step reaches its server, one on a closed port
/// fails naming it, a PITR step fails when the repository holds no base
/// backup of its source, and the command exits 1; nothing is changed.
#[test]
fn preflight_touches_each_steps_target_and_fails_on_the_unreachable() {
    if !dr_postgres::testing::should_run() {
        return;
    }
    let pg = dr_postgres::testing::TestCluster::start();
    let closed = dr_postgres::testing::free_port();
    let dir = tempfile::tempdir().unwrap();
    let recipient = generate_key(dir.path());
    std::fs::write(
        dir.path().join("dr.toml"),
        format!(
            "[repository]\nurl = \"{}\"\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n",
            dir.path().join("repo").display(),
            dir.path().join("key.txt").display(),
        ),
    )
    .unwrap();
    assert!(dr(dir.path())
        .args(["repo", "init"])
        .output()
        .unwrap()
        .status
        .success());
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            r#"name = "preflight"
[[steps]]
name = "live"
action = "postgres.sql_check"
params = {{ dsn = "{live}", checks = [{{ name = "one", query = "SELECT true" }}] }}
[[steps]]
name = "down"
action = "postgres.revoke_writes"
params = {{ dsn = "postgresql://postgres@127.0.0.1:{closed}/postgres", role = "app" }}
[[steps]]
name = "restore"
action = "postgres.pitr_restore"
params = {{ source = "nobackups", target_time = "2026-01-01T00:00:00Z", data_dir = "{data}" }}
"#,
            live = pg.dsn("postgres"),
            data = dir.path().join("restored").display(),
        ),
    )
    .unwrap();
    let out = dr(dir.path())
        .args(["plan", "check", "--preflight"])
        .arg(&plan)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |step: &str| {
        text.lines()
            .find(|l| l.contains(&format!(" {step} (")))
            .unwrap_or_else(|| panic!("no line for {step}:\n{text}"))
            .to_string()
    };
    assert!(
        line("live").contains("ok") && line("live").contains("PostgreSQL 15"),
        "{text}"
    );
    assert!(
        line("down").contains("FAILED") && line("down").contains(&closed.to_string()),
        "{text}"
    );
    assert!(
        line("restore").contains("FAILED") && line("restore").contains("base backup of nobackups"),
        "{text}"
    );
    assert!(
        !dir.path().join("restored").exists(),
        "preflight wrote nothing"
    );
    // Without --preflight, nothing outside is touched: the same plan checks.
    let out = dr(dir.path())
        .args(["plan", "check"])
        .arg(&plan)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dr drill PLAN` stores its report; `dr drill list` names it; `dr drill
/// report ID` prints it as Markdown, JSON, or a self-contained HTML page with
/// the checklist and one timeline lane per step; a failed drill exits 1.
#[test]
fn a_drill_report_renders_as_markdown_json_and_html() {
    let dir = tempfile::tempdir().unwrap();
    let recipient = generate_key(dir.path());
    std::fs::write(
        dir.path().join("dr.toml"),
        "[repository]\nurl = \"repo\"\nidentity_file = \"key.txt\"\n",
    )
    .unwrap();
    let init = dr(dir.path())
        .args(["repo", "init", "--recipient", &recipient])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    std::fs::write(
        dir.path().join("drill.toml"),
        r#"name = "tiny"
rto = "1m"

[[steps]]
name = "backup-and-restore"
action = "exec"
drill = ["backup", "restore"]
params = { argv = ["true"] }

[[steps]]
name = "check-rows"
action = "exec"
after = ["backup-and-restore"]
drill = ["integrity", "app"]
params = { argv = ["true"] }
"#,
    )
    .unwrap();
    let run = dr(dir.path())
        .args(["--json", "drill", "drill.toml"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let id = report["id"].as_str().unwrap().to_string();
    assert_eq!(report["passed"], true);

    let list = dr(dir.path()).args(["drill", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id));
    let md = dr(dir.path())
        .args(["drill", "report", &id])
        .output()
        .unwrap();
    assert!(md.status.success());
    assert!(String::from_utf8_lossy(&md.stdout).starts_with(&format!("# Drill `{id}`: tiny")));
    let page = dir.path().join("drill.html");
    let html = dr(dir.path())
        .args(["drill", "report", &id, "--html", page.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        html.status.success(),
        "{}",
        String::from_utf8_lossy(&html.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<span class=\"ok\">PASSED</span>"), "{html}");
    assert_eq!(html.matches("<div class=\"lane\">").count(), 2, "{html}");
    assert!(html.contains("<td>check-rows</td>"), "{html}");
    let missing = dr(dir.path())
        .args(["drill", "report", "no-such-drill"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-drill"));
}
