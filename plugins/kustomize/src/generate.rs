//! `configMapGenerator` and `secretGenerator`, with kustomize's content-hash name suffix (the
//! same hash, so switching from `kustomize build` does not rename every ConfigMap).

use std::collections::BTreeMap;
use std::path::Path;

use dray_sdk::StepError;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::build::{Resource, fail, join, read};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The pairs of an env file, as kustomize reads one: `KEY=value` (the value as written, to the
/// end of the line), comments and blank lines skipped, a byte-order mark on the first line
/// dropped; a line that is only `KEY` takes its value from the environment, which is empty in
/// the sandbox (kustomize reads its own process's).
fn env_file(path: &Path) -> Result<Vec<(String, String)>, StepError> {
    let text = read(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = if n == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
        if !valid {
            return Err(fail(format!(
                "{}:{}: {key:?} is not a valid key name: a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
                path.display(),
                n + 1
            )));
        }
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Base64 as kustomize writes generated data: past 70 characters, broken into lines of 70,
/// each ending in a newline (so a long value is written as a block).
fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    let encoded = B64.encode(bytes);
    if encoded.len() < 70 {
        return encoded;
    }
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 70 + 1);
    for chunk in encoded.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// The entries of one generator, as (key, bytes).
fn entries(
    g: &Map<String, Value>,
    dir: &Path,
    file: &Path,
) -> Result<Vec<(String, Vec<u8>)>, StepError> {
    let list = |field: &str| -> Vec<String> {
        match g.get(field) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    };
    let mut out = Vec::new();
    for literal in list("literals") {
        let (k, v) = literal.split_once('=').ok_or_else(|| {
            fail(format!(
                "{}: literal {literal:?} must be KEY=value",
                file.display()
            ))
        })?;
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.to_string(), v.as_bytes().to_vec()));
    }
    for entry in list("files") {
        let (key, path) = match entry.split_once('=') {
            Some((k, p)) => (k.to_string(), p.to_string()),
            None => (
                Path::new(&entry)
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default(),
                entry.clone(),
            ),
        };
        let path = join(dir, &path);
        let bytes = crate::build::read_bytes(&path)
            .map_err(|e| fail(format!("{}: {e}", file.display())))?;
        out.push((key, bytes));
    }
    for env in list("envs").into_iter().chain(list("env")) {
        for (k, v) in env_file(&join(dir, &env))? {
            out.push((k, v.into_bytes()));
        }
    }
    Ok(out)
}

fn merged_options(g: &Map<String, Value>, global: &Map<String, Value>) -> Map<String, Value> {
    let mut options = global.clone();
    if let Some(Value::Object(own)) = g.get("options") {
        for (k, v) in own {
            match (options.get_mut(k), v) {
                (Some(Value::Object(base)), Value::Object(add)) => base.extend(add.clone()),
                _ => {
                    options.insert(k.clone(), v.clone());
                }
            }
        }
    }
    options
}

/// Adds the generated ConfigMaps and Secrets of a kustomization to `resources` (or merges or
/// replaces existing ones, with `behavior`).
pub fn generators(
    k: &Map<String, Value>,
    dir: &Path,
    file: &Path,
    resources: &mut Vec<Resource>,
) -> Result<(), StepError> {
    let global = k
        .get("generatorOptions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (field, kind) in [
        ("configMapGenerator", "ConfigMap"),
        ("secretGenerator", "Secret"),
    ] {
        let Some(list) = k.get(field).and_then(Value::as_array) else {
            continue;
        };
        for (i, g) in list.iter().enumerate() {
            let g = g.as_object().ok_or_else(|| {
                fail(format!(
                    "{}: {field}[{i}] must be a mapping",
                    file.display()
                ))
            })?;
            let name = g
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| fail(format!("{}: {field}[{i}] needs a name", file.display())))?;
            let options = merged_options(g, &global);
            let mut data = Map::new();
            let mut binary = Map::new();
            for (key, bytes) in entries(g, dir, file)? {
                if data.contains_key(&key) || binary.contains_key(&key) {
                    return Err(fail(format!(
                        "{}: {field}[{i}] ({name}) has the key {key} twice",
                        file.display()
                    )));
                }
                match (kind, String::from_utf8(bytes)) {
                    ("Secret", Ok(text)) => {
                        data.insert(key, Value::String(encode_base64(text.as_bytes())));
                    }
                    ("Secret", Err(e)) => {
                        data.insert(key, Value::String(encode_base64(e.as_bytes())));
                    }
                    (_, Ok(text)) => {
                        data.insert(key, Value::String(text));
                    }
                    (_, Err(e)) => {
                        binary.insert(key, Value::String(encode_base64(e.as_bytes())));
                    }
                }
            }
            let mut metadata = Map::new();
            metadata.insert("name".into(), json!(name));
            if let Some(ns) = g.get("namespace").and_then(Value::as_str) {
                metadata.insert("namespace".into(), json!(ns));
            }
            for field in ["labels", "annotations"] {
                if let Some(Value::Object(m)) = options.get(field) {
                    metadata.insert(field.into(), Value::Object(m.clone()));
                }
            }
            let mut doc = json!({"apiVersion": "v1", "kind": kind, "metadata": metadata});
            let obj = doc.as_object_mut().expect("an object");
            if !data.is_empty() {
                obj.insert("data".into(), Value::Object(data));
            }
            if !binary.is_empty() {
                obj.insert("binaryData".into(), Value::Object(binary));
            }
            if kind == "Secret" {
                obj.insert(
                    "type".into(),
                    g.get("type").cloned().unwrap_or(json!("Opaque")),
                );
            }
            if options.get("immutable").and_then(Value::as_bool) == Some(true) {
                obj.insert("immutable".into(), json!(true));
            }
            let hashed = options
                .get("disableNameSuffixHash")
                .and_then(Value::as_bool)
                != Some(true);
            let behavior = g
                .get("behavior")
                .and_then(Value::as_str)
                .unwrap_or("create");
            let existing = resources
                .iter()
                .position(|r| r.kind() == kind && r.original_name == name);
            match (behavior, existing) {
                ("create", None) => resources.push(Resource {
                    doc,
                    original_name: name.to_string(),
                    original_namespace: String::new(),
                    hashed,
                }),
                ("create", Some(_)) => {
                    return Err(fail(format!(
                        "{}: {kind} {name} already exists; use behavior: merge or replace",
                        file.display()
                    )));
                }
                ("merge", Some(at)) => {
                    let target = &mut resources[at];
                    for field in ["data", "binaryData"] {
                        if let Some(Value::Object(add)) = doc.get(field) {
                            let entry = target
                                .doc
                                .as_object_mut()
                                .expect("an object")
                                .entry(field)
                                .or_insert(json!({}));
                            if let Value::Object(m) = entry {
                                m.extend(add.clone());
                            }
                        }
                    }
                    for field in ["labels", "annotations"] {
                        if let Some(Value::Object(add)) = doc.pointer(&format!("/metadata/{field}"))
                        {
                            let meta = target
                                .doc
                                .get_mut("metadata")
                                .and_then(Value::as_object_mut)
                                .expect("metadata");
                            if let Value::Object(m) = meta.entry(field).or_insert(json!({})) {
                                m.extend(add.clone());
                            }
                        }
                    }
                    target.hashed = target.hashed && hashed;
                }
                ("replace", Some(at)) => {
                    // The data is replaced; the metadata the base gave it (namespace, labels,
                    // annotations) stays, under the generator's own, as in kustomize.
                    let original = resources[at].clone();
                    let mut doc = doc;
                    if let (Some(Value::Object(old)), Some(meta)) = (
                        original.doc.get("metadata"),
                        doc.get_mut("metadata").and_then(Value::as_object_mut),
                    ) {
                        for (k, v) in old {
                            match (meta.get_mut(k), v) {
                                (Some(Value::Object(new)), Value::Object(old)) => {
                                    for (k, v) in old {
                                        new.entry(k.clone()).or_insert(v.clone());
                                    }
                                }
                                (None, v) if k != "name" => {
                                    meta.insert(k.clone(), v.clone());
                                }
                                _ => {}
                            }
                        }
                    }
                    resources[at] = Resource {
                        doc,
                        original_name: original.original_name,
                        original_namespace: original.original_namespace,
                        hashed,
                    };
                }
                (other, None) if other == "merge" || other == "replace" => {
                    return Err(fail(format!(
                        "{}: {kind} {name}: behavior {other} needs a {kind} {name} from a base",
                        file.display()
                    )));
                }
                (other, _) => {
                    return Err(fail(format!(
                        "{}: {field}[{i}]: behavior {other:?} is not create, merge or replace",
                        file.display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Go's `json.Marshal`: sorted keys, compact, and `<`, `>`, `&` escaped.
fn go_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let ordered: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let text = serde_json::to_string(&sorted(v)).expect("JSON values serialise");
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// kustomize's name suffix for a ConfigMap or Secret.
pub fn hash(r: &Resource) -> String {
    let doc = &r.doc;
    let get = |f: &str| doc.get(f).cloned();
    let mut m = Map::new();
    m.insert("kind".into(), json!(r.kind()));
    // kustomize looks the name up under the single key "metadata/name", which never exists, so
    // its hashes are computed with an empty name; so are Dray's, to give the same names.
    m.insert("name".into(), json!(""));
    m.insert("data".into(), get("data").unwrap_or(json!({})));
    if r.kind() == "Secret" {
        m.insert("type".into(), get("type").unwrap_or(json!("")));
        if let Some(s) = get("stringData") {
            m.insert("stringData".into(), s);
        }
    } else if let Some(b) =
        get("binaryData").filter(|b| b.as_object().is_some_and(|m| !m.is_empty()))
    {
        m.insert("binaryData".into(), b);
    }
    if r.kind() == "ConfigMap"
        && let Some(i) = get("immutable")
    {
        m.insert("immutable".into(), i);
    }
    let digest = Sha256::digest(go_json(&Value::Object(m)).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            other => other,
        })
        .collect()
}

/// Adds the hash suffix to every generated resource that wants one.
pub fn add_hashes(resources: &mut [Resource]) {
    for r in resources.iter_mut().filter(|r| r.hashed) {
        let name = format!("{}-{}", r.name(), hash(r));
        r.set_name(name);
    }
}
