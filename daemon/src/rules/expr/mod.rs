//! Kargo's expressions in step config: `${{ expr }}` (or `${% expr %}` when the expression holds
//! `}}`), evaluated by the `expr-lang` crate (expr's Go semantics) with Kargo's variables and
//! functions.
//!
//! Typing follows Kargo: a string that is exactly one expression becomes the JSON the result
//! parses as (object, array, number, bool, null), else it stays a string; `quote(v)` forces a
//! string. Expressions are evaluated in values, never in keys.
//!
//! `semverParse(v)` returns a version with Masterminds' methods ([`version`]); method calls on
//! it are rewritten before evaluation ([`syntax`]), which also lists the functions an
//! expression calls, so `dray apply` refuses an unknown one ([`check`]). `secret(name)` reads
//! generic Secrets only, as Kargo's.

use std::collections::BTreeMap;

use expr::{Context, Environment, Value as X};
use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::resource::urls::{normalize_chart, normalize_git, normalize_image};

pub use expr_syntax as syntax;
pub mod version;

/// A Freight as expressions see it (`commitFrom` and friends search these).
#[derive(Debug, Clone, Default)]
pub struct FreightView {
    pub name: String,
    pub origin: String,
    pub commits: Vec<Value>,
    pub images: Vec<Value>,
    pub charts: Vec<Value>,
    /// Generic artifacts (`artifactFrom`), by subscription name.
    pub artifacts: Vec<Value>,
}

impl FreightView {
    /// The view of a Freight (or a Freight reference of a collection) as stored.
    pub fn of(f: &Value) -> FreightView {
        FreightView {
            name: f["name"]
                .as_str()
                .or(f["metadata"]["name"].as_str())
                .unwrap_or_default()
                .into(),
            origin: f["origin"]["name"].as_str().unwrap_or_default().into(),
            commits: renamed(
                &f["commits"],
                &[
                    ("repoURL", "RepoURL"),
                    ("id", "ID"),
                    ("branch", "Branch"),
                    ("tag", "Tag"),
                    ("message", "Message"),
                    ("author", "Author"),
                    ("committer", "Committer"),
                ],
            ),
            images: renamed(
                &f["images"],
                &[
                    ("repoURL", "RepoURL"),
                    ("tag", "Tag"),
                    ("digest", "Digest"),
                    ("annotations", "Annotations"),
                ],
            ),
            charts: renamed(
                &f["charts"],
                &[
                    ("repoURL", "RepoURL"),
                    ("name", "Name"),
                    ("version", "Version"),
                ],
            ),
            artifacts: renamed(
                &f["artifacts"],
                &[
                    ("artifactType", "ArtifactType"),
                    ("subscriptionName", "SubscriptionName"),
                    ("version", "Version"),
                    ("metadata", "Metadata"),
                ],
            ),
        }
    }
}

/// The items of a list with their keys renamed (Kargo's expressions see Go field names).
fn renamed(value: &Value, renames: &[(&str, &str)]) -> Vec<Value> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            let mut out = Map::new();
            for (from, to) in renames {
                out.insert(
                    (*to).to_string(),
                    item.get(*from).cloned().unwrap_or(Value::Null),
                );
            }
            Value::Object(out)
        })
        .collect()
}

/// Finds a generic secret's values by name (`true`: in the shared namespace).
pub type SecretLookup = dyn Fn(&str, bool) -> BTreeMap<String, String> + Sync;

/// What an expression may look up in the project, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// `stageMetadata(name)`: a Stage's `status.metadata`.
    StageMetadata,
    /// `freightMetadata(name)`: a Freight's `status.metadata` (by name or alias).
    FreightMetadata,
    /// `freightStatus(name)`: a Freight's whole status (by name or alias).
    FreightStatus,
    /// `configMap(name)`: a ConfigMap's `data` in the project.
    ConfigMap,
    /// `sharedConfigMap(name)`: a ConfigMap's `data` in the shared namespace.
    SharedConfigMap,
}

/// Answers a [`Lookup`] by name (`null`: there is no such object).
pub type ResourceLookup = dyn Fn(Lookup, &str) -> Value + Sync;

/// Everything an expression may read.
#[derive(Default)]
pub struct Scope<'a> {
    /// `ctx`, `vars`, `outputs`, `task` (only inside a task): the variables.
    pub variables: Map<String, Value>,
    /// The Freight collection, the promoted Freight first.
    pub freight: &'a [FreightView],
    /// Step statuses by alias, for `status(alias)`; `None`: not in a step's `if`.
    pub statuses: Option<&'a BTreeMap<String, String>>,
    /// Whether an earlier step failed, for `success()`/`failure()`.
    pub failed: bool,
    /// Generic secrets by name (`secret()`); shared ones (`sharedSecret()`).
    pub secret: Option<&'a SecretLookup>,
    /// Stage and Freight metadata and status, ConfigMaps (see [`Lookup`]).
    pub resources: Option<&'a ResourceLookup>,
    /// Variables whose RFC 3339 text is a date value (`commitDate.After(date('2025-01-01'))`).
    pub dates: &'a [&'a str],
}

fn to_x(v: &Value) -> X {
    match v {
        Value::Null => X::Nil,
        Value::Bool(b) => X::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => X::Integer(i),
            None => X::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => X::String(s.clone()),
        Value::Array(a) => X::Array(a.iter().map(to_x).collect()),
        Value::Object(o) => X::Map(o.iter().map(|(k, v)| (k.clone(), to_x(v))).collect()),
    }
}

fn from_x(v: &X) -> Value {
    match v {
        X::Nil => Value::Null,
        X::Bool(b) => Value::Bool(*b),
        X::Integer(i) => Value::from(*i),
        X::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        X::String(s) => Value::String(s.clone()),
        X::Array(a) => Value::Array(a.iter().map(from_x).collect()),
        X::Bytes(b) => Value::Array(b.iter().map(|b| Value::from(*b)).collect()),
        X::Map(m) => match m.get(version::MARK) {
            Some(X::String(text)) => Value::String(text.clone()),
            _ => Value::Object(m.iter().map(|(k, v)| (k.clone(), from_x(v))).collect()),
        },
        X::KeyedMap(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_string().map_or_else(|| k.to_string(), str::to_string),
                        from_x(v),
                    )
                })
                .collect(),
        ),
        other => Value::String(other.to_string()),
    }
}

fn arg_str(args: &[X], i: usize, function: &str) -> expr::Result<String> {
    match args.get(i) {
        Some(X::String(s)) => Ok(s.clone()),
        Some(other) => Err(expr::Error::ExprError(format!(
            "{function}: argument {} must be a string, not {other}",
            i + 1
        ))),
        None => Err(expr::Error::ExprError(format!(
            "{function}: argument {} is missing",
            i + 1
        ))),
    }
}

/// The origin a call names with a trailing `warehouse(...)` argument, if any.
fn origin_arg(args: &[X], from: usize) -> Option<String> {
    args.get(from).and_then(|a| match a {
        X::Map(m) => m
            .get("name")
            .and_then(|n| n.as_string())
            .map(str::to_string),
        _ => None,
    })
}

fn quote(v: &X) -> String {
    let text = match v {
        X::String(s) => s.clone(),
        other => from_x(other).to_string(),
    };
    Value::String(text).to_string()
}

fn semver_diff(a: &str, b: &str) -> String {
    let (Ok(a), Ok(b)) = (
        semver::Version::parse(a.trim_start_matches('v')),
        semver::Version::parse(b.trim_start_matches('v')),
    ) else {
        return "Incomparable".into();
    };
    if a.major != b.major {
        "Major"
    } else if a.minor != b.minor {
        "Minor"
    } else if a.patch != b.patch {
        "Patch"
    } else if a.build != b.build || a.pre != b.pre {
        "Metadata"
    } else {
        "None"
    }
    .into()
}

/// A method call rewritten by [`syntax::rewrite_methods`]: `(receiver, name, optional, args…)`.
/// A version answers its own methods; any other value (a date's `String()`) is handed back to
/// expr-lang's own method dispatch.
fn method(args: &[X]) -> expr::Result<X> {
    let (Some(receiver), Some(X::String(name)), Some(X::Bool(optional))) =
        (args.first(), args.get(1), args.get(2))
    else {
        return Err(expr::Error::ExprError(
            "a method call was rewritten wrongly".into(),
        ));
    };
    let rest = &args[3..];
    if matches!(receiver, X::Nil) && *optional {
        return Ok(X::Nil);
    }
    if matches!(receiver, X::Map(m) if m.contains_key(version::MARK))
        && let Some((v, original)) = version::of(receiver)
    {
        return version::call(&v, &original, name, rest).map_err(Into::into);
    }
    let mut ctx = Context::default();
    ctx.insert("r".to_string(), receiver.clone());
    let mut call = format!("r.{name}(");
    for (i, arg) in rest.iter().enumerate() {
        ctx.insert(format!("a{i}"), arg.clone());
        call.push_str(&format!("{}a{i}", if i > 0 { ", " } else { "" }));
    }
    call.push(')');
    Environment::new().eval(&call, &ctx)
}

/// The expression environment of `scope`: every function Kargo's expressions offer, registered
/// one after the other. Long (about 150 lines) because it is that flat list; each function is a
/// few lines and reads nothing but its arguments and the scope.
fn environment<'a>(scope: &'a Scope<'a>) -> Environment<'a> {
    let mut env = Environment::new();
    env.add_function("quote", |c| {
        Ok(X::String(quote(c.args.first().unwrap_or(&X::Nil))))
    });
    env.add_function("unsafeQuote", |c| {
        let v = c.args.first().unwrap_or(&X::Nil);
        let text = v
            .as_string()
            .map_or_else(|| from_x(v).to_string(), str::to_string);
        Ok(X::String(format!("\"{text}\"")))
    });
    env.add_function("warehouse", |c| {
        let name = arg_str(&c.args, 0, "warehouse")?;
        let mut m = IndexMap::new();
        m.insert("kind".into(), X::String("Warehouse".into()));
        m.insert("name".into(), X::String(name));
        Ok(X::Map(m))
    });
    let find = move |list: fn(&FreightView) -> &Vec<Value>,
                     origin: Option<String>,
                     matches: &dyn Fn(&Value) -> bool| {
        scope
            .freight
            .iter()
            .filter(|f| origin.as_ref().is_none_or(|o| &f.origin == o))
            .flat_map(list)
            .find(|v| matches(v))
            .map_or(X::Nil, to_x)
    };
    env.add_function("commitFrom", move |c| {
        let url = normalize_git(&arg_str(&c.args, 0, "commitFrom")?);
        let same = |v: &Value| {
            v["RepoURL"]
                .as_str()
                .is_some_and(|u| normalize_git(u) == url)
        };
        Ok(find(|f| &f.commits, origin_arg(&c.args, 1), &same))
    });
    env.add_function("imageFrom", move |c| {
        let url = arg_str(&c.args, 0, "imageFrom")?;
        let same = |v: &Value| v["RepoURL"].as_str() == Some(url.as_str());
        Ok(find(|f| &f.images, origin_arg(&c.args, 1), &same))
    });
    env.add_function("chartFrom", move |c| {
        let url = arg_str(&c.args, 0, "chartFrom")?;
        let name = c
            .args
            .get(1)
            .and_then(|a| a.as_string())
            .map(str::to_string);
        let origin = origin_arg(&c.args, 1).or_else(|| origin_arg(&c.args, 2));
        let same = |v: &Value| {
            v["RepoURL"].as_str() == Some(url.as_str())
                && name
                    .as_ref()
                    .is_none_or(|n| v["Name"].as_str() == Some(n.as_str()))
        };
        Ok(find(|f| &f.charts, origin, &same))
    });
    for (function, shared) in [("secret", false), ("sharedSecret", true)] {
        env.add_function(function, move |c| {
            let name = arg_str(&c.args, 0, function)?;
            let values = scope.secret.map(|f| f(&name, shared)).unwrap_or_default();
            Ok(X::Map(
                values.into_iter().map(|(k, v)| (k, X::String(v))).collect(),
            ))
        });
    }
    let lookup =
        move |what: Lookup, name: &str| scope.resources.map_or(Value::Null, |f| f(what, name));
    env.add_function("stageMetadata", move |c| {
        let name = arg_str(&c.args, 0, "stageMetadata")?;
        Ok(to_x(&lookup(Lookup::StageMetadata, &name)))
    });
    env.add_function("freightMetadata", move |c| {
        let name = arg_str(&c.args, 0, "freightMetadata")?;
        let all = lookup(Lookup::FreightMetadata, &name);
        Ok(match c.args.get(1) {
            Some(key) => to_x(
                key.as_string()
                    .and_then(|k| all.get(k))
                    .unwrap_or(&Value::Null),
            ),
            None => to_x(&all),
        })
    });
    env.add_function("freightStatus", move |c| {
        let name = arg_str(&c.args, 0, "freightStatus")?;
        Ok(to_x(&lookup(Lookup::FreightStatus, &name)))
    });
    for (function, what) in [
        ("configMap", Lookup::ConfigMap),
        ("sharedConfigMap", Lookup::SharedConfigMap),
    ] {
        env.add_function(function, move |c| {
            let name = arg_str(&c.args, 0, function)?;
            // Kargo: an empty map when there is no such ConfigMap.
            Ok(match lookup(what, &name) {
                Value::Null => X::Map(IndexMap::new()),
                found => to_x(&found),
            })
        });
    }
    env.add_function("artifactFrom", move |c| {
        let name = arg_str(&c.args, 0, "artifactFrom")?;
        let same = |v: &Value| v["SubscriptionName"].as_str() == Some(name.as_str());
        Ok(find(|f| &f.artifacts, origin_arg(&c.args, 1), &same))
    });
    for (function, normalize) in [
        ("normalizeGit", normalize_git as fn(&str) -> String),
        ("normalizeImage", normalize_image),
        ("normalizeChart", normalize_chart),
    ] {
        env.add_function(function, move |c| {
            Ok(X::String(normalize(&arg_str(&c.args, 0, function)?)))
        });
    }
    env.add_function("asYAML", |c| {
        let value = from_x(c.args.first().unwrap_or(&X::Nil));
        let yaml = chart::yaml::dump(&chart::funcs::from_json(&value));
        Ok(X::String(Value::String(yaml).to_string()))
    });
    env.add_function("asJSON", |c| {
        let value = from_x(c.args.first().unwrap_or(&X::Nil));
        let json = serde_json::to_string_pretty(&value).unwrap_or_default();
        Ok(X::String(Value::String(json + "\n").to_string()))
    });
    env.add_function(syntax::METHOD_FUNCTION, |c| method(&c.args));
    syntax::add_map_function(&mut env);
    // Argo Rollouts' helpers, for AnalysisTemplate conditions.
    env.add_function("asInt", |c| {
        let v = c.args.first().unwrap_or(&X::Nil);
        match v {
            X::Integer(i) => Ok(X::Integer(*i)),
            X::Float(f) if f.fract() == 0.0 => Ok(X::Integer(*f as i64)),
            X::String(s) => s
                .trim()
                .parse::<i64>()
                .map(X::Integer)
                .map_err(|_| format!("asInt: {s:?} is not an integer").into()),
            other => Err(format!("asInt: {} is not an integer", from_x(other)).into()),
        }
    });
    env.add_function("asFloat", |c| {
        let v = c.args.first().unwrap_or(&X::Nil);
        match v {
            X::Integer(i) => Ok(X::Float(*i as f64)),
            X::Float(f) => Ok(X::Float(*f)),
            X::String(s) => s
                .trim()
                .parse::<f64>()
                .map(X::Float)
                .map_err(|_| format!("asFloat: {s:?} is not a number").into()),
            other => Err(format!("asFloat: {} is not a number", from_x(other)).into()),
        }
    });
    env.add_function("isNaN", |c| {
        Ok(X::Bool(match c.args.first() {
            Some(X::Float(f)) => f.is_nan(),
            Some(X::String(s)) => s == "NaN",
            _ => false,
        }))
    });
    env.add_function("isInf", |c| {
        Ok(X::Bool(
            matches!(c.args.first(), Some(X::Float(f)) if f.is_infinite()),
        ))
    });
    env.add_function("default", |c| {
        let v = c.args.first().unwrap_or(&X::Nil);
        let empty = matches!(v, X::Nil) || v.as_string().is_some_and(str::is_empty);
        Ok(if empty {
            c.args.get(1).cloned().unwrap_or(X::Nil)
        } else {
            v.clone()
        })
    });
    env.add_function("semverParse", |c| {
        version::parse(&arg_str(&c.args, 0, "semverParse")?).map_err(Into::into)
    });
    env.add_function("semverDiff", |c| {
        let (a, b) = (
            arg_str(&c.args, 0, "semverDiff")?,
            arg_str(&c.args, 1, "semverDiff")?,
        );
        Ok(X::String(semver_diff(&a, &b)))
    });
    if let Some(statuses) = scope.statuses {
        let failed = scope.failed;
        env.add_function("success", move |_| Ok(X::Bool(!failed)));
        env.add_function("failure", move |_| Ok(X::Bool(failed)));
        env.add_function("always", |_| Ok(X::Bool(true)));
        env.add_function("status", move |c| {
            let alias = arg_str(&c.args, 0, "status")?;
            Ok(X::String(statuses.get(&alias).cloned().unwrap_or_default()))
        });
    }
    env
}

/// One piece of a config string: text, or an expression.
enum Piece<'s> {
    Text(&'s str),
    Expr(&'s str),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let next = [("${{", "}}"), ("${%", "%}")]
            .iter()
            .filter_map(|(open, close)| rest.find(open).map(|i| (i, *open, *close)))
            .min_by_key(|(i, _, _)| *i);
        let Some((start, open, close)) = next else {
            out.push(Piece::Text(rest));
            break;
        };
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + open.len()..];
        let end = after.find(close).ok_or_else(|| {
            format!(
                "{open} at byte {} has no closing {close}",
                s.len() - rest.len() + start
            )
        })?;
        out.push(Piece::Expr(after[..end].trim()));
        rest = &after[end + close.len()..];
    }
    Ok(out)
}

/// The functions and variables of one [`Scope`], built once and used for every expression of
/// a config or a string (building them is most of the cost of a small expression).
struct Evaluator<'a> {
    env: Environment<'a>,
    ctx: Context,
}

impl<'a> Evaluator<'a> {
    fn new(scope: &'a Scope<'a>) -> Evaluator<'a> {
        let mut ctx = Context::default();
        for (k, v) in &scope.variables {
            let date = match v {
                Value::String(text) if scope.dates.contains(&k.as_str()) => {
                    chrono::DateTime::parse_from_rfc3339(text).ok()
                }
                _ => None,
            };
            let value = match date {
                Some(date) => X::DateTime(expr::DateTimeValue::fixed(date)),
                None => to_x(v),
            };
            ctx.insert(k.clone(), value);
        }
        Evaluator {
            env: environment(scope),
            ctx,
        }
    }

    fn expression(&self, code: &str) -> Result<Value, String> {
        if code.len() > MAX_EXPRESSION_BYTES {
            return Err(format!(
                "the expression is {} bytes; expressions may be at most {MAX_EXPRESSION_BYTES} (compute large values in a step instead)",
                code.len()
            ));
        }
        let code = syntax::rewrite_maps(code)?;
        let code = syntax::rewrite_methods(&code)?;
        guarded(|| {
            self.env
                .eval(&code, &self.ctx)
                .map(|v| from_x(&v))
                .map_err(|e| e.to_string())
        })
    }

    /// One `${{ }}` of a string; the error quotes it.
    fn piece(&self, code: &str) -> Result<Value, String> {
        self.expression(code)
            .map_err(|e| format!("${{{{ {code} }}}}: {e}"))
    }

    fn string(&self, s: &str) -> Result<Value, String> {
        let parts = pieces(s)?;
        if let [Piece::Expr(code)] = parts.as_slice() {
            return Ok(match self.piece(code)? {
                Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
                other => other,
            });
        }
        let mut out = String::new();
        for part in parts {
            match part {
                Piece::Text(t) => out.push_str(t),
                Piece::Expr(code) => match self.piece(code)? {
                    Value::String(t) => out.push_str(&t),
                    Value::Null => {}
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(Value::String(out))
    }

    fn walk(&self, v: &Value, at: &str) -> Result<Value, String> {
        match v {
            Value::String(s) if s.contains("${{") || s.contains("${%") => {
                self.string(s).map_err(|e| format!("{at}: {e}"))
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.walk(item, &format!("{at}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, item)| {
                    self.walk(item, &format!("{at}.{k}"))
                        .map(|v| (k.clone(), v))
                })
                .collect::<Result<Map<_, _>, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }
}

/// Every function an expression may call: expr-lang's own (2.1) and Kargo's. [`check`] refuses
/// any other name; a test proves every name here is one the environment answers.
#[rustfmt::skip]
pub const FUNCTIONS: &[&str] = &[
    // expr-lang
    "abs", "all", "any", "bitand", "bitnand", "bitnot", "bitor", "bitshl", "bitshr", "bitushr",
    "bitxor", "ceil", "concat", "count", "date", "duration", "filter", "find", "findIndex",
    "findLast", "findLastIndex", "first", "flatten", "float", "floor", "fromJSON", "fromPairs",
    "get", "groupBy", "hasPrefix", "hasSuffix", "indexOf", "int", "join", "keys", "last",
    "lastIndexOf", "len", "lower", "map", "max", "mean", "median", "min", "none", "now", "one",
    "reduce", "repeat", "replace", "reverse", "round", "sort", "sortBy", "split", "splitAfter",
    "string", "sum", "take", "timezone", "toJSON", "toPairs", "trim", "trimPrefix",
    "trimSuffix", "type", "uniq", "upper", "values",
    // Kargo
    "quote", "unsafeQuote", "asYAML", "asJSON", "warehouse", "commitFrom", "imageFrom",
    "chartFrom", "artifactFrom", "secret", "sharedSecret", "configMap", "sharedConfigMap",
    "stageMetadata", "freightMetadata", "freightStatus", "semverParse", "semverDiff",
    "normalizeGit", "normalizeImage", "normalizeChart", "success", "failure", "always", "status",
    // Argo Rollouts' (AnalysisTemplate conditions)
    "asInt", "asFloat", "isNaN", "isInf", "default",
];

/// Checks an expression (without delimiters) without evaluating it: it parses, and every
/// function it calls exists. The error says what and where (a byte offset in `code`).
pub fn check(code: &str) -> Result<(), String> {
    if code.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "the expression is {} bytes; expressions may be at most {MAX_EXPRESSION_BYTES}",
            code.len()
        ));
    }
    for (name, at) in syntax::called_functions(code)? {
        if !FUNCTIONS.contains(&name.as_str()) {
            let near = FUNCTIONS
                .iter()
                .find(|f| f.eq_ignore_ascii_case(&name))
                .map(|f| format!(" (did you mean {f}?)"))
                .unwrap_or_default();
            return Err(format!(
                "unknown function {name}() at byte {at}{near}; Kargo's functions are listed in plugins/README.md"
            ));
        }
    }
    let code = syntax::rewrite_maps(code)?;
    let code = syntax::rewrite_methods(&code)?;
    on_big_stack(code.len(), || {
        guarded(|| {
            expr::compile(&code)
                .map(|_| Value::Null)
                .map_err(|e| e.to_string())
        })
    })
    .map(|_| ())
}

/// Runs expr-lang, turning a panic of its own into an error: expr-lang 2.1 reached an
/// `unreachable!` on map literals (rewritten now, see [`syntax`]), and an expression from a
/// manifest must never take a request or a promotion down with it.
fn guarded(run: impl FnOnce() -> Result<Value, String>) -> Result<Value, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(format!(
            "expr-lang cannot evaluate this expression ({what}); write it another way, e.g. build a nested map in steps"
        ))
    })
}

/// Checks every expression of a string (`${{ }}` and `${% %}`), as [`check`] does.
pub fn check_string(s: &str) -> Result<(), String> {
    for piece in pieces(s)? {
        if let Piece::Expr(code) = piece {
            check(code).map_err(|e| format!("${{{{ {code} }}}}: {e}"))?;
        }
    }
    Ok(())
}

/// The code of a condition (`if`, `whenExpression`, `expressionFilter`, a metric's condition),
/// written with or without its `${{ }}`.
pub fn condition_code(text: &str) -> &str {
    let text = text.trim();
    text.strip_prefix("${{")
        .and_then(|c| c.strip_suffix("}}"))
        .unwrap_or(text)
}

/// Evaluates one expression (without delimiters) to JSON.
pub fn eval_expression(code: &str, scope: &Scope) -> Result<Value, String> {
    on_big_stack(code.len(), || Evaluator::new(scope).expression(code))
}

/// Evaluates the expressions in one string with Kargo's typing rule.
pub fn eval_string(s: &str, scope: &Scope) -> Result<Value, String> {
    on_big_stack(s.len(), || Evaluator::new(scope).string(s))
}

/// Evaluates every string value in `config` (keys are left alone). An error names the field.
pub fn eval_config(config: &Value, scope: &Scope) -> Result<Value, String> {
    on_big_stack(text_bytes(config), || {
        Evaluator::new(scope).walk(config, "config")
    })
}

/// The longest expression evaluated (one `${{ }}`, an `if`, a filter).
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;
/// The stack expressions are evaluated on. expr-lang parses and evaluates recursively, several
/// frames per nesting level and per operator of a chain (16 to 32 KiB a level in a debug build,
/// measured: 500 levels fit in 16 MiB, 1,000 do not, 4,095 fit in 128 MiB): on a worker
/// thread's 2 MiB, a thousand `+ 1` in one expression overflowed it and aborted the daemon.
/// With [`MAX_EXPRESSION_BYTES`], no expression nests deeper than about 4,000 levels, which
/// fit here (the memory is reserved, and touched only as deep as it is used).
const EVAL_STACK_BYTES: usize = 256 << 20;

/// Runs `evaluate`, over expressions of `code_bytes` bytes in all, on this thread's stack when
/// it has room for them, on a fresh stack of [`EVAL_STACK_BYTES`] otherwise (`stacker`, as
/// rustc does for deep recursion). Room means 40 KiB a nesting level and at most a level per 4
/// bytes of code, so short expressions (under about 150 bytes on a 2 MiB worker), nearly all
/// of them, never pay for a new stack (about 18 µs).
fn on_big_stack(
    code_bytes: usize,
    evaluate: impl FnOnce() -> Result<Value, String>,
) -> Result<Value, String> {
    let needed = (256 << 10) + code_bytes.min(MAX_EXPRESSION_BYTES) * (10 << 10);
    stacker::maybe_grow(needed, EVAL_STACK_BYTES, evaluate)
}

/// The bytes of every string in `value` (where a config's expressions are).
fn text_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(text_bytes).sum(),
        Value::Object(map) => map.values().map(text_bytes).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope_with(variables: Value, freight: &[FreightView]) -> Scope<'_> {
        Scope {
            variables: variables.as_object().cloned().unwrap_or_default(),
            freight,
            ..Scope::default()
        }
    }

    #[test]
    fn one_expression_yields_typed_json_and_text_stays_text() {
        let scope = scope_with(
            json!({"vars": {"n": 3, "name": "web", "obj": "{\"a\":1}"}}),
            &[],
        );
        assert_eq!(eval_string("${{ vars.n + 1 }}", &scope).unwrap(), json!(4));
        assert_eq!(
            eval_string("${{ vars.obj }}", &scope).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            eval_string("${{ quote(vars.n) }}", &scope).unwrap(),
            json!("3")
        );
        assert_eq!(
            eval_string("app-${{ vars.name }}-${% vars.n %}", &scope).unwrap(),
            json!("app-web-3")
        );
        assert_eq!(
            eval_string("${{ vars.missing ?? 'dflt' }}", &scope).unwrap(),
            json!("dflt")
        );
    }

    #[test]
    fn freight_functions_find_artifacts_by_repository() {
        let freight = [FreightView {
            name: "abc".into(),
            origin: "wh".into(),
            commits: vec![json!({"RepoURL": "https://git.example/org/app.git", "ID": "1234"})],
            images: vec![
                json!({"RepoURL": "registry.example/app", "Tag": "1.2.3", "Digest": "sha256:x"}),
            ],
            charts: vec![],
            artifacts: vec![json!({"SubscriptionName": "docs", "Version": "v7"})],
        }];
        let scope = scope_with(json!({}), &freight);
        assert_eq!(
            eval_string("${{ artifactFrom('docs').Version }}", &scope).unwrap(),
            json!("v7")
        );
        assert_eq!(
            eval_string("${{ artifactFrom('docs', warehouse('x')) }}", &scope).unwrap(),
            Value::Null
        );
        assert_eq!(
            eval_string(
                "${{ commitFrom('https://git.example/org/app').ID }}",
                &scope
            )
            .unwrap(),
            json!(1234)
        );
        assert_eq!(
            eval_string(
                "${{ quote(commitFrom('https://git.example/org/app').ID) }}",
                &scope
            )
            .unwrap(),
            json!("1234")
        );
        assert_eq!(
            eval_string(
                "${{ imageFrom('registry.example/app', warehouse('wh')).Tag }}",
                &scope
            )
            .unwrap(),
            json!("1.2.3")
        );
        assert_eq!(
            eval_string(
                "${{ imageFrom('registry.example/app', warehouse('other')) }}",
                &scope
            )
            .unwrap(),
            Value::Null
        );
        assert_eq!(
            eval_string("${{ semverParse('1.2.3').Minor }}", &scope).unwrap(),
            json!(2)
        );
        assert_eq!(
            eval_string("${{ semverDiff('1.2.3', '1.3.0') }}", &scope).unwrap(),
            json!("Minor")
        );
    }

    #[test]
    fn versions_have_kargos_methods_and_print_as_their_text() {
        let scope = scope_with(json!({"vars": {"v": "v1.2.3-rc.1"}}), &[]);
        let eval = |code: &str| eval_string(code, &scope).unwrap();
        assert_eq!(
            eval("${{ semverParse(vars.v).IncMinor().String() }}"),
            json!("1.3.0")
        );
        assert_eq!(eval("${{ semverParse(vars.v).Major() + 1 }}"), json!(2));
        assert_eq!(eval("${{ semverParse(vars.v).Minor }}"), json!(2));
        assert_eq!(
            eval("${{ semverParse(vars.v).Prerelease() }}"),
            json!("rc.1")
        );
        assert_eq!(eval("${{ semverParse(vars.v) }}"), json!("1.2.3-rc.1"));
        assert_eq!(
            eval("v${{ semverParse(vars.v).IncPatch() }}"),
            json!("v1.2.3")
        );
        assert_eq!(
            eval("${{ semverParse('1.2.3').LessThan(semverParse('1.10.0')) }}"),
            json!(true)
        );
        // Other methods are expr-lang's own: a date's String() still works.
        assert_eq!(
            eval("${{ date('2025-01-02T03:04:05Z').Year() }}"),
            json!(2025)
        );
        assert!(
            eval_string("${{ semverParse('x.y') }}", &scope)
                .unwrap_err()
                .contains("not a semantic version")
        );
    }

    #[test]
    fn data_functions_write_yaml_and_json_as_kargo() {
        let scope = scope_with(
            json!({"vars": {"cfg": {"b": [1, "two"], "a": {"x": true}}}}),
            &[],
        );
        assert_eq!(
            eval_string("${{ asYAML(vars.cfg) }}", &scope).unwrap(),
            json!("a:\n  x: true\nb:\n- 1\n- two\n")
        );
        assert_eq!(
            eval_string("${{ asJSON(vars.cfg.a) }}", &scope).unwrap(),
            json!("{\n  \"x\": true\n}\n")
        );
        assert_eq!(
            eval_string(
                "${{ normalizeGit('HTTPS://Git.Example/Org/App.git/') }} ${{ normalizeImage('docker.io/library/nginx:1.2') }} ${{ normalizeChart('oci://Reg.Example/Charts/app') }}",
                &scope
            )
            .unwrap(),
            json!("https://git.example/org/app nginx reg.example/charts/app")
        );
    }

    #[test]
    fn lookups_answer_config_maps_and_freight_status() {
        let resources = |what: Lookup, name: &str| match (what, name) {
            (Lookup::ConfigMap, "settings") => json!({"replicas": "3"}),
            (Lookup::FreightStatus, "abc") => json!({"currentlyIn": {"dev": {}}}),
            _ => Value::Null,
        };
        let scope = Scope {
            resources: Some(&resources),
            ..Scope::default()
        };
        assert_eq!(
            eval_string("${{ configMap('settings').replicas }}", &scope).unwrap(),
            json!(3)
        );
        assert_eq!(
            eval_string("${{ len(sharedConfigMap('none')) }}", &scope).unwrap(),
            json!(0)
        );
        assert_eq!(
            eval_string("${{ 'dev' in freightStatus('abc').currentlyIn }}", &scope).unwrap(),
            json!(true)
        );
    }

    #[test]
    fn date_variables_are_dates() {
        let scope = Scope {
            variables:
                json!({"commitDate": "2025-03-04T05:06:07Z", "subject": "2025-03-04T05:06:07Z"})
                    .as_object()
                    .cloned()
                    .unwrap(),
            dates: &["commitDate"],
            ..Scope::default()
        };
        assert_eq!(
            eval_expression(
                "commitDate.After(date('2025-01-01')) && commitDate.Year() == 2025",
                &scope
            ),
            Ok(json!(true))
        );
        assert!(eval_expression("subject.Year()", &scope).is_err());
    }

    #[test]
    fn a_panic_inside_expr_lang_is_an_error() {
        let err = guarded(|| unreachable!("Unexpected rule")).unwrap_err();
        assert!(err.starts_with("expr-lang cannot evaluate this expression (internal error: entered unreachable code: Unexpected rule)"), "{err}");
    }

    #[test]
    fn map_literals_hold_any_values() {
        let scope = scope_with(json!({"vars": {"x": true}}), &[]);
        let eval = |code: &str| eval_expression(code, &scope);
        assert_eq!(
            eval(r#"{"a": {"b": -1}, c: vars.x ? "yes" : "no", "d": [1, {e: 2}]}"#),
            Ok(json!({"a": {"b": -1}, "c": "yes", "d": [1, {"e": 2}]}))
        );
        assert_eq!(eval("{a: 1}.a + len({})"), Ok(json!(1)));
        assert_eq!(check(r#"asYAML({"image": {"tag": "1"}})"#), Ok(()));
    }

    #[test]
    fn check_finds_unknown_functions_and_syntax_errors_without_evaluating() {
        assert_eq!(check("asYAML(vars.x) + quote(secret('s').k)"), Ok(()));
        assert_eq!(check("semverParse(v).IncMinor().String()"), Ok(()));
        let err = check("toYaml(vars.x)").unwrap_err();
        assert!(err.contains("unknown function toYaml() at byte 0"), "{err}");
        let err = check("asyaml(x)").unwrap_err();
        assert!(err.contains("did you mean asYAML?"), "{err}");
        assert!(check("vars.x +").is_err());
        let err = check_string("a ${{ ok() }}").unwrap_err();
        assert!(
            err.starts_with("${{ ok() }}: unknown function ok()"),
            "{err}"
        );
        assert!(check_string("${{ vars.a }}-${% vars.b %}").is_ok());
    }

    #[test]
    fn every_listed_function_exists() {
        let statuses = BTreeMap::new();
        let scope = Scope {
            statuses: Some(&statuses),
            ..Scope::default()
        };
        for name in FUNCTIONS {
            if let Err(e) = eval_expression(&format!("{name}()"), &scope) {
                assert!(!e.contains("Unknown function"), "{name}: {e}");
            }
        }
    }

    #[test]
    fn errors_name_the_field_and_the_expression() {
        let scope = scope_with(json!({}), &[]);
        let err = eval_config(&json!({"images": [{"tag": "${{ nope( }}"}]}), &scope).unwrap_err();
        assert!(
            err.starts_with("config.images[0].tag: ${{ nope( }}"),
            "{err}"
        );
        let err = eval_string("${{ vars.x", &scope).unwrap_err();
        assert!(err.contains("no closing }}"), "{err}");
    }

    #[test]
    fn status_functions_exist_only_for_if() {
        let statuses = BTreeMap::from([("build".to_string(), "Failed".to_string())]);
        let scope = Scope {
            statuses: Some(&statuses),
            failed: true,
            ..Scope::default()
        };
        assert_eq!(
            eval_expression("failure() && status('build') == 'Failed'", &scope).unwrap(),
            json!(true)
        );
        assert!(eval_expression("success()", &Scope::default()).is_err());
    }
}

#[cfg(test)]
mod hostile {
    use super::*;
    use serde_json::json;

    #[test]
    fn deep_nesting_and_long_chains_are_evaluated_or_refused_never_crash() {
        let scope = Scope::default();
        let longest = MAX_EXPRESSION_BYTES;
        // As deep as the length limit allows: evaluated (or an error), no stack overflow.
        let parens = (longest - 1) / 2;
        let code = format!("{}1{}", "(".repeat(parens), ")".repeat(parens));
        assert_eq!(eval_expression(&code, &scope), Ok(json!(1)));
        let chain = (longest - 1) / 4;
        let code = format!("1{}", " + 1".repeat(chain));
        assert_eq!(eval_expression(&code, &scope), Ok(json!(chain + 1)));
        let nots = (longest - 4) / 3;
        let code = format!("{}true{}", "!(".repeat(nots), ")".repeat(nots));
        let r = eval_expression(&code, &scope);
        assert!(
            r.is_ok(),
            "{:?}",
            r.map_err(|e| e.chars().take(200).collect::<String>())
        );
        let code = format!("{}1{}", "[".repeat(parens), "]".repeat(parens));
        assert!(eval_expression(&code, &scope).is_ok());
        // Every size between, on either side of where evaluation moves to a stack of its own.
        for n in [10, 40, 60, 100, 150, 300, 1000] {
            let code = format!("{}1{}", "(".repeat(n), ")".repeat(n));
            assert_eq!(
                eval_expression(&code, &scope),
                Ok(json!(1)),
                "{n} parentheses"
            );
            let code = format!("1{}", " + 1".repeat(n));
            assert_eq!(
                eval_expression(&code, &scope),
                Ok(json!(n + 1)),
                "{n} additions"
            );
        }
        // Method calls: rewritten and evaluated one after the other, up to the limit (255
        // increments of 1.0.0 and a Major()); as many as fit in the length are refused with it.
        let head = "semverParse('1.0.0')";
        let code = format!("{head}{}.Major()", ".IncMajor()".repeat(255));
        assert_eq!(eval_expression(&code, &scope), Ok(json!(256)));
        let calls = (longest - head.len()) / ".IncMajor()".len();
        let code = format!("{head}{}.Major()", ".IncMajor()".repeat(calls - 1));
        let err = eval_expression(&code, &scope).unwrap_err();
        assert!(err.contains("at most 256 times"), "{err}");
        // As many nested map literals as fit (each rewritten into a call): evaluated or an
        // error, never a crash.
        let depth = (longest - 2) / 5;
        let code = format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth));
        let r = eval_expression(&code, &scope);
        assert!(
            r.is_ok(),
            "{:?}",
            r.map_err(|e| e.chars().take(200).collect::<String>())
        );
        // Longer: refused with the limit.
        let code = format!("1{}", " + 1".repeat(chain + 1));
        let err = eval_expression(&code, &scope).expect_err("too long");
        assert!(err.contains("at most 16384"), "{err}");
    }
}
