//! Name references, as kustomize's name-reference transformer keeps them: when a resource is
//! renamed (a prefix, a suffix, a content hash) or moved to another namespace, every field that
//! refers to it by its original name follows — a Deployment's ConfigMap volumes, a
//! RoleBinding's `roleRef` and `subjects`, a StatefulSet's `serviceName`, an HPA's target…
//! The table below says which fields of which kinds refer to which kind (kustomize's default
//! set, written out here in Dray's own form).

use serde_json::{Value, json};

use crate::build::Resource;

/// Where a pod spec sits in each workload kind.
const POD_SPECS: &[(&str, &str)] = &[
    ("Pod", "spec"),
    ("PodTemplate", "template/spec"),
    ("ReplicationController", "spec/template/spec"),
    ("Deployment", "spec/template/spec"),
    ("ReplicaSet", "spec/template/spec"),
    ("DaemonSet", "spec/template/spec"),
    ("StatefulSet", "spec/template/spec"),
    ("Job", "spec/template/spec"),
    ("CronJob", "spec/jobTemplate/spec/template/spec"),
];

/// Fields inside a pod spec that refer to a kind.
const IN_POD_SPEC: &[(&str, &str)] = &[
    ("ConfigMap", "volumes/configMap/name"),
    ("ConfigMap", "containers/env/valueFrom/configMapKeyRef/name"),
    (
        "ConfigMap",
        "initContainers/env/valueFrom/configMapKeyRef/name",
    ),
    ("ConfigMap", "containers/envFrom/configMapRef/name"),
    ("ConfigMap", "initContainers/envFrom/configMapRef/name"),
    ("ConfigMap", "volumes/projected/sources/configMap/name"),
    ("Secret", "volumes/secret/secretName"),
    ("Secret", "containers/env/valueFrom/secretKeyRef/name"),
    ("Secret", "initContainers/env/valueFrom/secretKeyRef/name"),
    ("Secret", "containers/envFrom/secretRef/name"),
    ("Secret", "initContainers/envFrom/secretRef/name"),
    ("Secret", "imagePullSecrets/name"),
    ("Secret", "volumes/projected/sources/secret/name"),
    ("ServiceAccount", "serviceAccountName"),
    ("ServiceAccount", "serviceAccount"),
    (
        "PersistentVolumeClaim",
        "volumes/persistentVolumeClaim/claimName",
    ),
    ("PriorityClass", "priorityClassName"),
];

/// Other referring fields: (referred kind, referring kind, path).
const OTHERS: &[(&str, &str, &str)] = &[
    (
        "Deployment",
        "HorizontalPodAutoscaler",
        "spec/scaleTargetRef/name",
    ),
    (
        "ReplicationController",
        "HorizontalPodAutoscaler",
        "spec/scaleTargetRef/name",
    ),
    (
        "ReplicaSet",
        "HorizontalPodAutoscaler",
        "spec/scaleTargetRef/name",
    ),
    (
        "StatefulSet",
        "HorizontalPodAutoscaler",
        "spec/scaleTargetRef/name",
    ),
    ("ConfigMap", "Role", "rules/resourceNames"),
    ("ConfigMap", "ClusterRole", "rules/resourceNames"),
    ("ConfigMap", "Node", "spec/configSource/configMap"),
    ("Secret", "Role", "rules/resourceNames"),
    ("Secret", "ClusterRole", "rules/resourceNames"),
    ("Secret", "Ingress", "spec/tls/secretName"),
    ("Secret", "ServiceAccount", "imagePullSecrets/name"),
    ("Secret", "StorageClass", "parameters/secretName"),
    ("Secret", "StorageClass", "parameters/adminSecretName"),
    ("Secret", "StorageClass", "parameters/userSecretName"),
    ("Secret", "StorageClass", "parameters/secretRef"),
    ("Secret", "PersistentVolume", "spec/azureFile/secretName"),
    ("Service", "StatefulSet", "spec/serviceName"),
    (
        "Service",
        "Ingress",
        "spec/rules/http/paths/backend/serviceName",
    ),
    ("Service", "Ingress", "spec/backend/serviceName"),
    (
        "Service",
        "Ingress",
        "spec/rules/http/paths/backend/service/name",
    ),
    ("Service", "Ingress", "spec/defaultBackend/service/name"),
    ("Service", "APIService", "spec/service/name"),
    (
        "PersistentVolume",
        "PersistentVolumeClaim",
        "spec/volumeName",
    ),
    ("PersistentVolume", "ClusterRole", "rules/resourceNames"),
    ("StorageClass", "PersistentVolume", "spec/storageClassName"),
    (
        "StorageClass",
        "PersistentVolumeClaim",
        "spec/storageClassName",
    ),
    (
        "StorageClass",
        "StatefulSet",
        "spec/volumeClaimTemplates/spec/storageClassName",
    ),
    (
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "spec/policyName",
    ),
];

/// A resource whose name or namespace changed.
struct Moved {
    kind: String,
    original_name: String,
    original_namespace: String,
    name: String,
    namespace: String,
    cluster_scoped: bool,
}

fn same_namespace(a: &str, b: &str) -> bool {
    let norm = |n: &str| if n.is_empty() { "default" } else { n }.to_string();
    norm(a) == norm(b)
}

/// The moved resource of `kind` that `name`, written in a resource of `namespace`, means.
fn find<'a>(moved: &'a [Moved], kind: &str, name: &str, namespace: &str) -> Option<&'a Moved> {
    moved.iter().find(|m| {
        m.kind == kind
            && m.original_name == name
            && (m.cluster_scoped || same_namespace(&m.original_namespace, namespace))
    })
}

/// Calls `f` on every value at `path` (`a/b/c`; lists are walked through).
fn visit(node: &mut Value, path: &[&str], f: &mut dyn FnMut(&mut Value)) {
    match node {
        Value::Array(items) => items.iter_mut().for_each(|i| visit(i, path, f)),
        Value::Object(map) => match path.split_first() {
            None => f(node),
            Some((first, rest)) => {
                if let Some(child) = map.get_mut(*first) {
                    visit(child, rest, f);
                }
            }
        },
        _ if path.is_empty() => f(node),
        _ => {}
    }
}

fn rename(node: &mut Value, moved: &[Moved], kind: &str, namespace: &str) {
    let mut f = |v: &mut Value| {
        if let Some(m) = v.as_str().and_then(|n| find(moved, kind, n, namespace)) {
            *v = json!(m.name);
        }
    };
    visit(node, &[], &mut f);
}

/// Points every reference at the final name (and, for binding subjects and webhook services,
/// namespace) of what it refers to.
pub fn update(resources: &mut [Resource], extra: &[(String, crate::config::FieldSpec)]) {
    let moved: Vec<Moved> = resources
        .iter()
        .filter(|r| r.original_name != r.name() || r.original_namespace != r.namespace())
        .map(|r| Moved {
            kind: r.kind().to_string(),
            original_name: r.original_name.clone(),
            original_namespace: r.original_namespace.clone(),
            name: r.name().to_string(),
            namespace: r.namespace().to_string(),
            cluster_scoped: crate::transform::is_cluster_scoped(r.kind()),
        })
        .collect();
    if moved.is_empty() {
        return;
    }
    for r in resources.iter_mut() {
        let kind = r.kind().to_string();
        let api_version = r.api_version().to_string();
        let namespace = r.original_namespace.clone();
        let doc = &mut r.doc;
        if let Some((_, spec)) = POD_SPECS.iter().find(|(k, _)| *k == kind) {
            let spec_path: Vec<&str> = spec.split('/').collect();
            for (target, path) in IN_POD_SPEC {
                let full: Vec<&str> = spec_path.iter().copied().chain(path.split('/')).collect();
                let mut f = |v: &mut Value| rename(v, &moved, target, &namespace);
                visit(doc, &full, &mut f);
            }
        }
        for (target, spec) in extra {
            if spec.matches_kind_of(&kind, &api_version) {
                let parts = spec.parts();
                let mut f = |v: &mut Value| rename(v, &moved, target, &namespace);
                crate::config::visit(doc, &parts, false, &mut f);
            }
        }
        for (target, referrer, path) in OTHERS {
            if *referrer == kind {
                let parts: Vec<&str> = path.split('/').collect();
                let mut f = |v: &mut Value| rename(v, &moved, target, &namespace);
                visit(doc, &parts, &mut f);
            }
        }
        if matches!(kind.as_str(), "RoleBinding" | "ClusterRoleBinding") {
            if let Some(role_ref) = doc.get_mut("roleRef") {
                let target = role_ref
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if (target == "ClusterRole" || (target == "Role" && kind == "RoleBinding"))
                    && let Some(name) = role_ref.get_mut("name")
                {
                    rename(name, &moved, &target, &namespace);
                }
            }
            if let Some(Value::Array(subjects)) = doc.get_mut("subjects") {
                for s in subjects
                    .iter_mut()
                    .filter(|s| s.get("kind").and_then(Value::as_str) == Some("ServiceAccount"))
                {
                    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
                    let ns = s
                        .get("namespace")
                        .and_then(Value::as_str)
                        .unwrap_or(&namespace)
                        .to_string();
                    if let Some(m) = find(&moved, "ServiceAccount", name, &ns) {
                        s["name"] = json!(m.name);
                        if s.get("namespace").is_some() || !m.namespace.is_empty() {
                            s["namespace"] = json!(m.namespace);
                        }
                    }
                }
            }
        }
        if matches!(
            kind.as_str(),
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration"
        ) && let Some(Value::Array(hooks)) = doc.get_mut("webhooks")
        {
            for hook in hooks {
                let Some(service) = hook.pointer_mut("/clientConfig/service") else {
                    continue;
                };
                let name = service.get("name").and_then(Value::as_str).unwrap_or("");
                let ns = service
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if let Some(m) = find(&moved, "Service", name, &ns) {
                    service["name"] = json!(m.name);
                    if !m.namespace.is_empty() {
                        service["namespace"] = json!(m.namespace);
                    }
                }
            }
        }
    }
}
