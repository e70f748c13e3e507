//! `replacements`, as kustomize applies them: a value taken from one resource (`source`: a
//! selector and a field path, or a literal `sourceValue`), optionally one part of it
//! (`options.delimiter`, `options.index`), copied into fields of the resources `targets`
//! select (and do not `reject`). A scalar target keeps its own type, a mapping or list target is
//! replaced whole; `options.create` creates a missing field. Field paths are kustomize's:
//! dot-separated, `[name=web]` picks a list item by a field, a number an item by position, `*`
//! every item.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::build::{Resource, fail, join, load_yaml, matches_target};
use dray_sdk::StepError;

/// A field path split as kustomize splits one: at dots outside brackets.
fn split_path(path: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' => {
                depth += 1;
                current.push(c);
            }
            ']' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            '.' if depth == 0 => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// The text of a scalar, as YAML would write it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// `[field=value]`, if `part` is one.
fn item_selector(part: &str) -> Option<(&str, &str)> {
    part.strip_prefix('[')?.strip_suffix(']')?.split_once('=')
}

/// Every node at `path` under `node`; missing fields are created (as the value's kind at the
/// end, maps on the way) when `create`.
fn find<'a>(
    node: &'a mut Value,
    path: &[String],
    create: Option<&Value>,
    out: &mut Vec<&'a mut Value>,
) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        out.push(node);
        return Ok(());
    };
    if first == "*" {
        if let Value::Array(items) = node {
            for item in items {
                find(item, rest, create, out)?;
            }
        }
        return Ok(());
    }
    if let Some((field, wanted)) = item_selector(first) {
        let Value::Array(items) = node else {
            return Ok(());
        };
        let matches = |item: &Value| {
            let have = if field.is_empty() {
                Some(text(item))
            } else {
                item.get(field).map(text)
            };
            have.as_deref() == Some(wanted)
        };
        if !items.iter().any(matches) {
            let Some(value) = create else {
                return Ok(());
            };
            items.push(if field.is_empty() {
                value.clone()
            } else {
                json!({ field: wanted })
            });
        }
        for item in items.iter_mut().filter(|i| matches(i)) {
            find(item, rest, create, out)?;
        }
        return Ok(());
    }
    if let Ok(index) = first.parse::<usize>()
        && let Value::Array(items) = node
    {
        if index == items.len()
            && let Some(value) = create
        {
            items.push(if rest.is_empty() {
                value.clone()
            } else {
                json!({})
            });
        }
        let len = items.len();
        return match items.get_mut(index) {
            Some(item) => find(item, rest, create, out),
            None => Err(format!(
                "index {index} specified but only {len} elements found"
            )),
        };
    }
    let Value::Object(map) = node else {
        if !matches!(node, Value::Null) {
            return Err(format!(
                "{first} is inside a scalar (replacements into text holding YAML or JSON are not supported by Dray's kustomize-build)"
            ));
        }
        return Ok(());
    };
    if !map.contains_key(first.as_str()) {
        let Some(value) = create else {
            return Ok(());
        };
        let fresh = if rest.is_empty() {
            match value {
                Value::Object(_) => json!({}),
                Value::Array(_) => json!([]),
                _ => Value::Null,
            }
        } else if item_selector(&rest[0]).is_some() || rest[0].parse::<usize>().is_ok() {
            json!([])
        } else {
            json!({})
        };
        map.insert(first.clone(), fresh);
    }
    match map.get_mut(first.as_str()) {
        Some(child) => find(child, rest, create, out),
        None => Ok(()),
    }
}

#[derive(Default)]
struct Options {
    delimiter: String,
    index: i64,
    create: bool,
}

fn options(v: Option<&Value>) -> Options {
    let Some(v) = v else {
        return Options::default();
    };
    Options {
        delimiter: v
            .get("delimiter")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        index: v.get("index").and_then(Value::as_i64).unwrap_or(0),
        create: v.get("create").and_then(Value::as_bool).unwrap_or(false),
    }
}

/// Sets one target field to `value`, as kustomize's `setFieldValue`.
fn set(field: &mut Value, value: &Value, options: &Options) -> Result<(), String> {
    let mut value = value.clone();
    if !options.delimiter.is_empty() {
        if matches!(field, Value::Object(_) | Value::Array(_)) {
            return Err("delimiter option can only be used with scalar nodes".into());
        }
        let current = text(field);
        let mut parts: Vec<String> = current
            .split(options.delimiter.as_str())
            .map(str::to_string)
            .collect();
        let v = text(&value);
        if options.index < 0 {
            parts.insert(0, v);
        } else if options.index as usize >= parts.len() {
            parts.push(v);
        } else {
            parts[options.index as usize] = v;
        }
        value = Value::String(parts.join(&options.delimiter));
    }
    *field = match (&*field, &value) {
        // A scalar target keeps its type; only its text changes.
        (Value::String(_), v) if !matches!(v, Value::Object(_) | Value::Array(_)) => {
            Value::String(text(v))
        }
        (Value::Number(_), v) if !matches!(v, Value::Object(_) | Value::Array(_)) => {
            let t = text(v);
            dray_sdk::yaml::v3::load(&t)
                .ok()
                .and_then(|d| d.into_iter().next())
                .filter(Value::is_number)
                .unwrap_or(Value::String(t))
        }
        (Value::Bool(_), v) if !matches!(v, Value::Object(_) | Value::Array(_)) => {
            match text(v).as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                t => Value::String(t.to_string()),
            }
        }
        _ => value,
    };
    Ok(())
}

/// The replacements a kustomization lists, inline or from `path` files.
fn replacements(k: &Map<String, Value>, dir: &Path, file: &Path) -> Result<Vec<Value>, StepError> {
    let mut out = Vec::new();
    for entry in k
        .get("replacements")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if let Some(path) = entry.get("path").and_then(Value::as_str) {
            for doc in load_yaml(&join(dir, path))? {
                match doc {
                    Value::Array(list) => out.extend(list),
                    one => out.push(one),
                }
            }
        } else {
            out.push(entry);
        }
    }
    let _ = file;
    Ok(out)
}

/// Applies the kustomization's `replacements` to `resources`, in order.
pub fn apply(
    resources: &mut [Resource],
    k: &Map<String, Value>,
    dir: &Path,
    file: &Path,
) -> Result<(), StepError> {
    let at = |i: usize, e: String| fail(format!("{}: replacements[{i}]: {e}", file.display()));
    for (i, r) in replacements(k, dir, file)?.iter().enumerate() {
        let Some(targets) = r.get("targets").and_then(Value::as_array) else {
            return Err(at(
                i,
                "replacements must specify a source and at least one target".into(),
            ));
        };
        let value = match (r.get("source"), r.get("sourceValue")) {
            (Some(_), Some(_)) => {
                return Err(at(
                    i,
                    "value and resource selectors are mutually exclusive".into(),
                ));
            }
            (None, Some(v)) => Value::String(text(v)),
            (None, None) => {
                return Err(at(
                    i,
                    "replacements must specify a source and at least one target".into(),
                ));
            }
            (Some(source), None) => {
                let mut found = None;
                for res in resources.iter() {
                    if matches_target(res, source)? {
                        if found.is_some() {
                            return Err(at(i, format!("multiple matches for selector {source}")));
                        }
                        found = Some(res);
                    }
                }
                let res = found.ok_or_else(|| at(i, format!("nothing selected by {source}")))?;
                let field_path = source
                    .get("fieldPath")
                    .and_then(Value::as_str)
                    .unwrap_or("metadata.name");
                let mut doc = res.doc.clone();
                let mut nodes = Vec::new();
                find(&mut doc, &split_path(field_path), None, &mut nodes).map_err(|e| at(i, e))?;
                let value = match nodes.first() {
                    Some(v) if !v.is_null() => (**v).clone(),
                    _ => {
                        return Err(at(
                            i,
                            format!(
                                "fieldPath `{field_path}` is missing for replacement source {}/{}",
                                res.kind(),
                                res.name()
                            ),
                        ));
                    }
                };
                let opts = options(source.get("options"));
                if opts.delimiter.is_empty() {
                    value
                } else {
                    if matches!(value, Value::Object(_) | Value::Array(_)) {
                        return Err(at(
                            i,
                            "delimiter option can only be used with scalar nodes".into(),
                        ));
                    }
                    let t = text(&value);
                    let parts: Vec<&str> = t.split(opts.delimiter.as_str()).collect();
                    let part = usize::try_from(opts.index)
                        .ok()
                        .and_then(|n| parts.get(n))
                        .ok_or_else(|| {
                            at(
                                i,
                                format!(
                                    "options.index {} is out of bounds for value {t}",
                                    opts.index
                                ),
                            )
                        })?;
                    Value::String(part.to_string())
                }
            }
        };
        for target in targets {
            let select = target
                .get("select")
                .ok_or_else(|| at(i, "target must specify resources to select".into()))?;
            let rejects = target
                .get("reject")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let paths: Vec<String> = match target.get("fieldPaths").and_then(Value::as_array) {
                Some(p) if !p.is_empty() => p
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => vec!["metadata.name".into()],
            };
            let opts = options(target.get("options"));
            for res in resources.iter_mut() {
                if !matches_target(res, select)? {
                    continue;
                }
                let mut rejected = false;
                for reject in &rejects {
                    if matches_target(res, reject)? {
                        rejected = true;
                    }
                }
                if rejected {
                    continue;
                }
                for path in &paths {
                    let mut nodes = Vec::new();
                    let create = opts.create.then_some(&value);
                    find(&mut res.doc, &split_path(path), create, &mut nodes)
                        .map_err(|e| at(i, e))?;
                    if nodes.is_empty() {
                        return Err(at(
                            i,
                            if opts.create {
                                format!(
                                    "unable to find or create field {path:?} in replacement target"
                                )
                            } else {
                                format!("unable to find field {path:?} in replacement target")
                            },
                        ));
                    }
                    for node in nodes {
                        set(node, &value, &opts).map_err(|e| at(i, e))?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths_as_kustomize() {
        assert_eq!(
            split_path("spec.template.spec.containers.[name=web.app].image"),
            [
                "spec",
                "template",
                "spec",
                "containers",
                "[name=web.app]",
                "image"
            ]
        );
    }

    #[test]
    fn scalar_targets_keep_their_type() {
        let mut n = json!(1);
        set(&mut n, &json!("3"), &Options::default()).expect("sets");
        assert_eq!(n, json!(3));
        let mut s = json!("x");
        set(&mut s, &json!(5), &Options::default()).expect("sets");
        assert_eq!(s, json!("5"));
        let mut image = json!("registry/app:1.0");
        let opts = Options {
            delimiter: ":".into(),
            index: 1,
            create: false,
        };
        set(&mut image, &json!("2.0"), &opts).expect("sets");
        assert_eq!(image, json!("registry/app:2.0"));
    }
}
