//! Submit-time check of a build step's named server (`server: build-07`, seed 004 R3.3,
//! R3.4): a server that does not exist, is not a build server, or lacks the toolchain
//! for the build's arch is refused with 422 naming the field and listing the build
//! servers that could take the build instead (`submit::prepare` asks, so a pipeline's
//! stage is held to the same rule). A server that could but cannot now
//! (maintenance, offline) is the pinned-resource check's 409.

use testfarm_api::resource::Resource;
use testfarm_core::jobspec::{JobSpec, Requirements};
use testfarm_core::pinned::{PinProblem, check_pinned};

/// The API field of the first build step that names a server.
pub fn named_field(spec: &JobSpec) -> String {
    spec.builds()
        .find(|(_, b)| b.named_server().is_some())
        .map(|(i, _)| format!("spec.steps[{i}].build.server"))
        .unwrap_or_else(|| "spec.steps".into())
}

/// Refuses a named build server that can never take the build: the field path inside
/// the spec (`steps[0].build.server`) and why, with the servers that could.
pub fn check_named(
    spec: &JobSpec,
    req: &Requirements,
    resources: &[Resource],
) -> Result<(), (String, String)> {
    let Some((i, name)) = spec
        .builds()
        .find_map(|(i, b)| b.named_server().map(|n| (i, n)))
    else {
        return Ok(());
    };
    let Err(refused) = check_pinned(req, resources) else {
        return Ok(());
    };
    let never: Vec<String> = refused
        .problems
        .iter()
        .filter(|p| matches!(p, PinProblem::NotFound | PinProblem::Mismatch { .. }))
        .map(ToString::to_string)
        .collect();
    if never.is_empty() {
        return Ok(());
    }
    let instead = if refused.alternatives.is_empty() {
        "no build server has what it needs".to_string()
    } else {
        format!(
            "build servers that can: {}",
            refused.alternatives.join(", ")
        )
    };
    Err((
        format!("steps[{i}].build.server"),
        format!(
            "build server {name} cannot take this build: {}; {instead}",
            never.join("; ")
        ),
    ))
}
