//! Pipelines: named stages, each a job spec, run in the order their `needs` give
//! (build → deploy → boot → test, or any graph without a cycle).
//!
//! ```yaml
//! name: kernel-ci
//! vars: { branch: main }
//! stages:
//!   - name: build
//!     job: { requires: { kind: build-server }, steps: [ { shell: "make" } ] }
//!   - name: test                  # needs the stage before it unless `needs` says otherwise
//!     job:
//!       requires: { kind: qemu-host }
//!       steps:
//!         - deploy: { artifacts: { build: "{{ stages.build.build }}" } }
//! ```
//!
//! A stage sees the stages it needs (directly or through others) in templates:
//! `{{ stages.build.artifacts.kernel }}` and `{{ pipeline.id }}` are rendered when the stage
//! starts; every other `{{ … }}` (vars, secrets, saved values) is left for the job's own
//! runner. A reference to a stage that does not exist, or that the stage does not need, is
//! an error at submit naming the field. The rules of advancing a pipeline ([`advance`])
//! are here so the server only stores what they decide.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::jobspec::{JobSpec, SpecError, error_at, read_yaml};

/// Most stages one pipeline may have.
pub const MAX_STAGES: usize = 64;
/// Longest stage name.
pub const MAX_STAGE_NAME: usize = 64;

/// What a finished stage offers to the templates of the stages that need it.
pub const STAGE_KEYS: &[&str] = &[
    "job",
    "status",
    "resource",
    "build",
    "commit",
    "branch",
    "arch",
    "artifacts",
];
/// What `{{ pipeline.… }}` offers.
pub const PIPELINE_KEYS: &[&str] = &["id", "name"];

/// A parsed pipeline spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: String,
    /// Given to every stage's job (a stage's own `vars` win; `--var` wins over both).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, serde_json::Value>,
    pub stages: Vec<StageSpec>,
}

/// One stage: a name, what it waits for, and its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    /// Stages that must pass first. Absent: the stage before this one (none for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<String>>,
    pub job: JobSpec,
}

impl PipelineSpec {
    /// Parses and checks a pipeline: stage names, `needs` (known, no cycle), each stage's
    /// job (as a job spec), and the stage references of its templates. Errors carry the
    /// field path (`stages[1].job.steps[0].shell.run`) and line/column.
    pub fn parse(text: &str) -> Result<PipelineSpec, SpecError> {
        let mut spec: PipelineSpec = read_yaml(text)?;
        spec.normalise();
        spec.validate()
            .map_err(|(path, message)| error_at(text, &path, message))?;
        Ok(spec)
    }

    /// Fills what a stage leaves out: its `needs` (the stage before) and its job's name.
    fn normalise(&mut self) {
        let mut previous: Option<String> = None;
        for stage in &mut self.stages {
            if stage.needs.is_none() {
                stage.needs = Some(previous.iter().cloned().collect());
            }
            if stage.job.name.trim().is_empty() {
                stage.job.name = format!("{}/{}", self.name.trim(), stage.name);
            }
            previous = Some(stage.name.clone());
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > crate::jobspec::MAX_NAME_LEN {
            return Err((
                "name".into(),
                format!(
                    "the pipeline name must be 1 to {} printable characters",
                    crate::jobspec::MAX_NAME_LEN
                ),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err((
                "name".into(),
                "the pipeline name has a control character".into(),
            ));
        }
        if self.stages.is_empty() {
            return Err((
                "stages".into(),
                "a pipeline needs at least one stage".into(),
            ));
        }
        if self.stages.len() > MAX_STAGES {
            return Err((
                "stages".into(),
                format!("a pipeline has at most {MAX_STAGES} stages"),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, stage) in self.stages.iter().enumerate() {
            validate_stage_name(&stage.name).map_err(|m| (format!("stages[{i}].name"), m))?;
            if !seen.insert(stage.name.as_str()) {
                return Err((
                    format!("stages[{i}].name"),
                    format!("stage `{}` is defined twice", stage.name),
                ));
            }
        }
        let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        for (i, stage) in self.stages.iter().enumerate() {
            for (j, need) in self.needs(i).iter().enumerate() {
                if !seen.contains(need.as_str()) {
                    return Err((
                        format!("stages[{i}].needs[{j}]"),
                        format!(
                            "unknown stage `{need}`; the stages are {}",
                            names.join(", ")
                        ),
                    ));
                }
                if need == &stage.name {
                    return Err((
                        format!("stages[{i}].needs[{j}]"),
                        format!("stage `{need}` cannot need itself"),
                    ));
                }
            }
        }
        if let Some(cycle) = self.cycle() {
            let first = self
                .stages
                .iter()
                .position(|s| s.name == cycle[0])
                .unwrap_or(0);
            return Err((
                format!("stages[{first}].needs"),
                format!(
                    "the stages need each other in a cycle: {}",
                    cycle.join(" → ")
                ),
            ));
        }
        for (i, stage) in self.stages.iter().enumerate() {
            stage
                .job
                .validate()
                .map_err(|(path, m)| (format!("stages[{i}].job.{path}"), m))?;
            let ancestors = self.ancestors(i);
            let job = serde_json::to_value(&stage.job).unwrap_or_default();
            for (path, text) in strings(&job, String::new()) {
                for block in pipeline_blocks(&text) {
                    for referenced in stage_refs(&text[block.expr.clone()]) {
                        if !seen.contains(referenced.as_str()) {
                            return Err((
                                format!("stages[{i}].job.{path}"),
                                format!(
                                    "unknown stage `{referenced}` in a template; the stages are {}",
                                    names.join(", ")
                                ),
                            ));
                        }
                        if !ancestors.contains(referenced.as_str()) {
                            return Err((
                                format!("stages[{i}].job.{path}"),
                                format!(
                                    "stage `{}` uses `stages.{referenced}` but does not need it (add it to `needs`)",
                                    stage.name
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The stages stage `i` waits for.
    pub fn needs(&self, i: usize) -> &[String] {
        self.stages
            .get(i)
            .and_then(|s| s.needs.as_deref())
            .unwrap_or(&[])
    }

    /// Every stage stage `i` needs, directly or through others.
    pub fn ancestors(&self, i: usize) -> BTreeSet<&str> {
        let index: BTreeMap<&str, usize> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut out = BTreeSet::new();
        let mut todo: Vec<usize> = vec![i];
        while let Some(at) = todo.pop() {
            for need in self.needs(at) {
                if out.insert(need.as_str())
                    && let Some(&j) = index.get(need.as_str())
                {
                    todo.push(j);
                }
            }
        }
        out
    }

    /// A cycle of `needs`, as stage names from its first member back to it, if any.
    fn cycle(&self) -> Option<Vec<String>> {
        let index: BTreeMap<&str, usize> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        // 0 = unvisited, 1 = on the current path, 2 = done.
        let mut mark = vec![0u8; self.stages.len()];
        let mut path: Vec<usize> = Vec::new();
        fn visit(
            spec: &PipelineSpec,
            index: &BTreeMap<&str, usize>,
            at: usize,
            mark: &mut [u8],
            path: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            mark[at] = 1;
            path.push(at);
            for need in spec.needs(at) {
                let Some(&j) = index.get(need.as_str()) else {
                    continue;
                };
                if mark[j] == 1 {
                    let from = path.iter().position(|&p| p == j).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(j);
                    return Some(cycle);
                }
                if mark[j] == 0
                    && let Some(c) = visit(spec, index, j, mark, path)
                {
                    return Some(c);
                }
            }
            path.pop();
            mark[at] = 2;
            None
        }
        for i in 0..self.stages.len() {
            if mark[i] == 0
                && let Some(c) = visit(self, &index, i, &mut mark, &mut path)
            {
                return Some(c.into_iter().map(|i| self.stages[i].name.clone()).collect());
            }
        }
        None
    }

    /// Applies `--var k=v` to the pipeline's vars (they reach every stage).
    pub fn apply_vars(&mut self, vars: &[(String, String)]) -> Result<(), SpecError> {
        for (k, v) in vars {
            crate::jobspec::check_var_name(k)?;
            self.vars
                .insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        Ok(())
    }

    /// Stage `i`'s job with the pipeline's vars under its own, and `overrides` (the
    /// pipeline's `--var`s) over both.
    pub fn stage_job(&self, i: usize, overrides: &BTreeSet<String>) -> Option<JobSpec> {
        let stage = self.stages.get(i)?;
        let mut job = stage.job.clone();
        for (k, v) in &self.vars {
            if overrides.contains(k) || !job.vars.contains_key(k) {
                job.vars.insert(k.clone(), v.clone());
            }
        }
        Some(job)
    }
}

fn validate_stage_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= MAX_STAGE_NAME
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "stage name {name:?} is invalid: a lowercase letter, then lowercase letters, digits and _ (at most {MAX_STAGE_NAME}), so templates can say `stages.{{name}}`"
        ))
    }
}

/// Every string inside a JSON value with its dotted path (`steps[0].shell.run`).
pub fn strings(v: &serde_json::Value, path: String) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match v {
        serde_json::Value::String(s) => out.push((path.clone(), s.clone())),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                out.extend(strings(x, format!("{path}[{i}]")));
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                out.extend(strings(x, join(k)));
            }
        }
        _ => {}
    }
    out
}

/// One `{{ … }}` block of a string that the pipeline renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The whole block, braces included.
    pub span: Range<usize>,
    /// The expression inside the braces.
    pub expr: Range<usize>,
}

/// The `{{ … }}` blocks of `text` whose expression starts with `stages` or `pipeline`
/// (the pipeline's names); other blocks are the job runner's.
pub fn pipeline_blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = text[at..].find("{{").map(|o| o + at) {
        let Some(close) = text[open + 2..].find("}}").map(|c| c + open + 2) else {
            break;
        };
        let inner = open + 2..close;
        let expr = text[inner.clone()].trim_start_matches('-');
        let expr = expr.trim_start();
        let root: String = expr
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if root == "stages" || root == "pipeline" {
            out.push(Block {
                span: open..close + 2,
                expr: inner,
            });
        }
        at = close + 2;
    }
    out
}

/// The stage names an expression reads: `stages.NAME` or `stages['NAME']`.
pub fn stage_refs(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut at = 0;
    while let Some(found) = expr[at..].find("stages").map(|f| f + at) {
        let before_ok = found == 0 || {
            let b = bytes[found - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        };
        let rest = &expr[found + "stages".len()..];
        at = found + "stages".len();
        if !before_ok {
            continue;
        }
        let name: String = if let Some(r) = rest.strip_prefix('.') {
            r.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        } else if let Some(r) = rest.strip_prefix('[') {
            let r = r.trim_start();
            match r.chars().next() {
                Some(q @ ('\'' | '"')) => r[1..].chars().take_while(|c| *c != q).collect(),
                _ => String::new(),
            }
        } else {
            String::new()
        };
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Where a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    /// Waiting for the stages it needs.
    Waiting,
    /// Its job is queued or assigned.
    Queued,
    Running,
    Passed,
    /// Its job failed (the test's fault).
    Failed,
    /// Its job ended `error` (the lab's fault), or the stage could not start.
    Error,
    TimedOut,
    Cancelled,
    /// Never started: the pipeline halted first.
    Skipped,
}

impl StageState {
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Waiting => "waiting",
            StageState::Queued => "queued",
            StageState::Running => "running",
            StageState::Passed => "passed",
            StageState::Failed => "failed",
            StageState::Error => "error",
            StageState::TimedOut => "timed_out",
            StageState::Cancelled => "cancelled",
            StageState::Skipped => "skipped",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, StageState::Queued | StageState::Running)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            StageState::Waiting | StageState::Queued | StageState::Running
        )
    }

    /// Ended without passing (skipped stages did not end: they never ran).
    pub fn halts(self) -> bool {
        matches!(
            self,
            StageState::Failed | StageState::Error | StageState::TimedOut | StageState::Cancelled
        )
    }
}

impl std::str::FromStr for StageState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            StageState::Waiting,
            StageState::Queued,
            StageState::Running,
            StageState::Passed,
            StageState::Failed,
            StageState::Error,
            StageState::TimedOut,
            StageState::Cancelled,
            StageState::Skipped,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown stage state {s:?}"))
    }
}

/// Where a pipeline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    Running,
    Passed,
    /// A stage failed: the change under test is at fault.
    Failed,
    /// A stage ended `error`: the lab is at fault, not the change.
    Error,
    Cancelled,
}

impl PipelineState {
    pub const ALL: [PipelineState; 5] = [
        PipelineState::Running,
        PipelineState::Passed,
        PipelineState::Failed,
        PipelineState::Error,
        PipelineState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineState::Running => "running",
            PipelineState::Passed => "passed",
            PipelineState::Failed => "failed",
            PipelineState::Error => "error",
            PipelineState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != PipelineState::Running
    }
}

impl std::str::FromStr for PipelineState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PipelineState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown pipeline state {s:?}; use running, passed, failed, error or cancelled"
                )
            })
    }
}

/// A stage as [`advance`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageView<'a> {
    pub name: &'a str,
    pub needs: &'a [String],
    pub state: StageState,
}

/// How a pipeline ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub state: PipelineState,
    /// The stage that halted it (in stage order, the first that did not pass).
    pub failed_stage: Option<String>,
}

/// What to do next with a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advance {
    /// Stages whose needs all passed: submit their jobs now.
    pub start: Vec<String>,
    /// Waiting stages that will never run (the pipeline halted).
    pub skip: Vec<String>,
    /// Active stages to cancel (the pipeline halted or was cancelled).
    pub cancel: Vec<String>,
    /// Set when nothing is left running: the pipeline's end.
    pub end: Option<Ending>,
}

/// The next step of a pipeline from its stages' states. `cancelled` is set once a
/// person cancelled it. A stage that does not pass halts the pipeline: waiting stages are
/// skipped, active ones cancelled, and the pipeline ends once none is active — `error`
/// when the halting stage was the lab's fault, `failed` when it was the test's.
pub fn advance(stages: &[StageView<'_>], cancelled: bool) -> Advance {
    let mut out = Advance::default();
    let halting = stages.iter().find(|s| s.state.halts());
    let halted = cancelled || halting.is_some();
    let state_of: BTreeMap<&str, StageState> = stages.iter().map(|s| (s.name, s.state)).collect();
    for s in stages {
        match s.state {
            StageState::Waiting if halted => out.skip.push(s.name.to_string()),
            StageState::Waiting
                if s.needs
                    .iter()
                    .all(|n| state_of.get(n.as_str()) == Some(&StageState::Passed)) =>
            {
                out.start.push(s.name.to_string());
            }
            st if st.is_active() && halted => out.cancel.push(s.name.to_string()),
            _ => {}
        }
    }
    let active = stages.iter().any(|s| s.state.is_active());
    if halted && !active {
        let state = if cancelled {
            PipelineState::Cancelled
        } else {
            match halting.map(|s| s.state) {
                Some(StageState::Error) => PipelineState::Error,
                Some(StageState::Cancelled) => PipelineState::Cancelled,
                _ => PipelineState::Failed,
            }
        };
        out.end = Some(Ending {
            state,
            failed_stage: halting.map(|s| s.name.to_string()),
        });
    } else if !halted
        && stages.iter().all(|s| s.state == StageState::Passed)
        && out.start.is_empty()
    {
        out.end = Some(Ending {
            state: PipelineState::Passed,
            failed_stage: None,
        });
    }
    out
}

#[cfg(test)]
mod tests;
