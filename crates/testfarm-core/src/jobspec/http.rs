//! The workflow steps the server can run itself: `http`, `wait_for` (and the checks of
//! their expressions and JSON paths at submit).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{HumanDuration, Step};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

/// An HTTP request; `save` copies JSONPath results into variables for later steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStep {
    #[serde(default)]
    pub method: HttpMethod,
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Accepted statuses; empty means any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub save: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// Polls a request until a condition holds; `timeout` is required so every wait ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitForStep {
    pub http: HttpStep,
    pub until: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    pub timeout: HumanDuration,
}

/// The expressions and paths of an http/wait_for/fail_if step, checked at submit. Returns
/// the field below the step (`.until`) and the message (with the expression's column).
pub(super) fn check_workflow_step(step: &Step) -> Result<(), (String, String)> {
    use crate::expr::Expr;
    let check_http = |h: &HttpStep, prefix: &str| -> Result<(), (String, String)> {
        for (name, path) in &h.save {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err((
                    format!("{prefix}.save.{name}"),
                    format!("saved value name {name:?} is invalid: use letters, digits and _"),
                ));
            }
            if matches!(name.as_str(), "vars" | "secrets") {
                return Err((
                    format!("{prefix}.save.{name}"),
                    format!("`{name}` is reserved for the job's {name}; choose another name"),
                ));
            }
            serde_json_path::JsonPath::parse(path).map_err(|e| {
                (
                    format!("{prefix}.save.{name}"),
                    format!("JSON path {path:?}: {e}"),
                )
            })?;
        }
        if h.json.is_some() && h.body.is_some() {
            return Err((
                format!("{prefix}.body"),
                "give either `json` or `body`, not both".into(),
            ));
        }
        if let Some(s) = h.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
            return Err((
                format!("{prefix}.expect_status"),
                format!("{s} is not an HTTP status (100-599)"),
            ));
        }
        Ok(())
    };
    match step {
        Step::Http(h) => check_http(h, ""),
        Step::WaitFor(w) => {
            check_http(&w.http, ".http")?;
            Expr::parse(&w.until)
                .map_err(|e| (".until".into(), format!("{e} in {:?}", w.until)))?;
            if w.interval.is_some_and(|i| i.get().is_zero()) {
                return Err((
                    ".interval".into(),
                    "the interval must be more than zero".into(),
                ));
            }
            Ok(())
        }
        Step::FailIf(e) => Expr::parse(e)
            .map(|_| ())
            .map_err(|err| (String::new(), format!("{err} in {e:?}"))),
        _ => Ok(()),
    }
}
