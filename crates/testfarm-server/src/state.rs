//! What every handler and background task shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use testfarm_store::Store;

use crate::auth::TokenCache;
use crate::config::Config;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub tokens: Arc<TokenCache>,
    pub metrics: Option<PrometheusHandle>,
}
