//! testfarm-server: the HTTP API, and the background tasks that keep lab state true.
//!
//! Handlers are thin: authenticate ([`auth`]), parse ([`json`]), call a rule of
//! `testfarm-core`, write the outcome and its events in one store transaction, answer.
//! Errors become problem+json in one place ([`error`]). Configuration, with its defaults
//! and validation, is [`config`].

pub mod alerts;
pub mod artifacts;
pub mod auth;
pub mod awake;
pub mod boards;
pub mod build_server;
pub mod buildomat;
pub mod config;
pub mod error;
pub mod extract;
mod ids;
pub mod json;
pub mod lifecycle;
pub mod logs;
pub mod pipelines;
pub mod results;
pub mod routes;
mod server_jobs;
pub mod state;
pub mod submit;
mod tasks;
pub mod web;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::serve::ListenerExt;
use chrono::Utc;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use testfarm_store::{NewEvent, Store};
use tokio::net::TcpListener;

pub use config::Config;
use state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot open the database {path}: {source}")]
    Store {
        path: PathBuf,
        source: testfarm_store::StoreError,
    },
    #[error("admin token file {path}: {why}")]
    AdminToken { path: PathBuf, why: String },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("secret `{name}` (config [secrets]): {why}")]
    Secret { name: String, why: String },
    #[error("{0}")]
    Buildomat(String),
    #[error("artifact store: {0}")]
    Artifacts(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the server's files are, resolved from the config file's location.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub database: PathBuf,
    pub admin_token_file: PathBuf,
    /// The config file's directory: `[secrets]` files are relative to it.
    pub config_dir: PathBuf,
}

impl Paths {
    /// Relative paths in the config are relative to the config file's directory;
    /// `db_override` (from `-d`) and `TESTFARM_ADMIN_TOKEN_FILE` are taken as given.
    pub fn resolve(
        config: &Config,
        config_dir: &Path,
        db_override: Option<&Path>,
        admin_token_env: Option<PathBuf>,
    ) -> Paths {
        let data_dir = if config.server.data_dir == Path::new(".") {
            config_dir.to_path_buf()
        } else {
            config_dir.join(&config.server.data_dir)
        };
        Paths {
            database: db_override
                .map(Path::to_path_buf)
                .unwrap_or_else(|| data_dir.join(&config.server.database)),
            admin_token_file: admin_token_env
                .unwrap_or_else(|| config_dir.join(&config.server.admin_token_file)),
            data_dir,
            config_dir: config_dir.to_path_buf(),
        }
    }
}

/// Installs the process-wide Prometheus recorder once; later calls reuse it.
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}

/// A server bound to its port, ready to run.
pub struct Server {
    state: AppState,
    listener: TcpListener,
    /// `[buildomat]`'s tokens, read at bind; `None` when testfarm is no factory.
    buildomat: Option<tasks::buildomat::Tokens>,
}

impl Server {
    /// Opens the store (creating and migrating it), installs the admin token from its
    /// file, and binds the listening socket.
    pub async fn bind(config: Config, paths: &Paths) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&paths.data_dir).map_err(|source| ServerError::DataDir {
            path: paths.data_dir.clone(),
            source,
        })?;
        let store = Store::open(&paths.database)
            .await
            .map_err(|source| ServerError::Store {
                path: paths.database.clone(),
                source,
            })?;
        let mut secrets = std::collections::BTreeMap::new();
        for (name, source) in &config.secrets {
            let value = source
                .read(&paths.config_dir)
                .map_err(|why| ServerError::Secret {
                    name: name.clone(),
                    why,
                })?;
            secrets.insert(name.clone(), value);
        }
        let buildomat = match &config.buildomat {
            None => None,
            Some(b) => Some(tasks::buildomat::Tokens {
                factory: b
                    .read_token(&paths.config_dir)
                    .map_err(ServerError::Buildomat)?,
                admin: b
                    .read_admin_token(&paths.config_dir)
                    .map_err(ServerError::Buildomat)?,
            }),
        };
        install_admin_token(&store, &paths.admin_token_file).await?;
        let location = config
            .artifacts
            .location(&config.secrets)
            .map_err(ServerError::Artifacts)?;
        let artifacts = artifacts::ArtifactRepo::open(&location, &paths.data_dir, &secrets)
            .await
            .map_err(ServerError::Artifacts)?;
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let (work, _) = tokio::sync::watch::channel(0u64);
        let (log_written, _) = tokio::sync::watch::channel(0u64);
        let (board_actions, _) = tokio::sync::watch::channel(0u64);
        let started_at = Utc::now();
        let state = AppState {
            store,
            config: Arc::new(config),
            tokens: Arc::default(),
            metrics: prometheus(),
            wake: Arc::default(),
            work: Arc::new(work),
            log_written: Arc::new(log_written),
            board_actions: Arc::new(board_actions),
            consoles: Arc::default(),
            log_locks: Arc::default(),
            data_dir: Arc::new(paths.data_dir.clone()),
            artifacts: Arc::new(artifacts),
            started_at,
            awake: Arc::new(awake::Awake::new(started_at)),
            secrets: Arc::new(secrets),
        };
        Ok(Server {
            state,
            listener,
            buildomat,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// One scheduler pass now, exactly as the background scheduler runs it when woken:
    /// load the world, place, write each placement in its own transaction. For benchmarks
    /// and tools (`testfarm bench placement`); a running server never needs to call it.
    pub async fn schedule_once(&self) -> Result<(), lifecycle::LifecycleError> {
        tasks::scheduler::pass(&self.state, Utc::now()).await
    }

    /// What a scheduler pass reads (the first phase of [`Server::schedule_once`]): the
    /// snapshot, the queue and the policies, so `place` can be measured on its own.
    pub async fn scheduler_world(
        &self,
    ) -> Result<
        (
            testfarm_core::placement::Snapshot,
            Vec<testfarm_core::queue::QueuedJob>,
            testfarm_core::policy::Policies,
        ),
        testfarm_store::StoreError,
    > {
        let w = tasks::scheduler::load_world(&self.state).await?;
        Ok((w.snapshot, w.queue, w.policies))
    }

    /// Issues a fresh agent-role token named `name` for the built-in agent and returns
    /// its text. The secret lives only in this process; a restart issues a new one.
    pub async fn issue_agent_token(&self, name: &str) -> Result<String, ServerError> {
        let err = |why: String| ServerError::AdminToken {
            path: PathBuf::from("(built-in agent token)"),
            why,
        };
        let (id, text) = auth::new_token();
        let parts = testfarm_core::token::parse(&text).map_err(|e| err(e.to_string()))?;
        let hash = testfarm_core::token::hash_secret(parts.secret);
        let mut tx = self
            .state
            .store
            .begin()
            .await
            .map_err(|e| err(e.to_string()))?;
        tx.upsert_named_token(&id, name, testfarm_core::Role::Agent, &hash, Utc::now())
            .await
            .map_err(|e| err(e.to_string()))?;
        tx.record(
            NewEvent::new("token.created", "token", name, "server").with_data(
                serde_json::json!({ "role": "agent", "id": id, "source": "built-in agent" }),
            ),
        );
        tx.commit().await.map_err(|e| err(e.to_string()))?;
        Ok(text)
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish (bounded
    /// by `server.shutdown_grace`) and closes the database.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            state,
            listener,
            buildomat,
        } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Before any task judges silence: start-up is not a stall.
        state.awake.begin();
        server_jobs::recover(&state).await;
        let mut tasks = tasks::spawn_all(state.clone(), stop_rx.clone());
        if let Some(tokens) = buildomat {
            tasks.push(tokio::spawn(tasks::buildomat::run(
                state.clone(),
                tokens,
                stop_rx.clone(),
            )));
        }
        let grace = state.config.server.shutdown_grace.0;
        let app = routes::router(state.clone());
        let mut stop_for_serve = stop_rx.clone();
        // Small request/response exchanges (lease round trips, heartbeats) must not wait
        // for Nagle's algorithm to coalesce a response's writes.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop_for_serve.wait_for(|s| *s).await;
        });
        let serve = tokio::spawn(async move { serve.await });
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        match tokio::time::timeout(grace, serve).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(ServerError::Serve(e)),
            Ok(Err(join)) => tracing::error!(error = %join, "server task failed"),
            Err(_) => tracing::warn!(
                ?grace,
                "requests still running after the grace period; closing"
            ),
        }
        for t in tasks {
            let _ = tokio::time::timeout(grace, t).await;
        }
        state.store.close().await;
        tracing::info!("stopped; database closed");
        Ok(())
    }
}

/// Makes the token in `path` a working admin token (first start, or after rotation).
async fn install_admin_token(store: &Store, path: &Path) -> Result<(), ServerError> {
    let err = |why: String| ServerError::AdminToken {
        path: path.to_path_buf(),
        why,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "no admin token file; create one with `testfarm init` or use existing tokens");
            return Ok(());
        }
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    let parts = testfarm_core::token::parse(&text).map_err(|e| err(e.to_string()))?;
    let hash = testfarm_core::token::hash_secret(parts.secret);
    let now = Utc::now();
    let mut tx = store.begin().await.map_err(|e| err(e.to_string()))?;
    let changed = tx
        .upsert_named_token(parts.id, "admin", testfarm_core::Role::Admin, &hash, now)
        .await
        .map_err(|e| err(e.to_string()))?;
    if changed {
        tx.record(NewEvent::new("token.created", "token", "admin", "server").with_data(
            serde_json::json!({ "role": "admin", "id": parts.id, "source": "admin token file" }),
        ));
    }
    tx.commit().await.map_err(|e| err(e.to_string()))?;
    Ok(())
}
