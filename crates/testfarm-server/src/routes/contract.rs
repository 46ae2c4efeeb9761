//! The OpenAPI document is the API's contract: a client generated from it, or a fuzzer
//! that trusts it, must never meet an answer it does not describe, nor be refused a
//! request it calls valid for its shape.
//!
//! utoipa generates the document from the routes' annotations; this module completes it
//! in one place rather than on every handler:
//! - every operation lists the error statuses the shared machinery can answer (401 for a
//!   missing token, 400 for a malformed query, path or JSON body, 404 for a path naming
//!   nothing, 413/415/422 for bodies), each as a [`Problem`] under
//!   `application/problem+json`; handlers declare only their own (403, 409, 503);
//! - the shapes the validators enforce are stated as schema rules (patterns, lengths,
//!   enums, bounds), taken from `testfarm_core::patterns` and the core enums, so the
//!   document and the validators cannot drift apart.
//!
//! [`Problem`]: testfarm_api::Problem

use serde_json::{Value, json};
use testfarm_api::page::MAX_LIMIT;
use testfarm_api::problem::PROBLEM_CONTENT_TYPE;
use testfarm_core::job::JobState;
use testfarm_core::lease::LeaseState;
use testfarm_core::patterns;
use testfarm_core::resource::{ResourceKind, ResourceState};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Routes that answer without a token.
const OPEN: [&str; 2] = ["/healthz", "/readyz"];

/// Completes the generated document (see the module doc).
pub fn complete(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            for method in METHODS {
                if let Some(op) = item.get_mut(method) {
                    complete_operation(path, op);
                }
            }
        }
    }
    unsigned_formats(doc);
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (schema, property, rule) in schema_rules() {
            let target = match property {
                Some(p) => find_property(schemas.get_mut(schema), p),
                None => schemas.get_mut(schema),
            };
            if let (Some(Value::Object(target)), Value::Object(rule)) = (target, rule) {
                for (k, v) in rule {
                    // A null in a rule removes what utoipa wrote there.
                    if v.is_null() {
                        target.remove(&k);
                    } else {
                        target.insert(k, v);
                    }
                }
            }
        }
    }
}

fn complete_operation(path: &str, op: &mut Value) {
    let params: Vec<(String, String)> = op
        .get("parameters")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some((
                        p["in"].as_str()?.to_string(),
                        p["name"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let has_query = params.iter().any(|(at, _)| at == "query");
    let has_path = params.iter().any(|(at, _)| at == "path");
    let body_types: Vec<String> = op
        .pointer("/requestBody/content")
        .and_then(Value::as_object)
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default();
    let json_body = body_types.iter().any(|t| t == "application/json");
    let open = OPEN.contains(&path);

    let mut statuses: Vec<(u16, &str)> = Vec::new();
    if !open {
        statuses.push((401, "Missing, malformed, invalid or revoked bearer token."));
    }
    if has_query || has_path || json_body {
        statuses.push((
            400,
            "Malformed request: a query parameter or path segment that does not parse, or \
             JSON that is not well formed. `field` names the part at fault.",
        ));
    }
    if has_path {
        statuses.push((404, "Nothing by that name or id."));
    }
    if !body_types.is_empty() {
        statuses.push((413, "The body is larger than the server accepts."));
    }
    if json_body {
        statuses.push((415, "The body is not `application/json`."));
    }
    if json_body || has_query {
        statuses.push((
            422,
            "A value is well formed but invalid (a job spec that does not validate, a \
             duration of zero, an unknown kind). `field` names it, with line and column \
             for job specs.",
        ));
    }
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    for (code, description) in statuses {
        responses
            .entry(code.to_string())
            .or_insert_with(|| json!({ "description": description }));
    }
    for (code, response) in responses.iter_mut() {
        if (code.starts_with('4') || code.starts_with('5'))
            && let Some(r) = response.as_object_mut()
        {
            r.insert(
                "content".into(),
                json!({ PROBLEM_CONTENT_TYPE: {
                    "schema": { "$ref": "#/components/schemas/Problem" }
                }}),
            );
            if r.get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                r.insert("description".into(), json!(standard_description(code)));
            }
        }
    }
    if open {
        op["security"] = json!([]);
    }
    // Query and path parameters with the rules their parsers enforce.
    if let Some(ps) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in ps {
            let at = p["in"].as_str().unwrap_or("").to_string();
            let name = p["name"].as_str().unwrap_or("").to_string();
            if let Some(Value::Object(rule)) = parameter_rule(path, &at, &name)
                && let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut)
            {
                schema.extend(rule);
            }
            if required_parameter(path, &at, &name) {
                p["required"] = json!(true);
            }
        }
    }
}

fn standard_description(code: &str) -> &'static str {
    match code {
        "403" => "The token's role may not do this.",
        "404" => "Nothing by that name or id.",
        "409" => "Conflicts with the current state (taken, stale epoch, duplicate).",
        "503" => "Not ready.",
        _ => "Refused; the problem details say why.",
    }
}

fn enum_of<T: ToString>(values: impl IntoIterator<Item = T>) -> Value {
    Value::Array(values.into_iter().map(|v| json!(v.to_string())).collect())
}

fn pattern(p: &str) -> Value {
    json!({ "pattern": p })
}

/// A comma-separated list of job states (empty parts are skipped).
fn job_states_pattern() -> String {
    let names: Vec<String> = JobState::ALL
        .iter()
        .map(ToString::to_string)
        .chain(["active".to_string(), "ended".to_string()])
        .collect();
    let ws = format!("{}*", patterns::WS);
    let one = format!("{ws}(?:{})?{ws}", names.join("|"));
    format!("^{one}(?:,{one})*$")
}

fn parameter_rule(path: &str, at: &str, name: &str) -> Option<Value> {
    use testfarm_core::artifact::{ArtifactKind, patterns as art};
    let kinds = || json!({ "enum": enum_of(ArtifactKind::ALL.iter().map(|k| k.as_str())) });
    let artifacts = path.starts_with("/api/v1/artifacts") || path.starts_with("/api/v1/builds");
    if artifacts {
        let rule = match (at, name) {
            ("path", "id") => Some(pattern(patterns::ULID)),
            ("path", "sha256") | ("query", "sha256") => Some(pattern(art::SHA256)),
            ("path", "tag") => Some(pattern(art::TAG)),
            ("path", "name") => Some(pattern(art::ARTIFACT_NAME)),
            ("query", "build") => Some(pattern(patterns::ULID)),
            // `commit`, `branch`, `arch` and `tag` filters take any text (they match or not).
            ("query", "kind") => Some(kinds()),
            ("query", "cursor") => Some(pattern(&format!(
                "{}/.*$",
                patterns::ULID.trim_end_matches('$')
            ))),
            _ => None,
        };
        if rule.is_some() {
            return rule;
        }
    }
    if path.starts_with("/api/v1/boards/") {
        match (at, name) {
            ("query", "cursor") => return Some(pattern("^[0-9]{1,18}$")),
            ("query", "kind") => {
                return Some(
                    json!({ "enum": ["power", "flash", "deploy", "recovery", "health", "quarantine"] }),
                );
            }
            _ => {}
        }
    }
    Some(match (at, name) {
        ("query", "limit") => json!({ "minimum": 1, "maximum": MAX_LIMIT }),
        ("query", "selector") => pattern(patterns::SELECTOR),
        ("query", "kind") if path == "/api/v1/resources" => {
            json!({ "enum": enum_of(ResourceKind::ALL) })
        }
        ("query", "state") if path == "/api/v1/resources" || path == "/api/v1/boards" => {
            json!({ "enum": enum_of(ResourceState::ALL) })
        }
        ("query", "state") if path == "/api/v1/leases" => json!({
            "enum": enum_of(LeaseState::ALL.iter().map(ToString::to_string).chain(["all".to_string()]))
        }),
        ("query", "state") if path == "/api/v1/jobs" => pattern(&job_states_pattern()),
        ("query", "name") if path == "/api/v1/pipelines/history" => json!({ "minLength": 1 }),
        ("query", "state") if path == "/api/v1/pipelines" => json!({
            "enum": enum_of(testfarm_core::pipeline::PipelineState::ALL.iter().map(|s| s.as_str()))
        }),
        ("path", "name") if path.contains("/outputs/") => pattern(patterns::OUTPUT_NAME),
        ("query", "cursor") => pattern(patterns::ULID),
        _ => return None,
    })
}

/// Parameters optional in their Rust type but refused when missing.
fn required_parameter(path: &str, at: &str, name: &str) -> bool {
    at == "query"
        && matches!(
            (path, name),
            ("/api/v1/artifacts/latest", "branch" | "kind")
                | ("/api/v1/pipelines/history", "name")
                | ("/api/v1/builds/{id}/artifacts/{name}", "kind")
        )
}

/// The schema rules: (component, property or `None` for the component itself, rule).
fn schema_rules() -> Vec<(&'static str, Option<&'static str>, Value)> {
    let name = json!({ "pattern": patterns::NAME, "minLength": 1, "maxLength": 63 });
    let duration = pattern(patterns::DURATION);
    let selector = pattern(patterns::SELECTOR);
    vec![
        ("CreateResource", Some("name"), name.clone()),
        ("AgentResource", Some("name"), name.clone()),
        ("SubmitJob", Some("priority"), pattern(patterns::PRIORITY)),
        (
            "SubmitPipeline",
            Some("priority"),
            pattern(patterns::PRIORITY),
        ),
        (
            "Priority",
            None,
            json!({
                "type": null,
                "format": null,
                "minimum": null,
                "anyOf": [
                    { "type": "integer", "minimum": 0, "maximum": testfarm_core::Priority::MAX.value() },
                    { "type": "string", "pattern": patterns::PRIORITY },
                ],
            }),
        ),
        // Its rule's fields are flattened in beside name and priority; nothing else.
        ("Policy", None, json!({ "unevaluatedProperties": false })),
        ("CreateToken", Some("name"), name.clone()),
        ("CreateGroup", Some("name"), name.clone()),
        ("CreateGroup", Some("selector"), selector.clone()),
        ("Policy", Some("name"), name),
        ("AcquireLease", Some("selector"), selector),
        ("AcquireLease", Some("duration"), duration.clone()),
        ("AcquireLease", Some("wait"), duration.clone()),
        ("AcquireLease", Some("heartbeat_ttl"), duration.clone()),
        ("RenewLease", Some("extend"), duration),
        (
            "Labels",
            None,
            json!({
                "propertyNames": { "type": "string", "pattern": patterns::LABEL_KEY },
                "additionalProperties": { "type": "string", "pattern": patterns::LABEL_VALUE },
            }),
        ),
        (
            "UpdateLabels",
            Some("remove"),
            json!({ "items": { "type": "string", "pattern": patterns::LABEL_KEY } }),
        ),
    ]
}

/// The property `name` of an object schema, also inside `allOf` parts.
fn find_property<'a>(schema: Option<&'a mut Value>, name: &str) -> Option<&'a mut Value> {
    let schema = schema?;
    if schema.pointer(&format!("/properties/{name}")).is_some() {
        return schema.pointer_mut(&format!("/properties/{name}"));
    }
    schema
        .get_mut("allOf")?
        .as_array_mut()?
        .iter_mut()
        .find(|part| part.pointer(&format!("/properties/{name}")).is_some())?
        .pointer_mut(&format!("/properties/{name}"))
}

/// utoipa writes Rust's `u64` as `format: int64, minimum: 0`, which bounds it at
/// `i64::MAX` for a client while the server takes up to `u64::MAX`; say `uint64` (and
/// `uint32`) with the real maximum instead, everywhere in the document.
fn unsigned_formats(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let integer = match map.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            let unsigned = integer && map.get("minimum").and_then(Value::as_u64) == Some(0);
            if unsigned {
                let max = match map.get("format").and_then(Value::as_str) {
                    Some("int64") => Some(("uint64", json!(u64::MAX))),
                    Some("int32") => Some(("uint32", json!(u32::MAX))),
                    _ => None,
                };
                if let Some((format, max)) = max {
                    map.insert("format".into(), json!(format));
                    map.entry("maximum").or_insert(max);
                }
            }
            map.values_mut().for_each(unsigned_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_formats),
        _ => {}
    }
}

/// Checks a request body against its component schema in the completed document, so the
/// server refuses exactly what the document calls invalid (serde alone would take an
/// array for an object, or an empty label key to remove). Validators are compiled on
/// first use and kept. Returns the field at fault (`resources[0].name`) and why.
pub fn check_body(schema: &str, body: &Value) -> Result<(), (String, String)> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static VALIDATORS: OnceLock<Mutex<HashMap<String, Option<Arc<jsonschema::Validator>>>>> =
        OnceLock::new();
    let cache = VALIDATORS.get_or_init(Default::default);
    let validator = {
        let mut map = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(schema.to_string())
            .or_insert_with(|| compile(schema).map(Arc::new))
            .clone()
    };
    // A type without a component schema (a bare map, say) is checked by serde alone.
    let Some(validator) = validator else {
        return Ok(());
    };
    match validator.iter_errors(body).next() {
        None => Ok(()),
        Some(e) => {
            let mut field = field_of(e.instance_path().as_str());
            // A bad key is named by the key itself (`labels.bad key`), not by its map.
            if let jsonschema::error::ValidationErrorKind::PropertyNames { error } = e.kind()
                && let Some(key) = error.instance().as_str()
            {
                field = if field == "body" {
                    key.to_string()
                } else {
                    format!("{field}.{key}")
                };
            }
            Err((field, e.to_string()))
        }
    }
}

fn compile(schema: &str) -> Option<jsonschema::Validator> {
    let doc = super::openapi_document();
    let components = doc.get("components")?;
    components.pointer(&format!("/schemas/{schema}"))?;
    let root = json!({
        "$ref": format!("#/components/schemas/{schema}"),
        "components": components,
    });
    match jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
    {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(schema, error = %e, "cannot compile a request schema");
            None
        }
    }
}

/// `/resources/0/name` → `resources[0].name`, as serde_path_to_error names fields.
fn field_of(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() { "body".into() } else { out }
}
