//! Preparing a backed-up object for a restore: removing what the API server
//! sets, and moving it to its new namespace.
//!
//! The metadata rule is Velero's `resetMetadata` (pkg/restore/restore.go):
//! uid, resourceVersion, generation, creationTimestamp, deletion fields,
//! selfLink, managedFields and ownerReferences (owners' uids belong to the old
//! cluster: the garbage collector would delete an object whose owner uid does
//! not exist) are removed, and so is `status`. Service and Job rules follow
//! Velero's restore item actions (pkg/restore/actions/service_action.go,
//! job_action.go).

use std::collections::BTreeMap;

use serde_json::Value;

/// What [`strip`] keeps that it would otherwise remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StripOptions {
    /// Keep a Service's `clusterIP`/`clusterIPs` (an address taken in the new
    /// cluster fails the create).
    pub keep_cluster_ips: bool,
    /// Keep a Service's `nodePort`s.
    pub keep_node_ports: bool,
}

const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "ownerReferences",
];

/// The labels the Job controller sets from the Job's uid.
const JOB_UID_LABELS: &[&str] = &["controller-uid", "batch.kubernetes.io/controller-uid"];

/// Removes what the server sets from `obj` (see the module docs).
pub fn strip(obj: &mut Value, options: StripOptions) {
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let group = obj["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit_once('/').map(|(g, _)| g.to_string()))
        .unwrap_or_default();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in SERVER_METADATA {
            meta.remove(*k);
        }
        // Never restore `generateName` next to a name: the name wins.
        if meta.contains_key("name") {
            meta.remove("generateName");
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            // kubectl's last-applied copy holds the old cluster's fields.
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    match (group.as_str(), kind.as_str()) {
        ("", "Service") => strip_service(obj, options),
        ("batch", "Job") => strip_job(obj),
        _ => {}
    }
}

fn strip_service(obj: &mut Value, options: StripOptions) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    // A headless Service keeps `clusterIP: None`: it is a choice, not an address.
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if !options.keep_cluster_ips && !headless {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if !options.keep_node_ports {
        spec.remove("healthCheckNodePort");
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                if let Some(p) = p.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
    }
}

fn strip_job(obj: &mut Value) {
    let remove_labels = |labels: Option<&mut Value>| {
        if let Some(l) = labels.and_then(Value::as_object_mut) {
            for k in JOB_UID_LABELS {
                l.remove(*k);
            }
        }
    };
    remove_labels(obj.pointer_mut("/metadata/labels"));
    remove_labels(obj.pointer_mut("/spec/template/metadata/labels"));
    let manual = obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
    if !manual {
        // The generated selector matches the old uid; the server makes a new one.
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("selector");
        }
    }
}

/// Moves `obj` from its backed-up namespace to the mapped one, including the
/// fields that name a namespace: RoleBinding/ClusterRoleBinding subjects, a
/// PersistentVolume's `claimRef`, a Namespace's own name.
pub fn map_namespaces(obj: &mut Value, mapping: &BTreeMap<String, String>) {
    if mapping.is_empty() {
        return;
    }
    let map = |v: &mut Value| {
        if let Some(new) = v.as_str().and_then(|s| mapping.get(s)) {
            *v = Value::String(new.clone());
        }
    };
    if let Some(ns) = obj.pointer_mut("/metadata/namespace") {
        map(ns);
    }
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    match kind.as_str() {
        "Namespace" => {
            if let Some(n) = obj.pointer_mut("/metadata/name") {
                map(n);
            }
            if let Some(l) = obj
                .pointer_mut("/metadata/labels")
                .and_then(|l| l.get_mut("kubernetes.io/metadata.name"))
            {
                map(l);
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
                for s in subjects {
                    if let Some(ns) = s.get_mut("namespace") {
                        map(ns);
                    }
                }
            }
        }
        "PersistentVolume" => {
            if let Some(ns) = obj.pointer_mut("/spec/claimRef/namespace") {
                map(ns);
            }
            if let Some(c) = obj
                .pointer_mut("/spec/claimRef")
                .and_then(Value::as_object_mut)
            {
                // The claim in the new namespace has a new uid.
                c.remove("uid");
                c.remove("resourceVersion");
            }
        }
        _ => {}
    }
}

/// The controller owning `obj` (`ReplicaSet/web-7d9f`), from its
/// `ownerReferences` with `controller: true`.
pub fn controller_of(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"].as_bool() == Some(true))
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["name"].as_str().unwrap_or("?")
            )
        })
}

/// Whether everything `desired` sets has the same value in `live` (fields
/// the server adds, defaults and status, are ignored).
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| {
            l.get(k).is_some_and(|lv| is_subset(dv, lv)) || (dv.is_null() && !l.contains_key(k))
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        _ => desired == live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_addresses_go_unless_kept_and_headless_stays() {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "9",
                "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{}]},
            "spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "type": "NodePort",
                "ports": [{"port": 80, "nodePort": 30080}]},
            "status": {"loadBalancer": {}}});
        let mut a = svc.clone();
        strip(&mut a, StripOptions::default());
        assert_eq!(a["metadata"], json!({"name": "web", "namespace": "shop"}));
        assert!(a.get("status").is_none());
        assert!(a["spec"].get("clusterIP").is_none() && a["spec"].get("clusterIPs").is_none());
        assert!(a["spec"]["ports"][0].get("nodePort").is_none());
        let mut b = svc.clone();
        strip(
            &mut b,
            StripOptions {
                keep_cluster_ips: true,
                keep_node_ports: true,
            },
        );
        assert_eq!(b["spec"]["clusterIP"], "10.0.0.7");
        assert_eq!(b["spec"]["ports"][0]["nodePort"], 30080);
        let mut h = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        strip(&mut h, StripOptions::default());
        assert_eq!(h["spec"]["clusterIP"], "None");
    }

    #[test]
    fn job_uid_labels_and_selector_go() {
        let mut job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "labels": {"controller-uid": "x", "batch.kubernetes.io/controller-uid": "x", "app": "m"}},
            "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "x"}},
                "template": {"metadata": {"labels": {"controller-uid": "x", "app": "m"}}}}});
        strip(&mut job, StripOptions::default());
        assert_eq!(job["metadata"]["labels"], json!({"app": "m"}));
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"],
            json!({"app": "m"})
        );
        assert!(job["spec"].get("selector").is_none());
    }

    #[test]
    fn namespace_references_are_mapped() {
        let m: BTreeMap<_, _> = [("shop".to_string(), "shop-dr".to_string())].into();
        let mut rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "r", "namespace": "shop"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"},
                         {"kind": "ServiceAccount", "name": "mon", "namespace": "monitoring"}]});
        map_namespaces(&mut rb, &m);
        assert_eq!(rb["metadata"]["namespace"], "shop-dr");
        assert_eq!(rb["subjects"][0]["namespace"], "shop-dr");
        assert_eq!(rb["subjects"][1]["namespace"], "monitoring");
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}}});
        map_namespaces(&mut ns, &m);
        assert_eq!(ns["metadata"]["name"], "shop-dr");
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "shop-dr"
        );
    }

    #[test]
    fn subset_ignores_server_defaults() {
        let desired = json!({"spec": {"replicas": 2, "template": {"x": [1, 2]}}});
        let live = json!({"spec": {"replicas": 2, "revisionHistoryLimit": 10, "template": {"x": [1, 2]}}, "status": {}});
        assert!(is_subset(&desired, &live));
        assert!(!is_subset(&json!({"spec": {"replicas": 3}}), &live));
    }
}
