//! Templates in server-side steps (minijinja, strict undefined, a fuel limit) and the
//! masking of secrets in what the runner writes.
//!
//! The scope a template sees: `vars` (the spec's `vars` with `--var` applied), `secrets`
//! (the server's `[secrets]`) and every value saved so far by name (`{{ event_id }}`).
//! Every name is checked at submit ([`check_spec`]): a secret that is not configured, a
//! variable the spec does not set, or a name no step saves is a 422 naming the field.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;
use testfarm_core::jobspec::{HttpStep, JobSpec, Step};

/// Most instructions one template may run (a loop cannot hang a step).
const FUEL: u64 = 50_000;

/// What the runner's templates see.
pub struct Scope {
    pub vars: BTreeMap<String, Value>,
    pub secrets: BTreeMap<String, String>,
    pub saved: BTreeMap<String, Value>,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env
}

impl Scope {
    fn context(&self) -> minijinja::Value {
        let mut map: BTreeMap<String, minijinja::Value> = self
            .saved
            .iter()
            .map(|(k, v)| (k.clone(), minijinja::Value::from_serialize(v)))
            .collect();
        map.insert("vars".into(), minijinja::Value::from_serialize(&self.vars));
        map.insert(
            "secrets".into(),
            minijinja::Value::from_serialize(&self.secrets),
        );
        minijinja::Value::from_serialize(&map)
    }

    /// Renders one string.
    pub fn render(&self, text: &str) -> Result<String, String> {
        if !text.contains("{{") && !text.contains("{%") && !text.contains("{#") {
            return Ok(text.to_string());
        }
        environment()
            .render_str(text, self.context())
            .map_err(|e| describe(&e))
    }

    /// Renders every string inside a JSON value (keys stay as written).
    pub fn render_json(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => Value::String(self.render(s)?),
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.render_json(x))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), self.render_json(x)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
}

fn describe(e: &minijinja::Error) -> String {
    format!("{e}{}", super::causes(e))
}

/// Replaces every secret's value by `****`.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    values: Vec<String>,
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a String>) -> Masker {
        let mut values: Vec<String> = secrets
            .into_iter()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect();
        // Longest first, so a secret containing another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Masker { values }
    }

    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "****");
            }
        }
        out
    }
}

/// The template-bearing strings of an http step, with their field below the step.
fn http_fields<'a>(h: &'a HttpStep, prefix: &str, out: &mut Vec<(String, &'a str)>) {
    out.push((format!("{prefix}url"), &h.url));
    for (k, v) in &h.headers {
        out.push((format!("{prefix}headers.{k}"), v));
    }
    if let Some(b) = &h.body {
        out.push((format!("{prefix}body"), b));
    }
    if let Some(j) = &h.json {
        json_fields(j, &format!("{prefix}json"), out);
    }
}

fn json_fields<'a>(v: &'a Value, path: &str, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path.to_string(), s)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| json_fields(x, &format!("{path}[{i}]"), out)),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| json_fields(x, &format!("{path}.{k}"), out)),
        _ => {}
    }
}

/// Checks every template of a server-side spec against the names it may use. Returns
/// the field path (`steps[0].http.headers.authorization`) and what is wrong.
pub fn check_spec(spec: &JobSpec, secrets: &BTreeSet<String>) -> Result<(), (String, String)> {
    let env = environment();
    let saved: BTreeSet<&str> = spec
        .steps
        .iter()
        .chain(&spec.always)
        .flat_map(|s| match s {
            Step::Http(h) => h.save.keys().map(String::as_str).collect::<Vec<_>>(),
            Step::WaitFor(w) => w.http.save.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    for (list, steps) in [("steps", &spec.steps), ("always", &spec.always)] {
        for (i, step) in steps.iter().enumerate() {
            let mut fields = Vec::new();
            match step {
                Step::Http(h) => http_fields(h, "", &mut fields),
                Step::WaitFor(w) => http_fields(&w.http, "http.", &mut fields),
                _ => continue,
            }
            for (field, text) in fields {
                let at = format!("{list}[{i}].{}.{field}", step.kind());
                let template = env
                    .template_from_str(text)
                    .map_err(|e| (at.clone(), format!("template: {}", describe(&e))))?;
                for name in template.undeclared_variables(true) {
                    let mut parts = name.splitn(2, '.');
                    let head = parts.next().unwrap_or_default();
                    let rest = parts.next();
                    let problem = match (head, rest) {
                        ("secrets", None) => Some(
                            "name one secret (`{{ secrets.NAME }}`); the whole table cannot be used"
                                .to_string(),
                        ),
                        ("secrets", Some(s)) if !secrets.contains(s) => Some(format!(
                            "secret `{s}` is not configured on the server (its [secrets] has {})",
                            if secrets.is_empty() {
                                "none".to_string()
                            } else {
                                secrets.iter().cloned().collect::<Vec<_>>().join(", ")
                            }
                        )),
                        ("vars", Some(v)) if !spec.vars.contains_key(v) => Some(format!(
                            "variable `{v}` is not set: add it to `vars` or pass --var {v}=…"
                        )),
                        ("vars" | "secrets", _) => None,
                        (other, _) if !saved.contains(other) => Some(format!(
                            "`{other}` is neither vars.…, secrets.… nor a value some step saves"
                        )),
                        _ => None,
                    };
                    if let Some(message) = problem {
                        return Err((at, message));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        Scope {
            vars: [("api".to_string(), json!("http://x"))].into(),
            secrets: [("token".to_string(), "s3cr3t".to_string())].into(),
            saved: [("event_id".to_string(), json!(42))].into(),
        }
    }

    #[test]
    fn renders_vars_secrets_and_saved_values() {
        let s = scope();
        assert_eq!(
            s.render("{{ vars.api }}/events/{{ event_id }}").unwrap(),
            "http://x/events/42"
        );
        assert_eq!(
            s.render("Bearer {{ secrets.token }}").unwrap(),
            "Bearer s3cr3t"
        );
        assert_eq!(
            s.render_json(&json!({"id": "{{ event_id }}", "n": 1, "l": ["{{ vars.api }}"]}))
                .unwrap(),
            json!({"id": "42", "n": 1, "l": ["http://x"]})
        );
        assert_eq!(s.render("no template").unwrap(), "no template");
    }

    #[test]
    fn strict_undefined_and_fuel() {
        let s = scope();
        assert!(s.render("{{ vars.nope }}").is_err());
        assert!(s.render("{{ secrets.nope }}").is_err());
        assert!(s.render("{{ missing }}").is_err());
        let e = s
            .render(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            )
            .unwrap_err();
        assert!(e.contains("fuel"), "{e}");
    }

    #[test]
    fn masks_secrets() {
        let m = Masker::new([&"abc".to_string(), &"abcdef".to_string(), &String::new()]);
        assert_eq!(m.mask("x abcdef y abc"), "x **** y ****");
        assert_eq!(m.mask("nothing"), "nothing");
    }

    #[test]
    fn submit_check_names_the_field() {
        let spec = |text: &str| JobSpec::parse(text).unwrap();
        let secrets: BTreeSet<String> = ["token".to_string()].into();
        let ok = spec(
            "name: x\nvars: { api: u }\nsteps:\n  - http: { url: \"{{ vars.api }}\", headers: { auth: \"{{ secrets.token }}\" }, save: { id: \"$.id\" } }\n  - http: { url: \"{{ vars.api }}/{{ id }}\", json: { a: [\"{{ id }}\"] } }\n",
        );
        assert_eq!(check_spec(&ok, &secrets), Ok(()));
        let bad = spec(
            "name: x\nsteps:\n  - http: { url: u, headers: { auth: \"{{ secrets.nope }}\" } }\n",
        );
        let (at, m) = check_spec(&bad, &secrets).unwrap_err();
        assert_eq!(at, "steps[0].http.headers.auth");
        assert!(m.contains("nope") && m.contains("token"), "{m}");
        let bad = spec(
            "name: x\nsteps:\n  - sleep: 1s\nalways:\n  - wait_for: { http: { url: \"{{ vars.api }}\" }, until: \"true\", timeout: 1s }\n",
        );
        let (at, m) = check_spec(&bad, &secrets).unwrap_err();
        assert_eq!(at, "always[0].wait_for.http.url");
        assert!(m.contains("api"), "{m}");
        let bad = spec("name: x\nsteps:\n  - http: { url: \"{{ secrets }}\" }\n");
        assert!(check_spec(&bad, &secrets).is_err());
        let bad = spec("name: x\nsteps:\n  - http: { url: \"{{ who }}\" }\n");
        assert!(check_spec(&bad, &secrets).unwrap_err().1.contains("who"));
        let bad = spec("name: x\nsteps:\n  - http: { url: \"{{ x\" }\n");
        assert!(
            check_spec(&bad, &secrets)
                .unwrap_err()
                .1
                .starts_with("template")
        );
    }
}
