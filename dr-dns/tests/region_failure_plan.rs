//! The DNS part of examples/plans/region-failure.toml, run by the plan
//! executor against the in-memory provider, moto's Route53 and BIND: the
//! switch to DR, and the rollback the executor performs when a later step
//! fails.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use dr_core::dns::{
    Change, DnsProvider, DnsProviderExt, InMemoryDnsProvider, RecordKey, RecordSet, RecordType,
};
use dr_core::plan::{
    actions, check, ActionRegistry, CheckOptions, Executor, JournalStore, PlanSpec, RunStatus,
    StepSpec, StepStatus,
};
use dr_dns::{Rfc2136Builder, Rfc2136Config, Route53Builder, Route53Config};

const PRIMARY: &str = "203.0.113.10";
const DR: &str = "198.51.100.10";

/// The plan's DNS steps, optionally followed by a step that fails.
fn dns_part(fail_after: bool) -> PlanSpec {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/plans/region-failure.toml"
    );
    let text = std::fs::read_to_string(path).expect("the example plan exists");
    let mut spec =
        PlanSpec::from_toml(&text).unwrap_or_else(|e| panic!("the example plan parses: {e:?}"));
    spec.steps.retain(|s| s.action.starts_with("dns."));
    assert!(!spec.steps.is_empty(), "the plan has a DNS step");
    let kept: Vec<String> = spec.steps.iter().map(|s| s.name.clone()).collect();
    for s in &mut spec.steps {
        s.after.retain(|a| kept.contains(a));
        // Poll faster than the plan's 5 s: the servers here sync at once.
        s.params
            .insert("poll_interval".into(), toml::Value::String("100ms".into()));
    }
    if fail_after {
        spec.steps.push(
            StepSpec::new("after-switch-fails", "exec")
                .param("argv", serde_json::json!(["false"]))
                .after(kept),
        );
    }
    spec
}

async fn run(
    provider: Arc<dyn DnsProvider>,
    name: &str,
    fail_after: bool,
) -> dr_core::plan::RunReport {
    let plan = checked(provider, name, fail_after);
    let journal = tempfile::tempdir().unwrap();
    Executor::new(JournalStore::local(journal.path()))
        .run(&plan)
        .await
        .expect("the executor runs")
}

/// The DNS part checked against `provider`.
fn checked(
    provider: Arc<dyn DnsProvider>,
    name: &str,
    fail_after: bool,
) -> dr_core::plan::CheckedPlan {
    let mut registry = ActionRegistry::new();
    actions::register(&mut registry);
    dr_dns::register(&mut registry, provider);
    let set = BTreeMap::from([
        ("api_name".to_string(), name.to_string()),
        // The restore steps are cut out above; their variable still needs a value.
        (
            "dr_dsn".to_string(),
            "postgresql://dr@127.0.0.1/app".to_string(),
        ),
        ("primary_ip".to_string(), PRIMARY.to_string()),
        ("dr_ip".to_string(), DR.to_string()),
    ]);
    check(
        &dns_part(fail_after),
        &registry,
        &CheckOptions::with_set(set),
    )
    .unwrap_or_else(|e| panic!("the DNS part checks: {e:?}"))
}

async fn value(p: &dyn DnsProvider, name: &str) -> Vec<String> {
    p.get(&RecordKey::new(name, RecordType::A).unwrap())
        .await
        .unwrap()
        .map(|r| r.values)
        .unwrap_or_default()
}

/// Switches `name` to DR, then (on `rollback_name`) switches and rolls back.
async fn scenario(p: Arc<dyn DnsProvider>, name: &str, rollback_name: &str) {
    // UPSERT, not CREATE: moto 5.2.5 refuses a CREATE identical to one in its
    // change journal while the name exists before the batch's DELETE is
    // applied, so the rollback's DELETE+CREATE of this very value would fail
    // there (AWS accepts it: the batch is validated as a whole).
    for n in [name, rollback_name] {
        p.apply_one(Change::upsert(RecordSet::new(
            n,
            RecordType::A,
            300,
            [PRIMARY],
        )))
        .await
        .expect("primary record");
    }

    // `plan check --preflight`: the failover step reads the record from
    // the provider and changes nothing.
    let checks = checked(p.clone(), name, false)
        .preflight(std::time::Duration::from_secs(30))
        .await;
    let dns = checks.iter().find(|c| c.action == "dns.failover").unwrap();
    assert!(
        matches!(&dns.outcome, Ok(dr_core::plan::Preflight::Reached(t)) if t.contains(PRIMARY)),
        "{checks:?}"
    );
    assert_eq!(value(p.as_ref(), name).await, vec![PRIMARY.to_string()]);

    let report = run(p.clone(), name, false).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:#?}");
    assert_eq!(
        value(p.as_ref(), name).await,
        vec![DR.to_string()],
        "switched to DR"
    );
    let step = report
        .steps
        .iter()
        .find(|s| s.action == "dns.failover")
        .unwrap();
    assert!(
        step.summary.as_deref().unwrap_or("").contains(DR),
        "{step:?}"
    );

    let report = run(p.clone(), rollback_name, true).await;
    assert_eq!(report.status, RunStatus::RolledBack, "{report:#?}");
    let step = report
        .steps
        .iter()
        .find(|s| s.action == "dns.failover")
        .unwrap();
    assert_eq!(step.status, StepStatus::RolledBack, "{step:?}");
    assert_eq!(
        value(p.as_ref(), rollback_name).await,
        vec![PRIMARY.to_string()],
        "switched back"
    );

    for n in [name, rollback_name] {
        let cur = p
            .get(&RecordKey::new(n, RecordType::A).unwrap())
            .await
            .unwrap()
            .unwrap();
        p.apply_one(Change::delete(cur)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn region_failure_dns_on_memory() {
    let p = Arc::new(InMemoryDnsProvider::new("example.test").with_pending_polls(2));
    scenario(p, "api.example.test.", "api2.example.test.").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn region_failure_dns_on_route53_emulator() {
    if common::server_env("AWS_ENDPOINT_URL", "region_failure_dns_on_route53_emulator").is_none() {
        return;
    }
    let (_, zone) = common::moto_zone("plan").await;
    let p = Route53Builder::new(Route53Config {
        zone_name: Some(zone.clone()),
        authoritative_query: Some(false),
        ..Default::default()
    })
    .build()
    .await
    .unwrap();
    scenario(Arc::new(p), &format!("api.{zone}"), &format!("api2.{zone}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn region_failure_dns_on_bind() {
    let test = "region_failure_dns_on_bind";
    let (Some(server), Some(zone), Some(key), Some(file)) = (
        common::server_env("DR_TEST_BIND_SERVER", test),
        common::server_env("DR_TEST_BIND_ZONE", test),
        common::server_env("DR_TEST_BIND_KEY_NAME", test),
        common::server_env("DR_TEST_BIND_KEY_FILE", test),
    ) else {
        return;
    };
    let mut c = Rfc2136Config::new(server, &zone);
    c.key_name = Some(key);
    c.secret_file = Some(file.into());
    let p = Rfc2136Builder::new(c).build().unwrap();
    let label = common::unique("plan");
    scenario(
        Arc::new(p),
        &format!("api.{label}.{zone}"),
        &format!("api2.{label}.{zone}"),
    )
    .await;
}
