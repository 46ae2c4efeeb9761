//! What every handler and background task shares.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use testfarm_store::Store;
use tokio::sync::{Notify, watch};

use crate::auth::TokenCache;
use crate::config::Config;
use crate::lifecycle::After;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub tokens: Arc<TokenCache>,
    pub metrics: Option<PrometheusHandle>,
    /// Wakes the scheduler (a job was submitted, a lease ended, a resource changed).
    pub wake: Arc<Notify>,
    /// Bumped whenever work is assigned or cancelled; agents' long-polls wait on it.
    pub work: Arc<watch::Sender<u64>>,
    /// Bumped whenever a board action finishes; callers waiting for an answer watch it.
    pub board_actions: Arc<watch::Sender<u64>>,
    /// Console sessions waiting for their board's agent to connect.
    pub consoles: Arc<crate::routes::console::Sessions>,
    /// Bumped on every stored log chunk; log followers wait on it.
    pub log_written: Arc<watch::Sender<u64>>,
    /// Serialises writes to one job's log file.
    pub log_locks: Arc<crate::logs::KeyedLocks>,
    /// Where job logs and outputs are kept.
    pub data_dir: Arc<std::path::PathBuf>,
    /// The artifact repository's blobs and their readers.
    pub artifacts: Arc<crate::artifacts::ArtifactRepo>,
    pub started_at: DateTime<Utc>,
    /// When the server was last awake (its start, or the end of a stall): silence
    /// before it is not held against lease holders and agents.
    pub awake: Arc<crate::awake::Awake>,
    /// `[secrets]`, read at start: name → value. Never logged, stored or sent.
    pub secrets: Arc<std::collections::BTreeMap<String, String>>,
}

impl AppState {
    /// Acts on what a committed transaction left to do.
    pub fn after_commit(&self, after: After) {
        if after.wake_scheduler {
            self.wake.notify_one();
        }
        for job in after.ended_jobs {
            tokio::spawn(crate::results::store(self.clone(), job.clone()));
            tokio::spawn(crate::pipelines::job_ended(self.clone(), job));
        }
        if !after.cleanup.is_empty() {
            self.work.send_modify(|v| *v += 1);
            for (resource, lease) in after.cleanup {
                tokio::spawn(crate::tasks::cleanup::run(self.clone(), resource, lease));
            }
        }
    }

    /// A board action finished (answered, failed or timed out).
    pub fn board_action_done(&self) {
        self.board_actions.send_modify(|v| *v += 1);
    }

    pub fn work_changed(&self) {
        self.work.send_modify(|v| *v += 1);
    }

    /// Whether a cleanup command is configured.
    pub fn cleanup_configured(&self) -> bool {
        !self.config.leases.cleanup_command.trim().is_empty()
    }
}
