//! YAML as JSON (feature `yaml`): the one conversion the built-in steps share, so a step reads a
//! YAML file, a YAML response or a kustomization the same way.
//!
//! ```
//! let docs = dray_sdk::yaml::lang::YamlLoader::load_from_str("replicas: 2\nname: web\n").unwrap();
//! let value = dray_sdk::yaml::to_json(&docs[0]);
//! assert_eq!(value, serde_json::json!({"replicas": 2, "name": "web"}));
//! ```

use serde_json::Value;
pub mod edit;
pub mod v3;

pub use yaml_rust2 as lang;
use yaml_rust2::Yaml;

/// A YAML node as JSON: mapping keys become strings, unreadable reals and aliases become null.
pub fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) | Yaml::Real(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => "null".to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => Value::Null,
    }
}
