//! The executor, as Go's `text/template/exec.go`: walks a parsed template with a dot and
//! variables, evaluates pipelines, calls functions, and reports errors as Go does:
//! `template: FILE:LINE:COL: executing "NAME" at <NODE>: MESSAGE`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::parse::{Arg, Branch, Command, List, Node, Pipeline};
use crate::value::Value;
use crate::{MissingKey, Templates};

/// The most templates (`{{template}}`, `include`, `tpl`) that may be nested.
pub const MAX_DEPTH: usize = 200;

/// An execution error, formatted as Go formats them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError {
    /// `template: FILE:LINE:COL: executing "NAME" at <NODE>: MESSAGE`, or a plain message when
    /// there is no node to blame.
    pub message: String,
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExecError {}

/// What a function may do besides computing from its arguments: run other templates.
pub struct Call<'a, 'b> {
    pub(crate) state: &'a mut State<'b>,
}

impl Call<'_, '_> {
    /// Executes template `name` with `data` (Helm's `include`).
    pub fn include(&mut self, name: &str, data: Value) -> Result<String, String> {
        let mut out = String::new();
        self.state
            .run_named(name, data, &mut out)
            .map_err(|e| e.message)?;
        Ok(out)
    }

    /// Parses `text` and executes it with `data`, seeing the set's templates (Helm's `tpl`);
    /// `name` is the template's name in errors.
    pub fn render(&mut self, name: &str, text: &str, data: Value) -> Result<String, String> {
        let funcs = &self.state.set.funcs;
        let parsed = crate::parse::parse(name, text, &|f| funcs.contains_key(f))
            .map_err(|e| e.to_string())?;
        let text: Arc<str> = text.into();
        let mut extra: BTreeMap<String, crate::Tree> = BTreeMap::new();
        for (n, list) in parsed.defined {
            extra.insert(
                n,
                crate::Tree {
                    list: Arc::new(list),
                    parse_name: name.to_string(),
                    text: text.clone(),
                },
            );
        }
        let tree = crate::Tree {
            list: Arc::new(parsed.root),
            parse_name: name.to_string(),
            text,
        };
        let mut out = String::new();
        self.state
            .run_tree(name, &tree, Some(extra), data, &mut out)
            .map_err(|e| e.message)?;
        Ok(out)
    }

    /// The set's name of the template being executed.
    pub fn template_name(&self) -> &str {
        &self.state.frame().name
    }
}

/// A function callable from templates.
pub type Func = Arc<dyn Fn(&mut Call, &[Value]) -> Result<Value, FuncError> + Send + Sync>;

/// How a function call failed, which decides how Go words and places the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FuncError {
    /// The function returned an error: `error calling NAME: MESSAGE`, at the command.
    Failed(String),
    /// The call itself is wrong (the number of arguments): the message alone, at the command.
    Usage(String),
    /// Argument `index` has the wrong type for the function's parameter: the message alone,
    /// at that argument (`wrong type for value; expected int; got float64`).
    WrongArg { index: usize, message: String },
}

impl From<String> for FuncError {
    fn from(message: String) -> Self {
        FuncError::Failed(message)
    }
}

impl From<&str> for FuncError {
    fn from(message: &str) -> Self {
        FuncError::Failed(message.to_string())
    }
}

/// One template being executed: its name and where its nodes' text is.
struct Frame {
    name: String,
    parse_name: String,
    text: Arc<str>,
    extra: Option<Arc<BTreeMap<String, crate::Tree>>>,
}

/// Why a walk stopped early.
enum Flow {
    Break,
    Continue,
}

type Walk = Result<Option<Flow>, ExecError>;

pub(crate) struct State<'a> {
    set: &'a Templates,
    frames: Vec<Frame>,
    vars: Vec<(String, Value)>,
    /// The node being evaluated, for error context: (position, its text).
    at: (usize, String),
    written: usize,
    /// Nodes walked and range iterations so far, against `max_steps`.
    steps: u64,
}

impl<'a> State<'a> {
    pub(crate) fn new(set: &'a Templates) -> State<'a> {
        State {
            set,
            frames: Vec::new(),
            vars: Vec::new(),
            at: (0, String::new()),
            written: 0,
            steps: 0,
        }
    }

    fn frame(&self) -> &Frame {
        self.frames.last().expect("a frame")
    }

    fn lookup(&self, name: &str) -> Option<crate::Tree> {
        for frame in self.frames.iter().rev() {
            if let Some(extra) = &frame.extra
                && let Some(t) = extra.get(name)
            {
                return Some(t.clone());
            }
        }
        self.set.trees.get(name).cloned()
    }

    pub(crate) fn run_named(
        &mut self,
        name: &str,
        data: Value,
        out: &mut String,
    ) -> Result<(), ExecError> {
        let Some(tree) = self.lookup(name) else {
            return Err(self.fail_plain(format!("no such template {name:?}")));
        };
        self.run_tree(name, &tree, None, data, out)
    }

    fn run_tree(
        &mut self,
        name: &str,
        tree: &crate::Tree,
        extra: Option<BTreeMap<String, crate::Tree>>,
        data: Value,
        out: &mut String,
    ) -> Result<(), ExecError> {
        if self.frames.len() >= MAX_DEPTH {
            return Err(self.fail(format!("exceeded maximum template depth ({MAX_DEPTH})")));
        }
        self.frames.push(Frame {
            name: name.to_string(),
            parse_name: tree.parse_name.clone(),
            text: tree.text.clone(),
            extra: extra.map(Arc::new),
        });
        let saved_vars = std::mem::replace(&mut self.vars, vec![("$".to_string(), data.clone())]);
        let saved_at = std::mem::take(&mut self.at);
        let list = tree.list.clone();
        let result = self.walk_list(&data, &list, out);
        self.vars = saved_vars;
        self.at = saved_at;
        self.frames.pop();
        result.map(|_| ())
    }

    /// An error at the current node, as Go words it.
    fn fail(&self, message: impl std::fmt::Display) -> ExecError {
        let Some(frame) = self.frames.last() else {
            return ExecError {
                message: format!("template: {message}"),
            };
        };
        let (pos, context) = &self.at;
        let pos = (*pos).min(frame.text.len());
        let before = &frame.text[..pos];
        let line = 1 + before.matches('\n').count();
        let col = match before.rfind('\n') {
            Some(nl) => pos - nl - 1,
            None => pos,
        };
        ExecError {
            message: format!(
                "template: {}:{line}:{col}: executing {:?} at <{context}>: {message}",
                frame.parse_name, frame.name
            ),
        }
    }

    fn fail_plain(&self, message: impl std::fmt::Display) -> ExecError {
        match self.frames.last() {
            Some(_) if !self.at.1.is_empty() => self.fail(message),
            Some(frame) => ExecError {
                message: format!("template: {}: {message}", frame.name),
            },
            None => ExecError {
                message: format!("template: {message}"),
            },
        }
    }

    fn at(&mut self, pos: usize, context: String) {
        self.at = (pos, context);
    }

    fn write(&mut self, out: &mut String, text: &str) -> Result<(), ExecError> {
        self.written += text.len();
        if self.written > self.set.max_output {
            return Err(self.fail(format!("the output passed {} bytes", self.set.max_output)));
        }
        out.push_str(text);
        Ok(())
    }

    /// Counts one step against the set's `max_steps`.
    fn step(&mut self) -> Result<(), ExecError> {
        self.steps += 1;
        match self.set.max_steps {
            Some(max) if self.steps > max => {
                Err(self.fail(format!("the template took more than {max} steps")))
            }
            _ => Ok(()),
        }
    }

    fn walk_list(&mut self, dot: &Value, list: &List, out: &mut String) -> Walk {
        for node in list {
            self.step()?;
            if let Some(flow) = self.walk(dot, node, out)? {
                return Ok(Some(flow));
            }
        }
        Ok(None)
    }

    fn walk(&mut self, dot: &Value, node: &Node, out: &mut String) -> Walk {
        match node {
            Node::Text(text) => self.write(out, text)?,
            Node::Action(pipe) => {
                let value = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    let text = value.print();
                    self.write(out, &text)?;
                }
            }
            Node::If(branch) => return self.walk_if_or_with(dot, branch, false, out),
            Node::With(branch) => return self.walk_if_or_with(dot, branch, true, out),
            Node::Range(branch) => return self.walk_range(dot, branch, out),
            Node::Template { pos, name, pipe } => {
                self.at(*pos, format!("{{{{template {name:?}}}}}"));
                let data = match pipe {
                    Some(p) => self.eval_pipeline(dot, p)?,
                    None => Value::Nil,
                };
                let Some(tree) = self.lookup(name) else {
                    self.at(*pos, format!("{{{{template {name:?}}}}}"));
                    return Err(self.fail(format!("template {name:?} not defined")));
                };
                self.run_tree(name, &tree, None, data, out)?;
            }
            Node::Break(_) => return Ok(Some(Flow::Break)),
            Node::Continue(_) => return Ok(Some(Flow::Continue)),
        }
        Ok(None)
    }

    fn walk_if_or_with(&mut self, dot: &Value, b: &Branch, with: bool, out: &mut String) -> Walk {
        let mark = self.vars.len();
        let value = self.eval_pipeline(dot, &b.pipe)?;
        let flow = if value.is_true() {
            let dot = if with { value } else { dot.clone() };
            self.walk_list(&dot, &b.list, out)?
        } else if let Some(else_list) = &b.else_list {
            self.walk_list(dot, else_list, out)?
        } else {
            None
        };
        self.vars.truncate(mark);
        Ok(flow)
    }

    fn walk_range(&mut self, dot: &Value, b: &Branch, out: &mut String) -> Walk {
        let mark = self.vars.len();
        let value = self.eval_pipeline(dot, &b.pipe)?;
        // The declared variables are set per element, not to the whole value.
        self.vars.truncate(mark);
        // An object ranges over its data, if it has some.
        let value = match &value {
            Value::Object(o) => o.data().unwrap_or(value),
            _ => value,
        };
        // Integers are counted lazily: `range 1000000000` costs time (bounded by the step's
        // deadline), not memory.
        let items: Box<dyn Iterator<Item = (Value, Value)>> = match &value {
            Value::List(items) => {
                let items = items.clone();
                Box::new((0..items.len()).map(move |i| (Value::Int(i as i64), items[i].clone())))
            }
            Value::Map(map) => {
                Box::new(map.entries().into_iter().map(|(k, v)| (Value::from(k), v)))
            }
            Value::Int(n) => Box::new((0..*n).map(|i| (Value::Int(i), Value::Int(i)))),
            Value::Nil => Box::new(std::iter::empty()),
            other => {
                return Err(self.fail(format!("range can't iterate over {}", other.to_go_string())));
            }
        };
        let mut items = items.peekable();
        if items.peek().is_none() {
            // `{{break}}` in the else branch belongs to an enclosing range.
            return match &b.else_list {
                Some(else_list) => self.walk_list(dot, else_list, out),
                None => Ok(None),
            };
        }
        for (key, elem) in items {
            self.step()?;
            let inner = self.vars.len();
            match b.pipe.decl.len() {
                1 => self.set_or_push(&b.pipe.decl[0], elem.clone(), b.pipe.is_assign),
                2 => {
                    self.set_or_push(&b.pipe.decl[0], key, b.pipe.is_assign);
                    self.set_or_push(&b.pipe.decl[1], elem.clone(), b.pipe.is_assign);
                }
                _ => {}
            }
            let flow = self.walk_list(&elem, &b.list, out)?;
            self.vars.truncate(inner);
            if let Some(Flow::Break) = flow {
                break;
            }
        }
        self.vars.truncate(mark);
        Ok(None)
    }

    fn set_or_push(&mut self, name: &str, value: Value, assign: bool) {
        if assign {
            self.assign(name, value);
        } else {
            self.vars.push((name.to_string(), value));
        }
    }

    fn assign(&mut self, name: &str, value: Value) {
        if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = value;
        }
    }

    fn var(&mut self, name: &str) -> Result<Value, ExecError> {
        match self.vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => Err(self.fail(format!("undefined variable: {name}"))),
        }
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &Pipeline) -> Result<Value, ExecError> {
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Value::Nil);
        for name in &pipe.decl {
            if pipe.is_assign {
                self.assign(name, value.clone());
            } else {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn eval_command(
        &mut self,
        dot: &Value,
        cmd: &Command,
        fin: Option<Value>,
    ) -> Result<Value, ExecError> {
        let first = &cmd.args[0];
        match first {
            Arg::Field(pos, fields) => {
                self.at(*pos, field_text(fields));
                self.eval_field_chain(
                    dot,
                    dot.clone(),
                    fields,
                    &cmd.args,
                    fin,
                    *pos,
                    &field_text(fields),
                )
            }
            Arg::Chain(pos, inner, fields) => {
                let context = arg_text(first);
                self.at(*pos, context.clone());
                let receiver = self.eval_arg(dot, inner)?;
                self.eval_field_chain(dot, receiver, fields, &cmd.args, fin, *pos, &context)
            }
            Arg::Identifier(pos, name) => self.eval_function(dot, *pos, name, cmd, &cmd.args, fin),
            Arg::Pipe(pos, pipe) => {
                self.not_a_function(&cmd.args, &fin, *pos)?;
                self.eval_pipeline(dot, pipe)
            }
            Arg::Variable(pos, name, fields) => {
                self.at(*pos, arg_text(first));
                let value = self.var(name)?;
                if fields.is_empty() {
                    self.not_a_function(&cmd.args, &fin, *pos)?;
                    return Ok(value);
                }
                let context = arg_text(first);
                self.eval_field_chain(dot, value, fields, &cmd.args, fin, *pos, &context)
            }
            Arg::Nil(pos) => {
                self.at(*pos, "nil".into());
                Err(self.fail("nil is not a command"))
            }
            Arg::Dot(pos) | Arg::Bool(pos, _) | Arg::Number(pos, _) | Arg::String(pos, _) => {
                self.not_a_function(&cmd.args, &fin, *pos)?;
                self.eval_arg(dot, first)
            }
        }
    }

    fn not_a_function(
        &mut self,
        args: &[Arg],
        fin: &Option<Value>,
        pos: usize,
    ) -> Result<(), ExecError> {
        if args.len() > 1 || fin.is_some() {
            self.at(pos, arg_text(&args[0]));
            return Err(self.fail(format!(
                "can't give argument to non-function {}",
                arg_text(&args[0])
            )));
        }
        Ok(())
    }

    /// `receiver.A.B…`; the last field may be a method that takes the command's other arguments
    /// (and the piped value).
    #[allow(clippy::too_many_arguments)]
    fn eval_field_chain(
        &mut self,
        dot: &Value,
        mut receiver: Value,
        fields: &[String],
        args: &[Arg],
        fin: Option<Value>,
        pos: usize,
        context: &str,
    ) -> Result<Value, ExecError> {
        let n = fields.len();
        for (i, name) in fields.iter().enumerate() {
            let last = i + 1 == n;
            let call_args = if last {
                Some((args, fin.clone()))
            } else {
                None
            };
            receiver = self.eval_field(dot, name, receiver, call_args, pos, context)?;
        }
        Ok(receiver)
    }

    fn eval_field(
        &mut self,
        dot: &Value,
        name: &str,
        receiver: Value,
        call: Option<(&[Arg], Option<Value>)>,
        pos: usize,
        context: &str,
    ) -> Result<Value, ExecError> {
        let has_args = call
            .as_ref()
            .is_some_and(|(args, fin)| args.len() > 1 || fin.is_some());
        self.at(pos, context.to_string());
        match &receiver {
            Value::Object(o) => {
                if has_args {
                    let (args, fin) = call.expect("args");
                    let mut values = Vec::new();
                    for a in &args[1..] {
                        values.push(self.eval_arg(dot, a)?);
                    }
                    values.extend(fin);
                    self.at(pos, context.to_string());
                    return match o.method(name, &values) {
                        Some(r) => r.map_err(|e| self.fail(format!("error calling {name}: {e}"))),
                        None => match o.field(name) {
                            Some(_) => Err(self.fail(format!(
                                "{name} has arguments but cannot be invoked as function"
                            ))),
                            None => Err(self.fail(format!(
                                "can't evaluate field {name} in type {}",
                                o.type_name()
                            ))),
                        },
                    };
                }
                match o.field(name) {
                    Some(r) => r.map_err(|e| self.fail(format!("error calling {name}: {e}"))),
                    None => match o.method(name, &[]) {
                        Some(r) => r.map_err(|e| self.fail(format!("error calling {name}: {e}"))),
                        None => Err(self.fail(format!(
                            "can't evaluate field {name} in type {}",
                            o.type_name()
                        ))),
                    },
                }
            }
            Value::Map(map) => {
                if has_args {
                    return Err(self.fail(format!("{name} is not a method but has arguments")));
                }
                match map.get(name) {
                    Some(v) => Ok(v),
                    None => match self.set.missing_key {
                        MissingKey::Error => {
                            Err(self.fail(format!("map has no entry for key {name:?}")))
                        }
                        _ => Ok(Value::Nil),
                    },
                }
            }
            Value::Nil => match self.set.missing_key {
                MissingKey::Default => Ok(Value::Nil),
                MissingKey::Error => Err(self.fail(format!("nil data; no entry for key {name:?}"))),
                MissingKey::Zero => {
                    Err(self.fail(format!("nil pointer evaluating interface {{}}.{name}")))
                }
            },
            other => Err(self.fail(format!(
                "can't evaluate field {name} in type {}",
                other.type_name()
            ))),
        }
    }

    fn eval_function(
        &mut self,
        dot: &Value,
        pos: usize,
        name: &str,
        cmd: &Command,
        args: &[Arg],
        fin: Option<Value>,
    ) -> Result<Value, ExecError> {
        self.at(pos, name.to_string());
        let command_text = command_text(cmd);
        // `and` and `or` stop at the first argument that decides.
        if name == "and" || name == "or" {
            if args.len() < 2 && fin.is_none() {
                self.at(cmd.pos, command_text);
                return Err(self.fail(format!(
                    "wrong number of args for {name}: want at least 1 got 0"
                )));
            }
            let mut last = Value::Nil;
            for a in &args[1..] {
                last = self.eval_arg(dot, a)?;
                if last.is_true() == (name == "or") {
                    return Ok(last);
                }
            }
            if let Some(f) = fin {
                last = f;
            }
            return Ok(last);
        }
        let Some(func) = self.set.funcs.get(name).cloned() else {
            return Err(self.fail(format!("function {name:?} not defined")));
        };
        let mut values = Vec::with_capacity(args.len());
        for a in &args[1..] {
            values.push(self.eval_arg(dot, a)?);
        }
        values.extend(fin);
        let result = {
            let mut call = Call { state: self };
            func(&mut call, &values)
        };
        result.map_err(|e| match e {
            FuncError::Failed(e) => {
                self.at(cmd.pos, command_text);
                self.fail(format!("error calling {name}: {e}"))
            }
            FuncError::Usage(e) => {
                self.at(cmd.pos, command_text);
                self.fail(e)
            }
            FuncError::WrongArg { index, message } => {
                // The argument as written, or the piped value (placed at the command).
                match args.get(index + 1) {
                    Some(arg) => self.at(arg.pos(), arg_text(arg)),
                    None => self.at(cmd.pos, command_text),
                }
                self.fail(message)
            }
        })
    }

    fn eval_arg(&mut self, dot: &Value, arg: &Arg) -> Result<Value, ExecError> {
        match arg {
            Arg::Dot(_) => Ok(dot.clone()),
            Arg::Nil(_) => Ok(Value::Nil),
            Arg::Bool(_, b) => Ok(Value::Bool(*b)),
            // As Go's idealConstant: written with a point or an exponent, a float64 (`3.0`,
            // `1e3`); else an int if it is one.
            Arg::Number(_, n)
                if n.float.is_some()
                    && !n.is_char
                    && !n.text.to_ascii_lowercase().contains("0x")
                    && n.text.contains(['.', 'e', 'E', 'p', 'P']) =>
            {
                Ok(Value::Float(n.float.unwrap_or_default()))
            }
            Arg::Number(pos, n) => match (n.int, n.float) {
                (Some(i), _) => Ok(Value::Int(i)),
                (None, Some(f)) => Ok(Value::Float(f)),
                _ => {
                    self.at(*pos, n.text.clone());
                    Err(self.fail(format!("{} overflows int", n.text)))
                }
            },
            Arg::String(_, s) => Ok(Value::from(s.as_str())),
            Arg::Field(pos, fields) => {
                let context = field_text(fields);
                self.at(*pos, context.clone());
                self.eval_field_chain(
                    dot,
                    dot.clone(),
                    fields,
                    std::slice::from_ref(arg),
                    None,
                    *pos,
                    &context,
                )
            }
            Arg::Variable(pos, name, fields) => {
                self.at(*pos, arg_text(arg));
                let value = self.var(name)?;
                if fields.is_empty() {
                    return Ok(value);
                }
                let context = arg_text(arg);
                self.eval_field_chain(
                    dot,
                    value,
                    fields,
                    std::slice::from_ref(arg),
                    None,
                    *pos,
                    &context,
                )
            }
            Arg::Pipe(_, pipe) => {
                let mark = self.vars.len();
                let v = self.eval_pipeline(dot, pipe);
                self.vars.truncate(mark);
                v
            }
            Arg::Identifier(pos, name) => {
                let cmd = Command {
                    pos: *pos,
                    args: vec![arg.clone()],
                };
                self.eval_function(dot, *pos, name, &cmd, std::slice::from_ref(arg), None)
            }
            Arg::Chain(pos, inner, fields) => {
                let context = arg_text(arg);
                let receiver = self.eval_arg(dot, inner)?;
                self.eval_field_chain(
                    dot,
                    receiver,
                    fields,
                    std::slice::from_ref(arg),
                    None,
                    *pos,
                    &context,
                )
            }
        }
    }
}

fn field_text(fields: &[String]) -> String {
    let mut s = String::new();
    for f in fields {
        s.push('.');
        s.push_str(f);
    }
    s
}

/// A node as Go's `String()` prints it, for error context.
pub(crate) fn arg_text(arg: &Arg) -> String {
    match arg {
        Arg::Dot(_) => ".".into(),
        Arg::Nil(_) => "nil".into(),
        Arg::Bool(_, b) => b.to_string(),
        Arg::Number(_, n) => n.text.clone(),
        Arg::String(_, s) => go_quote(s),
        Arg::Field(_, f) => field_text(f),
        Arg::Variable(_, name, f) => format!("{name}{}", field_text(f)),
        Arg::Identifier(_, name) => name.clone(),
        Arg::Pipe(_, p) => format!("({})", pipeline_text(p)),
        Arg::Chain(_, inner, f) => format!("{}{}", arg_text(inner), field_text(f)),
    }
}

fn command_text(cmd: &Command) -> String {
    cmd.args.iter().map(arg_text).collect::<Vec<_>>().join(" ")
}

fn pipeline_text(p: &Pipeline) -> String {
    let mut s = String::new();
    if !p.decl.is_empty() {
        s.push_str(&p.decl.join(", "));
        s.push_str(if p.is_assign { " = " } else { " := " });
    }
    s.push_str(
        &p.cmds
            .iter()
            .map(command_text)
            .collect::<Vec<_>>()
            .join(" | "),
    );
    s
}

/// `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
