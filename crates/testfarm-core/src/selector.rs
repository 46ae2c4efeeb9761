//! Label selectors, in the Kubernetes syntax lab people already know:
//!
//! ```text
//! arch=arm64                equality (also `==`)
//! arch!=x86_64              inequality (true when the key is absent)
//! team in (kernel, bsp)     set membership
//! team notin (web)          set exclusion (true when the key is absent)
//! gpu                       key exists
//! !gpu                      key does not exist
//! ```
//!
//! Requirements are joined by commas and all must hold. Errors carry the 1-based column
//! so a CLI or API user sees exactly where the selector went wrong.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::labels::{Labels, is_key_char, is_value_char, validate_key};

/// One condition on one label key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Requirement {
    Eq { key: String, value: String },
    NotEq { key: String, value: String },
    In { key: String, values: Vec<String> },
    NotIn { key: String, values: Vec<String> },
    Exists { key: String },
    NotExists { key: String },
}

impl Requirement {
    pub fn key(&self) -> &str {
        match self {
            Requirement::Eq { key, .. }
            | Requirement::NotEq { key, .. }
            | Requirement::In { key, .. }
            | Requirement::NotIn { key, .. }
            | Requirement::Exists { key }
            | Requirement::NotExists { key } => key,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let got = labels.get(self.key());
        match self {
            Requirement::Eq { value, .. } => got == Some(value.as_str()),
            Requirement::NotEq { value, .. } => got != Some(value.as_str()),
            Requirement::In { values, .. } => got.is_some_and(|g| values.iter().any(|v| v == g)),
            Requirement::NotIn { values, .. } => {
                !got.is_some_and(|g| values.iter().any(|v| v == g))
            }
            Requirement::Exists { .. } => got.is_some(),
            Requirement::NotExists { .. } => got.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Eq { key, value } => write!(f, "{key}={value}"),
            Requirement::NotEq { key, value } => write!(f, "{key}!={value}"),
            Requirement::In { key, values } => write!(f, "{key} in ({})", values.join(",")),
            Requirement::NotIn { key, values } => write!(f, "{key} notin ({})", values.join(",")),
            Requirement::Exists { key } => write!(f, "{key}"),
            Requirement::NotExists { key } => write!(f, "!{key}"),
        }
    }
}

/// A conjunction of requirements. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

/// A selector that could not be parsed, with the 1-based column of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at column {column}: {message}")]
pub struct SelectorError {
    pub column: usize,
    pub message: String,
}

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// A selector requiring every label of `labels` to be equal (`{arch: arm64}` in specs).
    pub fn from_equalities(labels: &Labels) -> Self {
        Selector {
            requirements: labels
                .0
                .iter()
                .map(|(k, v)| Requirement::Eq {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        }
    }

    /// The requirements of both selectors.
    pub fn and(mut self, other: &Selector) -> Selector {
        self.requirements.extend(other.requirements.iter().cloned());
        self
    }

    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Lexer { s: input, pos: 0 }.selector()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn err(&self, message: impl Into<String>) -> SelectorError {
        SelectorError {
            column: self.s[..self.pos].chars().count() + 1,
            message: message.into(),
        }
    }

    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.s.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn word(&mut self, allowed: fn(char) -> bool) -> &str {
        self.skip_ws();
        let start = self.pos;
        let len: usize = self
            .rest()
            .chars()
            .take_while(|c| allowed(*c))
            .map(char::len_utf8)
            .sum();
        self.pos += len;
        &self.s[start..self.pos]
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        let at = {
            self.skip_ws();
            self.pos
        };
        let key = self.word(is_key_char).to_string();
        if key.is_empty() {
            return Err(self.err("expected a label key"));
        }
        validate_key(&key).map_err(|e| {
            let mut err = self.err(e.to_string());
            err.column = self.s[..at].chars().count() + 1;
            err
        })?;
        Ok(key)
    }

    fn value(&mut self) -> String {
        self.word(is_value_char).to_string()
    }

    /// A keyword (`in`, `notin`) must be followed by a non-key character.
    fn keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let rest = self.rest();
        if rest.starts_with(kw) && !rest[kw.len()..].starts_with(is_key_char) {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        if !self.eat("(") {
            return Err(self.err("expected '(' to open the set of values"));
        }
        let mut values = Vec::new();
        loop {
            let v = self.value();
            if v.is_empty() {
                return Err(self.err("expected a value in the set"));
            }
            values.push(v);
            if self.eat(",") {
                continue;
            }
            if self.eat(")") {
                return Ok(values);
            }
            return Err(self.err("expected ',' or ')' in the set of values"));
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.eat("!") {
            return Ok(Requirement::NotExists { key: self.key()? });
        }
        let key = self.key()?;
        if self.eat("!=") {
            return Ok(Requirement::NotEq {
                key,
                value: self.value(),
            });
        }
        if self.eat("==") || self.eat("=") {
            return Ok(Requirement::Eq {
                key,
                value: self.value(),
            });
        }
        if self.keyword("notin") {
            return Ok(Requirement::NotIn {
                key,
                values: self.set()?,
            });
        }
        if self.keyword("in") {
            return Ok(Requirement::In {
                key,
                values: self.set()?,
            });
        }
        Ok(Requirement::Exists { key })
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        self.skip_ws();
        if self.rest().is_empty() {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            self.skip_ws();
            if self.rest().is_empty() {
                return Ok(Selector { requirements });
            }
            if !self.eat(",") {
                return Err(self
                    .err("expected ',' between requirements, or an operator (=, !=, in, notin)"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_form() {
        let s =
            Selector::parse("arch=arm64, team in (a, b),x notin (c),gpu,!broken,os!=win").unwrap();
        assert_eq!(s.requirements.len(), 6);
        assert_eq!(
            s.to_string(),
            "arch=arm64,team in (a,b),x notin (c),gpu,!broken,os!=win"
        );
        let l = labels(&[("arch", "arm64"), ("team", "b"), ("gpu", "")]);
        assert!(s.matches(&l));
        assert!(!s.matches(&labels(&[("arch", "arm64"), ("team", "z"), ("gpu", "")])));
        assert!(!s.matches(&labels(&[
            ("arch", "arm64"),
            ("team", "a"),
            ("gpu", ""),
            ("broken", "1")
        ])));
    }

    #[test]
    fn empty_matches_all() {
        assert!(Selector::parse("  ").unwrap().matches(&Labels::new()));
    }

    #[test]
    fn keys_named_like_keywords() {
        let s = Selector::parse("inventory=1,index in (2)").unwrap();
        assert_eq!(s.requirements[0].key(), "inventory");
        assert_eq!(s.requirements[1].key(), "index");
    }

    #[test]
    fn errors_have_columns() {
        let e = Selector::parse("arch=arm64,team in a").unwrap_err();
        assert_eq!(e.column, 20, "{e}");
        let e = Selector::parse("arch=arm64,,x").unwrap_err();
        assert_eq!(e.column, 12, "{e}");
        let e = Selector::parse("arch arm64").unwrap_err();
        assert!(e.message.contains("expected ','"), "{e}");
        let e = Selector::parse("team in (a,").unwrap_err();
        assert!(e.message.contains("value"), "{e}");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = Selector::parse(&s);
        }

        #[test]
        fn display_round_trips(s in "[a-z]{1,5}(=[a-z0-9]{0,3}| in \\([a-z]{1,3}(,[a-z]{1,3}){0,2}\\)|)(,!?[a-z]{1,5}){0,3}") {
            if let Ok(sel) = Selector::parse(&s) {
                prop_assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel);
            }
        }
    }
}
