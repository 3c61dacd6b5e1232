//! The order of a restore, after Velero's default restore priorities
//! (`defaultRestorePriorities`, pkg/cmd/server/server.go): CRDs first (then
//! a wait until they are Established and a new discovery), Namespaces,
//! storage, ServiceAccounts, ConfigMaps, Secrets, claims, Services,
//! workloads, then everything else in name order.

use crate::resources::discovery::ResourceType;

/// The types restored first, in order, by qualified name.
pub const PRIORITIES: &[&str] = &[
    "customresourcedefinitions.apiextensions.k8s.io",
    "namespaces",
    "storageclasses.storage.k8s.io",
    "persistentvolumes",
    "serviceaccounts",
    "configmaps",
    "secrets",
    "limitranges",
    "resourcequotas",
    "persistentvolumeclaims",
    "services",
    "deployments.apps",
    "statefulsets.apps",
    "daemonsets.apps",
    "replicasets.apps",
    "cronjobs.batch",
    "jobs.batch",
    "pods",
];

/// The rank of `r` (lower first); types without a priority come after all
/// that have one.
pub fn rank(r: &ResourceType) -> usize {
    let q = r.qualified_name();
    PRIORITIES
        .iter()
        .position(|p| *p == q)
        .unwrap_or(PRIORITIES.len())
}

/// Whether `r` is the CustomResourceDefinition type.
pub fn is_crd(r: &ResourceType) -> bool {
    r.group == "apiextensions.k8s.io" && r.plural == "customresourcedefinitions"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_then_namespaces_then_the_rest_by_name() {
        let t = |g: &str, p: &str| ResourceType {
            group: g.into(),
            version: "v1".into(),
            kind: String::new(),
            plural: p.into(),
            namespaced: true,
            verbs: vec![],
        };
        let mut v = [
            t("example.com", "widgets"),
            t("apps", "deployments"),
            t("", "namespaces"),
            t("", "secrets"),
            t("apiextensions.k8s.io", "customresourcedefinitions"),
            t("", "configmaps"),
        ];
        v.sort_by_key(|r| (rank(r), r.qualified_name()));
        let names: Vec<_> = v.iter().map(|r| r.plural.as_str()).collect();
        assert_eq!(
            names,
            [
                "customresourcedefinitions",
                "namespaces",
                "configmaps",
                "secrets",
                "deployments",
                "widgets"
            ]
        );
    }
}
