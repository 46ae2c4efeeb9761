//! The per-request metrics (`testfarm_http_requests_total{method,route,status}` and
//! `testfarm_http_request_duration_seconds{method,route}`), with their handles kept.
//!
//! Why: `metrics::counter!` with labels builds the label set (three `String`s) and looks
//! it up in the recorder's registry on every call, ~6 k instructions per request in the
//! lease round trip. A kept handle is an atomic add. Handles are only taken once the
//! server has installed its recorder (`prometheus()` runs before it serves), so none is
//! a no-op left over from before.

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};

use axum::http::Method;
use metrics::{Counter, Histogram};

/// The handles of one route template; a handful of methods and statuses each.
#[derive(Default)]
struct Route {
    counters: Vec<(Method, u16, Counter)>,
    durations: Vec<(Method, Histogram)>,
}

impl Route {
    fn find(&self, method: &Method, status: u16) -> Option<(&Counter, &Histogram)> {
        let counter = self
            .counters
            .iter()
            .find(|(m, s, _)| m == method && *s == status)?;
        let duration = self.durations.iter().find(|(m, _)| m == method)?;
        Some((&counter.2, &duration.1))
    }
}

fn routes() -> &'static RwLock<HashMap<String, Route>> {
    static ROUTES: OnceLock<RwLock<HashMap<String, Route>>> = OnceLock::new();
    ROUTES.get_or_init(Default::default)
}

/// Counts one request and records its duration. `route` is the matched template (or
/// `unmatched`), so the set of keys stays as small as the router.
pub(crate) fn record(method: &Method, route: &str, status: u16, seconds: f64) {
    {
        let known = routes().read().unwrap_or_else(PoisonError::into_inner);
        if let Some((counter, duration)) = known.get(route).and_then(|r| r.find(method, status)) {
            counter.increment(1);
            duration.record(seconds);
            return;
        }
    }
    let mut known = routes().write().unwrap_or_else(PoisonError::into_inner);
    let r = known.entry(route.to_string()).or_default();
    if !r
        .counters
        .iter()
        .any(|(m, s, _)| m == method && *s == status)
    {
        let counter = metrics::counter!("testfarm_http_requests_total",
            "method" => method.as_str().to_string(), "route" => route.to_string(), "status" => status.to_string());
        r.counters.push((method.clone(), status, counter));
    }
    if !r.durations.iter().any(|(m, _)| m == method) {
        let duration = metrics::histogram!("testfarm_http_request_duration_seconds",
            "method" => method.as_str().to_string(), "route" => route.to_string());
        r.durations.push((method.clone(), duration));
    }
    if let Some((counter, duration)) = r.find(method, status) {
        counter.increment(1);
        duration.record(seconds);
    }
}
