//! Resources: one table of every resource, and a detail page per resource.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use testfarm_api::resource::MaintenanceRequest;
use testfarm_core::Action;
use testfarm_store::resources::ResourceFilter;

use super::session::Session;
use crate::state::AppState;

pub async fn list(State(state): State<AppState>, session: Session) -> Response {
    let resources = match state.store.list_resources(&ResourceFilter::default()).await {
        Ok(r) => r,
        Err(e) => return super::error_page(&e.to_string()),
    };
    super::layout::page(
        "Resources",
        Some(&session),
        html! {
            h1 { "Resources" }
            table class="dense" {
                thead { tr { th { "Name" } th { "Kind" } th { "State" } th { "Labels" } } }
                tbody {
                    @for r in &resources {
                        tr {
                            td { a href={ "/ui/resources/" (r.name) } { (r.name) } }
                            td { (r.kind) }
                            td class={ "state state-" (r.state) } { (r.state) }
                            td { @for (k, v) in &r.labels.0 { span class="label" { (k) "=" (v) } " " } }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
) -> Response {
    render_detail(&state, &session, &name, None).await
}

async fn render_detail(
    state: &AppState,
    session: &Session,
    name: &str,
    error: Option<&str>,
) -> Response {
    let r = match state.store.get_resource(name).await {
        Ok(r) => r,
        Err(testfarm_store::StoreError::NotFound { .. }) => {
            return super::not_found_page(&format!("no resource named {name:?}"));
        }
        Err(e) => return super::error_page(&e.to_string()),
    };
    super::layout::page(
        &r.name,
        Some(session),
        html! {
            h1 { (r.name) }
            table class="dense kv" {
                tr { th { "Kind" } td { (r.kind) } }
                tr { th { "State" } td class={ "state state-" (r.state) } { (r.state) } }
                tr { th { "Labels" } td { @for (k, v) in &r.labels.0 { span class="label" { (k) "=" (v) } " " } } }
                tr { th { "Maintenance" } td {
                    @if let Some(m) = &r.maintenance { "on: " (m.reason) } @else { "off" }
                } }
                tr { th { "Connect" } td { code {
                    @if r.kind == testfarm_core::resource::ResourceKind::Board { "testfarm console " (r.name) }
                    @else { "ssh " (r.name) }
                } } }
            }
            h2 { "Maintenance" }
            form method="post" action={ "/ui/resources/" (r.name) "/maintenance" } class="form" {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="reason" { "Reason" }
                input type="text" id="reason" name="reason" value="";
                @if let Some(e) = error { span class="field-error" { (e) } }
                button type="submit" name="enabled" value="true" { "Maintenance on" }
                button type="submit" name="enabled" value="false" { "Maintenance off" }
            }
        },
    )
    .into_response()
}

#[derive(Deserialize)]
pub struct MaintenanceForm {
    csrf: String,
    enabled: String,
    #[serde(default)]
    reason: String,
}

/// Maintenance on/off through the same code as `POST /api/v1/resources/{name}/maintenance`.
pub async fn maintenance(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Form(f): Form<MaintenanceForm>,
) -> Response {
    if let Err(r) = super::csrf::check(&session, &f.csrf) {
        return r;
    }
    if let Err(e) = session.caller.require(Action::Operate) {
        return render_detail(&state, &session, &name, Some(&e.to_string())).await;
    }
    let req = MaintenanceRequest {
        enabled: f.enabled == "true",
        start: None,
        end: None,
        reason: f.reason,
    };
    match crate::routes::resources::apply_maintenance(&state, &session.caller, &name, &req).await {
        Ok(r) => Redirect::to(&format!("/ui/resources/{}", r.name)).into_response(),
        Err(crate::error::ApiError::NotFound(_)) => super::not_found_page("no such resource"),
        Err(e) => render_detail(&state, &session, &name, Some(&e.to_string())).await,
    }
}
