//! The pipeline's templates: `{{ stages.… }}` and `{{ pipeline.… }}` blocks in a stage's
//! job, rendered by minijinja in strict mode when the stage starts (and rendered against
//! placeholders at submit, so an unknown name fails then). Other blocks are left verbatim
//! for the job's own runner.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};
use testfarm_api::artifact::{ArtifactKind, Build};
use testfarm_core::pipeline::{PipelineSpec, pipeline_blocks, strings};

/// Most instructions one block may run.
const FUEL: u64 = 50_000;

/// What a finished stage offers to the stages that need it.
#[derive(Debug, Clone)]
pub struct StageValues {
    pub job: String,
    pub status: String,
    pub resource: Option<String>,
    /// The newest build its job made, if any.
    pub build: Option<Build>,
}

impl StageValues {
    fn to_json(&self) -> Value {
        let mut v = json!({ "job": self.job, "status": self.status });
        if let Some(r) = &self.resource {
            v["resource"] = json!(r);
        }
        if let Some(b) = &self.build {
            v["build"] = json!(b.id.to_string());
            v["commit"] = json!(b.commit);
            v["branch"] = json!(b.branch);
            v["arch"] = json!(b.arch);
            // The first artifact of each kind (by name) is the kind's: its sha256, the
            // address `/api/v1/artifacts/{sha256}` serves it at.
            let mut artifacts = serde_json::Map::new();
            for a in &b.artifacts {
                artifacts
                    .entry(a.kind.as_str().to_string())
                    .or_insert_with(|| json!(a.sha256));
            }
            v["artifacts"] = Value::Object(artifacts);
        }
        v
    }
}

/// The scope one stage's templates see.
pub fn context(
    pipeline_id: &str,
    pipeline_name: &str,
    stages: &BTreeMap<String, StageValues>,
) -> Value {
    let stages: serde_json::Map<String, Value> = stages
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    json!({
        "pipeline": { "id": pipeline_id, "name": pipeline_name },
        "stages": stages,
    })
}

/// The scope at submit: every stage a stage needs, with every key a value would have.
fn placeholder_context(spec: &PipelineSpec, ancestors: &BTreeSet<&str>) -> Value {
    let mut stages = BTreeMap::new();
    for name in ancestors {
        let kinds: serde_json::Map<String, Value> = ArtifactKind::ALL
            .iter()
            .map(|k| {
                (
                    k.as_str().to_string(),
                    json!(format!("<{name}.{}>", k.as_str())),
                )
            })
            .collect();
        stages.insert(
            (*name).to_string(),
            json!({
                "job": format!("<{name}.job>"), "status": "passed",
                "resource": format!("<{name}.resource>"), "build": format!("<{name}.build>"),
                "commit": format!("<{name}.commit>"), "branch": format!("<{name}.branch>"),
                "arch": format!("<{name}.arch>"), "artifacts": kinds,
            }),
        );
    }
    json!({
        "pipeline": { "id": "<pipeline.id>", "name": spec.name },
        "stages": stages,
    })
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env
}

/// Renders the pipeline blocks of one string.
fn render_str(env: &Environment<'_>, text: &str, ctx: &Value) -> Result<String, String> {
    let blocks = pipeline_blocks(text);
    if blocks.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for b in blocks {
        out.push_str(&text[at..b.span.start]);
        let block = &text[b.span.clone()];
        let rendered = env
            .render_str(block, ctx)
            .map_err(|e| format!("{block}: {e}{}", crate::server_jobs::causes(&e)))?;
        out.push_str(&rendered);
        at = b.span.end;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

/// Renders every string of a job spec (as JSON). Errors: the field path and why.
pub fn render_job(job: &Value, ctx: &Value) -> Result<Value, (String, String)> {
    let env = environment();
    fn walk(
        env: &Environment<'_>,
        v: &Value,
        ctx: &Value,
        path: String,
    ) -> Result<Value, (String, String)> {
        Ok(match v {
            Value::String(s) => Value::String(render_str(env, s, ctx).map_err(|m| (path, m))?),
            Value::Array(a) => Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| walk(env, x, ctx, format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        Ok((k.clone(), walk(env, x, ctx, p)?))
                    })
                    .collect::<Result<_, (String, String)>>()?,
            ),
            other => other.clone(),
        })
    }
    walk(&env, job, ctx, String::new())
}

/// Checks every stage's pipeline blocks against placeholders: an unknown key
/// (`stages.build.kernal`) is an error now, not when the stage starts. Returns each stage's
/// job rendered with placeholders (for the checks a job gets at submit).
pub fn check(spec: &PipelineSpec) -> Result<Vec<Value>, (String, String)> {
    let mut out = Vec::new();
    for (i, stage) in spec.stages.iter().enumerate() {
        let ctx = placeholder_context(spec, &spec.ancestors(i));
        let job = serde_json::to_value(&stage.job).map_err(|e| {
            (
                format!("stages[{i}].job"),
                format!("cannot read the stage's job: {e}"),
            )
        })?;
        // Only strings with pipeline blocks can fail; name the first that does.
        for (path, text) in strings(&job, String::new()) {
            render_str(&environment(), &text, &ctx)
                .map_err(|m| (format!("stages[{i}].job.{path}"), m))?;
        }
        out.push(render_job(&job, &ctx).map_err(|(p, m)| (format!("stages[{i}].job.{p}"), m))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pipeline_blocks_render() {
        let mut stages = BTreeMap::new();
        stages.insert(
            "build".to_string(),
            StageValues {
                job: "J1".into(),
                status: "passed".into(),
                resource: Some("local-build".into()),
                build: None,
            },
        );
        let ctx = context("P1", "ci", &stages);
        let job = json!({"steps": [{"http": {"url": "http://x/{{ stages.build.job }}/{{ pipeline.id }}/{{ vars.v }}/{{ secrets.s }}"}}]});
        let out = render_job(&job, &ctx).unwrap();
        assert_eq!(
            out["steps"][0]["http"]["url"],
            "http://x/J1/P1/{{ vars.v }}/{{ secrets.s }}"
        );
        let bad = json!({"steps": [{"shell": {"run": "echo {{ stages.build.build }}"}}]});
        let (path, msg) = render_job(&bad, &ctx).unwrap_err();
        assert_eq!(path, "steps[0].shell.run");
        assert!(msg.contains("stages.build.build"), "{msg}");
    }

    #[test]
    fn submit_check_names_an_unknown_key() {
        let spec = PipelineSpec::parse(
            r#"
name: p
stages:
  - name: build
    job: { steps: [ { sleep: 1s } ] }
  - name: use
    job: { steps: [ { http: { url: "http://x/{{ stages.build.artifacts.kernal }}" } } ] }
"#,
        )
        .unwrap();
        let (path, msg) = check(&spec).unwrap_err();
        assert_eq!(path, "stages[1].job.steps[0].http.url");
        assert!(msg.contains("kernal") || msg.contains("undefined"), "{msg}");
        let ok = PipelineSpec::parse(
            r#"
name: p
stages:
  - name: build
    job: { steps: [ { sleep: 1s } ] }
  - name: use
    job: { steps: [ { http: { url: "http://x/{{ stages.build.artifacts.kernel }}" } } ] }
"#,
        )
        .unwrap();
        let rendered = check(&ok).unwrap();
        assert_eq!(
            rendered[1]["steps"][0]["http"]["url"],
            "http://x/<build.kernel>"
        );
    }
}
