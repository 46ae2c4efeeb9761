//! Target names to ids. buildomat-server takes target ids (ULIDs) only, and its factory
//! API cannot list targets: names are resolved with `GET /0/admin/targets`, which needs a
//! user token with `target.read` (`admin_token_file`). A target given by id, or whose name
//! is already a ULID, needs no resolution.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use testfarm_core::selector::Selector;

use super::config::BuildomatSection;

/// Why the targets could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "buildomat.target {name:?}: names need buildomat.admin_token_file to be resolved (GET /0/admin/targets); or give its id"
    )]
    NoAdminToken { name: String },
    #[error("buildomat.target {name:?}: no such target on buildomat-server (it has: {known})")]
    Unknown { name: String, known: String },
    #[error("buildomat-server list targets: {0}")]
    Call(String),
}

impl ResolveError {
    /// The `/metrics` cause label.
    pub fn cause(&self) -> &'static str {
        match self {
            ResolveError::NoAdminToken { .. } => "no_admin_token",
            ResolveError::Unknown { .. } => "unknown_target",
            ResolveError::Call(_) => "unreachable",
        }
    }
}

#[derive(Deserialize)]
struct Target {
    id: String,
    name: String,
}

/// Target id → board selector. `admin_token` is the resolution token, when configured.
pub async fn resolve(
    section: &BuildomatSection,
    admin_token: Option<&str>,
) -> Result<BTreeMap<String, Selector>, ResolveError> {
    let mut out = BTreeMap::new();
    let mut by_name = Vec::new();
    for t in &section.target {
        match (&t.id, &t.name) {
            (Some(id), _) => {
                out.insert(id.clone(), t.boards.0.clone());
            }
            (None, Some(n)) if ulid::Ulid::from_string(n).is_ok() => {
                out.insert(n.clone(), t.boards.0.clone());
            }
            (None, Some(n)) => by_name.push((n.clone(), t.boards.0.clone())),
            (None, None) => {}
        }
    }
    if by_name.is_empty() {
        return Ok(out);
    }
    let Some(token) = admin_token else {
        return Err(ResolveError::NoAdminToken {
            name: by_name[0].0.clone(),
        });
    };
    let known = list(&section.url.0, token).await?;
    for (name, selector) in by_name {
        let Some(t) = known.iter().find(|t| t.name == name) else {
            let mut names: Vec<&str> = known.iter().map(|t| t.name.as_str()).collect();
            names.sort_unstable();
            return Err(ResolveError::Unknown {
                name,
                known: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
            });
        };
        out.insert(t.id.clone(), selector);
    }
    Ok(out)
}

async fn list(url: &str, token: &str) -> Result<Vec<Target>, ResolveError> {
    let call = |e: String| ResolveError::Call(e);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| call(e.to_string()))?;
    let res = http
        .get(format!("{url}/0/admin/targets"))
        .bearer_auth(token.trim())
        .send()
        .await
        .map_err(|e| call(format!("unreachable: {e}")))?;
    let status = res.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(call(format!(
            "token refused ({status}); admin_token_file needs a user token with target.read"
        )));
    }
    if !status.is_success() {
        return Err(call(format!("answered {status}")));
    }
    res.json::<Vec<Target>>()
        .await
        .map_err(|e| call(format!("malformed answer: {e}")))
}
