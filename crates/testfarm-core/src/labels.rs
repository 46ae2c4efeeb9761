//! Labels: free key/value tags on a resource (`arch=arm64`, `team=kernel`).
//!
//! Keys and values share one restricted alphabet so selectors stay unambiguous when typed
//! on a command line (`team in (a,b)` must not be confused with a value containing `,`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest key or value accepted; labels are tags, not documents.
pub const MAX_LEN: usize = 63;

/// An ordered map of labels. Ordered so that listings and events are stable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Labels(pub BTreeMap<String, String>);

/// Why a label was refused, naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error(
        "label key {0:?} is invalid: use 1-63 characters from a-z A-Z 0-9 . _ - / starting with a letter or digit"
    )]
    BadKey(String),
    #[error(
        "label {key:?} has an invalid value {value:?}: use up to 63 characters from a-z A-Z 0-9 . _ - / : +"
    )]
    BadValue { key: String, value: String },
    #[error("label {0:?} must be written key=value")]
    MissingEquals(String),
}

impl LabelError {
    /// The label key at fault, for problem+json's field pointer.
    pub fn key(&self) -> &str {
        match self {
            LabelError::BadKey(k) | LabelError::MissingEquals(k) => k,
            LabelError::BadValue { key, .. } => key,
        }
    }
}

pub(crate) fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

pub(crate) fn is_value_char(c: char) -> bool {
    is_key_char(c) || matches!(c, ':' | '+')
}

/// Checks a key against the label alphabet.
pub fn validate_key(key: &str) -> Result<(), LabelError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_LEN
        && key.starts_with(|c: char| c.is_ascii_alphanumeric())
        && key.chars().all(is_key_char);
    if ok {
        Ok(())
    } else {
        Err(LabelError::BadKey(key.to_string()))
    }
}

/// Checks a value against the label alphabet (empty values are allowed: `flag=`).
pub fn validate_value(key: &str, value: &str) -> Result<(), LabelError> {
    if value.len() <= MAX_LEN && value.chars().all(is_value_char) {
        Ok(())
    } else {
        Err(LabelError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates every key and value.
    pub fn validate(&self) -> Result<(), LabelError> {
        for (k, v) in &self.0 {
            validate_key(k)?;
            validate_value(k, v)?;
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// Parses `k=v` pairs as typed on a command line (`--label arch=arm64`).
    pub fn parse_pair(pair: &str) -> Result<(String, String), LabelError> {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| LabelError::MissingEquals(pair.to_string()))?;
        let (k, v) = (k.trim(), v.trim());
        validate_key(k)?;
        validate_value(k, v)?;
        Ok((k.to_string(), v.to_string()))
    }

    /// Applies a label update: `set` wins over existing keys, `remove` deletes keys.
    pub fn apply(&mut self, set: &Labels, remove: &[String]) {
        for k in remove {
            self.0.remove(k);
        }
        for (k, v) in &set.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        Labels(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_validate() {
        assert_eq!(
            Labels::parse_pair("arch=arm64").unwrap(),
            ("arch".into(), "arm64".into())
        );
        assert_eq!(
            Labels::parse_pair("flag=").unwrap(),
            ("flag".into(), String::new())
        );
        assert!(matches!(
            Labels::parse_pair("arch"),
            Err(LabelError::MissingEquals(_))
        ));
        assert!(matches!(
            Labels::parse_pair("-x=1"),
            Err(LabelError::BadKey(_))
        ));
        assert!(matches!(
            Labels::parse_pair("a=b c"),
            Err(LabelError::BadValue { .. })
        ));
    }

    #[test]
    fn apply_sets_and_removes() {
        let mut l: Labels = [("a".to_string(), "1".to_string())].into_iter().collect();
        let set: Labels = [("b".to_string(), "2".to_string())].into_iter().collect();
        l.apply(&set, &["a".to_string()]);
        assert_eq!(l.to_string(), "b=2");
    }
}
