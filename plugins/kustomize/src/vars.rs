//! `vars` (deprecated in kustomize, still common): `$(NAME)` in the fields kustomize lets vars
//! reach (containers' `command`, `args`, `env` values and `volumeMounts` paths in every
//! workload, Ingress hosts and TLS, Service ports, labels and annotations…) becomes the value of
//! the field a var names in one resource, read after every transformation. A string that is
//! exactly `$(NAME)` takes the value with its type; `$$` is a literal `$`; an unknown name is
//! left as written, as kustomize leaves it.

use std::collections::BTreeMap;
use std::path::Path;

use dray_sdk::StepError;
use serde_json::{Map, Value};

use crate::build::{Resource, fail};

/// Where a pod spec sits, for the workload kinds vars reach.
const POD_SPECS: &[(&str, &str)] = &[
    ("Pod", "spec"),
    ("Deployment", "spec/template/spec"),
    ("ReplicaSet", "spec/template/spec"),
    ("DaemonSet", "spec/template/spec"),
    ("StatefulSet", "spec/template/spec"),
    ("Job", "spec/template/spec"),
    ("CronJob", "spec/jobTemplate/spec/template/spec"),
];

/// Fields inside a pod spec vars reach.
const IN_POD_SPEC: &[&str] = &[
    "containers/args",
    "containers/command",
    "containers/env/value",
    "containers/volumeMounts/mountPath",
    "initContainers/args",
    "initContainers/command",
    "initContainers/env/value",
    "initContainers/volumeMounts/mountPath",
    "volumes/nfs/server",
];

/// Other fields vars reach: (kind, or any kind when empty; path).
const OTHERS: &[(&str, &str)] = &[
    // Where `commonAnnotations` writes, so an annotation may carry a var.
    ("Deployment", "spec/template/metadata/annotations"),
    ("ReplicaSet", "spec/template/metadata/annotations"),
    ("DaemonSet", "spec/template/metadata/annotations"),
    ("StatefulSet", "spec/template/metadata/annotations"),
    ("Job", "spec/template/metadata/annotations"),
    (
        "ReplicationController",
        "spec/template/metadata/annotations",
    ),
    ("CronJob", "spec/jobTemplate/metadata/annotations"),
    (
        "CronJob",
        "spec/jobTemplate/spec/template/metadata/annotations",
    ),
    ("Ingress", "spec/rules/host"),
    ("Ingress", "spec/tls/hosts"),
    ("Ingress", "spec/tls/secretName"),
    ("Service", "spec/ports/port"),
    ("Service", "spec/ports/targetPort"),
    ("StatefulSet", "spec/volumeClaimTemplates/spec/nfs/server"),
    ("PersistentVolume", "spec/nfs/server"),
    ("", "metadata/labels"),
    ("", "metadata/annotations"),
];

/// Adds a kustomization's `vars` to those of the whole build (a name may be defined once).
pub fn collect(
    k: &Map<String, Value>,
    file: &Path,
    vars: &mut Vec<Value>,
) -> Result<(), StepError> {
    let Some(list) = k.get("vars") else {
        return Ok(());
    };
    let Value::Array(list) = list else {
        return Err(fail(format!("{}: vars must be a list", file.display())));
    };
    for var in list {
        let name = var.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty()
            || var
                .pointer("/objref/name")
                .and_then(Value::as_str)
                .is_none()
        {
            return Err(fail(format!(
                "{}: a var needs a name and an objref with a name: {var}",
                file.display()
            )));
        }
        if vars
            .iter()
            .any(|v| v.get("name").and_then(Value::as_str) == Some(name))
        {
            return Err(fail(format!(
                "{}: var '{name}' already encountered",
                file.display()
            )));
        }
        vars.push(var.clone());
    }
    Ok(())
}

/// The value at a var's `fieldPath` (`spec.ports[0].port` or `spec.ports.0.port`).
fn field(doc: &Value, path: &str) -> Option<Value> {
    let mut node = doc;
    for part in path.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            node = match node {
                Value::Object(m) => m.get(name)?,
                Value::Array(a) => a.get(name.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let i: usize = index.strip_suffix(']')?.parse().ok()?;
            node = node.as_array()?.get(i)?;
        }
    }
    Some(node.clone())
}

/// `$(NAME)` in `text` replaced, as kustomize's `DoReplacements`.
fn expand(
    text: &str,
    values: &BTreeMap<String, Value>,
    used: &mut BTreeMap<String, usize>,
) -> Value {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < b.len() {
        if b[cursor] == b'$' && cursor + 1 < b.len() {
            out.push_str(&text[checkpoint..cursor]);
            let rest = &text[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(end) => {
                        let name = &rest[1..end];
                        match values
                            .get(name)
                            .filter(|v| !matches!(v, Value::Object(_) | Value::Array(_)))
                        {
                            Some(v) => {
                                *used.entry(name.to_string()).or_default() += 1;
                                if text.len() == name.len() + 3 {
                                    return v.clone();
                                }
                                match v {
                                    Value::String(s) => out.push_str(s),
                                    other => out.push_str(&other.to_string()),
                                }
                            }
                            None => out.push_str(&format!("$({name})")),
                        }
                        end + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    let c = rest.chars().next().unwrap_or('$');
                    out.push('$');
                    out.push(c);
                    c.len_utf8()
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&text[checkpoint.min(text.len())..]);
    Value::String(out)
}

/// Replaces in every string at `path` (lists and maps walked through).
fn visit(node: &mut Value, path: &[&str], f: &mut dyn FnMut(&mut Value)) {
    match (node, path.split_first()) {
        (Value::Array(items), _) => items.iter_mut().for_each(|i| visit(i, path, f)),
        (Value::Object(map), Some((first, rest))) => {
            if let Some(child) = map.get_mut(*first) {
                visit(child, rest, f);
            }
        }
        (Value::Object(map), None) => map.values_mut().for_each(|v| visit(v, &[], f)),
        (leaf @ Value::String(_), None) => f(leaf),
        _ => {}
    }
}

/// Resolves every var against the final resources and replaces their references.
pub fn resolve(
    resources: &mut [Resource],
    vars: &[Value],
    extra: &[crate::config::FieldSpec],
) -> Result<(), StepError> {
    if vars.is_empty() {
        return Ok(());
    }
    let mut values = BTreeMap::new();
    for var in vars {
        let name = var.get("name").and_then(Value::as_str).unwrap_or("");
        let objref = &var["objref"];
        let s = |k: &str| objref.get(k).and_then(Value::as_str);
        let matching: Vec<&Resource> = resources
            .iter()
            .filter(|r| {
                s("kind").is_none_or(|k| k == r.kind())
                    && s("name").is_some_and(|n| n == r.name() || n == r.original_name)
                    && s("apiVersion").is_none_or(|a| a == r.api_version())
                    && s("namespace")
                        .is_none_or(|ns| ns == r.namespace() || ns == r.original_namespace)
            })
            .collect();
        let target = match matching.as_slice() {
            [one] => *one,
            [] => {
                return Err(fail(format!(
                    "var '{name}' cannot be mapped to a field in the set of known resources"
                )));
            }
            _ => {
                return Err(fail(format!(
                    "var '{name}' matches {} resources; name the objref's apiVersion and namespace",
                    matching.len()
                )));
            }
        };
        let path = var
            .pointer("/fieldref/fieldPath")
            .and_then(Value::as_str)
            .unwrap_or("metadata.name");
        let value = field(&target.doc, path).ok_or_else(|| {
            fail(format!(
                "var '{name}': field {path} not found in {} {}",
                target.kind(),
                target.name()
            ))
        })?;
        values.insert(name.to_string(), value);
    }
    let mut used = BTreeMap::new();
    for r in resources.iter_mut() {
        let kind = r.kind().to_string();
        let mut paths: Vec<String> = Vec::new();
        if let Some((_, spec)) = POD_SPECS.iter().find(|(k, _)| *k == kind) {
            paths.extend(IN_POD_SPEC.iter().map(|p| format!("{spec}/{p}")));
        }
        paths.extend(
            OTHERS
                .iter()
                .filter(|(k, _)| k.is_empty() || *k == kind)
                .map(|(_, p)| p.to_string()),
        );
        paths.extend(
            extra
                .iter()
                .filter(|spec| spec.matches(r))
                .map(|spec| spec.path.join("/")),
        );
        for path in paths {
            let parts: Vec<&str> = path.split('/').collect();
            let mut f = |v: &mut Value| {
                if let Value::String(s) = v
                    && s.contains('$')
                {
                    *v = expand(s, &values, &mut used);
                }
            };
            visit(&mut r.doc, &parts, &mut f);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expands_as_kustomize() {
        let values: BTreeMap<String, Value> =
            [("A".to_string(), json!("x")), ("N".to_string(), json!(5))].into();
        let mut used = BTreeMap::new();
        assert_eq!(
            expand("$(A)-$(B)-$$(A)-$x", &values, &mut used),
            json!("x-$(B)-$(A)-$x")
        );
        assert_eq!(expand("$(N)", &values, &mut used), json!(5));
        assert_eq!(expand("port $(N)", &values, &mut used), json!("port 5"));
        assert_eq!(expand("end $", &values, &mut used), json!("end $"));
        assert_eq!(expand("open $(A", &values, &mut used), json!("open $(A"));
    }
}
