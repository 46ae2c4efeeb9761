//! The page shell: head, nav, main. Every page goes through [`page`].

use axum::response::Html;
use maud::{DOCTYPE, Markup, html};

use super::session::Session;

/// Returned as `Html` so handlers answer with `text/html` directly.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Html<String> {
    let m = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · testfarm" }
                link rel="stylesheet" href="/ui/assets/app.css";
            }
            body data-after=[session.map(|s| s.last_event)] {
                nav class="nav" {
                    a href="/ui" class="brand" { "testfarm" }
                    a href="/ui/resources" { "Resources" }
                    a href="/ui/jobs" { "Jobs" }
                    a href="/ui/pipelines" { "Pipelines" }
                    a href="/ui/alerts" { "Alerts" }
                    a href="/ui/buildomat" { "buildomat" }
                    @if let Some(s) = session {
                        span class="who" { (s.caller.name) " (" (s.caller.role) ")" }
                        form method="post" action="/ui/logout" class="inline" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" { (body) }
                @if session.is_some() { script src="/ui/assets/live.js" defer {} }
            }
        }
    };
    Html(m.into_string())
}
