//! `GET/POST /ui/register`: register a resource. The form's text fields are parsed here
//! (labels `k=v, k=v`, numbers, comma lists) with the error next to the field; the rest
//! is `POST /api/v1/resources` itself, whose refusals name the field they are about.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use testfarm_api::resource::CreateResource;
use testfarm_core::labels::Labels;
use testfarm_core::resource::{Capabilities, ResourceKind};

use super::forms::{field_of, form_caller, require};
use super::session::Session;
use crate::auth::perm;
use crate::json::ApiJson;
use crate::state::AppState;

#[derive(Deserialize, Default, Clone)]
pub struct RegisterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    cpus: String,
    #[serde(default)]
    memory_mb: String,
    #[serde(default)]
    disk_gb: String,
    #[serde(default)]
    arch: String,
    #[serde(default)]
    toolchains: String,
    #[serde(default)]
    peripherals: String,
}

fn form(session: &Session, f: &RegisterForm, errors: &BTreeMap<String, String>) -> Markup {
    let err = |k: &str| html! { @if let Some(e) = errors.get(k) { span class="field-error" id={ "error-" (k) } { (e) } } };
    let text = |k: &str, label: &str, v: &str, hint: &str| {
        html! {
            label for=(k) { (label) }
            input type="text" id=(k) name=(k) value=(v) placeholder=(hint);
            (err(k))
        }
    };
    html! {
        h1 { "Register a resource" }
        form method="post" action="/ui/register" class="form" id="register" {
            input type="hidden" name="csrf" value=(session.csrf);
            (text("name", "Name", &f.name, "bs-7"))
            label for="kind" { "Kind" }
            select id="kind" name="kind" {
                @for k in ResourceKind::ALL { option value=(k) selected[f.kind == k.as_str()] { (k) } }
            }
            (err("kind"))
            (text("labels", "Labels", &f.labels, "arch=arm64, site=lab2"))
            (text("cpus", "CPUs", &f.cpus, "16"))
            (text("memory_mb", "Memory (MiB)", &f.memory_mb, "65536"))
            (text("disk_gb", "Disk (GB)", &f.disk_gb, "500"))
            (text("arch", "Arch", &f.arch, "x86_64"))
            (text("toolchains", "Toolchains", &f.toolchains, "gcc-13, rust-1.83"))
            (text("peripherals", "Peripherals", &f.peripherals, "uart, can"))
            (err(""))
            button type="submit" { "Register" }
        }
    }
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

fn number<T: std::str::FromStr>(
    errors: &mut BTreeMap<String, String>,
    field: &str,
    v: &str,
) -> Option<T> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.insert(
                field.to_string(),
                format!("{field}: {v:?} is not a whole number"),
            );
            None
        }
    }
}

/// The form's fields as the API's request, or the errors by field.
fn parse(f: &RegisterForm) -> Result<CreateResource, BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    let kind = match f.kind.parse::<ResourceKind>() {
        Ok(k) => Some(k),
        Err(e) => {
            errors.insert("kind".into(), e.to_string());
            None
        }
    };
    let mut labels = BTreeMap::new();
    for part in list(&f.labels) {
        match part.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                labels.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {
                errors.insert(
                    "labels".into(),
                    format!("labels: {part:?} is not key=value"),
                );
            }
        }
    }
    let capabilities = Capabilities {
        cpus: number(&mut errors, "cpus", &f.cpus),
        memory_mb: number(&mut errors, "memory_mb", &f.memory_mb),
        disk_gb: number(&mut errors, "disk_gb", &f.disk_gb),
        arch: Some(f.arch.trim().to_string()).filter(|a| !a.is_empty()),
        toolchains: list(&f.toolchains),
        peripherals: list(&f.peripherals),
        ..Capabilities::default()
    };
    match kind {
        Some(kind) if errors.is_empty() => Ok(CreateResource {
            name: f.name.trim().to_string(),
            kind,
            labels: Labels(labels),
            capabilities,
            board: None,
        }),
        _ => Err(errors),
    }
}

pub async fn page(session: Session) -> Response {
    if let Err(r) = require::<perm::Operate>(&session) {
        return r;
    }
    let f = RegisterForm {
        kind: "build-server".into(),
        ..RegisterForm::default()
    };
    super::layout::page(
        "Register",
        Some(&session),
        form(&session, &f, &BTreeMap::new()),
    )
    .into_response()
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    Form(f): Form<RegisterForm>,
) -> Response {
    let caller = match form_caller::<perm::Operate>(&session, &f.csrf) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let refused = |errors: BTreeMap<String, String>| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            super::layout::page("Register", Some(&session), form(&session, &f, &errors)),
        )
            .into_response()
    };
    let req = match parse(&f) {
        Ok(r) => r,
        Err(errors) => return refused(errors),
    };
    match crate::routes::resources::create_resource(State(state.clone()), caller, ApiJson(req))
        .await
    {
        Ok((_, r)) => Redirect::to(&format!("/ui/resources/{}", r.0.name)).into_response(),
        Err(e) => {
            let (field, text) = field_of(&e);
            let field = match field.as_str() {
                "name" | "kind" | "labels" => field,
                // a name already taken comes back as a conflict without a field
                _ if matches!(e, crate::error::ApiError::Conflict { .. }) => "name".into(),
                _ => String::new(),
            };
            refused(BTreeMap::from([(field, text)]))
        }
    }
}
