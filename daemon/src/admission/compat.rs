//! Kargo's manifests as they are still written: deprecated fields and Kubernetes' habits,
//! rewritten into today's shape before the typed gate reads the document, each rewrite with a
//! warning that says what to write instead.

use serde_json::{Map, Value};

/// Rewrites `document` in place; returns the warnings, by field path.
pub fn upgrade(document: &mut Value) -> Vec<(String, String)> {
    let mut warnings = Vec::new();
    let Some(object) = document.as_object_mut() else {
        return warnings;
    };
    // Kubernetes reads `spec: null` (or `spec:` with nothing after it) as no spec.
    if object.get("spec").is_some_and(Value::is_null) {
        object.remove("spec");
    }
    if object.get("kind").and_then(Value::as_str) != Some("Warehouse") {
        return warnings;
    }
    let subscriptions = object
        .get_mut("spec")
        .and_then(|s| s.get_mut("subscriptions"))
        .and_then(Value::as_array_mut);
    for (i, sub) in subscriptions.into_iter().flatten().enumerate() {
        for family in ["image", "git"] {
            if let Some(Value::Object(fields)) = sub.get_mut(family) {
                let at = format!("spec.subscriptions[{i}].{family}");
                legacy_tags(fields, &at, &mut warnings);
            }
        }
    }
    warnings
}

/// `allowTags` (one regular expression) and `ignoreTags` (exact tags), deprecated by Kargo for
/// `allowTagsRegexes` and `ignoreTagsRegexes`.
fn legacy_tags(fields: &mut Map<String, Value>, at: &str, warnings: &mut Vec<(String, String)>) {
    // A value of the wrong type is moved as it is, for the typed gate to refuse where it lands.
    if let Some(allow) = fields.remove("allowTags") {
        if allow != Value::String(String::new()) {
            push(fields, "allowTagsRegexes", allow.clone());
        }
        warnings.push((
            format!("{at}.allowTags"),
            format!(
                "is deprecated (Kargo removes it in v1.13): read as allowTagsRegexes: [{allow}]; write that instead"
            ),
        ));
    }
    if let Some(ignore) = fields.remove("ignoreTags") {
        let exact = |tag: Value| match tag {
            Value::String(t) => Value::String(format!("^{}$", regex::escape(&t))),
            other => other,
        };
        let patterns: Vec<Value> = match ignore {
            Value::Array(tags) => tags.into_iter().map(exact).collect(),
            // One tag written without its list.
            other => vec![exact(other)],
        };
        for pattern in &patterns {
            push(fields, "ignoreTagsRegexes", pattern.clone());
        }
        warnings.push((
            format!("{at}.ignoreTags"),
            format!(
                "is deprecated (Kargo removes it in v1.13): read as ignoreTagsRegexes: {}; write that instead",
                Value::from(patterns)
            ),
        ));
    }
}

fn push(fields: &mut Map<String, Value>, key: &str, value: Value) {
    // Not a list: left as it is, for the typed gate to refuse.
    if let Value::Array(items) = fields
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        items.push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_tag_filters_become_regex_lists_with_a_warning() {
        let mut doc = json!({"kind": "Warehouse", "spec": {"subscriptions": [
            {"image": {"repoURL": "r", "allowTags": "^v1\\.", "ignoreTags": ["v1.2.3", "latest"]}},
            {"git": {"repoURL": "g", "ignoreTagsRegexes": ["^x"], "ignoreTags": ["a+b"]}},
        ]}});
        let warnings = upgrade(&mut doc);
        assert_eq!(
            doc["spec"]["subscriptions"][0]["image"],
            json!({"repoURL": "r", "allowTagsRegexes": ["^v1\\."], "ignoreTagsRegexes": ["^v1\\.2\\.3$", "^latest$"]})
        );
        assert_eq!(
            doc["spec"]["subscriptions"][1]["git"]["ignoreTagsRegexes"],
            json!(["^x", "^a\\+b$"])
        );
        let paths: Vec<&str> = warnings.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.subscriptions[0].image.allowTags",
                "spec.subscriptions[0].image.ignoreTags",
                "spec.subscriptions[1].git.ignoreTags"
            ]
        );
        assert!(warnings[0].1.contains("deprecated"), "{}", warnings[0].1);
    }

    #[test]
    fn legacy_tag_filters_of_the_wrong_type_reach_the_gate_as_they_are() {
        let mut doc = json!({"kind": "Warehouse", "spec": {"subscriptions": [
            {"image": {"repoURL": "r", "allowTags": 5, "ignoreTags": "latest"}},
            {"git": {"repoURL": "g", "ignoreTags": [true]}},
        ]}});
        upgrade(&mut doc);
        assert_eq!(
            doc["spec"]["subscriptions"][0]["image"],
            json!({"repoURL": "r", "allowTagsRegexes": [5], "ignoreTagsRegexes": ["^latest$"]})
        );
        assert_eq!(
            doc["spec"]["subscriptions"][1]["git"]["ignoreTagsRegexes"],
            json!([true])
        );
        let refused = crate::resource::decode(
            json!({"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Warehouse",
                "metadata": {"name": "w", "namespace": "p"}, "spec": doc["spec"].clone()}),
            None,
        )
        .unwrap_err();
        assert!(refused[0].path.contains("allowTagsRegexes"), "{refused:?}");
    }

    #[test]
    fn a_null_spec_is_no_spec() {
        let mut doc = json!({"kind": "Project", "spec": null});
        assert!(upgrade(&mut doc).is_empty());
        assert_eq!(doc, json!({"kind": "Project"}));
    }
}
