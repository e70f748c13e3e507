//! The lexer, as Go's `text/template/parse/lex.go`: text outside actions, and inside `{{ }}` the
//! tokens of Go's template language. Trim markers (`{{- ` and ` -}}`) remove the whitespace next
//! to an action; comments (`{{/* */}}`) vanish.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    LeftDelim,
    RightDelim,
    LeftParen,
    RightParen,
    Pipe,
    /// `:=`
    Declare,
    /// `=`
    Assign,
    Comma,
    Space,
    /// `.`
    Dot,
    /// `.Name` (the text includes the dot)
    Field,
    /// `$` or `$name`
    Variable,
    /// A function name
    Identifier,
    Bool,
    Nil,
    Number,
    /// A quoted string (the text keeps its quotes)
    String,
    RawString,
    Char,
    // Keywords.
    Block,
    Break,
    Continue,
    Define,
    Else,
    End,
    If,
    Range,
    Template,
    With,
    Eof,
}

/// One token: kind, text, byte offset and line (1-based) in the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub text: String,
    pub pos: usize,
    pub line: usize,
}

/// A lexing error, reported with the line it happened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub message: String,
    pub line: usize,
}

const LEFT: &str = "{{";
const RIGHT: &str = "}}";
const LEFT_COMMENT: &str = "/*";
const RIGHT_COMMENT: &str = "*/";

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The tokens of `input`, ending with [`Kind::Eof`].
pub fn lex(input: &str) -> Result<Vec<Token>, LexError> {
    let mut lexer = Lexer {
        input,
        pos: 0,
        start: 0,
        line: 1,
        start_line: 1,
        tokens: Vec::new(),
        paren_depth: 0,
    };
    lexer.run()?;
    Ok(lexer.tokens)
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    start: usize,
    line: usize,
    start_line: usize,
    tokens: Vec<Token>,
    paren_depth: usize,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.input[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn backup(&mut self, c: char) {
        self.pos -= c.len_utf8();
        if c == '\n' {
            self.line -= 1;
        }
    }

    fn emit(&mut self, kind: Kind) {
        self.tokens.push(Token {
            kind,
            text: self.input[self.start..self.pos].to_string(),
            pos: self.start,
            line: self.start_line,
        });
        self.ignore();
    }

    fn ignore(&mut self) {
        self.start = self.pos;
        self.start_line = self.line;
    }

    fn skip_to(&mut self, to: usize) {
        self.line += self.input[self.pos..to].matches('\n').count();
        self.pos = to;
        self.ignore();
    }

    fn error(&self, message: impl Into<String>) -> LexError {
        LexError {
            message: message.into(),
            line: self.start_line,
        }
    }

    fn run(&mut self) -> Result<(), LexError> {
        loop {
            // Text up to the next action.
            match self.rest().find(LEFT) {
                None => {
                    self.pos = self.input.len();
                    self.line = self.start_line + self.input[self.start..].matches('\n').count();
                    if self.pos > self.start {
                        self.emit(Kind::Text);
                    }
                    self.emit(Kind::Eof);
                    return Ok(());
                }
                Some(at) => {
                    let delim = self.pos + at;
                    let trim = self.has_left_trim(delim);
                    let mut text_end = delim;
                    if trim {
                        text_end = self.input[self.start..delim]
                            .trim_end_matches(|c: char| is_space(c as u8) && c.is_ascii())
                            .len()
                            + self.start;
                    }
                    self.pos = text_end;
                    self.line =
                        self.start_line + self.input[self.start..text_end].matches('\n').count();
                    if text_end > self.start {
                        self.emit(Kind::Text);
                    }
                    self.skip_to(delim);
                    self.left_delim(trim)?;
                }
            }
        }
    }

    /// Whether the delimiter at `at` is `{{- ` (a trim marker).
    fn has_left_trim(&self, at: usize) -> bool {
        let after = &self.input.as_bytes()[at + LEFT.len()..];
        after.len() >= 2 && after[0] == b'-' && is_space(after[1])
    }

    /// Whether the text at the current position is ` -}}`.
    fn at_right_trim(&self) -> bool {
        let rest = self.rest().as_bytes();
        rest.len() >= 2 + RIGHT.len()
            && is_space(rest[0])
            && rest[1] == b'-'
            && &rest[2..2 + RIGHT.len()] == RIGHT.as_bytes()
    }

    fn left_delim(&mut self, trim: bool) -> Result<(), LexError> {
        self.pos += LEFT.len();
        let after_marker = self.pos + if trim { 2 } else { 0 };
        if self.input[after_marker..].starts_with(LEFT_COMMENT) {
            self.skip_to(after_marker);
            return self.comment();
        }
        self.emit(Kind::LeftDelim);
        if trim {
            self.skip_to(after_marker);
        }
        self.paren_depth = 0;
        self.inside_action()
    }

    fn comment(&mut self) -> Result<(), LexError> {
        self.pos += LEFT_COMMENT.len();
        let Some(end) = self.rest().find(RIGHT_COMMENT) else {
            return Err(self.error("unclosed comment"));
        };
        let end = self.pos + end + RIGHT_COMMENT.len();
        self.skip_to(end);
        let trim = self.at_right_trim();
        if !trim && !self.rest().starts_with(RIGHT) {
            return Err(self.error("comment ends before closing delimiter"));
        }
        let after = self.pos + if trim { 2 } else { 0 } + RIGHT.len();
        self.skip_to(after);
        if trim {
            self.trim_following_space();
        }
        Ok(())
    }

    fn trim_following_space(&mut self) {
        let n = self.rest().len().saturating_sub(
            self.rest()
                .trim_start_matches([' ', '\t', '\r', '\n'])
                .len(),
        );
        let to = self.pos + n;
        self.skip_to(to);
    }

    fn inside_action(&mut self) -> Result<(), LexError> {
        loop {
            let trim = self.at_right_trim();
            if trim || self.rest().starts_with(RIGHT) {
                if self.paren_depth > 0 {
                    return Err(self.error("unclosed left paren"));
                }
                if trim {
                    self.skip_to(self.pos + 2);
                }
                self.pos += RIGHT.len();
                self.emit(Kind::RightDelim);
                if trim {
                    self.trim_following_space();
                }
                return Ok(());
            }
            let Some(c) = self.next() else {
                return Err(self.error("unclosed action"));
            };
            match c {
                ' ' | '\t' | '\r' | '\n' => {
                    while self
                        .peek()
                        .is_some_and(|c| c.is_ascii() && is_space(c as u8))
                    {
                        if self.at_right_trim() {
                            break;
                        }
                        self.next();
                    }
                    self.emit(Kind::Space);
                }
                '=' => self.emit(Kind::Assign),
                ':' => {
                    if self.next() != Some('=') {
                        return Err(self.error("expected :="));
                    }
                    self.emit(Kind::Declare);
                }
                '|' => self.emit(Kind::Pipe),
                ',' => self.emit(Kind::Comma),
                '"' => self.quote()?,
                '`' => self.raw_quote()?,
                '\'' => self.char_constant()?,
                '$' => self.variable(),
                '.' => {
                    // A number like .5, a field, or the dot.
                    if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        self.backup('.');
                        self.number()?;
                    } else {
                        self.field_or_dot();
                    }
                }
                '+' | '-' | '0'..='9' => {
                    self.backup(c);
                    self.number()?;
                }
                '(' => {
                    self.paren_depth += 1;
                    self.emit(Kind::LeftParen);
                }
                ')' => {
                    if self.paren_depth == 0 {
                        return Err(self.error("unexpected right paren"));
                    }
                    self.paren_depth -= 1;
                    self.emit(Kind::RightParen);
                }
                c if is_alnum(c) => {
                    self.backup(c);
                    self.identifier()?;
                }
                c => {
                    return Err(self.error(format!("unrecognized character in action: {c:?}")));
                }
            }
        }
    }

    fn word(&mut self) {
        while self.peek().is_some_and(is_alnum) {
            self.next();
        }
    }

    /// After a word: what may follow it (space, a delimiter, punctuation), else an error.
    fn at_terminator(&self) -> bool {
        match self.peek() {
            None => true,
            Some(c) => {
                matches!(
                    c,
                    ' ' | '\t' | '\r' | '\n' | '.' | ',' | '|' | ':' | ')' | '(' | '='
                ) || self.rest().starts_with(RIGHT)
            }
        }
    }

    fn identifier(&mut self) -> Result<(), LexError> {
        self.word();
        if !self.at_terminator() {
            return Err(self.error(format!("bad character {:?}", self.peek().unwrap_or(' '))));
        }
        let kind = match &self.input[self.start..self.pos] {
            "block" => Kind::Block,
            "break" => Kind::Break,
            "continue" => Kind::Continue,
            "define" => Kind::Define,
            "else" => Kind::Else,
            "end" => Kind::End,
            "if" => Kind::If,
            "range" => Kind::Range,
            "template" => Kind::Template,
            "with" => Kind::With,
            "nil" => Kind::Nil,
            "true" | "false" => Kind::Bool,
            _ => Kind::Identifier,
        };
        self.emit(kind);
        // Fields chained on a word (e.g. `$x.a`) are lexed by the loop.
        Ok(())
    }

    fn variable(&mut self) {
        self.word();
        self.emit(Kind::Variable);
    }

    fn field_or_dot(&mut self) {
        if self.peek().is_some_and(is_alnum) {
            self.word();
            self.emit(Kind::Field);
        } else {
            self.emit(Kind::Dot);
        }
    }

    fn quote(&mut self) -> Result<(), LexError> {
        loop {
            match self.next() {
                Some('\\') => {
                    if matches!(self.next(), None | Some('\n')) {
                        return Err(self.error("unterminated quoted string"));
                    }
                }
                None | Some('\n') => return Err(self.error("unterminated quoted string")),
                Some('"') => break,
                Some(_) => {}
            }
        }
        self.emit(Kind::String);
        Ok(())
    }

    fn raw_quote(&mut self) -> Result<(), LexError> {
        loop {
            match self.next() {
                None => return Err(self.error("unterminated raw quoted string")),
                Some('`') => break,
                Some(_) => {}
            }
        }
        self.emit(Kind::RawString);
        Ok(())
    }

    fn char_constant(&mut self) -> Result<(), LexError> {
        loop {
            match self.next() {
                Some('\\') => {
                    if matches!(self.next(), None | Some('\n')) {
                        return Err(self.error("unterminated character constant"));
                    }
                }
                None | Some('\n') => return Err(self.error("unterminated character constant")),
                Some('\'') => break,
                Some(_) => {}
            }
        }
        self.emit(Kind::Char);
        Ok(())
    }

    /// A number as Go scans one (sign, base prefix, digits with `_`, fraction, exponent); its
    /// value is checked by the parser.
    fn number(&mut self) -> Result<(), LexError> {
        if matches!(self.peek(), Some('+' | '-')) {
            self.next();
        }
        let mut digits = "0123456789_";
        if self.rest().starts_with('0') {
            let prefix = self
                .rest()
                .as_bytes()
                .get(1)
                .map(|b| b.to_ascii_lowercase());
            match prefix {
                Some(b'x') => {
                    self.pos += 2;
                    digits = "0123456789abcdefABCDEF_";
                }
                Some(b'o') => {
                    self.pos += 2;
                    digits = "01234567_";
                }
                Some(b'b') => {
                    self.pos += 2;
                    digits = "01_";
                }
                _ => {}
            }
        }
        let accept_run = |l: &mut Self, set: &str| {
            while l.peek().is_some_and(|c| set.contains(c)) {
                l.next();
            }
        };
        accept_run(self, digits);
        if self.peek() == Some('.') {
            self.next();
            accept_run(self, digits);
        }
        let exponent = if digits.len() == 11 {
            "eE"
        } else if digits.contains('f') {
            "pP"
        } else {
            ""
        };
        if self.peek().is_some_and(|c| exponent.contains(c)) {
            self.next();
            if matches!(self.peek(), Some('+' | '-')) {
                self.next();
            }
            accept_run(self, "0123456789_");
        }
        if self.peek() == Some('i') {
            self.next();
        }
        if self.peek().is_some_and(is_alnum) {
            self.next();
            return Err(self.error(format!(
                "bad number syntax: {:?}",
                &self.input[self.start..self.pos]
            )));
        }
        self.emit(Kind::Number);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Vec<(Kind, String)> {
        lex(input)
            .expect("lexes")
            .into_iter()
            .map(|t| (t.kind, t.text))
            .collect()
    }

    /// Found by fuzzing (fuzz/ target `gotmpl`): a ` -` followed by a multi-byte character
    /// where a right trim marker ` -}}` could be made the lexer slice inside that character.
    #[test]
    fn a_multibyte_character_after_a_dash_is_an_error_not_a_panic() {
        for input in ["{{ $i, -=\u{709}-", "{{ x -\u{e9}}", "{{ -\u{1F600}"] {
            let _ = lex(input);
        }
    }

    #[test]
    fn text_and_actions() {
        use Kind::*;
        assert_eq!(
            kinds("a {{.Values.x | quote}} b"),
            vec![
                (Text, "a ".into()),
                (LeftDelim, "{{".into()),
                (Field, ".Values".into()),
                (Field, ".x".into()),
                (Space, " ".into()),
                (Pipe, "|".into()),
                (Space, " ".into()),
                (Identifier, "quote".into()),
                (RightDelim, "}}".into()),
                (Text, " b".into()),
                (Eof, "".into()),
            ]
        );
    }

    #[test]
    fn trim_markers_remove_the_whitespace_beside_them() {
        use Kind::*;
        assert_eq!(
            kinds("a  \n {{- 3 -}} \n b"),
            vec![
                (Text, "a".into()),
                (LeftDelim, "{{".into()),
                (Number, "3".into()),
                (RightDelim, "}}".into()),
                (Text, "b".into()),
                (Eof, "".into()),
            ]
        );
        // `{{-3}}` is the number -3, not a trim marker.
        assert_eq!(kinds("{{-3}}")[1], (Number, "-3".into()));
    }

    #[test]
    fn comments_vanish_with_their_trim_markers() {
        use Kind::*;
        assert_eq!(
            kinds("a {{- /* c\n */ -}}\n b"),
            vec![(Text, "a".into()), (Text, "b".into()), (Eof, "".into())]
        );
        assert!(lex("{{/* c */ x}}").is_err());
        assert!(lex("{{/* c").is_err());
    }

    #[test]
    fn lines_are_counted() {
        let tokens = lex("a\nb {{\n.x}}").expect("lexes");
        let field = tokens
            .iter()
            .find(|t| t.kind == Kind::Field)
            .expect("a field");
        assert_eq!((field.line, field.pos), (3, 7));
    }

    #[test]
    fn strings_numbers_and_variables() {
        use Kind::*;
        let all = kinds(r#"{{$x := "a\"b" `raw` 'c' 0x1F 1.5e3 -2 $}}"#);
        let found: Vec<Kind> = all
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| *k != Space)
            .collect();
        assert_eq!(
            found,
            vec![
                LeftDelim, Variable, Declare, String, RawString, Char, Number, Number, Number,
                Variable, RightDelim, Eof
            ]
        );
        assert!(lex(r#"{{"open}}"#).is_err());
        assert!(lex("{{3x}}").is_err());
        assert!(lex("{{ ( }}").is_err());
    }
}
