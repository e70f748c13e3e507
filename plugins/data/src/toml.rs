//! Edits a TOML document with `toml_edit`, which keeps comments, spacing and order; a replaced
//! value keeps the comment and spacing around it.

use serde_json::Value;
use toml_edit::{DocumentMut, Item};

use dray_sdk::path::{Segment, display};

fn value(json: &Value, at: &str) -> Result<toml_edit::Value, String> {
    Ok(match json {
        Value::Null => {
            return Err(format!(
                "{at}: TOML has no null; remove the key or give a value"
            ));
        }
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or_default().into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            let mut array = toml_edit::Array::new();
            for item in items {
                array.push(value(item, at)?);
            }
            array.into()
        }
        Value::Object(map) => {
            let mut table = toml_edit::InlineTable::new();
            for (k, v) in map {
                table.insert(k, value(v, at)?);
            }
            table.into()
        }
    })
}

fn set(doc: &mut DocumentMut, path: &[Segment], new: &Value) -> Result<(), String> {
    let shown = display(path);
    let mut item: &mut Item = doc.as_item_mut();
    for (depth, segment) in path.iter().enumerate() {
        let here = display(&path[..depth]);
        let place = if here.is_empty() {
            "the document".to_string()
        } else {
            here
        };
        let last = depth + 1 == path.len();
        let found = match segment {
            Segment::Index(i) if item.is_array() || item.is_array_of_tables() => {
                item.get(*i).is_some()
            }
            Segment::Index(_) if !item.is_table_like() => {
                return Err(format!("{place} is a single value, not a table or array"));
            }
            _ => {
                let Some(table) = item.as_table_like() else {
                    return Err(format!(
                        "{place} is not a table; use a number to pick an array item"
                    ));
                };
                table.contains_key(&segment.as_key())
            }
        };
        if !found {
            let key = segment.as_key();
            match (last, item.as_table_like_mut()) {
                (true, Some(table)) => {
                    table.insert(&key, Item::Value(value(new, &shown)?));
                    return Ok(());
                }
                (false, Some(_)) => return Err(format!("{place} has no key {key:?}")),
                (_, None) => {
                    let len = item
                        .as_array()
                        .map(|a| a.len())
                        .or(item.as_array_of_tables().map(|a| a.len()))
                        .unwrap_or(0);
                    return Err(format!("{place} has {len} items; there is no item {key}"));
                }
            }
        }
        item = match segment {
            Segment::Index(i) if item.is_array() || item.is_array_of_tables() => item.get_mut(*i),
            _ => item.get_mut(segment.as_key().as_str()),
        }
        .expect("checked above");
    }
    match item {
        Item::Value(old) => {
            let decor = old.decor().clone();
            *old = value(new, &shown)?;
            *old.decor_mut() = decor;
            Ok(())
        }
        _ => Err(format!(
            "{shown} is a table; toml-update sets values (address a key inside it)"
        )),
    }
}

/// Applies `updates` in order.
pub fn update(text: &str, updates: &[(Vec<Segment>, Value)]) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    for (path, new) in updates {
        set(&mut doc, path, new)?;
    }
    Ok(doc.to_string())
}

/// The document as JSON.
pub fn to_json(text: &str) -> Result<Value, String> {
    toml_edit::de::from_str(text).map_err(|e| format!("not valid TOML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dray_sdk::path::split;
    use serde_json::json;

    #[test]
    fn keeps_comments_and_adds_missing_keys() {
        let text = "# app\n[image]\ntag = \"1.0\" # pinned\n\n[[servers]]\nport = 80\n";
        let out = update(
            text,
            &[
                (split("image.tag").unwrap(), json!("2.0")),
                (split("image.repo").unwrap(), json!("web")),
                (split("servers.0.port").unwrap(), json!(8080)),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "# app\n[image]\ntag = \"2.0\" # pinned\nrepo = \"web\"\n\n[[servers]]\nport = 8080\n"
        );
    }

    #[test]
    fn a_dotted_key_extending_a_broken_value_is_an_error_not_a_panic() {
        // Found by the toml_update fuzz target: toml_edit 0.23 panicked on it ("all items
        // have spans"); 0.25 reports it.
        let text = "w.T\u{10}7Z= =[1j\0\u{1b}\n]\nw.T\u{10}7Z.=";
        assert!(to_json(text).is_err());
        assert!(update(text, &[(split("w").unwrap(), json!(1))]).is_err());
    }

    #[test]
    fn explains_a_wrong_path() {
        let err = update("a = 1\n", &[(split("a.b").unwrap(), json!(1))]).unwrap_err();
        assert!(err.contains("a is"), "{err}");
        let err = update("a = 1\n", &[(split("x").unwrap(), Value::Null)]).unwrap_err();
        assert!(err.contains("TOML has no null"), "{err}");
    }
}
