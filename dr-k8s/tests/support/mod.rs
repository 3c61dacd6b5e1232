//! An in-process fake of the Kubernetes API server behind `kube::Client`:
//! discovery and status errors from the recorded documents in
//! `tests/fixtures/`, objects in memory, lists paged with `limit`/`continue`,
//! server-side apply (with `dryRun`), replace with optimistic concurrency,
//! the `scale` subresource, and CRDs that become Established (and served)
//! after a few reads, as a real API server does asynchronously.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

pub fn fixture(path: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

type Key = (String, String, String, String); // (group/version, plural, namespace, name)

#[derive(Default)]
pub struct State {
    pub aggregated: bool,
    /// Groups whose discovery answers 503.
    pub broken_groups: BTreeSet<String>,
    pub objects: BTreeMap<Key, Value>,
    pub requests: Vec<String>,
    /// Reads of a new CRD before it is Established.
    pub crd_reads_until_established: u32,
    crd_reads: BTreeMap<String, u32>,
    /// Served custom types: group/version -> APIResource documents.
    custom: BTreeMap<String, Vec<Value>>,
    rv: u64,
}

#[derive(Clone)]
pub struct FakeApi {
    pub state: Arc<Mutex<State>>,
}

fn status(file: &str, code: u16, message: Option<String>) -> Response<Body> {
    let mut v = fixture(&format!("status/{file}.json"));
    if let Some(m) = message {
        v["message"] = Value::String(m);
    }
    respond(code, v)
}

fn respond(code: u16, v: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&v).unwrap()))
        .unwrap()
}

fn kind_of(plural: &str, gv: &str, state: &State) -> String {
    for f in [
        "discovery/api-v1.json",
        "discovery/apis-apps-v1.json",
        "discovery/apis-batch-v1.json",
        "discovery/apis-rbac.authorization.k8s.io-v1.json",
        "discovery/apis-apiextensions.k8s.io-v1.json",
    ] {
        let d = fixture(f);
        if d["groupVersion"] == gv {
            if let Some(r) = d["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == plural)
            {
                return r["kind"].as_str().unwrap().to_string();
            }
        }
    }
    state
        .custom
        .get(gv)
        .and_then(|rs| rs.iter().find(|r| r["name"] == plural))
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .unwrap_or_else(|| "Unknown".into())
}

fn selector_matches(sel: Option<&str>, obj: &Value) -> bool {
    let Some(sel) = sel else { return true };
    sel.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap();
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl FakeApi {
    pub fn new() -> Self {
        FakeApi {
            state: Arc::new(Mutex::new(State {
                crd_reads_until_established: 2,
                ..Default::default()
            })),
        }
    }

    pub fn client(&self) -> Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes: Bytes = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                Ok::<_, std::convert::Infallible>(me.handle(parts, bytes))
            }
        });
        Client::new(svc, "default")
    }

    pub fn put(&self, obj: Value) {
        let mut s = self.state.lock().unwrap();
        let (gv, plural) = Self::type_of(&obj, &s);
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        s.rv += 1;
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        obj["metadata"]
            .as_object_mut()
            .unwrap()
            .entry("uid")
            .or_insert(json!(format!("uid-{}", s.rv)));
        s.objects.insert((gv, plural, ns, name), obj);
    }

    pub fn get(&self, gv: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(gv.into(), plural.into(), ns.into(), name.into()))
            .cloned()
    }

    pub fn count(&self, gv: &str, plural: &str, ns: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .objects
            .keys()
            .filter(|k| k.0 == gv && k.1 == plural && k.2 == ns)
            .count()
    }

    pub fn requests_matching(&self, needle: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.contains(needle))
            .cloned()
            .collect()
    }

    fn type_of(obj: &Value, s: &State) -> (String, String) {
        let gv = obj["apiVersion"].as_str().unwrap().to_string();
        let kind = obj["kind"].as_str().unwrap();
        let plural = match kind {
            "Namespace" => "namespaces".to_string(),
            "ConfigMap" => "configmaps".into(),
            "Secret" => "secrets".into(),
            "Service" => "services".into(),
            "ServiceAccount" => "serviceaccounts".into(),
            "Pod" => "pods".into(),
            "Node" => "nodes".into(),
            "Deployment" => "deployments".into(),
            "ReplicaSet" => "replicasets".into(),
            "Job" => "jobs".into(),
            "RoleBinding" => "rolebindings".into(),
            "PersistentVolumeClaim" => "persistentvolumeclaims".into(),
            "PersistentVolume" => "persistentvolumes".into(),
            "CustomResourceDefinition" => "customresourcedefinitions".into(),
            other => s
                .custom
                .get(&gv)
                .and_then(|rs| rs.iter().find(|r| r["kind"] == other))
                .map(|r| r["name"].as_str().unwrap().to_string())
                .unwrap_or_else(|| panic!("fake: unknown kind {other}")),
        };
        (gv, plural)
    }

    fn handle(&self, parts: http::request::Parts, body: Bytes) -> Response<Body> {
        let path = parts.uri.path().to_string();
        let query: BTreeMap<String, String> =
            parts.uri.query().map(url_decode_pairs).unwrap_or_default();
        let accept = parts
            .headers
            .get("accept")
            .and_then(|a| a.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut s = self.state.lock().unwrap();
        s.requests.push(format!("{} {}", parts.method, parts.uri));
        // Discovery.
        if parts.method == Method::GET {
            if path == "/version" {
                return respond(200, fixture("version.json"));
            }
            if path == "/api" || path == "/apis" {
                if s.aggregated && accept.contains("as=APIGroupDiscoveryList") {
                    let f = if path == "/api" {
                        "aggregated-api"
                    } else {
                        "aggregated-apis"
                    };
                    return respond(200, fixture(&format!("discovery/{f}.json")));
                }
                let mut doc = fixture(&format!("discovery/{}.json", &path[1..]));
                if path == "/apis" {
                    for gv in s.custom.keys() {
                        let (g, v) = gv.split_once('/').unwrap();
                        doc["groups"].as_array_mut().unwrap().push(json!({"name": g,
                            "versions": [{"groupVersion": gv, "version": v}],
                            "preferredVersion": {"groupVersion": gv, "version": v}}));
                    }
                }
                return respond(200, doc);
            }
            let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let is_discovery =
                (segs.len() == 2 && segs[0] == "api") || (segs.len() == 3 && segs[0] == "apis");
            if is_discovery {
                let (group, gv) = if segs[0] == "api" {
                    (String::new(), segs[1].to_string())
                } else {
                    (segs[1].to_string(), format!("{}/{}", segs[1], segs[2]))
                };
                if s.broken_groups.contains(&group) {
                    return status("503", 503, None);
                }
                if let Some(rs) = s.custom.get(&gv) {
                    return respond(
                        200,
                        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": rs}),
                    );
                }
                let f = if group.is_empty() {
                    "api-v1".to_string()
                } else {
                    format!("apis-{}-{}", segs[1], segs[2])
                };
                return respond(200, fixture(&format!("discovery/{f}.json")));
            }
        }
        // Objects.
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (gv, rest) = if segs[0] == "api" {
            (segs[1].to_string(), &segs[2..])
        } else {
            (format!("{}/{}", segs[1], segs[2]), &segs[3..])
        };
        let (ns, plural, name, sub) = if rest.len() >= 3 && rest[0] == "namespaces" {
            (
                rest[1].to_string(),
                rest[2].to_string(),
                rest.get(3).map(|s| s.to_string()),
                rest.get(4).map(|s| s.to_string()),
            )
        } else {
            (
                String::new(),
                rest[0].to_string(),
                rest.get(1).map(|s| s.to_string()),
                rest.get(2).map(|s| s.to_string()),
            )
        };
        let served = gv == "v1"
            || gv.starts_with("apps/")
            || gv.starts_with("batch/")
            || gv.starts_with("rbac.")
            || gv.starts_with("apiextensions.")
            || s.custom.contains_key(&gv);
        if !served {
            return status(
                "404",
                404,
                Some("the server could not find the requested resource".into()),
            );
        }
        let kind = kind_of(&plural, &gv, &s);
        match (parts.method.clone(), name) {
            (Method::GET, None) => {
                let limit: usize = query
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(usize::MAX);
                let start: usize = query
                    .get("continue")
                    .map(|c| c.trim_start_matches("fake-continue-").parse().unwrap())
                    .unwrap_or(0);
                let sel = query.get("labelSelector").map(String::as_str);
                let all: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|(k, _)| k.0 == gv && k.1 == plural && (ns.is_empty() || k.2 == ns))
                    .map(|(_, v)| v.clone())
                    .filter(|v| selector_matches(sel, v))
                    .collect();
                let page: Vec<Value> = all
                    .iter()
                    .skip(start)
                    .take(limit)
                    .map(|v| {
                        let mut v = v.clone();
                        let o = v.as_object_mut().unwrap();
                        o.remove("apiVersion");
                        o.remove("kind");
                        v
                    })
                    .collect();
                let mut meta = json!({"resourceVersion": s.rv.to_string()});
                if start + page.len() < all.len() {
                    meta["continue"] = json!(format!("fake-continue-{}", start + page.len()));
                    meta["remainingItemCount"] = json!(all.len() - start - page.len());
                }
                respond(
                    200,
                    json!({"apiVersion": gv, "kind": format!("{kind}List"), "metadata": meta, "items": page}),
                )
            }
            (Method::GET, Some(name)) => {
                let key = (gv.clone(), plural.clone(), ns.clone(), name.clone());
                let Some(mut obj) = s.objects.get(&key).cloned() else {
                    return status("404", 404, Some(format!("{plural} \"{name}\" not found")));
                };
                if plural == "customresourcedefinitions" {
                    let reads = s.crd_reads.entry(name.clone()).or_default();
                    *reads += 1;
                    if *reads >= s.crd_reads_until_established {
                        obj["status"] = json!({"conditions": [{"type": "Established", "status": "True"}, {"type": "NamesAccepted", "status": "True"}]});
                        s.objects.insert(key, obj.clone());
                        let g = obj["spec"]["group"].as_str().unwrap().to_string();
                        let v = obj["spec"]["versions"][0]["name"]
                            .as_str()
                            .unwrap()
                            .to_string();
                        let names = &obj["spec"]["names"];
                        let res = json!({"name": names["plural"], "singularName": names["singular"], "kind": names["kind"],
                            "namespaced": obj["spec"]["scope"] == "Namespaced",
                            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]});
                        s.custom.insert(format!("{g}/{v}"), vec![res]);
                    }
                }
                if sub.as_deref() == Some("scale") {
                    return respond(
                        200,
                        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                        "metadata": {"name": name, "namespace": ns}, "spec": {"replicas": obj["spec"]["replicas"]}}),
                    );
                }
                respond(200, obj)
            }
            (Method::PATCH, Some(name)) => {
                let ct = parts
                    .headers
                    .get("content-type")
                    .and_then(|c| c.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let patch: Value = serde_json::from_slice(&body).unwrap();
                if !ns.is_empty()
                    && !s.objects.contains_key(&(
                        "v1".into(),
                        "namespaces".into(),
                        String::new(),
                        ns.clone(),
                    ))
                {
                    return status("404", 404, Some(format!("namespaces \"{ns}\" not found")));
                }
                if patch["metadata"]["labels"]["invalid"].is_string() {
                    return status("422", 422, None);
                }
                let key = (gv.clone(), plural.clone(), ns.clone(), name.clone());
                let existing = s.objects.get(&key).cloned();
                let mut obj = if ct.starts_with("application/apply-patch") {
                    let mut o = patch.clone();
                    if let Some(e) = &existing {
                        o["metadata"]["uid"] = e["metadata"]["uid"].clone();
                        o["metadata"]["creationTimestamp"] =
                            e["metadata"]["creationTimestamp"].clone();
                        if let Some(st) = e.get("status") {
                            o["status"] = st.clone();
                        }
                    }
                    o
                } else {
                    let Some(mut e) = existing.clone() else {
                        return status("404", 404, Some(format!("{plural} \"{name}\" not found")));
                    };
                    if sub.as_deref() == Some("scale") {
                        e["spec"]["replicas"] = patch["spec"]["replicas"].clone();
                    } else {
                        merge(&mut e, &patch);
                    }
                    e
                };
                if query.get("dryRun").map(String::as_str) != Some("All") {
                    s.rv += 1;
                    obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                    if existing.is_none() {
                        obj["metadata"]["uid"] = json!(format!("uid-{}", s.rv));
                        obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                    }
                    s.objects.insert(key, obj.clone());
                }
                if sub.as_deref() == Some("scale") {
                    return respond(
                        200,
                        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                        "metadata": {"name": name, "namespace": ns}, "spec": {"replicas": obj["spec"]["replicas"]}}),
                    );
                }
                respond(if existing.is_some() { 200 } else { 201 }, obj)
            }
            (Method::PUT, Some(name)) => {
                let mut obj: Value = serde_json::from_slice(&body).unwrap();
                let key = (gv.clone(), plural.clone(), ns.clone(), name.clone());
                let Some(existing) = s.objects.get(&key).cloned() else {
                    return status("404", 404, Some(format!("{plural} \"{name}\" not found")));
                };
                if obj["metadata"]["resourceVersion"] != existing["metadata"]["resourceVersion"] {
                    return status("409", 409, None);
                }
                s.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                s.objects.insert(key, obj.clone());
                respond(200, obj)
            }
            (Method::DELETE, Some(name)) => {
                let key = (gv.clone(), plural.clone(), ns.clone(), name.clone());
                match s.objects.remove(&key) {
                    None => status("404", 404, Some(format!("{plural} \"{name}\" not found"))),
                    Some(obj) => {
                        if plural == "namespaces" {
                            s.objects.retain(|k, _| k.2 != name);
                        }
                        respond(200, obj)
                    }
                }
            }
            (m, n) => panic!("fake: unhandled {m} {path} {n:?}"),
        }
    }
}

fn url_decode_pairs(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

pub fn ns(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}, "status": {"phase": "Active"}})
}

pub fn configmap(ns: &str, name: &str, data: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": {"app": "shop"}}, "data": {"k": data}})
}
