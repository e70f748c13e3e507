//! Reading manifests: a YAML (or JSON) stream of documents into JSON values, remembering where
//! every field was written so an error can name `file:line:column`.
//!
//! yaml-rust2's event parser gives positions; serde-based YAML crates lose them once a value is
//! built. Paths use the same spelling as `serde_path_to_error` (`spec.steps[2].config`), so a
//! path from the typed gate finds its position here.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One document of a stream.
#[derive(Debug, Clone)]
pub struct Document {
    /// 1-based index of the document in its stream, counting empty ones.
    pub index: usize,
    pub value: Value,
    /// Where the document starts.
    pub start: Position,
    positions: HashMap<String, Position>,
    /// What the document likely did not mean to say, by field path: valid YAML that reads
    /// differently than it looks.
    pub warnings: Vec<(String, String)>,
}

impl Document {
    /// Where `path` was written; for a path that does not exist (a missing field), the nearest
    /// enclosing one that does.
    pub fn position(&self, path: &str) -> Position {
        let mut path = path;
        loop {
            if let Some(p) = self.positions.get(path) {
                return *p;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return self.positions.get("").copied().unwrap_or(self.start),
            }
        }
    }
}

/// A stream that is not well-formed YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (document {document}, line {}, column {})", position.line, position.column)]
pub struct SyntaxError {
    pub document: usize,
    pub position: Position,
    pub message: String,
}

/// The most a stream may expand to, in bytes of values (every scalar's text plus
/// `NODE_COST` a value), aliases counted at every use: a few hundred bytes of nested aliases
/// can otherwise expand to gigabytes (the "billion laughs").
pub const MAX_EXPANDED_BYTES: usize = 64 << 20;
/// What one value costs besides its text, in [`MAX_EXPANDED_BYTES`].
const NODE_COST: usize = 16;
/// The deepest nesting of lists and mappings accepted (deeper values would exhaust the stack of
/// whatever walks them later).
pub const MAX_DEPTH: usize = 128;
/// The most documents one stream may hold.
pub const MAX_DOCUMENTS: usize = 10_000;

/// Parses every document of `text`; empty documents are dropped.
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let outcome = parser.load(&mut builder, true);
    if let Some(e) = builder.error.take() {
        return Err(e);
    }
    outcome.map_err(|e| SyntaxError {
        document: builder.index.max(1),
        position: position(*e.marker()),
        message: e.info().to_string(),
    })?;
    Ok(builder
        .documents
        .into_iter()
        .filter(|d| !d.value.is_null())
        .collect())
}

fn position(m: Marker) -> Position {
    // yaml-rust2 reports 1-based lines and 0-based columns.
    Position {
        line: m.line(),
        column: m.col() + 1,
    }
}

enum Frame {
    Sequence(Vec<Value>, usize),
    /// Entries so far, the key waiting for its value, the anchor.
    Mapping(Map<String, Value>, Option<String>, usize),
}

#[derive(Default)]
struct Builder {
    documents: Vec<Document>,
    index: usize,
    start: Option<Position>,
    stack: Vec<Frame>,
    /// Path of each open container, parallel to `stack`.
    paths: Vec<String>,
    positions: HashMap<String, Position>,
    /// Each anchor's value and what it costs (toward [`MAX_EXPANDED_BYTES`]) at every use.
    anchors: HashMap<usize, (Value, usize)>,
    /// Cost of each open container so far, parallel to `stack`.
    costs: Vec<usize>,
    /// What the stream has expanded to so far.
    expanded: usize,
    root: Option<Value>,
    error: Option<SyntaxError>,
    warnings: Vec<(String, String)>,
}

impl Builder {
    fn fail(&mut self, at: Marker, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                document: self.index,
                position: position(at),
                message,
            });
        }
    }

    /// The path the next value will have.
    fn next_path(&self) -> Option<String> {
        let parent = self.paths.last()?;
        Some(match self.stack.last()? {
            Frame::Sequence(items, _) => format!("{parent}[{}]", items.len()),
            Frame::Mapping(_, Some(key), _) if parent.is_empty() => key.clone(),
            Frame::Mapping(_, Some(key), _) => format!("{parent}.{key}"),
            Frame::Mapping(_, None, _) => parent.clone(),
        })
    }

    /// Whether the next scalar is a mapping key (rather than a value).
    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Mapping(_, None, _)))
    }

    /// Counts `cost` toward the stream's expansion; false (and an error) past the limit.
    fn spend(&mut self, cost: usize, at: Marker) -> bool {
        self.expanded = self.expanded.saturating_add(cost);
        if self.expanded > MAX_EXPANDED_BYTES {
            self.fail(
                at,
                format!(
                    "the stream expands to more than {} MiB (aliases repeat their anchor's whole value at every use); write the values out or split the file",
                    MAX_EXPANDED_BYTES >> 20
                ),
            );
            return false;
        }
        if let Some(parent) = self.costs.last_mut() {
            *parent = parent.saturating_add(cost);
        }
        true
    }

    fn finish(&mut self, value: Value, anchor: usize, cost: usize, at: Marker) {
        if anchor > 0 {
            self.anchors.insert(anchor, (value.clone(), cost));
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Sequence(items, _)) => items.push(value),
            Some(Frame::Mapping(entries, key, _)) => {
                if let Some(key) = key.take()
                    && entries.insert(key.clone(), value).is_some()
                {
                    self.fail(at, format!("key {key:?} appears twice in one mapping"));
                }
            }
        }
    }
}

fn scalar(text: String, style: TScalarStyle, tag: Option<&yaml_rust2::parser::Tag>) -> Value {
    if style != TScalarStyle::Plain || tag.is_some_and(|t| t.suffix == "str") {
        return Value::String(text);
    }
    match Yaml::from_str(&text) {
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Null => Value::Null,
        _ => Value::String(text),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match event {
            Event::DocumentStart => {
                self.index += 1;
                if self.index > MAX_DOCUMENTS {
                    self.fail(
                        mark,
                        format!("a stream may hold at most {MAX_DOCUMENTS} documents; split it"),
                    );
                    return;
                }
                self.start = Some(position(mark));
                self.positions.clear();
                self.anchors.clear();
                self.root = None;
            }
            Event::DocumentEnd => {
                let value = self.root.take().unwrap_or(Value::Null);
                self.documents.push(Document {
                    index: self.index,
                    value,
                    start: self.start.unwrap_or(Position { line: 1, column: 1 }),
                    positions: std::mem::take(&mut self.positions),
                    warnings: std::mem::take(&mut self.warnings),
                });
            }
            Event::Scalar(text, style, anchor, tag) => {
                if self.expecting_key() {
                    if let Some(Frame::Mapping(_, key, _)) = self.stack.last_mut() {
                        *key = Some(text);
                    }
                    if let Some(path) = self.next_path() {
                        self.positions.insert(path, position(mark));
                    }
                    return;
                }
                let path = self.next_path().unwrap_or_default();
                if tag.as_ref().is_some_and(|t| t.handle == "!") {
                    // Kubernetes manifests use no local tags: `expressionFilter: !(a contains
                    // b)` is the tag `!(a` on the text `contains b)`, not an expression. The
                    // message echoes neither (the value may be a Secret's).
                    self.warnings.push((
                        path.clone(),
                        "the value starts with '!', which YAML reads as a tag, not as part of the value: quote the whole value".into(),
                    ));
                }
                self.positions.entry(path).or_insert(position(mark));
                let cost = NODE_COST + text.len();
                if !self.spend(cost, mark) {
                    return;
                }
                let value = scalar(text, style, tag.as_ref());
                self.finish(value, anchor, cost, mark);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.expecting_key() {
                    self.fail(
                        mark,
                        "a mapping key must be a plain value, not a list or mapping".into(),
                    );
                    return;
                }
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(
                        mark,
                        format!("lists and mappings nest deeper than {MAX_DEPTH} levels"),
                    );
                    return;
                }
                if !self.spend(NODE_COST, mark) {
                    return;
                }
                let path = self.next_path().unwrap_or_default();
                self.positions.entry(path.clone()).or_insert(position(mark));
                self.paths.push(path);
                self.costs.push(NODE_COST);
                self.stack.push(match event {
                    Event::SequenceStart(..) => Frame::Sequence(Vec::new(), anchor),
                    _ => Frame::Mapping(Map::new(), None, anchor),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.paths.pop();
                let cost = self.costs.pop().unwrap_or(NODE_COST);
                // The children were counted toward the stream already; the parent's cost
                // (what an alias to it will repeat) takes them too.
                if let Some(parent) = self.costs.last_mut() {
                    *parent = parent.saturating_add(cost - NODE_COST);
                }
                let (value, anchor) = match self.stack.pop() {
                    Some(Frame::Sequence(items, anchor)) => (Value::Array(items), anchor),
                    Some(Frame::Mapping(entries, _, anchor)) => (Value::Object(entries), anchor),
                    None => return,
                };
                self.finish(value, anchor, cost, mark);
            }
            Event::Alias(id) => {
                if self.expecting_key() {
                    self.fail(mark, "an alias cannot be a mapping key".into());
                    return;
                }
                let Some((_, cost)) = self.anchors.get(&id) else {
                    self.fail(mark, "alias to an unknown anchor".into());
                    return;
                };
                let cost = *cost;
                // Counted before the value is copied, so a bomb never reaches memory.
                if !self.spend(cost, mark) {
                    return;
                }
                let value = self.anchors[&id].0.clone();
                self.finish(value, 0, cost, mark);
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_documents_with_positions() {
        let text = "apiVersion: v1\nkind: Project\nmetadata:\n  name: demo\n---\n---\nkind: Stage\nspec:\n  steps:\n  - uses: git-clone\n    config: {repoURL: 'x'}\n";
        let docs = parse(text).expect("valid");
        assert_eq!(docs.len(), 2, "the empty document is dropped");
        assert_eq!(docs[0].index, 1);
        assert_eq!(docs[1].index, 3);
        assert_eq!(docs[0].value["metadata"]["name"], "demo");
        assert_eq!(
            docs[0].position("metadata.name"),
            Position { line: 4, column: 3 }
        );
        assert_eq!(
            docs[1].position("spec.steps[0].uses"),
            Position {
                line: 10,
                column: 5
            }
        );
        assert_eq!(
            docs[1].position("spec.steps[0].config.repoURL"),
            Position {
                line: 11,
                column: 14
            }
        );
        // a missing field falls back to its nearest parent
        assert_eq!(
            docs[1].position("spec.steps[0].as"),
            docs[1].position("spec.steps[0]")
        );
    }

    #[test]
    fn types_plain_scalars_and_keeps_quoted_ones_as_text() {
        let docs =
            parse("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: 1.2.3\ng: !!str 7\n").expect("valid");
        let v = &docs[0].value;
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"], "1");
        assert_eq!(v["c"], true);
        assert!(v["d"].is_null());
        assert_eq!(v["e"], 1.5);
        assert_eq!(v["f"], "1.2.3");
        assert_eq!(v["g"], "7");
    }

    #[test]
    fn a_billion_laughs_is_refused_before_it_expands() {
        // 429 bytes that expand to 10^9 strings.
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for pair in names.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            let items = vec![format!("*{prev}"); 10].join(",");
            bomb.push_str(&format!("{next}: &{next} [{items}]\n"));
        }
        let err = parse(&bomb).expect_err("refused");
        assert!(err.message.contains("expands to more than"), "{err}");
        assert_eq!(err.document, 1);
    }

    #[test]
    fn aliases_that_stay_small_still_work() {
        let text = "base: &b {x: [1, 2, 3]}\nlist: [*b, *b, *b]\n";
        let docs = parse(text).expect("valid");
        assert_eq!(docs[0].value["list"][2]["x"][2], 3);
    }

    #[test]
    fn deep_nesting_and_endless_streams_are_refused() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let err = parse(&deep).expect_err("too deep");
        assert!(err.message.contains("nest deeper"), "{err}");
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let many = "a: 1\n---\n".repeat(MAX_DOCUMENTS + 1);
        let err = parse(&many).expect_err("too many documents");
        assert!(err.message.contains("at most"), "{err}");
    }

    #[test]
    fn reads_json_and_anchors() {
        let docs = parse("{\"kind\": \"Stage\", \"n\": [1, 2]}\n---\nbase: &b {x: 1}\ncopy: *b\n")
            .expect("valid");
        assert_eq!(docs[0].value["n"][1], 2);
        assert_eq!(docs[1].value["copy"]["x"], 1);
    }

    #[test]
    fn reports_syntax_errors_with_document_and_line() {
        let err = parse("a: 1\n---\nb: [1, 2\n").expect_err("unclosed list");
        assert_eq!(err.document, 2);
        assert!(err.position.line >= 3, "{err}");
        let err = parse("a: 1\na: 2\n").expect_err("duplicate key");
        assert!(err.message.contains("twice"), "{err}");
        assert_eq!(err.position.line, 2);
    }
}
