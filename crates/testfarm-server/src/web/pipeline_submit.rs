//! The pipeline submit form: a YAML spec and a priority, checked by the same code as
//! `POST /api/v1/pipelines` (`crate::pipelines::submit`); an error is shown next to the
//! spec with its field, line and column, and nothing is queued.

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::forms::{field_error, field_of, form_caller, require};
use super::session::Session;
use crate::auth::perm;
use crate::pipelines::{self, Submission};
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct PipelineForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    spec: String,
    #[serde(default)]
    priority: String,
}

fn form(session: &Session, f: &PipelineForm, error: Option<(String, String)>) -> Markup {
    let err = |k: &str| field_error(&error, k);
    html! {
        h1 { "Run a pipeline" }
        form method="post" action="/ui/pipelines/submit" class="form" id="submit-pipeline" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="spec" { "Pipeline spec (YAML)" }
            textarea id="spec" name="spec" rows="20" spellcheck="false" { (f.spec) }
            (err("spec"))
            label for="priority" { "Priority of every stage's job" }
            input type="text" id="priority" name="priority" value=(f.priority) placeholder="normal";
            (err("priority"))
            (err(""))
            div { button type="submit" { "Run" } }
        }
        p class="hint" { "Reference: docs/pipelines.md. Stages, needs and templates are checked before anything is queued." }
    }
}

pub async fn page(session: Session) -> Response {
    if let Err(r) = require::<perm::Submit>(&session) {
        return r;
    }
    super::layout::page(
        "Run a pipeline",
        Some(&session),
        form(&session, &PipelineForm::default(), None),
    )
    .into_response()
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    Form(f): Form<PipelineForm>,
) -> Response {
    let caller = match form_caller::<perm::Submit>(&session, &f.csrf) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let submitted = pipelines::submit(
        &state,
        Submission {
            text: &f.spec,
            vars: Default::default(),
            priority: Some(f.priority.trim().to_string()).filter(|p| !p.is_empty()),
            submitter: &caller.name,
            role: caller.role,
        },
    )
    .await;
    match submitted {
        Ok(p) => Redirect::to(&format!("/ui/pipelines/{}", p.id)).into_response(),
        Err(e) => {
            let (field, text) = field_of(&e);
            // Spec errors name a place inside the spec (`stages[1].needs`): show them at it.
            let field = if field == "priority" {
                field
            } else {
                "spec".to_string()
            };
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                super::layout::page(
                    "Run a pipeline",
                    Some(&session),
                    form(&session, &f, Some((field, text))),
                ),
            )
                .into_response()
        }
    }
}
