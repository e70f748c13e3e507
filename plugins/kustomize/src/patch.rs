//! Patches as kustomize applies them: strategic merge (maps merge, lists of named things merge
//! by their key, `null` and `$patch: delete` remove) and JSON 6902 operations.

use serde_json::Value;

/// The key a list merges on, by the list's field name (the Kubernetes schema's
/// `x-kubernetes-patch-merge-key` for the fields overlays touch); other lists are replaced.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "ports" => {
            if items.iter().all(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ if !items.is_empty() && items.iter().all(|i| i.get("name").is_some()) => "name",
        _ => return None,
    };
    Some(key)
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

fn strip_directives(v: &mut Value) {
    if let Value::Object(m) = v {
        m.remove("$patch");
        m.retain(|k, _| !k.starts_with("$setElementOrder") && !k.starts_with("$retainKeys"));
        m.values_mut().for_each(strip_directives);
    } else if let Value::Array(a) = v {
        a.iter_mut().for_each(strip_directives);
    }
}

fn merge_list(field: &str, base: &mut Vec<Value>, patch: Vec<Value>) {
    let Some(key) = merge_key(field, &patch) else {
        *base = patch;
        base.iter_mut().for_each(strip_directives);
        return;
    };
    if patch.iter().any(|p| directive(p) == Some("replace")) {
        *base = patch
            .into_iter()
            .filter(|p| directive(p) != Some("replace"))
            .collect();
        base.iter_mut().for_each(strip_directives);
        return;
    }
    // As kustomize merges (kyaml, prepending): the patch's items first, in its order, each
    // merged into the base's item of the same key; then the base's other items, in theirs.
    let mut merged = Vec::new();
    let mut taken = vec![false; base.len()];
    for item in patch {
        let id = item.get(key).cloned();
        let position = id
            .as_ref()
            .and_then(|id| base.iter().position(|b| b.get(key) == Some(id)));
        match (position, directive(&item)) {
            (Some(i), Some("delete")) => taken[i] = true,
            (None, Some("delete")) => {}
            (Some(i), _) => {
                taken[i] = true;
                let mut existing = base[i].clone();
                merge(&mut existing, item);
                merged.push(existing);
            }
            (None, _) => {
                let mut item = item;
                strip_directives(&mut item);
                merged.push(item);
            }
        }
    }
    merged.extend(
        base.drain(..)
            .zip(taken)
            .filter(|(_, taken)| !taken)
            .map(|(b, _)| b),
    );
    *base = merged;
}

/// Merges `patch` into `base` (a strategic merge patch).
pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            if directive(&Value::Object(patch.clone())) == Some("replace") {
                let mut patch = Value::Object(patch);
                strip_directives(&mut patch);
                *base = patch.as_object().cloned().unwrap_or_default();
                return;
            }
            for (k, v) in patch {
                if k.starts_with('$') {
                    continue;
                }
                match (base.get_mut(&k), v) {
                    (_, Value::Null) => {
                        base.remove(&k);
                    }
                    (Some(_), v) if directive(&v) == Some("delete") => {
                        base.remove(&k);
                    }
                    (Some(Value::Array(existing)), Value::Array(items)) => {
                        merge_list(&k, existing, items)
                    }
                    (Some(existing @ Value::Object(_)), v @ Value::Object(_)) => merge(existing, v),
                    (_, mut v) => {
                        strip_directives(&mut v);
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, mut patch) => {
            strip_directives(&mut patch);
            *base = patch;
        }
    }
}

/// A JSON pointer's parts, unescaped.
fn pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("path {path:?} must start with /"))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent<'a>(doc: &'a mut Value, parts: &[String], path: &str) -> Result<&'a mut Value, String> {
    let mut node = doc;
    for part in parts {
        node = match node {
            Value::Object(m) => m.get_mut(part),
            Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path}: {part:?} does not exist"))?;
    }
    Ok(node)
}

fn get(doc: &Value, path: &str) -> Result<Value, String> {
    let pointer = pointer(path)?;
    let mut node = doc;
    for part in &pointer {
        node = match node {
            Value::Object(m) => m.get(part),
            Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path} does not exist"))?;
    }
    Ok(node.clone())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let mut parts = pointer(path)?;
    let last = parts.pop().ok_or("cannot remove the whole document")?;
    match parent(doc, &parts, path)? {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("path {path} does not exist")),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(format!("path {path}: no item {last}")),
        },
        _ => Err(format!("path {path}: the parent is not an object or array")),
    }
}

fn add(doc: &mut Value, path: &str, value: Value, replace: bool) -> Result<(), String> {
    let mut parts = pointer(path)?;
    let Some(last) = parts.pop() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, &parts, path)? {
        Value::Object(m) => {
            if replace && !m.contains_key(&last) {
                return Err(format!(
                    "path {path} does not exist (replace needs an existing value)"
                ));
            }
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" && !replace {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("path {path}: {last:?} is not an index"))?;
            match (replace, i < a.len(), i == a.len()) {
                (true, true, _) => a[i] = value,
                (false, true, _) | (false, _, true) => a.insert(i, value),
                _ => return Err(format!("path {path}: index {i} is out of range")),
            }
            Ok(())
        }
        _ => Err(format!("path {path}: the parent is not an object or array")),
    }
}

/// Applies JSON 6902 operations in order.
pub fn json6902(doc: &mut Value, ops: &[Value]) -> Result<(), String> {
    for (i, op) in ops.iter().enumerate() {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {i} has no {name}"))
        };
        let path = field("path")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {i} has no value"))
        };
        let result = match field("op")? {
            "add" => add(doc, path, value()?, false),
            "replace" => add(doc, path, value()?, true),
            "remove" => remove(doc, path).map(drop),
            "move" => remove(doc, field("from")?).and_then(|v| add(doc, path, v, false)),
            "copy" => get(doc, field("from")?).and_then(|v| add(doc, path, v, false)),
            "test" => match get(doc, path)? == value()? {
                true => Ok(()),
                false => Err(format!("test failed at {path}")),
            },
            other => Err(format!("unknown operation {other:?}")),
        };
        result.map_err(|e| {
            format!(
                "operation {i} ({}): {e}",
                op.get("op").and_then(Value::as_str).unwrap_or("?")
            )
        })?;
    }
    Ok(())
}

/// Whether a patch document is a JSON 6902 list rather than a strategic merge patch.
pub fn is_json6902(patch: &Value) -> bool {
    matches!(patch, Value::Array(ops) if ops.iter().all(|o| o.get("op").is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name_and_deletes_with_null() {
        let mut base = json!({"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]}, {"name": "b"}], "drop": 1}});
        merge(
            &mut base,
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "F", "value": "2"}]}, {"name": "b", "$patch": "delete"}, {"name": "c"}], "drop": null}}),
        );
        assert_eq!(
            base,
            json!({"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "F", "value": "2"}, {"name": "E", "value": "1"}]}, {"name": "c"}]}})
        );
    }

    #[test]
    fn json6902_operations() {
        let mut doc = json!({"spec": {"replicas": 1, "list": [1, 2]}});
        json6902(
            &mut doc,
            &[
                json!({"op": "replace", "path": "/spec/replicas", "value": 3}),
                json!({"op": "add", "path": "/spec/list/-", "value": 3}),
                json!({"op": "remove", "path": "/spec/list/0"}),
                json!({"op": "add", "path": "/metadata~1x", "value": "y"}),
            ],
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"spec": {"replicas": 3, "list": [2, 3]}, "metadata/x": "y"})
        );
        let err = json6902(
            &mut doc,
            &[json!({"op": "replace", "path": "/nope", "value": 1})],
        )
        .unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }
}
