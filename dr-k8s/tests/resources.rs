//! The Kubernetes source, restorer and steps against recorded API responses
//! served behind `kube::Client` by an in-process fake (tests/support, the
//! documents in tests/fixtures). No API server can run on these machines.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use dr_core::plan::{ActionContext, ActionRegistry};
use dr_core::{conformance, job};
use dr_k8s::resources::{ExistingPolicy, KubernetesRestoreOptions, Outcome, RestoreResults};
use dr_k8s::{KubeContext, KubernetesMetadata, KubernetesResources, KubernetesRestorer, Selection};
use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions};
use serde_json::json;
use support::{configmap, ns, FakeApi};

async fn repo() -> (Repository, Identities) {
    let key = Identities::generate();
    let loc = Location::parse(&format!("memory://k8s-{}", rand_suffix())).unwrap();
    let repo = Repository::init(
        &loc,
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    (repo, key)
}

fn rand_suffix() -> String {
    format!("{:?}", std::time::SystemTime::now()).replace(|c: char| !c.is_ascii_alphanumeric(), "")
}

fn shop_cluster() -> FakeApi {
    let api = FakeApi::new();
    api.put(ns("shop"));
    api.put(ns("other"));
    for i in 0..5 {
        api.put(configmap("shop", &format!("cm-{i}"), &format!("v{i}")));
    }
    api.put(configmap("other", "elsewhere", "x"));
    api.put(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
        "type": "Opaque", "data": {"password": "c2VjcmV0"}}));
    api.put(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
                 "ports": [{"port": 80, "nodePort": 30080}], "selector": {"app": "web"}},
        "status": {"loadBalancer": {}}}));
    api.put(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop", "generation": 3},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "shop:1",
                    "env": [{"name": "DATABASE_URL", "value": "postgres://old"}]}]}}},
        "status": {"replicas": 2}}));
    api.put(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-7d9f", "namespace": "shop",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "uid-x", "controller": true}]},
        "spec": {"replicas": 2}}));
    api.put(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "app", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}]}));
    api
}

fn shop_selection() -> Selection {
    Selection {
        include_namespaces: vec!["shop".into()],
        ..Selection::all()
    }
}

fn mapped(to: &str) -> KubernetesRestoreOptions {
    let mut o = KubernetesRestoreOptions::default();
    o.namespace_mapping = BTreeMap::from([("shop".to_string(), to.to_string())]);
    o
}

fn results(report: &dr_core::RestoreReport) -> RestoreResults {
    serde_json::from_value(report.details.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn paged_backup_conforms_and_restores_into_a_mapped_namespace() {
    let api = shop_cluster();
    let (repo, key) = repo().await;
    let source = KubernetesResources::new(api.client(), shop_selection()).with_page_size(2);
    let target = KubernetesRestorer::new(api.client(), mapped("shop-dr"));
    let scratch = KubernetesRestorer::new(api.client(), mapped("shop-scratch"));
    conformance::all(&repo, &key, &source, "cluster", &target, &scratch).await;

    // Paged: 5 ConfigMaps at 2 a page are 3 requests, the later ones with a token.
    let cm_lists = api.requests_matching("/api/v1/namespaces/shop/configmaps?");
    assert_eq!(cm_lists.len(), 3, "{cm_lists:?}");
    assert!(
        cm_lists[1].contains("continue=fake-continue-2"),
        "{cm_lists:?}"
    );
    assert!(
        api.requests_matching("namespaces/other/").is_empty(),
        "other namespace not read"
    );

    let m = repo.find_backup(Some("cluster"), "latest").await.unwrap();
    let meta: KubernetesMetadata = serde_json::from_value(m.metadata.clone()).unwrap();
    assert_eq!(meta.server_version, "v1.30.2");
    assert_eq!(meta.namespaces, ["shop"]);
    assert_eq!(meta.counts_by_kind["ConfigMap"], 5);
    assert_eq!(
        meta.counts_by_kind["Secret"], 1,
        "secrets are included by default"
    );
    assert_eq!(meta.counts_by_kind["Namespace"], 1);
    assert!(!meta.counts_by_kind.contains_key("Event"));

    // Restored into shop-dr, stripped and mapped.
    assert_eq!(api.count("v1", "configmaps", "shop-dr"), 5);
    let svc = api.get("v1", "services", "shop-dr", "web").unwrap();
    assert!(svc["spec"].get("clusterIP").is_none(), "{svc}");
    assert!(svc["spec"]["ports"][0].get("nodePort").is_none());
    assert_ne!(
        svc["metadata"]["uid"],
        api.get("v1", "services", "shop", "web").unwrap()["metadata"]["uid"]
    );
    let rb = api
        .get(
            "rbac.authorization.k8s.io/v1",
            "rolebindings",
            "shop-dr",
            "app",
        )
        .unwrap();
    assert_eq!(rb["subjects"][0]["namespace"], "shop-dr");
    assert!(api.get("v1", "namespaces", "", "shop-dr").is_some());
    assert!(
        api.get("apps/v1", "replicasets", "shop-dr", "web-7d9f")
            .is_none(),
        "owned ReplicaSet left to its Deployment"
    );
    // The scratch namespace of the verify is gone.
    assert!(api.get("v1", "namespaces", "", "shop-scratch").is_none());
    assert_eq!(api.count("v1", "configmaps", "shop-scratch"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_can_be_left_out_and_unknown_types_are_refused() {
    let api = shop_cluster();
    let (repo, _key) = repo().await;
    let mut sel = shop_selection();
    sel.include_secrets = false;
    let m = job::backup(&repo, &KubernetesResources::new(api.client(), sel), "c")
        .await
        .unwrap();
    let meta: KubernetesMetadata = serde_json::from_value(m.metadata).unwrap();
    assert!(!meta.counts_by_kind.contains_key("Secret"));
    let mut sel = shop_selection();
    sel.include_resources = vec!["widgets".into()];
    let err = job::backup(&repo, &KubernetesResources::new(api.client(), sel), "c")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, dr_core::Error::InvalidConfig { key, .. } if key == "include_resources"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_group_is_a_warning_in_both_discoveries() {
    let api = shop_cluster();
    api.state
        .lock()
        .unwrap()
        .broken_groups
        .insert("metrics.k8s.io".into());
    let (repo, _key) = repo().await;
    let m = job::backup(
        &repo,
        &KubernetesResources::new(api.client(), shop_selection()),
        "c",
    )
    .await
    .unwrap();
    let meta: KubernetesMetadata = serde_json::from_value(m.metadata).unwrap();
    assert!(!meta.aggregated_discovery);
    assert!(
        meta.warnings
            .iter()
            .any(|w| w.contains("metrics.k8s.io") && w.contains("503")),
        "{:?}",
        meta.warnings
    );
    assert_eq!(meta.counts_by_kind["ConfigMap"], 5);

    api.state.lock().unwrap().aggregated = true;
    let before = api.requests_matching("GET /apis/").len();
    let m = job::backup(
        &repo,
        &KubernetesResources::new(api.client(), shop_selection()),
        "c",
    )
    .await
    .unwrap();
    let meta: KubernetesMetadata = serde_json::from_value(m.metadata).unwrap();
    assert!(meta.aggregated_discovery);
    assert!(
        meta.warnings
            .iter()
            .any(|w| w.contains("metrics.k8s.io") && w.contains("stale")),
        "{:?}",
        meta.warnings
    );
    assert_eq!(meta.counts_by_kind["Deployment"], 1);
    let group_walk = api.requests_matching("GET /apis/").len() - before;
    let object_requests = api.requests_matching("GET /apis/apps/v1/namespaces").len()
        + api.requests_matching("GET /apis/batch/v1/namespaces").len()
        + api
            .requests_matching("GET /apis/rbac.authorization.k8s.io/v1/namespaces")
            .len()
        + api.requests_matching("GET /apis/apiextensions").len();
    assert!(
        group_walk <= object_requests,
        "no per-group discovery requests with aggregated discovery"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crds_are_restored_and_established_before_their_resources() {
    let api = FakeApi::new();
    api.state.lock().unwrap().crd_reads_until_established = 1;
    api.put(ns("shop"));
    api.put(
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true}]}}),
    );
    // A read makes it Established and served.
    assert!(api
        .get(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            "",
            "widgets.example.com"
        )
        .is_some());
    let c = api.client();
    let _: serde_json::Value = c
        .request(
            http::Request::get(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
            )
            .body(vec![])
            .unwrap(),
        )
        .await
        .unwrap();
    api.put(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": "shop"}, "spec": {"size": 3}}));
    let (repo, key) = repo().await;
    let m = job::backup(
        &repo,
        &KubernetesResources::new(api.client(), shop_selection()),
        "c",
    )
    .await
    .unwrap();
    let meta: KubernetesMetadata = serde_json::from_value(m.metadata.clone()).unwrap();
    assert_eq!(
        meta.counts_by_kind["CustomResourceDefinition"], 1,
        "the CRD of an included custom resource is taken"
    );

    // A new cluster: the Widget type is served only after the CRD is Established.
    let fresh = FakeApi::new();
    fresh.state.lock().unwrap().crd_reads_until_established = 3;
    let restorer = KubernetesRestorer::new(fresh.client(), KubernetesRestoreOptions::default());
    let report = job::restore(&repo, &m, &key, &restorer).await.unwrap();
    let r = results(&report);
    assert!(r.complete, "{r:#?}");
    assert_eq!(
        fresh
            .get("example.com/v1", "widgets", "shop", "w1")
            .unwrap()["spec"]["size"],
        3
    );
    let log = fresh.state.lock().unwrap().requests.clone();
    let crd_patch = log
        .iter()
        .position(|l| l.starts_with("PATCH") && l.contains("customresourcedefinitions"))
        .unwrap();
    let ns_patch = log
        .iter()
        .position(|l| l.starts_with("PATCH /api/v1/namespaces/shop?"))
        .unwrap();
    let widget_patch = log
        .iter()
        .position(|l| l.starts_with("PATCH") && l.contains("/widgets/"))
        .unwrap();
    let established_reads = log[crd_patch..widget_patch]
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains("customresourcedefinitions/widgets"))
        .count();
    assert!(crd_patch < ns_patch && ns_patch < widget_patch, "{log:#?}");
    assert!(established_reads >= 3, "waited for Established: {log:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_policies_terminating_namespaces_dry_run_and_invalid_items() {
    let api = shop_cluster();
    api.put(configmap("shop", "bad", "x"));
    let (repo, key) = repo().await;
    let m = job::backup(
        &repo,
        &KubernetesResources::new(api.client(), shop_selection()),
        "c",
    )
    .await
    .unwrap();
    // The live cluster drifts: cm-0 changes, "bad" becomes invalid on apply.
    api.put(configmap("shop", "cm-0", "changed"));
    let mut bad = configmap("shop", "bad", "x");
    bad["metadata"]["labels"]["invalid"] = json!("-bad-");
    api.put(bad.clone());

    let report = job::restore(
        &repo,
        &m,
        &key,
        &KubernetesRestorer::new(api.client(), KubernetesRestoreOptions::default()),
    )
    .await
    .unwrap();
    let r = results(&report);
    let item = |name: &str| {
        r.items()
            .find(|i| i.resource == "configmaps" && i.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(item("cm-0").outcome, Outcome::Warning);
    assert_eq!(item("cm-1").outcome, Outcome::Skipped);
    assert_eq!(
        api.get("v1", "configmaps", "shop", "cm-0").unwrap()["data"]["k"],
        "changed"
    );

    let mut update = KubernetesRestoreOptions::default();
    update.existing = ExistingPolicy::Update;
    // The backed-up "bad" carries no invalid label, so make the backup's copy
    // invalid: restore into a mapped namespace where it is new.
    let report = job::restore(
        &repo,
        &m,
        &key,
        &KubernetesRestorer::new(api.client(), update),
    )
    .await
    .unwrap();
    let r = results(&report);
    assert_eq!(
        r.items()
            .find(|i| i.name == "cm-0" && i.resource == "configmaps")
            .unwrap()
            .outcome,
        Outcome::Restored
    );
    assert_eq!(
        api.get("v1", "configmaps", "shop", "cm-0").unwrap()["data"]["k"],
        "v0"
    );

    // Dry run into a new namespace: nothing changes, every item would be restored.
    let mut dry = mapped("shop-dry");
    dry.dry_run = true;
    let report = job::restore(&repo, &m, &key, &KubernetesRestorer::new(api.client(), dry))
        .await
        .unwrap();
    let r = results(&report);
    assert!(r.dry_run && r.complete);
    assert!(r.count(Outcome::Restored) >= 5);
    assert!(api.get("v1", "namespaces", "", "shop-dry").is_none());
    assert_eq!(api.count("v1", "configmaps", "shop-dry"), 0);

    // A Terminating target namespace: reported once, no request per item.
    let mut term = ns("shop-gone");
    term["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    term["status"]["phase"] = json!("Terminating");
    api.put(term);
    let report = job::restore(
        &repo,
        &m,
        &key,
        &KubernetesRestorer::new(api.client(), mapped("shop-gone")),
    )
    .await
    .unwrap();
    let r = results(&report);
    assert_eq!(r.terminating_namespaces, ["shop-gone"]);
    assert!(!r.complete);
    assert!(r.namespaces["shop-gone"].errors >= 5);
    assert!(api.requests_matching("namespaces/shop-gone/").is_empty());
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("partial restore")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_item_is_an_error_and_the_rest_is_restored() {
    let api = shop_cluster();
    let mut bad = configmap("shop", "bad", "x");
    bad["metadata"]["labels"]["invalid"] = json!("-bad-");
    api.put(bad);
    let (repo, key) = repo().await;
    let m = job::backup(
        &repo,
        &KubernetesResources::new(api.client(), shop_selection()),
        "c",
    )
    .await
    .unwrap();
    let report = job::restore(
        &repo,
        &m,
        &key,
        &KubernetesRestorer::new(api.client(), mapped("shop-2")),
    )
    .await
    .unwrap();
    let r = results(&report);
    let bad = r.items().find(|i| i.name == "bad").unwrap();
    assert_eq!(bad.outcome, Outcome::Error);
    assert!(bad.message.as_deref().unwrap().contains("422"), "{bad:?}");
    assert!(!r.complete);
    assert_eq!(r.namespaces["shop-2"].errors, 1);
    assert_eq!(api.count("v1", "configmaps", "shop-2"), 5);
}

async fn action(
    api: &FakeApi,
    name: &str,
    params: serde_json::Value,
) -> Arc<dyn dr_core::plan::Action> {
    let mut reg = ActionRegistry::new();
    dr_k8s::register(&mut reg, KubeContext::from_client(api.client()));
    reg.build(name, &params).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn set_env_switches_database_url_and_rolls_back() {
    let api = shop_cluster();
    let a = action(
        &api,
        "k8s.set_env",
        json!({"namespace": "shop", "deployment": "web", "name": "DATABASE_URL",
        "secret": {"name": "db-new", "key": "url"}}),
    )
    .await;
    assert!(a.describe().contains("secret shop/db-new"));
    let ctx = ActionContext::default();
    let out = a.run(&ctx).await.unwrap();
    let env = |api: &FakeApi| {
        api.get("apps/v1", "deployments", "shop", "web").unwrap()["spec"]["template"]["spec"]
            ["containers"][0]["env"]
            .clone()
    };
    assert_eq!(env(&api)[0]["valueFrom"]["secretKeyRef"]["name"], "db-new");
    assert!(env(&api)[0].get("value").is_none());
    assert_eq!(
        out.state["previous"][0]["previous"]["value"],
        "postgres://old"
    );
    assert!(a.has_rollback());
    a.rollback(&ctx, &out).await.unwrap();
    assert_eq!(
        env(&api)[0],
        json!({"name": "DATABASE_URL", "value": "postgres://old"})
    );

    // A literal never shows in the description or the summary.
    let a = action(
        &api,
        "k8s.set_env",
        json!({"namespace": "shop", "deployment": "web", "name": "DATABASE_URL",
        "value": "postgres://user:hunter2@db"}),
    )
    .await;
    let out = a.run(&ctx).await.unwrap();
    assert!(!a.describe().contains("hunter2") && !out.summary.contains("hunter2"));
    // Bad parameters name the parameter.
    let mut reg = ActionRegistry::new();
    dr_k8s::register(&mut reg, KubeContext::from_client(api.client()));
    let e = reg
        .build(
            "k8s.set_env",
            &json!({"namespace": "shop", "deployment": "web", "name": "X"}),
        )
        .unwrap_err();
    assert!(
        matches!(&e, dr_core::Error::InvalidConfig { key, .. } if key == "k8s.set_env.value"),
        "{e:?}"
    );
    let e = reg.build("k8s.set_env", &json!({"namespace": "shop", "deployment": "web", "name": "X", "value": "v", "extra": 1})).unwrap_err();
    assert!(matches!(e, dr_core::Error::InvalidConfig { .. }));
    // A missing deployment is NotFound.
    let a = action(
        &api,
        "k8s.set_env",
        json!({"namespace": "shop", "deployment": "nope", "name": "X", "value": "v"}),
    )
    .await;
    assert!(matches!(
        a.run(&ctx).await.unwrap_err(),
        dr_core::Error::NotFound { .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_and_rollback() {
    let api = shop_cluster();
    let a = action(
        &api,
        "k8s.scale",
        json!({"namespace": "shop", "name": "web", "replicas": 5}),
    )
    .await;
    let ctx = ActionContext::default();
    let out = a.run(&ctx).await.unwrap();
    assert_eq!(
        api.get("apps/v1", "deployments", "shop", "web").unwrap()["spec"]["replicas"],
        5
    );
    a.rollback(&ctx, &out).await.unwrap();
    assert_eq!(
        api.get("apps/v1", "deployments", "shop", "web").unwrap()["spec"]["replicas"],
        2
    );
}

fn node(name: &str, zone: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}})
}

fn pod(name: &str, node: &str, ready: bool) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "shop:1"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

#[tokio::test(flavor = "multi_thread")]
async fn zone_spread_fails_on_a_missing_zone_and_passes_on_the_healthy_ones() {
    let api = shop_cluster();
    for (n, z) in [
        ("n1", "eu-west-1a"),
        ("n2", "eu-west-1b"),
        ("n3", "eu-west-1c"),
    ] {
        api.put(node(n, z));
    }
    api.put(pod("web-1", "n1", true));
    api.put(pod("web-2", "n2", true));
    api.put(pod("web-3", "n3", false));
    let ctx = ActionContext::default();
    let a = action(
        &api,
        "k8s.zone_spread",
        json!({"namespace": "shop", "selector": "app=web",
        "expected_zones": ["eu-west-1a", "eu-west-1b", "eu-west-1c"]}),
    )
    .await;
    let e = a.run(&ctx).await.unwrap_err();
    match &e {
        dr_core::Error::VerificationFailed { reason, .. } => {
            assert!(reason.contains("zone eu-west-1c has 0"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let a = action(
        &api,
        "k8s.zone_spread",
        json!({"namespace": "shop", "selector": "app=web",
        "expected_zones": ["eu-west-1a", "eu-west-1b"]}),
    )
    .await;
    let out = a.run(&ctx).await.unwrap();
    assert_eq!(out.state["zones"]["eu-west-1a"], 1);
    assert_eq!(out.state["not_ready"], 1);
    // Skew: three pods in one zone, one in the other.
    for i in 4..6 {
        api.put(pod(&format!("web-{i}"), "n1", true));
    }
    let e = a.run(&ctx).await.unwrap_err();
    assert!(
        matches!(&e, dr_core::Error::VerificationFailed { reason, .. } if reason.contains("skew 2")),
        "{e:?}"
    );

    let ready = action(
        &api,
        "k8s.pods_ready",
        json!({"namespace": "shop", "selector": "app=web"}),
    )
    .await;
    assert!(matches!(
        ready.run(&ctx).await.unwrap_err(),
        dr_core::Error::VerificationFailed { .. }
    ));
    let ready = action(
        &api,
        "k8s.pods_ready",
        json!({"namespace": "shop", "selector": "app=web", "min_ready": 4}),
    )
    .await;
    ready.run(&ctx).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_rollout_completes_or_fails_on_the_progress_deadline() {
    let api = shop_cluster();
    let mut d = api.get("apps/v1", "deployments", "shop", "web").unwrap();
    d["status"] = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2});
    api.put(d.clone());
    let ctx = ActionContext::default();
    let a = action(
        &api,
        "k8s.wait_rollout",
        json!({"namespace": "shop", "deployment": "web", "timeout_secs": 5}),
    )
    .await;
    a.run(&ctx).await.unwrap();
    d["status"] = json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet web-2 has timed out progressing."}]});
    api.put(d.clone());
    assert!(matches!(
        a.run(&ctx).await.unwrap_err(),
        dr_core::Error::VerificationFailed { .. }
    ));
    d["status"] = json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2});
    api.put(d);
    let a = action(
        &api,
        "k8s.wait_rollout",
        json!({"namespace": "shop", "deployment": "web", "timeout_secs": 1, "poll_secs": 1}),
    )
    .await;
    let e = a.run(&ctx).await.unwrap_err();
    assert!(
        matches!(&e, dr_core::Error::Timeout { what, .. } if what.contains("old replicas")),
        "{e:?}"
    );
    assert!(e.is_retryable());
}
