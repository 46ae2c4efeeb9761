//! The small expression language of `wait_for.until` and `fail_if`, and the JSON paths of
//! `save`.
//!
//! It is deliberately tiny, so that a condition in a spec reads the same to everyone and
//! is checked when the job is submitted, not an hour into a run:
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | compare
//! compare := primary (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") primary)?
//! primary := path | string | number | true | false | null | list | "(" expr ")"
//! path    := "$" ("." name | "[" integer "]" | "[" string "]")*
//! list    := "[" (expr ("," expr)*)? "]"
//! ```
//!
//! - A path reads the JSON document the condition is evaluated over (the response body
//!   for `until`, the saved values for `fail_if`); a path that leads nowhere is `null`.
//! - Strings take single or double quotes, with `\` escaping the next character.
//! - `==`/`!=` compare JSON values (numbers by value: `1 == 1.0`); `<`, `<=`, `>`, `>=`
//!   compare two numbers or two strings and are false for anything else; `in` is
//!   membership in a list, a substring of a string, or a key of an object.
//! - The whole expression holds when its value is truthy: not `null`, `false`, `0`, `""`,
//!   `[]` or `{}` (as in Jinja).
//!
//! Parsing and evaluation never panic, whatever the input: nesting is bounded
//! ([`MAX_DEPTH`]) and so is the length ([`MAX_LEN`]).

use std::fmt;

use serde_json::Value;

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses, lists and `not`.
pub const MAX_DEPTH: usize = 64;

/// An expression that could not be parsed: the 1-based column (in characters) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ExprError {
    pub column: usize,
    pub message: String,
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A JSON path such as `$.items[0].id`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Path(pub Vec<Segment>);

impl Path {
    /// Parses a path alone (as `save` values are written).
    pub fn parse(text: &str) -> Result<Path, ExprError> {
        let mut p = Parser::new(text)?;
        p.skip_ws();
        let path = p.path()?;
        p.skip_ws();
        if p.peek().is_some() {
            return Err(p.error("unexpected text after the path"));
        }
        Ok(path)
    }

    /// The value the path leads to, if any.
    pub fn get<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        let mut at = doc;
        for seg in &self.0 {
            at = match (seg, at) {
                (Segment::Key(k), Value::Object(m)) => m.get(k)?,
                (Segment::Index(i), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(at)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for seg in &self.0 {
            match seg {
                Segment::Key(k) if is_name(k) => write!(f, ".{k}")?,
                Segment::Key(k) => write!(f, "[{}]", quote(k))?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::NotIn => "not in",
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Path(Path),
    Literal(Value),
    List(Vec<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
}

impl fmt::Display for Expr {
    /// Fully parenthesised, so that the output parses back to the same tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Path(p) => write!(f, "{p}"),
            Expr::Literal(Value::String(s)) => f.write_str(&quote(s)),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::List(items) => {
                f.write_str("[")?;
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
            Expr::Not(e) => write!(f, "(not {e})"),
            Expr::And(a, b) => write!(f, "({a} and {b})"),
            Expr::Or(a, b) => write!(f, "({a} or {b})"),
            Expr::Cmp(a, op, b) => write!(f, "({a} {} {b})", op.as_str()),
        }
    }
}

impl Expr {
    /// Parses an expression; errors give the column.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let mut p = Parser::new(text)?;
        let e = p.expr(0)?;
        p.skip_ws();
        if p.peek().is_some() {
            return Err(p.error("unexpected text; expected an operator or the end"));
        }
        Ok(e)
    }

    /// Whether the expression holds over `doc`.
    pub fn holds(&self, doc: &Value) -> bool {
        truthy(&self.eval(doc))
    }

    /// The expression's value over `doc`.
    pub fn eval(&self, doc: &Value) -> Value {
        match self {
            Expr::Path(p) => p.get(doc).cloned().unwrap_or(Value::Null),
            Expr::Literal(v) => v.clone(),
            Expr::List(items) => Value::Array(items.iter().map(|e| e.eval(doc)).collect()),
            Expr::Not(e) => Value::Bool(!e.holds(doc)),
            Expr::And(a, b) => Value::Bool(a.holds(doc) && b.holds(doc)),
            Expr::Or(a, b) => Value::Bool(a.holds(doc) || b.holds(doc)),
            Expr::Cmp(a, op, b) => Value::Bool(compare(&a.eval(doc), *op, &b.eval(doc))),
        }
    }

    /// Every path the expression reads.
    pub fn paths(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    fn collect_paths<'a>(&'a self, out: &mut Vec<&'a Path>) {
        match self {
            Expr::Path(p) => out.push(p),
            Expr::Literal(_) => {}
            Expr::List(items) => items.iter().for_each(|e| e.collect_paths(out)),
            Expr::Not(e) => e.collect_paths(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(a, _, b) => {
                a.collect_paths(out);
                b.collect_paths(out);
            }
        }
    }
}

/// Jinja's truthiness.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        _ => a == b,
    }
}

fn compare(a: &Value, op: CmpOp, b: &Value) -> bool {
    use std::cmp::Ordering;
    let order = || -> Option<Ordering> {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            _ => None,
        }
    };
    match op {
        CmpOp::Eq => json_eq(a, b),
        CmpOp::Ne => !json_eq(a, b),
        CmpOp::Lt => order() == Some(Ordering::Less),
        CmpOp::Le => matches!(order(), Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => order() == Some(Ordering::Greater),
        CmpOp::Ge => matches!(order(), Some(Ordering::Greater | Ordering::Equal)),
        CmpOp::In => contains(b, a),
        CmpOp::NotIn => !contains(b, a),
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::Array(items), n) => items.iter().any(|i| json_eq(i, n)),
        (Value::String(s), Value::String(n)) => s.contains(n.as_str()),
        (Value::Object(m), Value::String(k)) => m.contains_key(k),
        _ => false,
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Parser, ExprError> {
        if text.len() > MAX_LEN {
            return Err(ExprError {
                column: 1,
                message: format!("the expression is longer than {MAX_LEN} bytes"),
            });
        }
        Ok(Parser {
            chars: text.chars().collect(),
            pos: 0,
        })
    }

    fn error(&self, message: &str) -> ExprError {
        ExprError {
            column: self.pos + 1,
            message: message.to_string(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Whether the keyword `word` comes next (as a whole word); consumes it if so.
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_ws();
        let n = word.chars().count();
        let matches = word
            .chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c))
            && !self
                .peek_at(n)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if matches {
            self.pos += n;
        }
        matches
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, ExprError> {
        if depth > MAX_DEPTH {
            return Err(self.error("the expression nests too deeply"));
        }
        let mut left = self.and(depth)?;
        while self.keyword("or") {
            let right = self.and(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let mut left = self.not(depth)?;
        while self.keyword("and") {
            let right = self.not(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self, depth: usize) -> Result<Expr, ExprError> {
        if depth > MAX_DEPTH {
            return Err(self.error("the expression nests too deeply"));
        }
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not(depth + 1)?)));
        }
        self.compare(depth)
    }

    fn compare(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let left = self.primary(depth)?;
        self.skip_ws();
        let two: String = [self.peek(), self.peek_at(1)].iter().flatten().collect();
        let op = match two.as_str() {
            "==" => Some((CmpOp::Eq, 2)),
            "!=" => Some((CmpOp::Ne, 2)),
            "<=" => Some((CmpOp::Le, 2)),
            ">=" => Some((CmpOp::Ge, 2)),
            _ => match self.peek() {
                Some('<') => Some((CmpOp::Lt, 1)),
                Some('>') => Some((CmpOp::Gt, 1)),
                _ => None,
            },
        };
        let op = if let Some((op, n)) = op {
            self.pos += n;
            op
        } else if self.keyword("in") {
            CmpOp::In
        } else {
            let save = self.pos;
            if self.keyword("not") {
                if self.keyword("in") {
                    CmpOp::NotIn
                } else {
                    self.pos = save;
                    return Err(self.error("`not` here must be followed by `in`"));
                }
            } else {
                return Ok(left);
            }
        };
        let right = self.primary(depth)?;
        Ok(Expr::Cmp(Box::new(left), op, Box::new(right)))
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, ExprError> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.error("expected a value, a path or `(`, found the end")),
            Some('$') => Ok(Expr::Path(self.path()?)),
            Some('\'' | '"') => Ok(Expr::Literal(Value::String(self.string()?))),
            Some('(') => {
                self.pos += 1;
                let e = self.expr(depth + 1)?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return Err(self.error("expected `)`"));
                }
                self.pos += 1;
                Ok(e)
            }
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(']') {
                    self.pos += 1;
                    return Ok(Expr::List(items));
                }
                loop {
                    items.push(self.expr(depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(']') => {
                            self.pos += 1;
                            return Ok(Expr::List(items));
                        }
                        _ => return Err(self.error("expected `,` or `]` in the list")),
                    }
                }
            }
            Some(c) if c == '-' || c.is_ascii_digit() => Ok(Expr::Literal(self.number()?)),
            Some(_) => {
                for (word, value) in [
                    ("true", Value::Bool(true)),
                    ("false", Value::Bool(false)),
                    ("null", Value::Null),
                ] {
                    if self.keyword(word) {
                        return Ok(Expr::Literal(value));
                    }
                }
                Err(self.error(
                    "expected a value (a 'string', a number, true, false, null, a [list]), a $.path or `(`",
                ))
            }
        }
    }

    fn string(&mut self) -> Result<String, ExprError> {
        let start = self.pos;
        let Some(q) = self.peek() else {
            return Err(self.error("expected a string"));
        };
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    self.pos = start;
                    return Err(self.error("this string is never closed"));
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) => out.push(c),
                        None => {
                            self.pos = start;
                            return Err(self.error("this string is never closed"));
                        }
                    }
                }
                Some(c) if c == q => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
            self.pos += 1;
        }
    }

    fn number(&mut self) -> Result<Value, ExprError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        let bad = |p: &mut Parser| {
            p.pos = start;
            Err(p.error(&format!("{text:?} is not a number")))
        };
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::from(i));
        }
        match text.parse::<f64>() {
            Ok(f) => match serde_json::Number::from_f64(f) {
                Some(n) => Ok(Value::Number(n)),
                None => bad(self),
            },
            Err(_) => bad(self),
        }
    }

    fn path(&mut self) -> Result<Path, ExprError> {
        if self.peek() != Some('$') {
            return Err(self.error("a path starts with `$` (`$.state`)"));
        }
        self.pos += 1;
        let mut segs = Vec::new();
        loop {
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    let start = self.pos;
                    while self
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        self.pos += 1;
                    }
                    if start == self.pos {
                        return Err(self.error("expected a field name after `.`"));
                    }
                    segs.push(Segment::Key(self.chars[start..self.pos].iter().collect()));
                }
                Some('[') => {
                    self.pos += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some('\'' | '"') => segs.push(Segment::Key(self.string()?)),
                        Some(c) if c.is_ascii_digit() => {
                            let start = self.pos;
                            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                                self.pos += 1;
                            }
                            let text: String = self.chars[start..self.pos].iter().collect();
                            let i = text.parse::<usize>().map_err(|_| ExprError {
                                column: start + 1,
                                message: "this index is too large".into(),
                            })?;
                            segs.push(Segment::Index(i));
                        }
                        _ => {
                            return Err(self.error(
                                "expected an index (`[0]`) or a quoted key (`['a b']`) in `[`",
                            ));
                        }
                    }
                    self.skip_ws();
                    if self.peek() != Some(']') {
                        return Err(self.error("expected `]`"));
                    }
                    self.pos += 1;
                }
                _ => return Ok(Path(segs)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn holds(e: &str, doc: &Value) -> bool {
        Expr::parse(e)
            .unwrap_or_else(|err| panic!("{e}: {err}"))
            .holds(doc)
    }

    #[test]
    fn paths_read_the_document() {
        let doc = json!({"state": "COMPLETE", "items": [{"id": 7}], "a": {"b": true}, "x y": 1});
        assert!(holds("$.state == 'COMPLETE'", &doc));
        assert!(holds("$.items[0].id == 7", &doc));
        assert!(holds("$.a.b", &doc));
        assert!(holds("$['x y'] == 1.0", &doc));
        assert!(holds("$.missing == null", &doc));
        assert!(!holds("$.items[3].id", &doc));
        assert!(!holds("$.state.deeper", &doc));
        assert_eq!(
            Path::parse("$.items[0].id").unwrap().get(&doc),
            Some(&json!(7))
        );
        assert_eq!(Path::parse("$").unwrap().get(&doc), Some(&doc));
    }

    #[test]
    fn operators() {
        let doc = json!({"state": "FAILED", "n": 3, "tags": ["a", "b"]});
        assert!(holds("$.state in ['COMPLETE', \"FAILED\"]", &doc));
        assert!(!holds("$.state not in ['COMPLETE', 'FAILED']", &doc));
        assert!(holds("$.state != 'COMPLETE'", &doc));
        assert!(holds(
            "$.n > 2 and $.n <= 3 and $.n >= 3 and $.n < 3.5",
            &doc
        ));
        assert!(holds("$.n > 5 or 'b' in $.tags", &doc));
        assert!(holds("not ($.n > 5)", &doc));
        assert!(holds("not $.n > 5", &doc));
        assert!(holds("'AIL' in $.state", &doc));
        assert!(!holds("$.state < 3", &doc));
        assert!(holds("true and not false and not null", &doc));
        assert!(holds("-1 < 0 and 1e3 == 1000", &doc));
        // `and` binds tighter than `or`.
        assert!(holds("true or false and false", &doc));
        assert!(!holds("(true or false) and false", &doc));
    }

    #[test]
    fn errors_have_columns() {
        let e = Expr::parse("$.state == ").unwrap_err();
        assert_eq!(e.column, 12, "{e}");
        let e = Expr::parse("$.state in ['A', 'B'").unwrap_err();
        assert_eq!(e.column, 21, "{e}");
        let e = Expr::parse("$.state = 'A'").unwrap_err();
        assert_eq!(e.column, 9, "{e}");
        let e = Expr::parse("$.a == 'open").unwrap_err();
        assert_eq!(e.column, 8, "{e}");
        let e = Expr::parse("state == 1").unwrap_err();
        assert_eq!(e.column, 1, "{e}");
        assert!(Expr::parse("").is_err());
        assert!(Expr::parse("$.a not 'x'").is_err());
        assert!(Path::parse("$.a == 1").is_err());
        assert!(Path::parse("a").is_err());
        assert!(Expr::parse(&"(".repeat(1000)).is_err());
        assert!(Expr::parse(&"not ".repeat(1000)).is_err());
    }

    fn arb_expr() -> impl Strategy<Value = Expr> {
        let path = prop::collection::vec(
            prop_oneof![
                "[a-z_][a-z0-9_]{0,5}".prop_map(Segment::Key),
                ".{0,6}".prop_map(Segment::Key),
                (0usize..5).prop_map(Segment::Index),
            ],
            0..4,
        )
        .prop_map(|s| Expr::Path(Path(s)));
        let lit = prop_oneof![
            ".{0,8}".prop_map(|s| Expr::Literal(Value::String(s))),
            (-1000i64..1000).prop_map(|n| Expr::Literal(Value::from(n))),
            any::<bool>().prop_map(|b| Expr::Literal(Value::Bool(b))),
            Just(Expr::Literal(Value::Null)),
        ];
        let leaf = prop_oneof![path, lit];
        leaf.prop_recursive(4, 24, 4, |inner| {
            let op = prop_oneof![
                Just(CmpOp::Eq),
                Just(CmpOp::Ne),
                Just(CmpOp::Lt),
                Just(CmpOp::Le),
                Just(CmpOp::Gt),
                Just(CmpOp::Ge),
                Just(CmpOp::In),
                Just(CmpOp::NotIn),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Expr::List),
                inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
                (inner.clone(), op, inner).prop_map(|(a, o, b)| Expr::Cmp(
                    Box::new(a),
                    o,
                    Box::new(b)
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,64}") {
            if let Ok(e) = Expr::parse(&text) {
                let _ = e.holds(&json!({"a": [1, "x", {"b": null}]}));
            }
            let _ = Path::parse(&text);
        }

        #[test]
        fn never_panics_on_near_misses(text in "[$.\\[\\]()'\" a-z0-9=!<>,-]{0,40}") {
            if let Ok(e) = Expr::parse(&text) {
                let _ = e.holds(&json!({"a": {"b": 1}}));
            }
        }

        #[test]
        fn printed_expressions_parse_back(e in arb_expr()) {
            let text = e.to_string();
            let back = Expr::parse(&text);
            prop_assert_eq!(back.as_ref().ok(), Some(&e), "{} -> {:?}", text, back);
        }

        #[test]
        fn printed_paths_parse_back(segs in prop::collection::vec(
            prop_oneof![".{0,6}".prop_map(Segment::Key), (0usize..100).prop_map(Segment::Index)], 0..5)) {
            let p = Path(segs);
            prop_assert_eq!(Path::parse(&p.to_string()), Ok(p));
        }
    }
}
