//! One HTTP exchange of an `http` or `wait_for` step, and what its answer means.
//!
//! The split that decides `failed` from `error`: the lab failed (no connection, DNS, a
//! request that could not be built or timed out) is [`StepError::Lab`]; the remote system
//! answered but said no (a status not expected, a body that is not JSON where JSON is
//! needed, a saved path that finds nothing) is [`StepError::Remote`].

use std::time::Duration;

use serde_json::Value;
use testfarm_core::jobspec::{HttpMethod, HttpStep};

use super::template::Scope;

/// Default time limit of one request when the step gives none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read; more is cut (and is not JSON).
const MAX_BODY: usize = 4 << 20;

/// Why a step did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The remote system said no: the job is `failed`.
    #[error("{0}")]
    Remote(String),
    /// The lab could not do it: the job is `error`.
    #[error("{0}")]
    Lab(String),
}

/// What came back.
pub struct Answer {
    pub method: &'static str,
    pub url: String,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The status is one the step accepts.
    pub fn check_status(&self, h: &HttpStep) -> Result<(), StepError> {
        let ok = if h.expect_status.is_empty() {
            (200..300).contains(&self.status)
        } else {
            h.expect_status.contains(&self.status)
        };
        if ok {
            return Ok(());
        }
        let wanted = if h.expect_status.is_empty() {
            "2xx".to_string()
        } else {
            h.expect_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        Err(StepError::Remote(format!(
            "{} {} answered {}, expected {wanted}{}",
            self.method,
            self.url,
            self.status,
            self.excerpt()
        )))
    }

    pub fn json(&self) -> Result<Value, StepError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            StepError::Remote(format!(
                "{} {} answered {} with a body that is not JSON ({e}){}",
                self.method,
                self.url,
                self.status,
                self.excerpt()
            ))
        })
    }

    fn excerpt(&self) -> String {
        if self.body.is_empty() {
            return String::new();
        }
        let text = String::from_utf8_lossy(&self.body);
        let cut: String = text.chars().take(200).collect();
        format!(": {:?}", cut)
    }
}

/// The values `save` takes from a JSON answer: one match is the value, several are a
/// list, none is an error.
pub fn saved_values(h: &HttpStep, doc: &Value) -> Result<Vec<(String, Value)>, StepError> {
    let mut out = Vec::new();
    for (name, path) in &h.save {
        let query = serde_json_path::JsonPath::parse(path)
            .map_err(|e| StepError::Lab(format!("save {name}: {e}")))?;
        let nodes = query.query(doc).all();
        let value = match nodes.as_slice() {
            [] => {
                return Err(StepError::Remote(format!(
                    "save {name}: {path} finds nothing in the answer"
                )));
            }
            [one] => (*one).clone(),
            many => Value::Array(many.iter().map(|v| (*v).clone()).collect()),
        };
        out.push((name.clone(), value));
    }
    Ok(out)
}

fn method(m: HttpMethod) -> (&'static str, reqwest::Method) {
    match m {
        HttpMethod::Get => ("GET", reqwest::Method::GET),
        HttpMethod::Post => ("POST", reqwest::Method::POST),
        HttpMethod::Put => ("PUT", reqwest::Method::PUT),
        HttpMethod::Patch => ("PATCH", reqwest::Method::PATCH),
        HttpMethod::Delete => ("DELETE", reqwest::Method::DELETE),
        HttpMethod::Head => ("HEAD", reqwest::Method::HEAD),
    }
}

/// Renders and sends the request, reading at most [`MAX_BODY`] of the answer. `limit`
/// bounds the whole exchange (the step's `timeout`, or what is left of a wait).
pub async fn send(
    client: &reqwest::Client,
    h: &HttpStep,
    scope: &Scope,
    limit: Duration,
) -> Result<Answer, StepError> {
    let (name, m) = method(h.method);
    let lab = |what: &str, e: String| StepError::Lab(format!("{what}: {e}"));
    let url = scope.render(&h.url).map_err(|e| lab("url", e))?;
    let mut req = client.request(m, &url).timeout(limit);
    for (k, v) in &h.headers {
        let v = scope
            .render(v)
            .map_err(|e| lab(&format!("headers.{k}"), e))?;
        req = req.header(k.as_str(), v);
    }
    if let Some(j) = &h.json {
        req = req.json(&scope.render_json(j).map_err(|e| lab("json", e))?);
    } else if let Some(b) = &h.body {
        req = req.body(scope.render(b).map_err(|e| lab("body", e))?);
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| StepError::Lab(format!("{name} {url}: {}", describe(&e))))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                let room = MAX_BODY.saturating_sub(body.len());
                body.extend_from_slice(&c[..c.len().min(room)]);
                if body.len() >= MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Err(StepError::Lab(format!(
                    "{name} {url}: reading the answer: {}",
                    describe(&e)
                )));
            }
        }
    }
    Ok(Answer {
        method: name,
        url,
        status,
        body,
    })
}

/// reqwest's error with its causes (a bare "error sending request" says nothing).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_builder() {
        "invalid request"
    } else {
        "request failed"
    };
    format!("{kind}{}", super::causes(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            method: "GET",
            url: "http://h/x".into(),
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn status_rules() {
        let any2xx = HttpStep::default();
        assert!(answer(204, "").check_status(&any2xx).is_ok());
        let e = answer(500, "boom").check_status(&any2xx).unwrap_err();
        assert!(
            matches!(&e, StepError::Remote(m) if m.contains("answered 500, expected 2xx") && m.contains("boom")),
            "{e}"
        );
        let listed = HttpStep {
            expect_status: vec![201, 404],
            ..HttpStep::default()
        };
        assert!(answer(404, "").check_status(&listed).is_ok());
        let e = answer(200, "").check_status(&listed).unwrap_err();
        assert!(e.to_string().contains("expected 201 or 404"), "{e}");
    }

    #[test]
    fn non_json_is_the_remote_saying_no() {
        let e = answer(200, "<html>").json().unwrap_err();
        assert!(
            matches!(&e, StepError::Remote(m) if m.contains("not JSON")),
            "{e}"
        );
        assert_eq!(answer(200, "{\"a\":1}").json().unwrap(), json!({"a": 1}));
    }

    #[test]
    fn saved_values_one_many_none() {
        let h = HttpStep {
            save: [
                ("id".to_string(), "$.id".to_string()),
                ("names".to_string(), "$.items[*].name".to_string()),
            ]
            .into(),
            ..HttpStep::default()
        };
        let doc = json!({"id": 7, "items": [{"name": "a"}, {"name": "b"}]});
        let got = saved_values(&h, &doc).unwrap();
        assert_eq!(
            got,
            [
                ("id".to_string(), json!(7)),
                ("names".to_string(), json!(["a", "b"]))
            ]
        );
        let e = saved_values(&h, &json!({"items": []})).unwrap_err();
        assert!(
            matches!(&e, StepError::Remote(m) if m.contains("finds nothing")),
            "{e}"
        );
    }
}
