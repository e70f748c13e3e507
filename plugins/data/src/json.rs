//! Edits a JSON document in place: finds the text of the value at a key path and replaces only
//! that, so the rest of the file (indentation, key order, spacing) is untouched, as Kargo's
//! `json-update` (sjson) does.

use serde_json::Value;

use dray_sdk::path::{Segment, display};

/// A JSON value and where its text is.
enum Node {
    Object {
        start: usize,
        end: usize,
        entries: Vec<(String, usize, Node)>,
    },
    Array {
        start: usize,
        end: usize,
        items: Vec<Node>,
    },
    Scalar {
        start: usize,
        end: usize,
    },
}

impl Node {
    fn span(&self) -> (usize, usize) {
        match self {
            Node::Object { start, end, .. }
            | Node::Array { start, end, .. }
            | Node::Scalar { start, end } => (*start, *end),
        }
    }
}

struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn blank(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.blank();
        if self.text.get(self.at) == Some(&c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.at))
        }
    }

    fn string(&mut self) -> Result<(usize, usize), String> {
        let start = self.at;
        self.at += 1;
        while self.at < self.text.len() {
            match self.text[self.at] {
                b'\\' => self.at += 2,
                b'"' => {
                    self.at += 1;
                    return Ok((start, self.at));
                }
                _ => self.at += 1,
            }
        }
        Err(format!("an unterminated string at byte {start}"))
    }

    fn value(&mut self, depth: usize) -> Result<Node, String> {
        if depth > 512 {
            return Err("nested more than 512 levels deep".into());
        }
        self.blank();
        let start = self.at;
        match self.text.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut entries = Vec::new();
                self.blank();
                if self.text.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Node::Object {
                        start,
                        end: self.at,
                        entries,
                    });
                }
                loop {
                    self.blank();
                    let (ks, ke) = self.string()?;
                    let key: String =
                        serde_json::from_slice(&self.text[ks..ke]).map_err(|e| e.to_string())?;
                    self.expect(b':')?;
                    let value = self.value(depth + 1)?;
                    entries.push((key, ks, value));
                    self.blank();
                    match self.text.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Node::Object {
                                start,
                                end: self.at,
                                entries,
                            });
                        }
                        _ => return Err(format!("expected , or }} at byte {}", self.at)),
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.blank();
                if self.text.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Node::Array {
                        start,
                        end: self.at,
                        items,
                    });
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.blank();
                    match self.text.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Node::Array {
                                start,
                                end: self.at,
                                items,
                            });
                        }
                        _ => return Err(format!("expected , or ] at byte {}", self.at)),
                    }
                }
            }
            Some(b'"') => {
                let (start, end) = self.string()?;
                Ok(Node::Scalar { start, end })
            }
            Some(_) => {
                while self.at < self.text.len()
                    && !matches!(self.text[self.at], b',' | b'}' | b']')
                    && !self.text[self.at].is_ascii_whitespace()
                {
                    self.at += 1;
                }
                Ok(Node::Scalar {
                    start,
                    end: self.at,
                })
            }
            None => Err("the document ends early".into()),
        }
    }
}

fn column(text: &str, at: usize) -> usize {
    at - text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// Sets the value at `path`, adding the last key to an object when it is missing.
fn set(text: &str, path: &[Segment], value: &Value) -> Result<String, String> {
    let mut scanner = Scanner {
        text: text.as_bytes(),
        at: 0,
    };
    let root = scanner.value(0)?;
    let mut node = &root;
    for (depth, segment) in path.iter().enumerate() {
        let here = display(&path[..depth]);
        let place = if here.is_empty() {
            "the document".to_string()
        } else {
            here
        };
        node = match node {
            Node::Object { entries, end, .. } => {
                let key = segment.as_key();
                match entries.iter().find(|(k, _, _)| *k == key) {
                    Some((_, _, v)) => v,
                    None if depth + 1 == path.len() => {
                        let entry = format!("{}: {}", Value::String(key), value);
                        let mut out = text.to_string();
                        match entries.last() {
                            Some((_, key_start, last)) => {
                                // A key that starts its own line gets its new neighbour on a line too.
                                let indent = column(text, *key_start);
                                let own_line =
                                    text[*key_start - indent..*key_start].trim().is_empty();
                                let separator = if own_line {
                                    format!(",\n{}", &text[*key_start - indent..*key_start])
                                } else {
                                    ", ".to_string()
                                };
                                out.insert_str(last.span().1, &format!("{separator}{entry}"));
                            }
                            None => out.insert_str(end - 1, &entry),
                        }
                        return Ok(out);
                    }
                    None => return Err(format!("{place} has no key {key:?}")),
                }
            }
            Node::Array { items, .. } => {
                let Segment::Index(i) = segment else {
                    return Err(format!(
                        "{place} is an array; use a number to pick an item, not {:?}",
                        segment.as_key()
                    ));
                };
                items.get(*i).ok_or_else(|| {
                    format!("{place} has {} items; there is no item {i}", items.len())
                })?
            }
            Node::Scalar { .. } => {
                return Err(format!("{place} is a single value, not an object or array"));
            }
        };
    }
    let (start, end) = node.span();
    let mut out = text.to_string();
    out.replace_range(start..end, &value.to_string());
    Ok(out)
}

/// Applies `updates` in order.
pub fn update(text: &str, updates: &[(Vec<Segment>, Value)]) -> Result<String, String> {
    let mut text = text.to_string();
    for (path, value) in updates {
        text = set(&text, path, value)?;
    }
    serde_json::from_str::<Value>(&text)
        .map_err(|e| format!("the edit made the file invalid ({e}); please report this"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dray_sdk::path::split;
    use serde_json::json;

    fn one(text: &str, key: &str, value: Value) -> String {
        update(text, &[(split(key).unwrap(), value)]).unwrap()
    }

    #[test]
    fn replaces_only_the_value_and_keeps_the_layout() {
        let text =
            "{\n    \"image\": {\"tag\": \"1.0\", \"repo\": \"web\"},\n    \"list\": [1, 2]\n}\n";
        assert_eq!(
            one(text, "image.tag", json!("2.0")),
            "{\n    \"image\": {\"tag\": \"2.0\", \"repo\": \"web\"},\n    \"list\": [1, 2]\n}\n"
        );
        assert!(one(text, "list.1", json!({"a": true})).contains("\"list\": [1, {\"a\":true}]"));
    }

    #[test]
    fn adds_a_missing_key_in_the_objects_style() {
        let text = "{\n  \"a\": 1\n}";
        assert_eq!(
            one(text, "b", json!("x")),
            "{\n  \"a\": 1,\n  \"b\": \"x\"\n}"
        );
        assert_eq!(one("{\"a\": {}}", "a.b", json!(2)), "{\"a\": {\"b\": 2}}");
        assert_eq!(one("{\"a\": 1}", "c", json!(2)), "{\"a\": 1, \"c\": 2}");
    }

    #[test]
    fn explains_a_wrong_path() {
        let err = update("{\"a\": [1]}", &[(split("a.x").unwrap(), json!(1))]).unwrap_err();
        assert!(err.contains("a is an array"), "{err}");
        let err = update("{\"a\": 1}", &[(split("b.c").unwrap(), json!(1))]).unwrap_err();
        assert_eq!(err, "the document has no key \"b\"");
    }
}
