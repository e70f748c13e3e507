//! The parser, as Go's `text/template/parse/parse.go`: a template's text becomes a tree of
//! [`Node`]s, and every `{{define}}` (or `{{block}}`) in it a named tree of its own.

use std::collections::BTreeMap;

use crate::lex::{Kind, Token, lex};

/// A parse error, formatted as Go formats them: `template: NAME:LINE: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub name: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template: {}:{}: {}", self.name, self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// A list of nodes: a template's body, or a branch of `if`/`range`/`with`.
pub type List = Vec<Node>;

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Text(String),
    /// `{{pipeline}}`: evaluated and printed unless it declares variables.
    Action(Pipeline),
    If(Branch),
    Range(Branch),
    With(Branch),
    /// `{{template "name" pipeline}}`
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipeline>,
    },
    Break(usize),
    Continue(usize),
}

/// The shape shared by `if`, `range` and `with`.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub pos: usize,
    pub pipe: Pipeline,
    pub list: List,
    pub else_list: Option<List>,
}

/// `$x := a | b c` : declarations, and commands whose results feed the next as last argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub pos: usize,
    /// `:=` declares, `=` assigns.
    pub is_assign: bool,
    pub decl: Vec<String>,
    pub cmds: Vec<Command>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub pos: usize,
    pub args: Vec<Arg>,
}

/// An operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// `.`
    Dot(usize),
    Nil(usize),
    Bool(usize, bool),
    Number(usize, Number),
    String(usize, String),
    /// `.A.B`
    Field(usize, Vec<String>),
    /// `$x.A.B` (the name includes `$`)
    Variable(usize, String, Vec<String>),
    /// A function name
    Identifier(usize, String),
    /// `(pipeline)`
    Pipe(usize, Box<Pipeline>),
    /// `(pipeline).A.B` or `arg.A.B`
    Chain(usize, Box<Arg>, Vec<String>),
}

impl Arg {
    pub fn pos(&self) -> usize {
        match self {
            Arg::Dot(p)
            | Arg::Nil(p)
            | Arg::Bool(p, _)
            | Arg::Number(p, _)
            | Arg::String(p, _)
            | Arg::Field(p, _)
            | Arg::Variable(p, _, _)
            | Arg::Identifier(p, _)
            | Arg::Pipe(p, _)
            | Arg::Chain(p, _, _) => *p,
        }
    }
}

/// A number constant, as Go's parser keeps one: what it is as an int and as a float, and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    pub text: String,
    pub int: Option<i64>,
    pub float: Option<f64>,
    /// A character constant (`'a'`), which prints as its code point.
    pub is_char: bool,
}

/// A parsed template: its body and the templates it defines.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub root: List,
    pub defined: BTreeMap<String, List>,
}

/// Parses `text`, named `name` in errors; `is_func` says which function names exist (Go checks
/// them at parse time).
pub fn parse(name: &str, text: &str, is_func: &dyn Fn(&str) -> bool) -> Result<Parsed, ParseError> {
    let tokens = lex(text).map_err(|e| ParseError {
        name: name.into(),
        line: e.line,
        message: e.message,
    })?;
    let mut parser = Parser {
        name: name.to_string(),
        tokens,
        at: 0,
        vars: vec!["$".to_string()],
        range_depth: 0,
        defined: BTreeMap::new(),
        is_func,
    };
    let root = parser.top()?;
    Ok(Parsed {
        root,
        defined: parser.defined,
    })
}

struct Parser<'f> {
    is_func: &'f dyn Fn(&str) -> bool,
    name: String,
    tokens: Vec<Token>,
    at: usize,
    /// Variables in scope (Go checks uses against declarations at parse time).
    vars: Vec<String>,
    range_depth: usize,
    defined: BTreeMap<String, List>,
}

/// How a list ended.
enum End {
    /// `{{end}}`
    Done,
    Else(usize),
    Eof,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        let line = self
            .tokens
            .get(self.at.saturating_sub(1))
            .map_or(1, |t| t.line);
        ParseError {
            name: self.name.clone(),
            line,
            message: message.into(),
        }
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        t
    }

    fn peek_non_space(&mut self) -> &Token {
        while self.peek().kind == Kind::Space {
            self.at += 1;
        }
        self.peek()
    }

    fn next_non_space(&mut self) -> Token {
        self.peek_non_space();
        self.next()
    }

    fn unexpected(&self, token: &Token, context: &str) -> ParseError {
        let what = match token.kind {
            Kind::Eof => "EOF".to_string(),
            Kind::RightDelim => "\"}}\"".to_string(),
            _ => format!("{:?}", token.text),
        };
        self.error(format!("unexpected {what} in {context}"))
    }

    fn expect(&mut self, kind: Kind, context: &str) -> Result<Token, ParseError> {
        let t = self.next_non_space();
        if t.kind != kind {
            return Err(self.unexpected(&t, context));
        }
        Ok(t)
    }

    fn top(&mut self) -> Result<List, ParseError> {
        let mut list = Vec::new();
        loop {
            let t = self.peek().clone();
            match t.kind {
                Kind::Eof => return Ok(list),
                Kind::LeftDelim => {
                    // `{{define}}` is only valid at the top level.
                    let save = self.at;
                    self.next();
                    if self.peek_non_space().kind == Kind::Define {
                        self.next();
                        self.define()?;
                        continue;
                    }
                    self.at = save;
                    match self.text_or_action()? {
                        Step::Node(n) => list.push(n),
                        Step::End(End::Done) => return Err(self.error("unexpected {{end}}")),
                        Step::End(End::Else(_)) => return Err(self.error("unexpected {{else}}")),
                        Step::End(End::Eof) => return Ok(list),
                    }
                }
                _ => match self.text_or_action()? {
                    Step::Node(n) => list.push(n),
                    Step::End(End::Eof) => return Ok(list),
                    Step::End(_) => return Err(self.error("unexpected end")),
                },
            }
        }
    }

    fn define(&mut self) -> Result<(), ParseError> {
        let context = "define clause";
        let name = self.expect_string(context)?;
        self.expect(Kind::RightDelim, context)?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let (list, end) = self.item_list()?;
        self.vars = saved;
        if !matches!(end, End::Done) {
            return Err(self.error(format!("unexpected EOF in {context}")));
        }
        self.add(name, list);
        Ok(())
    }

    fn add(&mut self, name: String, list: List) {
        // As Go: a later non-empty definition replaces an earlier one; an empty one never does.
        let empty = list
            .iter()
            .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()));
        if empty && self.defined.contains_key(&name) {
            return;
        }
        self.defined.insert(name, list);
    }

    fn expect_string(&mut self, context: &str) -> Result<String, ParseError> {
        let t = self.next_non_space();
        match t.kind {
            Kind::String | Kind::RawString => unquote(&t.text).map_err(|e| self.error(e)),
            _ => Err(self.unexpected(&t, context)),
        }
    }

    /// Nodes until `{{end}}`, `{{else}}` or EOF.
    fn item_list(&mut self) -> Result<(List, End), ParseError> {
        let mut list = Vec::new();
        loop {
            match self.text_or_action()? {
                Step::Node(n) => list.push(n),
                Step::End(end) => return Ok((list, end)),
            }
        }
    }

    fn text_or_action(&mut self) -> Result<Step, ParseError> {
        let t = self.next();
        match t.kind {
            Kind::Text => Ok(Step::Node(Node::Text(t.text))),
            Kind::LeftDelim => self.action(),
            Kind::Eof => Ok(Step::End(End::Eof)),
            _ => Err(self.unexpected(&t, "input")),
        }
    }

    fn action(&mut self) -> Result<Step, ParseError> {
        let t = self.next_non_space();
        match t.kind {
            Kind::Block => self.block(t.pos).map(Step::Node),
            Kind::Break | Kind::Continue => {
                let keyword = if t.kind == Kind::Break {
                    "break"
                } else {
                    "continue"
                };
                if self.range_depth == 0 {
                    return Err(self.error(format!("{{{{{keyword}}}}} outside {{{{range}}}}")));
                }
                self.expect(Kind::RightDelim, keyword)?;
                Ok(Step::Node(if t.kind == Kind::Break {
                    Node::Break(t.pos)
                } else {
                    Node::Continue(t.pos)
                }))
            }
            Kind::Else => {
                // `{{else}}`, `{{else if …}}`, `{{else with …}}`: the caller decides.
                let next = self.peek_non_space().kind;
                if next == Kind::If || next == Kind::With {
                    // Leave the keyword for the caller, which parses the chained branch.
                    return Ok(Step::End(End::Else(t.pos)));
                }
                self.expect(Kind::RightDelim, "else")?;
                Ok(Step::End(End::Else(t.pos)))
            }
            Kind::End => {
                self.expect(Kind::RightDelim, "end")?;
                Ok(Step::End(End::Done))
            }
            Kind::If => self.branch(t.pos, "if").map(|b| Step::Node(Node::If(b))),
            Kind::Range => self
                .branch(t.pos, "range")
                .map(|b| Step::Node(Node::Range(b))),
            Kind::With => self
                .branch(t.pos, "with")
                .map(|b| Step::Node(Node::With(b))),
            Kind::Template => self.template(t.pos).map(Step::Node),
            Kind::Define => Err(self.error("unexpected {{define}} inside an action")),
            _ => {
                self.at -= 1;
                let pipe = self.pipeline("command", Kind::RightDelim)?;
                Ok(Step::Node(Node::Action(pipe)))
            }
        }
    }

    fn branch(&mut self, pos: usize, context: &str) -> Result<Branch, ParseError> {
        let vars = self.vars.len();
        let pipe = self.pipeline(context, Kind::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, mut end) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let mut else_list = None;
        if let End::Else(else_pos) = end {
            let chained = self.peek_non_space().kind;
            if (context == "if" && chained == Kind::If)
                || (context == "with" && chained == Kind::With)
            {
                // `{{else if x}}` is `{{else}}{{if x}}…{{end}}{{end}}`, sharing the one `{{end}}`.
                self.next();
                let inner = self.branch(else_pos, context)?;
                let node = if context == "if" {
                    Node::If(inner)
                } else {
                    Node::With(inner)
                };
                else_list = Some(vec![node]);
                end = End::Done;
            } else {
                let (list, e) = self.item_list()?;
                if !matches!(e, End::Done) {
                    return Err(self.error(format!("expected end; found {}", describe_end(&e))));
                }
                else_list = Some(list);
                end = End::Done;
            }
        }
        self.vars.truncate(vars);
        if !matches!(end, End::Done) {
            return Err(self.error("unexpected EOF"));
        }
        Ok(Branch {
            pos,
            pipe,
            list,
            else_list,
        })
    }

    fn template(&mut self, _keyword: usize) -> Result<Node, ParseError> {
        let context = "template clause";
        // As Go, the node is placed at the template's name.
        let pos = self.peek_non_space().pos;
        let name = self.expect_string(context)?;
        let pipe = if self.peek_non_space().kind == Kind::RightDelim {
            self.next();
            None
        } else {
            Some(self.pipeline(context, Kind::RightDelim)?)
        };
        Ok(Node::Template { pos, name, pipe })
    }

    fn block(&mut self, _keyword: usize) -> Result<Node, ParseError> {
        let context = "block clause";
        let pos = self.peek_non_space().pos;
        let name = self.expect_string(context)?;
        let pipe = self.pipeline(context, Kind::RightDelim)?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let (list, end) = self.item_list()?;
        self.vars = saved;
        if !matches!(end, End::Done) {
            return Err(self.error(format!("unexpected EOF in {context}")));
        }
        self.add(name.clone(), list);
        Ok(Node::Template {
            pos,
            name,
            pipe: Some(pipe),
        })
    }

    /// A pipeline up to `end` (`}}` or `)`), with its declarations.
    fn pipeline(&mut self, context: &str, end: Kind) -> Result<Pipeline, ParseError> {
        let pos = self.peek_non_space().pos;
        let mut decl = Vec::new();
        let mut is_assign = false;
        // `$x :=`, `$x =`, `$i, $v :=`.
        let save = self.at;
        if self.peek().kind == Kind::Variable {
            let v = self.next();
            let after = self.peek_non_space().kind;
            match after {
                Kind::Declare | Kind::Assign => {
                    is_assign = after == Kind::Assign;
                    self.next();
                    decl.push(v.text);
                }
                Kind::Comma if context == "range" => {
                    self.next();
                    let second = self.next_non_space();
                    if second.kind != Kind::Variable {
                        return Err(self.error("range can only initialize variables"));
                    }
                    let op = self.next_non_space();
                    if op.kind != Kind::Declare && op.kind != Kind::Assign {
                        return Err(self.unexpected(&op, "range"));
                    }
                    is_assign = op.kind == Kind::Assign;
                    decl.push(v.text);
                    decl.push(second.text);
                }
                _ => self.at = save,
            }
        }
        if is_assign {
            for d in &decl {
                if !self.vars.contains(d) {
                    return Err(self.error(format!("undefined variable {d:?}")));
                }
            }
        }
        let mut cmds = Vec::new();
        loop {
            let t = self.peek_non_space().clone();
            if t.kind == end {
                self.next();
                break;
            }
            match t.kind {
                Kind::Bool
                | Kind::Char
                | Kind::Dot
                | Kind::Field
                | Kind::Identifier
                | Kind::Number
                | Kind::Nil
                | Kind::RawString
                | Kind::String
                | Kind::Variable
                | Kind::LeftParen
                | Kind::Block
                | Kind::Template => cmds.push(self.command(end)?),
                _ => return Err(self.unexpected(&t, context)),
            }
        }
        if !is_assign {
            for d in &decl {
                self.vars.push(d.clone());
            }
        }
        if cmds.is_empty() {
            return Err(self.error(format!("missing value for {context}")));
        }
        for (i, c) in cmds.iter().enumerate().skip(1) {
            if let Some(first) = c.args.first()
                && matches!(
                    first,
                    Arg::Bool(..) | Arg::Dot(_) | Arg::Nil(_) | Arg::Number(..) | Arg::String(..)
                )
            {
                let _ = i;
                return Err(self.error(format!(
                    "non executable command in pipeline stage {}",
                    i + 1
                )));
            }
        }
        Ok(Pipeline {
            pos,
            is_assign,
            decl,
            cmds,
        })
    }

    /// One command: operands up to `|` or the pipeline's end (which is left for the caller).
    fn command(&mut self, end: Kind) -> Result<Command, ParseError> {
        let pos = self.peek_non_space().pos;
        let mut args = Vec::new();
        loop {
            self.peek_non_space();
            let t = self.peek().clone();
            if t.kind == end {
                break;
            }
            if t.kind == Kind::Pipe {
                self.next();
                break;
            }
            let operand = self.operand()?;
            args.push(operand);
            // Operands must be separated by space.
            let after = self.peek().kind;
            if !matches!(after, Kind::Space | Kind::Pipe) && after != end {
                let t = self.peek().clone();
                return Err(self.unexpected(&t, "operand"));
            }
        }
        if args.is_empty() {
            return Err(self.error("empty command"));
        }
        Ok(Command { pos, args })
    }

    fn operand(&mut self) -> Result<Arg, ParseError> {
        let term = self.term()?;
        if self.peek().kind != Kind::Field {
            return Ok(term);
        }
        // As Go: the chain is placed at its first chained field.
        let pos = self.peek().pos;
        let mut fields = Vec::new();
        while self.peek().kind == Kind::Field {
            fields.push(self.next().text[1..].to_string());
        }
        Ok(match term {
            Arg::Field(_, mut f) => {
                f.extend(fields);
                Arg::Field(pos, f)
            }
            Arg::Variable(_, name, mut f) => {
                f.extend(fields);
                Arg::Variable(pos, name, f)
            }
            Arg::Bool(..) | Arg::String(..) | Arg::Number(..) | Arg::Nil(_) | Arg::Dot(_) => {
                return Err(
                    self.error(format!("unexpected . after term {:?}", describe_arg(&term)))
                );
            }
            other => Arg::Chain(pos, Box::new(other), fields),
        })
    }

    fn term(&mut self) -> Result<Arg, ParseError> {
        let t = self.next_non_space();
        Ok(match t.kind {
            Kind::Identifier => {
                if !(self.is_func)(&t.text) && t.text != "and" && t.text != "or" {
                    return Err(self.error(format!("function {:?} not defined", t.text)));
                }
                Arg::Identifier(t.pos, t.text)
            }
            Kind::Dot => Arg::Dot(t.pos),
            Kind::Nil => Arg::Nil(t.pos),
            Kind::Variable => {
                if !self.vars.contains(&t.text) {
                    return Err(self.error(format!("undefined variable {:?}", t.text)));
                }
                Arg::Variable(t.pos, t.text, Vec::new())
            }
            Kind::Field => Arg::Field(t.pos, vec![t.text[1..].to_string()]),
            Kind::Bool => Arg::Bool(t.pos, t.text == "true"),
            Kind::Char | Kind::Number => Arg::Number(t.pos, number(&t).map_err(|e| self.error(e))?),
            Kind::LeftParen => {
                let pipe = self.pipeline("parenthesized pipeline", Kind::RightParen)?;
                Arg::Pipe(t.pos, Box::new(pipe))
            }
            Kind::String | Kind::RawString => {
                Arg::String(t.pos, unquote(&t.text).map_err(|e| self.error(e))?)
            }
            _ => return Err(self.unexpected(&t, "operand")),
        })
    }
}

enum Step {
    Node(Node),
    End(End),
}

fn describe_end(end: &End) -> &'static str {
    match end {
        End::Done => "end",
        End::Else(_) => "else",
        End::Eof => "EOF",
    }
}

fn describe_arg(arg: &Arg) -> String {
    match arg {
        Arg::Bool(_, b) => b.to_string(),
        Arg::String(_, s) => format!("{s:?}"),
        Arg::Number(_, n) => n.text.clone(),
        Arg::Nil(_) => "nil".into(),
        _ => ".".into(),
    }
}

/// The value of a Go string literal (`"…"` with Go's escapes, or a raw `` `…` ``).
pub fn unquote(text: &str) -> Result<String, String> {
    if let Some(raw) = text.strip_prefix('`').and_then(|t| t.strip_suffix('`')) {
        return Ok(raw.replace('\r', ""));
    }
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(|| format!("bad string syntax: {text}"))?;
    unescape(inner, '"').map_err(|_| format!("invalid syntax: {text}"))
}

fn unescape(inner: &str, quote: char) -> Result<String, ()> {
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = chars.next().ok_or(())?;
        match e {
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '\\' => out.push('\\'),
            c if c == quote => out.push(c),
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = chars.by_ref().take(n).collect();
                if hex.len() != n {
                    return Err(());
                }
                let v = u32::from_str_radix(&hex, 16).map_err(|_| ())?;
                if e == 'x' {
                    // A byte; Go strings may hold any bytes, Rust's only UTF-8.
                    out.push(char::from_u32(v).ok_or(())?);
                } else {
                    out.push(char::from_u32(v).ok_or(())?);
                }
            }
            '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let v = u32::from_str_radix(&format!("{e}{rest}"), 8).map_err(|_| ())?;
                out.push(char::from_u32(v).ok_or(())?);
            }
            _ => return Err(()),
        }
    }
    Ok(out)
}

/// A number token's value, as Go's `newNumber`.
fn number(t: &Token) -> Result<Number, String> {
    let text = t.text.as_str();
    if t.kind == Kind::Char {
        let inner = &text[1..text.len() - 1];
        let s =
            unescape(inner, '\'').map_err(|_| format!("malformed character constant: {text}"))?;
        let mut chars = s.chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            return Err(format!("malformed character constant: {text}"));
        };
        let v = c as i64;
        return Ok(Number {
            text: text.into(),
            int: Some(v),
            float: Some(v as f64),
            is_char: true,
        });
    }
    if text.ends_with('i') {
        return Err(format!("complex numbers are not supported: {text}"));
    }
    let clean = text.replace('_', "");
    let (negative, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (false, clean.trim_start_matches('+').to_string()),
    };
    let lower = digits.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit())
    {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else {
        lower.parse::<i64>().ok()
    }
    .map(|v| if negative { -v } else { v });
    let float = if lower.starts_with("0x") && (lower.contains('p') || lower.contains('.')) {
        None
    } else if let Some(i) = int {
        Some(i as f64)
    } else {
        lower
            .parse::<f64>()
            .ok()
            .map(|v| if negative { -v } else { v })
    };
    // As Go: a float that is an exact integer is an int too ("1e3" is 1000).
    let int = int.or_else(|| {
        float
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
            .map(|f| f as i64)
    });
    if int.is_none() && float.is_none() {
        return Err(format!("illegal number syntax: {text:?}"));
    }
    Ok(Number {
        text: text.into(),
        int,
        float,
        is_char: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Result<Parsed, ParseError> {
        super::parse(name, text, &|f| ["default", "quote", "len"].contains(&f))
    }

    fn root(text: &str) -> List {
        parse("t", text).expect("parses").root
    }

    #[test]
    fn pipelines_and_fields() {
        let list = root("{{ .Values.a | default \"x\" | quote }}");
        let Node::Action(pipe) = &list[0] else {
            panic!("{list:?}")
        };
        assert_eq!(pipe.cmds.len(), 3);
        // As Go, a chain of fields is placed at its second field.
        assert_eq!(
            pipe.cmds[0].args,
            vec![Arg::Field(10, vec!["Values".into(), "a".into()])]
        );
        assert_eq!(pipe.cmds[1].args[1], Arg::String(23, "x".into()));
    }

    #[test]
    fn else_if_chains_share_one_end() {
        let list = root("{{if .a}}A{{else if .b}}B{{else}}C{{end}}");
        let Node::If(b) = &list[0] else { panic!() };
        let Some(else_list) = &b.else_list else {
            panic!()
        };
        let Node::If(inner) = &else_list[0] else {
            panic!()
        };
        assert_eq!(inner.else_list, Some(vec![Node::Text("C".into())]));
    }

    #[test]
    fn define_and_block_name_templates() {
        let parsed = parse("t", "{{define \"a\"}}A{{end}}x{{block \"b\" .}}B{{end}}").expect("ok");
        assert_eq!(parsed.defined.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(matches!(parsed.root[1], Node::Template { .. }));
    }

    #[test]
    fn variables_are_checked_where_they_are_used() {
        assert!(parse("t", "{{$x := 1}}{{$x}}").is_ok());
        let e = parse("t", "{{if true}}{{$x := 1}}{{end}}{{$x}}").unwrap_err();
        assert_eq!(e.to_string(), "template: t:1: undefined variable \"$x\"");
        assert!(parse("t", "{{range $i, $v := .}}{{$i}}{{$v}}{{end}}").is_ok());
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("chart/templates/a.yaml", "a\nb\n{{ if }}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "template: chart/templates/a.yaml:3: missing value for if"
        );
        let e = parse("t", "{{ end }}").unwrap_err();
        assert!(e.to_string().contains("unexpected {{end}}"), "{e}");
        let e = parse("t", "{{ if .a }}x").unwrap_err();
        assert!(e.to_string().contains("unexpected EOF"), "{e}");
        assert!(parse("t", "{{break}}").is_err());
        assert!(parse("t", "{{range .}}{{break}}{{end}}").is_ok());
        assert!(parse("t", "{{ .a | 3 }}").is_err());
    }

    #[test]
    fn numbers_are_ints_and_floats_as_in_go() {
        let n = |t: &str| {
            number(&Token {
                kind: Kind::Number,
                text: t.into(),
                pos: 0,
                line: 1,
            })
            .expect("a number")
        };
        assert_eq!(n("42").int, Some(42));
        assert_eq!(n("0x1F").int, Some(31));
        assert_eq!(n("017").int, Some(15));
        assert_eq!(n("1e3").int, Some(1000));
        assert_eq!(n("1.5").int, None);
        assert_eq!(n("1.5").float, Some(1.5));
        assert_eq!(n("-2").int, Some(-2));
        assert_eq!(n("1_000").int, Some(1000));
    }

    #[test]
    fn strings_unquote_as_go() {
        assert_eq!(unquote(r#""a\tb\"c\u00e9""#).unwrap(), "a\tb\"cé");
        assert_eq!(unquote("`a\\n`").unwrap(), "a\\n");
        assert!(unquote(r#""\q""#).is_err());
    }
}
