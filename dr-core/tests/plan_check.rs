//! `plan check`: every problem found before anything runs, each pointing at
//! its step and key; and the runbook's four scenario plans in
//! `examples/plans/` check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use dr_core::plan::{
    actions, check, check_file, parse_set, Action, ActionContext, ActionOutput, ActionRegistry,
    CheckOptions, PlanErrors, PlanIssue, PlanSpec,
};

/// Stands for an action of a system crate that dr-core cannot depend on
/// (`postgres.*`, `dns.*`, `vault.*`): accepts any parameter object. The
/// system crates check their own parameters in their own tests.
#[derive(Debug)]
struct Stub(&'static str);

#[async_trait]
impl Action for Stub {
    fn name(&self) -> &'static str {
        self.0
    }
    fn describe(&self) -> String {
        format!("{} (stub)", self.0)
    }
    async fn run(&self, _ctx: &ActionContext) -> dr_core::Result<ActionOutput> {
        unreachable!("stubs are only checked")
    }
    fn has_rollback(&self) -> bool {
        true
    }
}

const SYSTEM_ACTIONS: [&str; 10] = [
    "postgres.revoke_writes",
    "postgres.grant_writes",
    "postgres.sql_check",
    "postgres.pitr_restore",
    "postgres.logical_restore",
    "postgres.verify",
    "dns.failover",
    "vault.restore",
    "k8s.zone_spread",
    "k8s.pods_ready",
];

fn registry() -> ActionRegistry {
    let mut r = ActionRegistry::new();
    actions::register(&mut r);
    // Without the `http` feature the HTTP actions are stubs too.
    let missing_http: Vec<&'static str> = ["http.check", "notify.webhook"]
        .into_iter()
        .filter(|n| !r.names().any(|k| k == *n))
        .collect();
    for name in SYSTEM_ACTIONS.into_iter().chain(missing_http) {
        r.register(
            name,
            Arc::new(move |p: &serde_json::Value| {
                if !p.is_object() {
                    return Err(dr_core::Error::InvalidConfig {
                        key: name.into(),
                        reason: "parameters must be a table".into(),
                    });
                }
                Ok(Arc::new(Stub(name)) as Arc<dyn Action>)
            }),
        );
    }
    r
}

fn errors(toml: &str) -> Vec<PlanIssue> {
    errors_with(toml, &CheckOptions::default())
}

fn errors_with(toml: &str, options: &CheckOptions) -> Vec<PlanIssue> {
    let spec = match PlanSpec::from_toml(toml) {
        Ok(s) => s,
        Err(e) => return e.issues,
    };
    match check(&spec, &registry(), options) {
        Ok(_) => panic!("the plan checked:\n{toml}"),
        Err(e) => e.issues,
    }
}

fn has(issues: &[PlanIssue], step: Option<&str>, key: &str, words: &str) {
    assert!(
        issues
            .iter()
            .any(|i| i.step.as_deref() == step && i.key == key && i.message.contains(words)),
        "no issue for step {step:?} key {key:?} containing {words:?} in:\n{}",
        PlanErrors {
            issues: issues.to_vec()
        }
    );
}

#[test]
fn unknown_action_missing_and_ill_typed_parameters() {
    let issues = errors(
        r#"
name = "p"
[[steps]]
name = "a"
action = "postgres.frobnicate"
[[steps]]
name = "b"
action = "wait"
[[steps]]
name = "c"
action = "exec"
params = { argv = "not-a-list" }
[[steps]]
name = "d"
action = "wait"
params = { duration = "soon" }
[[steps]]
name = "e"
action = "exec"
params = { argv = ["true"], shel = true }
"#,
    );
    has(
        &issues,
        Some("a"),
        "action",
        "unknown action \"postgres.frobnicate\"",
    );
    has(&issues, Some("b"), "params.duration", "missing field");
    has(&issues, Some("c"), "params", "invalid type");
    has(&issues, Some("d"), "params.duration", "not a duration");
    has(&issues, Some("e"), "params.shel", "unknown field");
    assert_eq!(issues.len(), 5, "{issues:#?}");
}

#[test]
fn graph_problems_cycle_unreachable_unknown_after() {
    let issues = errors(
        r#"
name = "p"
[[steps]]
name = "a"
action = "wait"
params = { duration = "1s" }
after = ["c"]
[[steps]]
name = "b"
action = "wait"
params = { duration = "1s" }
after = ["a"]
[[steps]]
name = "c"
action = "wait"
params = { duration = "1s" }
after = ["b"]
[[steps]]
name = "d"
action = "wait"
params = { duration = "1s" }
after = ["c"]
[[steps]]
name = "e"
action = "wait"
params = { duration = "1s" }
after = ["ghost", "e"]
[[steps]]
name = "d"
action = "wait"
params = { duration = "1s" }
"#,
    );
    has(
        &issues,
        Some("a"),
        "after",
        "dependency cycle: a -> b -> c -> a",
    );
    has(&issues, Some("d"), "after", "unreachable");
    has(&issues, Some("e"), "after", "no step named \"ghost\"");
    has(&issues, Some("e"), "after", "cannot come after itself");
    has(&issues, Some("d"), "name", "same name");
}

#[test]
fn variable_problems() {
    let toml = r#"
name = "p"
[variables.known]
default = "x"
[variables.needed]
description = "no default"
[[steps]]
name = "a"
action = "wait"
params = { duration = "1s", reason = "${known} ${unknown} ${needed}" }
[[steps]]
name = "b"
action = "wait"
params = { duration = "${steps.c.state.d}" }
[[steps]]
name = "c"
action = "wait"
params = { duration = "1s", reason = "${steps.c.summary} ${oops" }
"#;
    let issues = errors(toml);
    has(
        &issues,
        Some("a"),
        "params.reason",
        "unknown variable ${unknown}",
    );
    has(
        &issues,
        Some("b"),
        "params.duration",
        "must be among this step's `after`",
    );
    has(&issues, Some("c"), "params.reason", "unclosed");
    has(
        &issues,
        None,
        "variables.needed",
        "no value: pass --set needed=..., set DR_VAR_NEEDED",
    );
    // A declared variable without a value is reported once, not as unknown
    // at each reference.
    assert!(
        !issues.iter().any(|i| i.message.contains("${needed}")),
        "{issues:?}"
    );

    // --set of an undeclared variable is an error; the environment fills a value.
    let mut options =
        CheckOptions::with_set(BTreeMap::from([("typo".to_string(), "1".to_string())]));
    options = options.env(BTreeMap::from([(
        "DR_VAR_NEEDED".to_string(),
        "v".to_string(),
    )]));
    let issues = errors_with(toml, &options);
    has(&issues, None, "--set typo", "declares no variable");
    assert!(
        !issues.iter().any(|i| i.key == "variables.needed"),
        "{issues:#?}"
    );
}

#[test]
fn durations_rollbacks_and_file_errors() {
    let issues = errors(
        r#"
name = "p"
rto = "one hour"
[[steps]]
name = "a"
action = "exec"
params = { argv = ["true"] }
timeout = "0s"
backoff = "fast"
rollback = true
[[steps]]
name = "b"
action = "wait"
params = { duration = "1s" }
rollback = { action = "exec", params = { argv = [] } }
"#,
    );
    has(&issues, None, "rto", "not a duration");
    has(&issues, Some("a"), "timeout", "more than zero");
    has(&issues, Some("a"), "backoff", "not a duration");
    has(&issues, Some("a"), "rollback", "has no rollback of its own");
    has(
        &issues,
        Some("b"),
        "rollback.params.argv",
        "at least the program",
    );

    // A misspelt key is a parse error with its line, not a silent default.
    let issues =
        errors("name = \"p\"\n[[steps]]\nname = \"a\"\naction = \"wait\"\ntimout = \"1s\"\n");
    assert!(
        issues[0].message.contains("unknown field `timout`")
            && issues[0].message.contains("line 5"),
        "{issues:#?}"
    );
    assert!(check_file(
        &PathBuf::from("/nonexistent/plan.toml"),
        &registry(),
        &CheckOptions::default()
    )
    .is_err());
    assert!(parse_set("x").is_err());
    assert_eq!(parse_set("a=b=c").unwrap(), ("a".into(), "b=c".into()));
}

#[test]
fn the_error_converts_to_invalid_config_naming_step_and_key() {
    let spec =
        PlanSpec::from_toml("name = \"p\"\n[[steps]]\nname = \"a\"\naction = \"wait\"\n").unwrap();
    let err: dr_core::Error = check(&spec, &registry(), &CheckOptions::default())
        .unwrap_err()
        .into();
    match err {
        dr_core::Error::InvalidConfig { key, .. } => assert_eq!(key, "step.a.params.duration"),
        other => panic!("{other}"),
    }
}

#[test]
fn a_checked_plan_previews_in_order_with_secrets_masked() {
    let spec = PlanSpec::from_toml(
        r#"
name = "p"
rto = "30m"
[variables.token]
secret = true
[[steps]]
name = "later"
action = "exec"
after = ["first"]
params = { argv = ["curl", "-H", "Authorization: ${token}", "https://x"] }
[[steps]]
name = "first"
action = "wait"
params = { duration = "2s" }
"#,
    )
    .unwrap();
    let options = CheckOptions::default().env(BTreeMap::from([(
        "DR_VAR_TOKEN".to_string(),
        "s3cr3t".to_string(),
    )]));
    let plan = check(&spec, &registry(), &options).unwrap();
    let text = plan.preview().to_text();
    assert!(
        text.find("first").unwrap() < text.find("later").unwrap(),
        "{text}"
    );
    assert!(text.contains("RTO 30m"), "{text}");
    assert!(
        !text.contains("s3cr3t") && text.contains("Authorization: ***"),
        "{text}"
    );
    assert_eq!(plan.variables()["token"], "***");
    let json = serde_json::to_string(&plan.preview()).unwrap();
    assert!(!json.contains("s3cr3t"));
    // The plan round-trips through TOML.
    assert_eq!(PlanSpec::from_toml(&spec.to_toml().unwrap()).unwrap(), spec);
}

fn example_plans() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/plans");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn the_runbook_scenarios_check() {
    let plans = example_plans();
    let names: Vec<_> = plans
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    for scenario in [
        "single-az-failure.toml",
        "region-failure.toml",
        "data-corruption.toml",
        "cluster-loss.toml",
    ] {
        assert!(
            names.contains(&scenario.to_string()),
            "missing example plan {scenario}"
        );
    }
    let options = CheckOptions::default().allow_missing_values(true);
    for path in plans {
        let plan = check_file(&path, &registry(), &options)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            plan.rto().is_some(),
            "{}: every scenario has an RTO",
            path.display()
        );
        assert!(!plan.preview().to_text().is_empty());
    }
}

#[test]
fn the_data_corruption_plan_has_the_runbook_order() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/plans/data-corruption.toml");
    let options = CheckOptions::default().allow_missing_values(true);
    let plan = check_file(&path, &registry(), &options).unwrap();
    let order: Vec<_> = plan.ordered().map(|s| s.action.as_str()).collect();
    let pos = |a: &str| {
        order
            .iter()
            .position(|x| *x == a)
            .unwrap_or_else(|| panic!("no {a} in {order:?}"))
    };
    assert!(pos("postgres.revoke_writes") < pos("postgres.pitr_restore"));
    assert!(pos("postgres.pitr_restore") < pos("postgres.sql_check"));
    assert!(pos("postgres.sql_check") < pos("exec"));
    assert!(pos("exec") < pos("postgres.grant_writes"));
    // Drill values fill the targets.
    let spec = plan.spec().clone();
    let set = BTreeMap::from([(
        "target_time".to_string(),
        "2024-05-01T09:41:00Z".to_string(),
    )]);
    let drill = check(&spec, &registry(), &CheckOptions::with_set(set).drill(true)).unwrap();
    assert_eq!(drill.variables()["app_env_file"], "/tmp/dr-drill/app.env");
}

/// `plan check --preflight`: each step's action touches what it will work
/// on, changing nothing; a step whose parameters use an earlier step's
/// output is not checked; an unreachable target fails its step only. (The
/// HTTP actions exist with the `http` feature, which the test command
/// enables.)
#[cfg(feature = "http")]
#[tokio::test]
async fn preflight_reaches_each_steps_target_and_skips_what_depends_on_outputs() {
    use dr_core::plan::Preflight;
    // A closed port: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_port = open.local_addr().unwrap().port();
    let spec = PlanSpec::from_toml(&format!(
        r#"
name = "preflight"
[[steps]]
name = "present"
action = "exec"
params = {{ argv = ["true"] }}
[[steps]]
name = "absent"
action = "exec"
params = {{ argv = ["/nonexistent/dr-no-such-program"] }}
[[steps]]
name = "pause"
action = "wait"
params = {{ duration = "1s" }}
[[steps]]
name = "listening"
action = "http.check"
params = {{ url = "http://127.0.0.1:{open_port}/health" }}
[[steps]]
name = "closed"
action = "http.check"
params = {{ url = "http://127.0.0.1:{closed}/health" }}
[[steps]]
name = "uses-output"
action = "exec"
after = ["present"]
params = {{ argv = ["${{steps.present.summary}}"] }}
"#
    ))
    .unwrap();
    let plan = check(&spec, &registry(), &CheckOptions::default()).unwrap();
    let checks = plan.preflight(std::time::Duration::from_secs(5)).await;
    let by_step = |name: &str| {
        checks
            .iter()
            .find(|c| c.step == name)
            .unwrap_or_else(|| panic!("{name} in {checks:?}"))
    };
    assert!(
        matches!(&by_step("present").outcome, Ok(Preflight::Reached(t)) if t.contains("/true")),
        "{checks:?}"
    );
    let absent = by_step("absent");
    assert!(absent.failed());
    assert!(
        absent
            .outcome
            .as_ref()
            .unwrap_err()
            .contains("/nonexistent/dr-no-such-program"),
        "{absent:?}"
    );
    assert!(matches!(
        by_step("pause").outcome,
        Ok(Preflight::NotChecked(_))
    ));
    assert!(
        matches!(&by_step("listening").outcome, Ok(Preflight::Reached(t)) if t.contains("accepts connections")),
        "{checks:?}"
    );
    let closed_step = by_step("closed");
    assert!(closed_step.failed(), "{closed_step:?}");
    assert!(
        matches!(&by_step("uses-output").outcome, Ok(Preflight::NotChecked(t)) if t.contains("present")),
        "{checks:?}"
    );
    assert_eq!(checks.iter().filter(|c| c.failed()).count(), 2);
    let json = serde_json::to_value(by_step("absent")).unwrap();
    assert_eq!(json["result"], "failed", "{json}");
    assert_eq!(json["step"], "absent", "{json}");
    drop(open);
}
