//! kustomize's built-in transformers over rendered resources: namespace, name prefix/suffix,
//! labels (with selectors and templates), annotations, replicas, images, and the name
//! references that follow renamed ConfigMaps, Secrets and ServiceAccounts.

use std::collections::BTreeMap;
use std::path::Path;

use dray_sdk::StepError;
use serde_json::{Map, Value, json};

use crate::build::{Resource, fail};

/// Kinds that live outside namespaces.
/// Whether objects of `kind` live outside namespaces.
pub fn is_cluster_scoped(kind: &str) -> bool {
    CLUSTER_SCOPED.contains(&kind)
}

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
        if !CLUSTER_SCOPED.contains(&r.kind())
            && let Some(meta) = object_at(&mut r.doc, &["metadata"], true)
        {
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
            if kind == "StatefulSet"
                && let Some(Value::Array(claims)) = r.doc.pointer_mut("/spec/volumeClaimTemplates")
            {
                for claim in claims {
                    if let Some(m) = object_at(claim, &["metadata", "labels"], true) {
                        insert_all(m, pairs);
                    }
                }
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
        for r in resources
            .iter_mut()
            .filter(|r| r.name() == name || r.original_name == name)
        {
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

pub(crate) fn set_image(value: &mut Value, entries: &[Value]) {
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
