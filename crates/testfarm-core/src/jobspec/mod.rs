//! The YAML job spec: what a person or CI writes to `testfarm submit`.
//!
//! Parsing is strict because a typo in a lab job costs a board-hour: unknown keys are
//! errors, and every error names the field path (`requires.labels.team`) and the line and
//! column, so the fix is obvious without reading this code. Types are checked while the
//! YAML is read (durations, sizes, priorities, selectors), and cross-field rules after,
//! with the location found again from the path.
//!
//! Templates (`{{ vars.api }}`) are not expanded here: strings keep them verbatim for the
//! runner to render with minijinja. Fields that must be typed values (durations, sizes)
//! cannot be templated.
//!
//! ```yaml
//! name: kernel-smoke
//! priority: high              # low | normal | high | urgent | 0..1000
//! timeout: 30m
//! queue_timeout: 2h
//! retry_on_error: 1           # re-queue once if the lab (not the test) fails
//! requires:
//!   kind: board
//!   labels: { arch: arm64, team: { in: [kernel, bsp] }, gpu: { exists: true } }
//!   selector: "board_type notin (rpi3)"
//!   peripherals: [ethernet]
//! steps:
//!   - shell: "make test"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::duration::HumanDuration;
use crate::labels;
use crate::priority::Priority;
pub use build::{BuildArtifact, BuildStep, ServerChoice, validate_ref};
pub use deploy::{ArtifactQuery, BootStep, DeployStep, MAX_BOOT_RETRIES, MIN_VM_MEMORY_MB, VmSize};
pub use http::{HttpMethod, HttpStep, WaitForStep};
pub use requires::*;
pub use steps::*;

mod build;
mod deploy;
mod http;
mod locate;
mod requires;
mod steps;

/// A spec that could not be read: where (field path, 1-based line and column) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[error("{}line {line}, column {column}: {message}", path_prefix(.path))]
pub struct SpecError {
    /// Dotted path to the field at fault (`requires.labels.team`, `steps[2].shell`); empty
    /// for the document itself.
    pub path: String,
    /// 1-based; 0 when the position is unknown.
    pub line: u64,
    /// 1-based; 0 when the position is unknown.
    pub column: u64,
    pub message: String,
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// A parsed job spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Required for a job on its own; a pipeline's stage job defaults to `pipeline/stage`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub priority: Priority,
    /// Longest run once started; the job ends `timed_out` after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Longest wait in the queue; the job ends `error` after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<HumanDuration>,
    /// How many times a job that ends `error` (the lab's fault) is queued again.
    #[serde(default)]
    pub retry_on_error: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<Requires>,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Runs whatever happened in `steps`, before the lease ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub always: Vec<Step>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, serde_json::Value>,
}

/// Largest spec accepted; specs are small, a bigger input is a mistake or an attack.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// Longest job name; names appear in listings and history keys.
pub const MAX_NAME_LEN: usize = 128;

impl JobSpec {
    /// Parses and checks a spec. Errors carry the field path and line/column.
    pub fn parse(text: &str) -> Result<JobSpec, SpecError> {
        let spec: JobSpec = read_yaml(text)?;
        spec.validate()
            .map_err(|(path, message)| locate::error_at(text, &path, message))?;
        Ok(spec)
    }

    /// Cross-field rules that serde cannot express. Returns the path and message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(("name".into(), "a job needs a `name`".into()));
        }
        if name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err((
                "name".into(),
                format!("the job name must be 1 to {MAX_NAME_LEN} printable characters"),
            ));
        }
        if self.steps.is_empty() {
            return Err(("steps".into(), "a job needs at least one step".into()));
        }
        for (list, steps) in [("steps", &self.steps), ("always", &self.always)] {
            for (i, step) in steps.iter().enumerate() {
                http::check_workflow_step(step)
                    .map_err(|(field, m)| (format!("{list}[{i}].{}{field}", step.kind()), m))?;
                if let Step::Build(b) = step {
                    if list == "always" {
                        return Err((
                            format!("always[{i}].build"),
                            "a build step belongs in `steps`: `always` is for cleanup and diagnostics".into(),
                        ));
                    }
                    build::check(b)
                        .map_err(|(field, m)| (format!("steps[{i}].build{field}"), m))?;
                }
            }
        }
        self.check_build_placement()?;
        deploy::check_vm_steps(self)?;
        if let Some(req) = &self.requires {
            if req.kind.is_none() && req.resource.is_none() {
                return Err((
                    "requires.kind".into(),
                    "`requires` needs a `kind` (build-server, qemu-host, board) or a pinned `resource`"
                        .into(),
                ));
            }
            for key in req.labels.keys() {
                labels::validate_key(key)
                    .map_err(|e| (format!("requires.labels.{key}"), e.to_string()))?;
            }
            if req.cpus == Some(0) {
                return Err(("requires.cpus".into(), "cpus must be at least 1".into()));
            }
            if let Some(name) = &req.resource {
                crate::resource::validate_name(name)
                    .map_err(|e| ("requires.resource".into(), e.to_string()))?;
            }
        } else if self.builds().next().is_none() {
            for (list, steps) in [("steps", &self.steps), ("always", &self.always)] {
                if let Some((i, s)) = steps.iter().enumerate().find(|(_, s)| !s.runs_on_server()) {
                    return Err((
                        format!("{list}[{i}].{}", s.kind()),
                        format!(
                            "a {} step needs a resource: add `requires` (without it the job runs on the server, where only http, wait_for, sleep and fail_if steps run)",
                            s.kind()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The normalised requirements ([`Requirements::server`] when `requires` is absent).
    /// A job with build steps and no `requires` needs a `build-server`; each build step's
    /// arch adds a toolchain for it, and a named `server` pins the job to that server.
    ///
    /// On a qemu-host the deploy step's VM size is the job's share (the larger of it and
    /// `requires.cpus`/`memory`), so the VM counts against the host's capacity.
    pub fn requirements(&self) -> Requirements {
        let mut req = match &self.requires {
            Some(r) => r.requirements(),
            None if self.builds().next().is_some() => Requirements {
                kind: Some(crate::resource::ResourceKind::BuildServer),
                ..Requirements::server()
            },
            None => Requirements::server(),
        };
        for (_, b) in self.builds() {
            if let Some(arch) = &b.arch {
                let arch = crate::build::normalise_arch(arch).to_string();
                if !req.build_arches.contains(&arch) {
                    req.build_arches.push(arch);
                }
            }
            if req.resource.is_none()
                && let Some(name) = b.named_server()
            {
                req.resource = Some(name.to_string());
            }
        }
        if req.kind == Some(crate::resource::ResourceKind::QemuHost)
            && let Some(d) = self.deploy_step()
        {
            let vm = d.vm_size(self);
            req.cpus = Some(req.cpus.unwrap_or(0).max(vm.cpus));
            req.memory_mb = Some(req.memory_mb.unwrap_or(0).max(vm.memory_mb));
        }
        req
    }

    /// The build steps with their index in `steps`.
    pub fn builds(&self) -> impl Iterator<Item = (usize, &BuildStep)> {
        self.steps.iter().enumerate().filter_map(|(i, s)| match s {
            Step::Build(b) => Some((i, b)),
            _ => None,
        })
    }

    /// Named build servers must agree with each other and with `requires`.
    fn check_build_placement(&self) -> Result<(), (String, String)> {
        let mut named: Option<(usize, &str)> = None;
        for (i, b) in self.builds() {
            let Some(name) = b.named_server() else {
                continue;
            };
            let path = format!("steps[{i}].build.server");
            if let Some((j, first)) = named
                && first != name
            {
                return Err((
                    path,
                    format!(
                        "one job runs on one build server: steps[{j}] names {first}, this one {name}"
                    ),
                ));
            }
            named = Some((i, name));
            if let Some(req) = &self.requires {
                if let Some(pinned) = &req.resource
                    && pinned != name
                {
                    return Err((
                        path,
                        format!(
                            "`requires.resource` pins the job to {pinned}, this step names {name}"
                        ),
                    ));
                }
                if let Some(kind) = req.kind
                    && kind != crate::resource::ResourceKind::BuildServer
                {
                    return Err((
                        path,
                        format!(
                            "a named build server needs `requires.kind: build-server` (the job asks for a {kind})"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Applies `--var k=v` (as strings, overriding the spec's `vars`) and `--priority P`.
    pub fn apply_overrides(
        &mut self,
        vars: &[(String, String)],
        priority: Option<Priority>,
    ) -> Result<(), SpecError> {
        for (k, v) in vars {
            check_var_name(k)?;
            self.vars
                .insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        if let Some(p) = priority {
            self.priority = p;
        }
        Ok(())
    }
}

/// Reads a YAML document into `T` strictly (unknown keys are errors), with the field path
/// and line/column of the first error. Job specs and pipeline specs both read through here.
pub(crate) fn read_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, SpecError> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(SpecError {
            path: String::new(),
            line: 0,
            column: 0,
            message: format!("the spec is larger than {MAX_SPEC_BYTES} bytes"),
        });
    }
    let mut path_out: Option<String> = None;
    let options = serde_saphyr::options! { with_snippet: false };
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            path_out = Some(e.path().to_string());
            e.into_inner()
        })
    });
    parsed.map_err(|e| from_yaml_error(&e, path_out, text))
}

/// A [`SpecError`] for a rule checked outside this module (the server's template check),
/// located in the spec's text from its field path (`steps[0].http.url`).
pub fn error_at(text: &str, path: &str, message: String) -> SpecError {
    locate::error_at(text, path, message)
}

/// A `--var` name: letters, digits and `_` (it may become an environment variable).
pub fn check_var_name(k: &str) -> Result<(), SpecError> {
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(SpecError {
            path: format!("vars.{k}"),
            line: 0,
            column: 0,
            message: format!(
                "variable name {k:?} is invalid: use letters, digits and _ (from --var)"
            ),
        });
    }
    Ok(())
}

/// Parses `k=v` as given to `--var`.
pub fn parse_var(arg: &str) -> Result<(String, String), SpecError> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(SpecError {
            path: "vars".into(),
            line: 0,
            column: 0,
            message: format!("--var {arg:?} must be written name=value"),
        }),
    }
}

fn from_yaml_error(e: &serde_saphyr::Error, path: Option<String>, text: &str) -> SpecError {
    use serde_saphyr::MessageFormatter;
    let mut message = serde_saphyr::DefaultMessageFormatter
        .format_message(e)
        .into_owned();
    // A misspelt key or step kind gets the closest known one ("did you mean `steps`?").
    let unknown = match e {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => Some((field.as_str(), expected)),
        serde_saphyr::Error::SerdeUnknownVariant {
            variant, expected, ..
        } => Some((variant.as_str(), expected)),
        _ => None,
    };
    if let Some((got, expected)) = unknown {
        let listed: Vec<String> = expected.iter().map(|x| format!("`{x}`")).collect();
        let serde_style = format!("unknown field `{got}`, expected {}", listed.join(", "));
        let suggested = crate::diagnostic::with_suggestion(&serde_style);
        if let Some(hint) = suggested.strip_prefix(serde_style.as_str()) {
            message.push_str(hint);
        }
    }
    let mut path = path.filter(|p| p != ".").unwrap_or_default();
    // An unknown key's path stops at its parent: name the key itself.
    if let serde_saphyr::Error::SerdeUnknownField { field, .. } = e
        && !path.ends_with(field.as_str())
    {
        path = if path.is_empty() {
            field.clone()
        } else {
            format!("{path}.{field}")
        };
    }
    let (line, column) = match e.location() {
        Some(l) if l.line() > 0 => (l.line(), l.column()),
        _ => locate::position(text, &path).unwrap_or((0, 0)),
    };
    SpecError {
        path,
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests;
