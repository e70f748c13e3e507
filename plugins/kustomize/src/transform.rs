//! kustomize's built-in transformers over rendered resources: namespace, name prefix/suffix,
//! labels (with selectors and templates), annotations, replicas, images, and the name
//! references that follow renamed ConfigMaps, Secrets and ServiceAccounts.

use std::collections::BTreeMap;
use std::path::Path;

use dray_sdk::StepError;
use serde_json::{Map, Value, json};

use crate::build::{Resource, fail};

/// Kinds that live outside namespaces.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "PodSecurityPolicy",
    "RuntimeClass",
    "CSIDriver",
    "VolumeSnapshotClass",
];

const WORKLOADS: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "StatefulSet",
    "Job",
    "ReplicationController",
];

fn object_at<'a>(
    doc: &'a mut Value,
    path: &[&str],
    create: bool,
) -> Option<&'a mut Map<String, Value>> {
    let mut node = doc;
    for part in path {
        let map = node.as_object_mut()?;
        if !map.contains_key(*part) {
            if !create {
                return None;
            }
            map.insert((*part).to_string(), json!({}));
        }
        node = map.get_mut(*part).expect("just checked");
        if node.is_null() && create {
            *node = json!({});
        }
    }
    node.as_object_mut()
}

pub fn namespace(resources: &mut [Resource], namespace: &str) {
    for r in resources.iter_mut() {
        // A Namespace object becomes the target namespace itself, as kustomize renames it.
        if r.kind() == "Namespace" {
            r.set_name(namespace.to_string());
            continue;
        }
        if CLUSTER_SCOPED.contains(&r.kind()) {
            continue;
        }
        if let Some(meta) = object_at(&mut r.doc, &["metadata"], true) {
            meta.insert("namespace".into(), json!(namespace));
        }
        // Bindings to the default ServiceAccount follow the namespace, as kustomize does.
        if matches!(r.kind(), "RoleBinding" | "ClusterRoleBinding")
            && let Some(Value::Array(subjects)) = r.doc.get_mut("subjects")
        {
            for s in subjects
                .iter_mut()
                .filter(|s| s.get("kind").and_then(Value::as_str) == Some("ServiceAccount"))
            {
                if s.get("name").and_then(Value::as_str) == Some("default") {
                    s["namespace"] = json!(namespace);
                }
            }
        }
    }
}

pub fn prefix_suffix(resources: &mut [Resource], prefix: &str, suffix: &str) {
    for r in resources.iter_mut() {
        if matches!(r.kind(), "CustomResourceDefinition" | "Namespace") {
            continue;
        }
        let name = format!("{prefix}{}{suffix}", r.name());
        r.set_name(name);
    }
}

fn insert_all(map: &mut Map<String, Value>, pairs: &BTreeMap<String, String>) {
    for (k, v) in pairs {
        map.insert(k.clone(), json!(v));
    }
}

/// Adds labels to metadata; with `selectors`, to selectors too; with `templates`, to pod (and
/// job) templates.
pub fn labels(
    resources: &mut [Resource],
    pairs: &BTreeMap<String, String>,
    selectors: bool,
    templates: bool,
) {
    for r in resources.iter_mut() {
        let kind = r.kind().to_string();
        if let Some(m) = object_at(&mut r.doc, &["metadata", "labels"], true) {
            insert_all(m, pairs);
        }
        if templates {
            if WORKLOADS.contains(&kind.as_str())
                && let Some(m) = object_at(
                    &mut r.doc,
                    &["spec", "template", "metadata", "labels"],
                    true,
                )
            {
                insert_all(m, pairs);
            }
            if kind == "CronJob" {
                for path in [
                    &["spec", "jobTemplate", "metadata", "labels"][..],
                    &[
                        "spec",
                        "jobTemplate",
                        "spec",
                        "template",
                        "metadata",
                        "labels",
                    ],
                ] {
                    if let Some(m) = object_at(&mut r.doc, path, true) {
                        insert_all(m, pairs);
                    }
                }
            }
        }
        if selectors {
            match kind.as_str() {
                "Service" => {
                    if let Some(m) = object_at(&mut r.doc, &["spec", "selector"], true) {
                        insert_all(m, pairs);
                    }
                }
                "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
                    if let Some(m) =
                        object_at(&mut r.doc, &["spec", "selector", "matchLabels"], true)
                    {
                        insert_all(m, pairs);
                    }
                }
                "Job" | "PodDisruptionBudget" => {
                    if let Some(m) =
                        object_at(&mut r.doc, &["spec", "selector", "matchLabels"], false)
                    {
                        insert_all(m, pairs);
                    }
                }
                "ReplicationController" => {
                    if let Some(m) = object_at(&mut r.doc, &["spec", "selector"], true) {
                        insert_all(m, pairs);
                    }
                }
                _ => {}
            }
        }
    }
}

pub fn annotations(resources: &mut [Resource], pairs: &BTreeMap<String, String>) {
    for r in resources.iter_mut() {
        let kind = r.kind().to_string();
        if let Some(m) = object_at(&mut r.doc, &["metadata", "annotations"], true) {
            insert_all(m, pairs);
        }
        if WORKLOADS.contains(&kind.as_str())
            && let Some(m) = object_at(
                &mut r.doc,
                &["spec", "template", "metadata", "annotations"],
                true,
            )
        {
            insert_all(m, pairs);
        }
        if kind == "CronJob"
            && let Some(m) = object_at(
                &mut r.doc,
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "metadata",
                    "annotations",
                ],
                true,
            )
        {
            insert_all(m, pairs);
        }
    }
}

pub fn replicas(
    resources: &mut [Resource],
    entries: &[Value],
    file: &Path,
) -> Result<(), StepError> {
    for (i, e) in entries.iter().enumerate() {
        let (Some(name), Some(count)) = (
            e.get("name").and_then(Value::as_str),
            e.get("count").and_then(Value::as_i64),
        ) else {
            return Err(fail(format!(
                "{}: replicas[{i}] needs name and count",
                file.display()
            )));
        };
        for r in resources.iter_mut().filter(|r| r.name() == name) {
            if matches!(
                r.kind(),
                "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController"
            ) && let Some(spec) = object_at(&mut r.doc, &["spec"], true)
            {
                spec.insert("replicas".into(), json!(count));
            }
        }
    }
    Ok(())
}

/// Splits `name[:tag][@digest]` (a registry port is not a tag).
pub fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

fn set_image(value: &mut Value, entries: &[Value]) {
    let Some(image) = value.as_str() else { return };
    let (name, tag, digest) = split_image(image);
    let Some(entry) = entries
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
    else {
        return;
    };
    let field = |f: &str| {
        entry.get(f).and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
        })
    };
    let new_name = field("newName").unwrap_or_else(|| name.to_string());
    let new = match (field("newTag"), field("digest")) {
        (_, Some(d)) => format!("{new_name}@{d}"),
        (Some(t), None) => format!("{new_name}:{t}"),
        (None, None) => match (tag, digest) {
            (Some(t), Some(d)) => format!("{new_name}:{t}@{d}"),
            (Some(t), None) => format!("{new_name}:{t}"),
            (None, Some(d)) => format!("{new_name}@{d}"),
            (None, None) => new_name,
        },
    };
    *value = Value::String(new);
}

/// Sets images in every container list of every resource (kustomize looks in `containers` and
/// `initContainers` wherever they are).
fn walk_images(v: &mut Value, entries: &[Value]) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if matches!(
                    k.as_str(),
                    "containers" | "initContainers" | "ephemeralContainers"
                ) && let Value::Array(list) = child
                {
                    for c in list.iter_mut() {
                        if let Some(image) = c.get_mut("image") {
                            set_image(image, entries);
                        }
                    }
                }
                walk_images(child, entries);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| walk_images(c, entries)),
        _ => {}
    }
}

pub fn images(resources: &mut [Resource], entries: &[Value]) {
    for r in resources.iter_mut() {
        walk_images(&mut r.doc, entries);
    }
}

/// The pod spec of a workload, wherever its kind keeps it.
fn pod_spec(doc: &mut Value) -> Option<&mut Value> {
    match doc.get("kind").and_then(Value::as_str)? {
        "Pod" => doc.get_mut("spec"),
        "CronJob" => doc.pointer_mut("/spec/jobTemplate/spec/template/spec"),
        k if WORKLOADS.contains(&k) => doc.pointer_mut("/spec/template/spec"),
        _ => None,
    }
}

fn rename(slot: Option<&mut Value>, renames: &BTreeMap<String, String>) {
    if let Some(v) = slot
        && let Some(new) = v.as_str().and_then(|old| renames.get(old))
    {
        *v = json!(new);
    }
}

/// Points references in pod specs at the final names of ConfigMaps, Secrets and
/// ServiceAccounts renamed by a prefix, a suffix or a content hash.
pub fn update_references(resources: &mut [Resource]) {
    let mut renames: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for r in resources.iter() {
        let kind = match r.kind() {
            "ConfigMap" => "ConfigMap",
            "Secret" => "Secret",
            "ServiceAccount" => "ServiceAccount",
            _ => continue,
        };
        if r.original_name != r.name() {
            renames
                .entry(kind)
                .or_default()
                .insert(r.original_name.clone(), r.name().to_string());
        }
    }
    if renames.is_empty() {
        return;
    }
    let empty = BTreeMap::new();
    let cm = renames.get("ConfigMap").unwrap_or(&empty);
    let secret = renames.get("Secret").unwrap_or(&empty);
    let sa = renames.get("ServiceAccount").unwrap_or(&empty);
    for r in resources.iter_mut() {
        let Some(spec) = pod_spec(&mut r.doc) else {
            continue;
        };
        rename(spec.get_mut("serviceAccountName"), sa);
        if let Some(Value::Array(secrets)) = spec.get_mut("imagePullSecrets") {
            for s in secrets {
                rename(s.get_mut("name"), secret);
            }
        }
        if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
            for v in volumes {
                rename(v.pointer_mut("/configMap/name"), cm);
                rename(v.pointer_mut("/secret/secretName"), secret);
                if let Some(Value::Array(sources)) = v.pointer_mut("/projected/sources") {
                    for s in sources {
                        rename(s.pointer_mut("/configMap/name"), cm);
                        rename(s.pointer_mut("/secret/name"), secret);
                    }
                }
            }
        }
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            let Some(Value::Array(containers)) = spec.get_mut(list) else {
                continue;
            };
            for c in containers {
                if let Some(Value::Array(from)) = c.get_mut("envFrom") {
                    for f in from {
                        rename(f.pointer_mut("/configMapRef/name"), cm);
                        rename(f.pointer_mut("/secretRef/name"), secret);
                    }
                }
                if let Some(Value::Array(env)) = c.get_mut("env") {
                    for e in env {
                        rename(e.pointer_mut("/valueFrom/configMapKeyRef/name"), cm);
                        rename(e.pointer_mut("/valueFrom/secretKeyRef/name"), secret);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_images_without_mistaking_a_port_for_a_tag() {
        assert_eq!(
            split_image("localhost:5000/web:1.2"),
            ("localhost:5000/web", Some("1.2"), None)
        );
        assert_eq!(
            split_image("localhost:5000/web"),
            ("localhost:5000/web", None, None)
        );
        assert_eq!(
            split_image("nginx@sha256:ab"),
            ("nginx", None, Some("sha256:ab"))
        );
    }
}
