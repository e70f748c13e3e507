//! Edits a YAML document in place: finds where a value sits in the text (through the parser's
//! positions) and replaces just those characters, so comments, quoting, indentation and the order
//! of everything else stay as they were, as Kargo's `yaml-update` promises.

use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::{Yaml, YamlLoader};

use crate::path::Segment;

/// A node of the first document, with where it starts in the text (a byte offset).
#[derive(Debug)]
enum Node {
    Scalar {
        start: usize,
        style: TScalarStyle,
        value: String,
    },
    Sequence {
        start: usize,
        items: Vec<Node>,
    },
    Mapping {
        start: usize,
        entries: Vec<(Node, Node)>,
    },
    Alias {
        start: usize,
    },
}

impl Node {
    fn start(&self) -> usize {
        match self {
            Node::Scalar { start, .. }
            | Node::Sequence { start, .. }
            | Node::Mapping { start, .. }
            | Node::Alias { start } => *start,
        }
    }
}

/// Builds the node tree of the first document from the parser's events.
#[derive(Default)]
struct Builder {
    /// Byte offset of each character: the parser counts characters, edits need bytes.
    offsets: Vec<usize>,
    stack: Vec<Node>,
    /// The mapping keys waiting for their values, one slot per open mapping.
    keys: Vec<Option<Node>>,
    done: Option<Node>,
}

impl Builder {
    fn add(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.done.is_none() {
                    self.done = Some(node);
                }
            }
            Some(Node::Sequence { items, .. }) => items.push(node),
            Some(Node::Mapping { entries, .. }) => {
                let slot = self.keys.last_mut().expect("a key slot per open mapping");
                match slot.take() {
                    None => *slot = Some(node),
                    Some(key) => entries.push((key, node)),
                }
            }
            Some(_) => unreachable!("only collections are stacked"),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        // The parser's marks count characters; past the last one (it reports such marks after
        // some block scalars) means the end of the text, never a byte inside a character.
        let end = self.offsets.last().copied().unwrap_or_default();
        let start = self.offsets.get(mark.index()).copied().unwrap_or(end);
        match event {
            Event::Scalar(value, style, _, _) => self.add(Node::Scalar {
                start,
                style,
                value,
            }),
            Event::Alias(_) => self.add(Node::Alias { start }),
            Event::SequenceStart(..) => self.stack.push(Node::Sequence {
                start,
                items: Vec::new(),
            }),
            Event::MappingStart(..) => {
                self.stack.push(Node::Mapping {
                    start,
                    entries: Vec::new(),
                });
                self.keys.push(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = self.stack.pop().expect("an open collection");
                if matches!(node, Node::Mapping { .. }) {
                    self.keys.pop();
                }
                self.add(node);
            }
            _ => {}
        }
    }
}

fn parse(text: &str) -> Result<Node, String> {
    let mut builder = Builder {
        offsets: text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect(),
        ..Builder::default()
    };
    Parser::new_from_str(text)
        .load(&mut builder, false)
        .map_err(|e| format!("not valid YAML: {e}"))?;
    builder
        .done
        .ok_or_else(|| "the file holds no YAML document".to_string())
}

/// The column of byte offset `at` (0-based, in characters).
fn column(text: &str, at: usize) -> usize {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[line_start..at].chars().count()
}

fn line_end(text: &str, from: usize) -> usize {
    text[from..].find('\n').map_or(text.len(), |i| from + i)
}

/// Where a scalar's text ends, or an error for the forms Dray does not rewrite in place.
fn scalar_end(text: &str, start: usize, style: TScalarStyle, value: &str) -> Result<usize, String> {
    let rest = text
        .get(start..)
        .ok_or_else(|| "a value the parser placed outside the text".to_string())?;
    match style {
        TScalarStyle::DoubleQuoted => {
            let mut escaped = false;
            for (i, c) in rest.char_indices().skip(1) {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => return Ok(start + i + 1),
                    _ => escaped = false,
                }
            }
            Err("an unterminated double-quoted value".into())
        }
        TScalarStyle::SingleQuoted => {
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    return Ok(start + i + 1);
                }
                i += 1;
            }
            Err("an unterminated single-quoted value".into())
        }
        TScalarStyle::Literal | TScalarStyle::Folded => {
            Err("a block scalar (| or >); yaml-update replaces single-line values".into())
        }
        // A plain scalar on one line is its text verbatim; one that folds over several lines
        // is not, and is not rewritten.
        TScalarStyle::Plain if rest.starts_with(value) && !value.contains('\n') => {
            Ok(start + value.len())
        }
        TScalarStyle::Plain => {
            Err("a value that spans several lines; yaml-update replaces single-line values".into())
        }
    }
}

/// How a JSON value is written into YAML: plain when the text reads back as the same string,
/// JSON (which is YAML) otherwise.
pub fn render(value: &Value) -> String {
    match value {
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.trim() == s
                && !s.contains(['\n', '#', '"', '\''])
                && !s.contains(": ")
                && matches!(YamlLoader::load_from_str(s).as_deref(), Ok([Yaml::String(back)]) if back == s);
            if plain {
                s.clone()
            } else {
                Value::String(s.clone()).to_string()
            }
        }
        other => other.to_string(),
    }
}

/// Whether a node sits inside a flow collection (`[...]` or `{...}`).
fn is_flow(text: &str, node: &Node) -> bool {
    matches!(text.as_bytes().get(node.start()), Some(b'[' | b'{'))
}

/// Where the last character of a node is (for appending after a block mapping).
fn node_end(text: &str, node: &Node) -> usize {
    match node {
        Node::Scalar {
            start,
            style,
            value,
        } => scalar_end(text, *start, *style, value).unwrap_or_else(|_| line_end(text, *start)),
        Node::Alias { start } => line_end(text, *start),
        Node::Sequence { items, start } => items.last().map_or(*start, |n| node_end(text, n)),
        Node::Mapping { entries, start } => {
            entries.last().map_or(*start, |(_, v)| node_end(text, v))
        }
    }
}

/// One edit: replace `range` with `with`.
struct Edit {
    range: std::ops::Range<usize>,
    with: String,
}

fn describe(path: &[Segment]) -> String {
    crate::path::display(path)
}

fn locate(text: &str, root: &Node, path: &[Segment], value: &Value) -> Result<Edit, String> {
    let mut node = root;
    let mut flow = is_flow(text, root);
    for (depth, segment) in path.iter().enumerate() {
        let here = describe(&path[..depth]);
        let last = depth + 1 == path.len();
        match node {
            Node::Mapping { entries, .. } => {
                let key = segment.as_key();
                let found = entries
                    .iter()
                    .find(|(k, _)| matches!(k, Node::Scalar { value, .. } if *value == key));
                match found {
                    Some((k, v)) => {
                        // An empty value (`key:`) has no text of its own: write after the colon.
                        if let Node::Scalar {
                            value: empty,
                            style: TScalarStyle::Plain,
                            start,
                        } = v
                        {
                            let key_end = match k {
                                Node::Scalar {
                                    start,
                                    style,
                                    value,
                                } => scalar_end(text, *start, *style, value)?,
                                _ => unreachable!(),
                            };
                            if empty.is_empty()
                                || (*start > key_end && text[key_end..*start].contains('\n'))
                            {
                                let colon = key_end
                                    + text[key_end..].find(':').ok_or("a key without a colon")?;
                                if last {
                                    return Ok(Edit {
                                        range: colon + 1..colon + 1,
                                        with: format!(" {}", render(value)),
                                    });
                                }
                                return Err(format!(
                                    "{} is empty, not a mapping or sequence",
                                    describe(&path[..=depth])
                                ));
                            }
                        }
                        node = v;
                    }
                    None if last && !flow => {
                        let indent = column(
                            text,
                            entries.first().map_or(node.start(), |(k, _)| k.start()),
                        );
                        let at = line_end(text, node_end(text, node));
                        return Ok(Edit {
                            range: at..at,
                            with: format!(
                                "\n{}{}: {}",
                                " ".repeat(indent),
                                render(&Value::String(key.clone())),
                                render(value)
                            ),
                        });
                    }
                    None => {
                        let place = if here.is_empty() {
                            "the document".to_string()
                        } else {
                            here
                        };
                        return Err(format!("{place} has no key {key:?}"));
                    }
                }
            }
            Node::Sequence { items, .. } => {
                let Segment::Index(i) = segment else {
                    return Err(format!(
                        "{here} is a sequence; use a number to pick an item, not {:?}",
                        segment.as_key()
                    ));
                };
                node = items.get(*i).ok_or_else(|| {
                    format!("{here} has {} items; there is no item {i}", items.len())
                })?;
            }
            _ => {
                return Err(format!(
                    "{here} is a single value, not a mapping or sequence"
                ));
            }
        }
        flow = flow || is_flow(text, node);
    }
    match node {
        Node::Scalar {
            start,
            style,
            value: old,
        } => {
            let end = scalar_end(text, *start, *style, old)
                .map_err(|e| format!("{} is {e}", describe(path)))?;
            Ok(Edit {
                range: *start..end,
                with: render(value),
            })
        }
        Node::Alias { .. } => Err(format!(
            "{} is an alias (*anchor); change the anchor instead",
            describe(path)
        )),
        _ => Err(format!(
            "{} holds a mapping or sequence; yaml-update sets single values (address a key inside it)",
            describe(path)
        )),
    }
}

/// Applies `updates` (path, new value) to `text`. All updates are checked before any is applied.
pub fn update(text: &str, updates: &[(Vec<Segment>, Value)]) -> Result<String, String> {
    let mut text = text.to_string();
    // Each update re-parses: an earlier one may have added a key a later one addresses.
    for (path, value) in updates {
        let root = parse(&text)?;
        let edit = locate(&text, &root, path, value)?;
        text.replace_range(edit.range, &edit.with);
    }
    parse(&text)
        .map_err(|e| format!("the edit made the file invalid ({e}); please report this"))?;
    Ok(text)
}

/// The first document as JSON (keys become strings; aliases resolve).
pub fn to_json(text: &str) -> Result<Value, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    Ok(docs.first().map_or(Value::Null, super::to_json))
}

/// JSON back to YAML, for writing merged documents.
pub fn yaml(v: &Value) -> Yaml {
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(yaml).collect()),
        Value::Object(map) => Yaml::Hash(
            map.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), yaml(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::split;
    use serde_json::json;

    #[test]
    fn a_folded_scalar_of_multibyte_characters_is_no_panic() {
        // Found by the yaml_update fuzz target after 9.5 million runs: the parser marked a
        // place past the last character, read as a byte offset inside one.
        let text = ": >\n \u{75a}\u{75a}\n\u{75a}:";
        let _ = set(text, "i", json!(""));
        let _ = set(text, "x", json!("1"));
    }

    fn set(text: &str, key: &str, value: Value) -> Result<String, String> {
        update(text, &[(split(key).unwrap(), value)])
    }

    #[test]
    fn replaces_a_value_and_keeps_comments_and_quotes_elsewhere() {
        let text = "# top\nimage:\n  repository: web # the repo\n  tag: \"1.0.0\"  # pinned\nreplicas: 2\n";
        let out = set(text, "image.tag", json!("1.2.0")).unwrap();
        assert_eq!(
            out,
            "# top\nimage:\n  repository: web # the repo\n  tag: 1.2.0  # pinned\nreplicas: 2\n"
        );
        let out = set(&out, "replicas", json!(5)).unwrap();
        assert!(out.ends_with("replicas: 5\n"), "{out}");
    }

    #[test]
    fn walks_sequences_by_index_and_flow_collections() {
        let text = "containers:\n  - name: a\n    image: x:1\n  - name: b\n    image: y:1\nports: [80, 443]\nlabels: {app: web, tier: front}\n";
        let out = set(text, "containers.1.image", json!("y:2")).unwrap();
        assert!(
            out.contains("    image: y:2\n") && out.contains("image: x:1"),
            "{out}"
        );
        let out = set(&out, "ports.1", json!(8443)).unwrap();
        assert!(out.contains("ports: [80, 8443]"), "{out}");
        let out = set(&out, "labels.tier", json!("back")).unwrap();
        assert!(out.contains("labels: {app: web, tier: back}"), "{out}");
    }

    #[test]
    fn adds_a_missing_last_key_to_a_block_mapping() {
        let text = "image:\n  repository: web\nother: 1\n";
        let out = set(text, "image.tag", json!("2.0")).unwrap();
        assert_eq!(out, "image:\n  repository: web\n  tag: \"2.0\"\nother: 1\n");
        let out = set("a: 1\n", "b", json!({"x": [1]})).unwrap();
        assert_eq!(to_json(&out).unwrap(), json!({"a": 1, "b": {"x": [1]}}));
    }

    #[test]
    fn fills_an_empty_value() {
        let out = set("tag:\nname: x\n", "tag", json!("v1")).unwrap();
        assert_eq!(out, "tag: v1\nname: x\n");
    }

    #[test]
    fn quotes_strings_that_would_read_back_as_something_else() {
        assert_eq!(render(&json!("1.0")), "\"1.0\"");
        assert_eq!(render(&json!("true")), "\"true\"");
        assert_eq!(render(&json!("a: b")), "\"a: b\"");
        assert_eq!(render(&json!("nginx:1.25")), "nginx:1.25");
        assert_eq!(render(&json!(true)), "true");
    }

    #[test]
    fn explains_what_it_cannot_find_or_rewrite() {
        let text = "a:\n  b: 1\nlist: [1]\nblock: |\n  text\n";
        assert_eq!(
            set(text, "a.c.d", json!(1)).unwrap_err(),
            "a has no key \"c\""
        );
        assert_eq!(
            set(text, "a", json!(1))
                .unwrap_err()
                .contains("holds a mapping"),
            true
        );
        assert!(
            set(text, "list.3", json!(1))
                .unwrap_err()
                .contains("has 1 items")
        );
        assert!(
            set(text, "block", json!("x"))
                .unwrap_err()
                .contains("block scalar")
        );
    }

    #[test]
    fn keeps_multibyte_text_intact() {
        let out = set("name: café # é\nv: 1\n", "v", json!(2)).unwrap();
        assert_eq!(out, "name: café # é\nv: 2\n");
    }
}
