//! `gotmpl`: Go's `text/template` in Rust, with Go's semantics, for rendering Helm charts
//! without Go.
//!
//! A [`Templates`] set holds named templates (each file parsed into it, and every
//! `{{define}}` in them), the functions they may call, and the `missingkey` option. Execution
//! walks a template with a [`Value`] as dot and returns the text, or an error worded as Go's
//! (`template: FILE:LINE:COL: executing "NAME" at <NODE>: MESSAGE`), so a chart's author reads
//! what `helm template` would have said.
//!
//! ```
//! use gotmpl::{Templates, Value};
//!
//! let mut set = Templates::new();
//! set.parse("greeting", r#"{{ range $i, $n := .names }}{{ if $i }}, {{ end }}hello {{ $n }}{{ end }}"#)
//!     .unwrap();
//! let data = Value::map([("names".to_string(), Value::list(["ann".into(), "bob".into()]))]);
//! assert_eq!(set.execute("greeting", &data).unwrap(), "hello ann, hello bob");
//! ```
//!
//! Go's semantics kept on purpose: numbers are `int` or `float64` and do not compare across
//! kinds (`eq 1 1.0` is an error), a float64 prints in Go's shortest form (`1e+06`), maps print
//! and range sorted by key, a nil prints `<no value>`, `and`/`or` stop at the deciding argument,
//! and `{{- -}}` trims whitespace. Beyond Go: a bound on nesting ([`exec::MAX_DEPTH`]) and on the
//! output's size, so a hostile template fails instead of exhausting the host.

pub mod exec;
pub mod fmt;
pub mod funcs;
pub mod lex;
pub mod parse;
pub mod sprig;
pub mod time;
pub mod url;
pub mod value;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use exec::{Call, ExecError, Func, FuncError};
pub use parse::ParseError;
pub use value::{Object, Value};

/// What a missing map key gives (Go's `missingkey` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingKey {
    /// `missingkey=default`: no value; a field of it is no value too.
    #[default]
    Default,
    /// `missingkey=zero` (Helm's): a nil; a field of it is an error ("nil pointer evaluating").
    Zero,
    /// `missingkey=error`: an error.
    Error,
}

/// A parsed template and the text it came from (errors point into it).
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub(crate) list: Arc<parse::List>,
    /// The name of what was parsed (a file), as errors show it.
    pub(crate) parse_name: String,
    pub(crate) text: Arc<str>,
}

/// A set of named templates with their functions.
#[derive(Clone)]
pub struct Templates {
    trees: BTreeMap<String, Tree>,
    funcs: BTreeMap<String, Func>,
    missing_key: MissingKey,
    max_output: usize,
    max_steps: Option<u64>,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("templates", &self.trees.keys().collect::<Vec<_>>())
            .field("missing_key", &self.missing_key)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// An empty set with Go's builtin functions.
    pub fn new() -> Templates {
        Templates {
            trees: BTreeMap::new(),
            funcs: funcs::builtins(),
            missing_key: MissingKey::Default,
            max_output: 64 << 20,
            max_steps: None,
        }
    }

    /// Sets what a missing map key gives.
    pub fn missing_key(&mut self, option: MissingKey) -> &mut Self {
        self.missing_key = option;
        self
    }

    /// Sets the most bytes one execution may write (64 MiB by default).
    pub fn max_output(&mut self, bytes: usize) -> &mut Self {
        self.max_output = bytes;
        self
    }

    /// Sets the most nodes and range iterations one execution may walk (none by default, as in
    /// Go and Helm, where a deadline is the bound: `range 4000000000` with an empty body writes
    /// nothing and takes minutes). Past it, execution fails with an error instead of running on.
    pub fn max_steps(&mut self, steps: u64) -> &mut Self {
        self.max_steps = Some(steps);
        self
    }

    /// Adds (or replaces) a function.
    pub fn func(
        &mut self,
        name: &str,
        f: impl Fn(&mut Call, &[Value]) -> Result<Value, FuncError> + Send + Sync + 'static,
    ) -> &mut Self {
        self.funcs.insert(name.to_string(), Arc::new(f));
        self
    }

    /// Whether a function of that name exists.
    pub fn has_func(&self, name: &str) -> bool {
        self.funcs.contains_key(name)
    }

    /// Parses `text` as template `name`, adding it and the templates it defines to the set. As
    /// in Go, a later non-empty definition of a name replaces an earlier one.
    pub fn parse(&mut self, name: &str, text: &str) -> Result<(), ParseError> {
        let funcs = &self.funcs;
        let parsed = parse::parse(name, text, &|f| funcs.contains_key(f))?;
        let text: Arc<str> = text.into();
        for (defined, list) in parsed.defined {
            self.trees.insert(
                defined,
                Tree {
                    list: Arc::new(list),
                    parse_name: name.to_string(),
                    text: text.clone(),
                },
            );
        }
        let empty = parsed
            .root
            .iter()
            .all(|n| matches!(n, parse::Node::Text(t) if t.trim().is_empty()));
        if !empty || !self.trees.contains_key(name) {
            self.trees.insert(
                name.to_string(),
                Tree {
                    list: Arc::new(parsed.root),
                    parse_name: name.to_string(),
                    text,
                },
            );
        }
        Ok(())
    }

    /// Whether the set has a template of that name.
    pub fn has(&self, name: &str) -> bool {
        self.trees.contains_key(name)
    }

    /// The names of the templates, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.trees.keys().map(String::as_str)
    }

    /// Executes template `name` with `data` as dot.
    pub fn execute(&self, name: &str, data: &Value) -> Result<String, ExecError> {
        let mut state = exec::State::new(self);
        let mut out = String::new();
        state.run_named(name, data.clone(), &mut out)?;
        Ok(out)
    }
}
