//! YAML diagnostic blocks, parsed with serde-saphyr into a generic `serde_json::Value`.
//!
//! serde-saphyr is maintained, pure Rust, and enforces a parse budget (alias bombs, deep
//! nesting), which matters here: the YAML comes from the program under test and must never
//! make the harness hang or blow up. JSON values are the generic form because every report
//! writer (JSON, JUnit) consumes them, and YAML's non-string keys are rare in diagnostics.

use thiserror::Error;

/// Why a YAML block was not accepted as diagnostics (the parser then keeps its lines as
/// unknown, non-TAP output, as node's tap-parser does).
#[derive(Debug, Error)]
pub enum YamlError {
    #[error("invalid YAML diagnostics: {0}")]
    Invalid(String),
}

/// Parses the text of a block (the lines between `---` and `...`, block indentation
/// already removed). An empty or `null` block is `Ok(None)`: node attaches nothing then.
pub fn parse(text: &str) -> Result<Option<serde_json::Value>, YamlError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| YamlError::Invalid(e.to_string()))?;
    Ok((!value.is_null()).then_some(value))
}

/// node's rule for `duration_ms`: a numeric top-level `duration_ms` in the diagnostics is the
/// test point's time (unless `# time=` already gave one) and leaves the diagnostics.
pub fn take_duration(value: &mut serde_json::Value, time_ms: &mut Option<f64>) {
    if time_ms.is_some() {
        return;
    }
    if let Some(map) = value.as_object_mut()
        && let Some(ms) = map.get("duration_ms").and_then(serde_json::Value::as_f64)
    {
        *time_ms = Some(ms);
        map.remove("duration_ms");
    }
}

/// Renders diagnostics back to YAML text for humans (JUnit `system-out`, the summary).
/// Falls back to pretty JSON, which is valid YAML too, if the serializer refuses.
pub fn render(value: &serde_json::Value) -> String {
    match serde_saphyr::to_string(value) {
        Ok(s) => s,
        Err(_) => serde_json::to_string_pretty(value).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_maps_lists_scalars() {
        let v = parse("got: 1\nexpected: 2\nat:\n  - a\n  - b\nmsg: |\n  line1\n  line2\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            v,
            json!({"got": 1, "expected": 2, "at": ["a", "b"], "msg": "line1\nline2\n"})
        );
    }

    #[test]
    fn empty_is_none_and_garbage_is_error() {
        assert!(parse("   \n").unwrap().is_none());
        assert!(parse("~\n").unwrap().is_none());
        assert!(parse("a: [unclosed\n").is_err());
        assert!(parse("a: 1\n a: 2\n  - x\n").is_err());
    }

    #[test]
    fn renders() {
        let s = render(&json!({"a": 1}));
        assert!(s.contains("a: 1"), "{s}");
    }
}
