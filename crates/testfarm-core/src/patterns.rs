//! The shapes the API accepts, as regular expressions for its OpenAPI document, so that a
//! value the document calls valid is one the validators accept, and the other way round.
//!
//! Each pattern is the exact language of its validator ([`crate::resource::validate_name`],
//! [`crate::labels::validate_key`], [`crate::duration::parse`], [`crate::Selector::parse`]);
//! the tests below check both directions. They are written in the common subset of
//! ECMA-262 (what JSON Schema means by `pattern`), Python's `re` (what API fuzzers generate
//! from) and the `regex` crate (what the tests check with).

/// Whitespace as Rust's `char::is_whitespace` (and so `str::trim`) sees it.
macro_rules! ws {
    () => {
        r"[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    };
}

macro_rules! key {
    () => {
        r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}"
    };
}

macro_rules! value_chars {
    () => {
        r"[A-Za-z0-9._/:+-]"
    };
}

/// One whitespace character as `str::trim` sees it, for patterns built elsewhere.
pub const WS: &str = ws!();

/// Resource, group, token and policy names.
pub const NAME: &str = r"^[a-z0-9][a-z0-9._-]{0,62}$";

/// A priority written as text: a class name or a number up to [`crate::Priority::MAX`].
pub const PRIORITY: &str = concat!(
    "^",
    ws!(),
    r"*(?:low|normal|high|urgent|\+?0*(?:1000|[0-9]{1,3}))",
    ws!(),
    "*$"
);

/// Ids the server hands out (ULIDs, as lists' `next_cursor`), in either case.
pub const ULID: &str = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$";

/// Names of files a job keeps (`upload:` outputs): no path, no leading dot.
pub const OUTPUT_NAME: &str = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$";

/// Whether `name` may name a job's output file ([`OUTPUT_NAME`]).
pub fn is_output_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Label keys.
pub const LABEL_KEY: &str = concat!("^", key!(), "$");

/// Label values (empty allowed: `flag=`).
pub const LABEL_VALUE: &str = concat!("^", value_chars!(), "{0,63}$");

/// Durations: `90s`, `30m`, `1h30m`, `500ms`, `2d`; each number at most nine digits.
pub const DURATION: &str = concat!("^", ws!(), "*(?:[0-9]{1,9}(?:ms|s|m|h|d))+", ws!(), "*$");

/// One requirement with the whitespace after it, and before its operator and values.
macro_rules! selector_requirement {
    () => {
        concat!(
            "(?:!",
            ws!(),
            "*",
            key!(),
            "|",
            key!(),
            ws!(),
            "*(?:!=|==|=)",
            ws!(),
            "*",
            value_chars!(),
            "*",
            "|",
            key!(),
            // At least one space: `in` right after a key would be read as part of it.
            ws!(),
            "+(?:in|notin)",
            ws!(),
            "*\\(",
            ws!(),
            "*",
            value_chars!(),
            "+(?:",
            ws!(),
            "*,",
            ws!(),
            "*",
            value_chars!(),
            "+)*",
            ws!(),
            "*\\)",
            "|",
            key!(),
            ")",
            ws!(),
            "*"
        )
    };
}

/// Label selectors (`arch=arm64,team in (a, b),!gpu`); empty selects everything.
pub const SELECTOR: &str = concat!(
    "^",
    ws!(),
    "*(?:",
    selector_requirement!(),
    "(?:,",
    ws!(),
    "*",
    selector_requirement!(),
    ")*)?$"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn re(p: &str) -> regex::Regex {
        regex::Regex::new(p).unwrap()
    }

    /// Strings the pattern matches (proptest generates from the pattern without anchors).
    fn from(p: &str) -> impl Strategy<Value = String> {
        let inner = p
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .unwrap();
        proptest::string::string_regex(inner).unwrap()
    }

    fn name_ok(s: &str) -> bool {
        crate::resource::validate_name(s).is_ok()
    }
    fn key_ok(s: &str) -> bool {
        crate::labels::validate_key(s).is_ok()
    }
    fn value_ok(s: &str) -> bool {
        crate::labels::validate_value("k", s).is_ok()
    }
    fn duration_ok(s: &str) -> bool {
        crate::duration::parse(s).is_ok()
    }
    fn selector_ok(s: &str) -> bool {
        crate::Selector::parse(s).is_ok()
    }

    /// Strings over an alphabet that reaches every branch of the validators.
    fn near(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
        let chars: Vec<char> = alphabet.chars().collect();
        proptest::collection::vec(proptest::sample::select(chars), 0..max)
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn what_the_pattern_generates_the_validator_accepts(
            name in from(NAME),
            priority in from(PRIORITY),
            ulid in from(ULID),
            output in from(OUTPUT_NAME),
            key in from(LABEL_KEY),
            value in from(LABEL_VALUE),
            duration in from(DURATION),
            selector in from(SELECTOR),
        ) {
            prop_assert!(name_ok(&name), "{name:?}");
            prop_assert!(priority.parse::<crate::Priority>().is_ok(), "{priority:?}");
            prop_assert!(ulid::Ulid::from_string(&ulid).is_ok(), "{ulid:?}");
            prop_assert!(is_output_name(&output), "{output:?}");
            prop_assert!(key_ok(&key), "{key:?}");
            prop_assert!(value_ok(&value), "{value:?}");
            prop_assert!(duration_ok(&duration), "{duration:?}");
            prop_assert!(selector_ok(&selector), "{selector:?}");
        }

        #[test]
        fn names_and_labels_agree(s in near("aZ09._-/:+ é", 70)) {
            prop_assert_eq!(re(NAME).is_match(&s), name_ok(&s), "{:?}", s);
            prop_assert_eq!(re(OUTPUT_NAME).is_match(&s), is_output_name(&s), "{:?}", s);
            prop_assert_eq!(re(LABEL_KEY).is_match(&s), key_ok(&s), "{:?}", s);
            prop_assert_eq!(re(LABEL_VALUE).is_match(&s), value_ok(&s), "{:?}", s);
        }

        #[test]
        fn priorities_agree(s in near("lownrmahigt0123+ \t", 8)) {
            let ok = s.parse::<crate::Priority>().is_ok();
            prop_assert_eq!(re(PRIORITY).is_match(&s), ok, "{:?}", s);
        }

        #[test]
        fn durations_agree(s in near("0159mshd \t", 14)) {
            prop_assert_eq!(re(DURATION).is_match(&s), duration_ok(&s), "{:?}", s);
        }

        #[test]
        fn selectors_agree(s in near("ab1=!,() \tinotz/:", 24)) {
            prop_assert_eq!(re(SELECTOR).is_match(&s), selector_ok(&s), "{:?}", s);
        }
    }

    #[test]
    fn examples() {
        for s in [
            "arch=arm64",
            "team in (a, b),!gpu",
            "",
            "  ",
            "a!=",
            "x notin(y)",
            "k",
        ] {
            assert!(re(SELECTOR).is_match(s), "{s:?}");
            assert!(selector_ok(s), "{s:?}");
        }
        for s in ["a in", "a,", ",a", "a=b c", "a in ()"] {
            assert!(!re(SELECTOR).is_match(s), "{s:?}");
            assert!(!selector_ok(s), "{s:?}");
        }
        for s in ["90s", "1h30m", " 5m ", "500ms"] {
            assert!(re(DURATION).is_match(s) && duration_ok(s), "{s:?}");
        }
        for s in ["", "5", "m", "1000000000s", "5 m"] {
            assert!(!re(DURATION).is_match(s) && !duration_ok(s), "{s:?}");
        }
    }
}
