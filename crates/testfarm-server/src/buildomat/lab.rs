//! The server's [`Lab`]: buildomat instances as store rows, each served by an ordinary
//! testfarm job pinned to one board.
//!
//! Starting an instance submits a job (through [`crate::submit::prepare`], the same checks
//! as `POST /api/v1/jobs`) that requires the board and whose one shell step runs the agent
//! command on the host of the testfarm agent owning the board. The scheduler leases the
//! board to it like to any job, so health, quarantine, lease expiry and the board's
//! release (power off) are the ordinary rules. The job's log is the instance's output:
//! its lines are appended to the buildomat job. Destroying cancels the job; its lease
//! ends and the board is released. A job that ends on its own (the board failed, the
//! lease expired, someone cancelled it) is `ended`, and the loop destroys the instance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use testfarm_buildomat::lab::{Instance, InstanceState, Lab, LabError, LabStatus, NewInstance};
use testfarm_core::Role;
use testfarm_core::jobspec::JobSpec;
use testfarm_core::resource::{ResourceKind, ResourceState};
use testfarm_core::selector::Selector;
use testfarm_store::buildomat::BuildomatInstanceRow;
use testfarm_store::resources::ResourceFilter;
use testfarm_store::{NewEvent, StoreError};

use super::config::AgentCommand;
use crate::state::AppState;

/// Who submits the boards' jobs (and cancels them), in events and job lists.
pub const SUBMITTER: &str = "buildomat";

/// The lab over the server's state.
pub struct ServerLab {
    state: AppState,
    /// buildomat-server's URL, as the agent must reach it.
    url: String,
    /// Target id → the boards that may serve it.
    targets: BTreeMap<String, Selector>,
    command: AgentCommand,
    max_runtime: Duration,
    /// Instance → (log bytes already appended, an unfinished last line). In memory: after
    /// a restart the log is taken up from its end, so no line is appended twice.
    offsets: Mutex<HashMap<String, (u64, String)>>,
}

fn lab_err(what: &str) -> impl Fn(StoreError) -> LabError + '_ {
    move |e| LabError(format!("{what}: {e}"))
}

fn state_of(word: &str) -> InstanceState {
    match word {
        "created" => InstanceState::Created,
        "running" => InstanceState::Running,
        "destroying" => InstanceState::Destroying,
        _ => InstanceState::Destroyed,
    }
}

fn to_instance(r: &BuildomatInstanceRow) -> Instance {
    Instance {
        id: r.id.clone(),
        state: state_of(&r.state),
        job: r.bmat_job.clone(),
        worker: r.bmat_worker.clone(),
        target: r.target.clone(),
        board: r.board.clone(),
        created_at: r.created_at,
        last_progress: r.last_progress,
        hold: r.hold,
        destroy_reason: r.destroy_reason.clone(),
    }
}

impl ServerLab {
    pub fn new(
        state: AppState,
        url: String,
        targets: BTreeMap<String, Selector>,
        command: AgentCommand,
        max_runtime: Duration,
    ) -> ServerLab {
        ServerLab {
            state,
            url,
            targets,
            command,
            max_runtime,
            offsets: Mutex::default(),
        }
    }

    /// The live row of `id`; `None` once destroyed (history is not read: it only grows).
    async fn live_row(&self, id: &str) -> Result<Option<BuildomatInstanceRow>, LabError> {
        Ok(self
            .state
            .store
            .buildomat_instances(true)
            .await
            .map_err(lab_err("reading instances"))?
            .into_iter()
            .find(|r| r.id == id))
    }

    async fn row(&self, id: &str) -> Result<BuildomatInstanceRow, LabError> {
        self.live_row(id)
            .await?
            .ok_or_else(|| LabError(format!("instance {id} is not live in the store")))
    }

    async fn write(
        &self,
        row: &BuildomatInstanceRow,
        event: Option<NewEvent>,
    ) -> Result<(), LabError> {
        let mut tx = self.state.store.begin().await.map_err(lab_err("store"))?;
        tx.update_buildomat_instance(row)
            .await
            .map_err(lab_err("updating instance"))?;
        if let Some(e) = event {
            tx.record(e);
        }
        tx.commit().await.map_err(lab_err("store"))
    }

    /// The spec of the job that serves `i`.
    fn spec(&self, i: &Instance, bootstrap: &str) -> Result<JobSpec, LabError> {
        let secs = self.max_runtime.as_secs().max(60);
        let text = serde_json::json!({
            "name": format!("buildomat-{}", i.id),
            "timeout": format!("{secs}s"),
            "requires": { "kind": "board", "resource": i.board },
            "steps": [ { "shell": {
                "run": self.command.render(&self.url, bootstrap),
                "timeout": format!("{secs}s"),
                "env": {
                    "BUILDOMAT_URL": self.url,
                    "BUILDOMAT_WORKER": i.worker,
                    "BUILDOMAT_JOB": i.job,
                    "TESTFARM_BUILDOMAT_INSTANCE": i.id,
                },
            } } ],
        })
        .to_string();
        // JSON is YAML: the spec goes through the same parser as a submitted one.
        JobSpec::parse(&text).map_err(|e| LabError(format!("agent job spec: {e}")))
    }

    /// Lines of the job's log not yet handed out.
    async fn new_lines(
        &self,
        i: &Instance,
        job_id: &str,
        log_bytes: u64,
    ) -> Result<Vec<(String, DateTime<Utc>, String)>, LabError> {
        let (offset, partial) = {
            let mut o = self
                .offsets
                .lock()
                .map_err(|_| LabError("offsets lock".into()))?;
            o.entry(i.id.clone())
                .or_insert_with(|| (log_bytes, String::new()))
                .clone()
        };
        if offset >= log_bytes {
            return Ok(Vec::new());
        }
        let bytes = crate::logs::read(&self.state, job_id, offset, log_bytes)
            .await
            .map_err(|e| LabError(format!("reading job {job_id}'s log: {e}")))?;
        let mut text = partial;
        text.push_str(&String::from_utf8_lossy(&bytes));
        let now = Utc::now();
        let mut lines: Vec<&str> = text.split('\n').collect();
        let rest = lines.pop().unwrap_or_default().to_string();
        let out = lines
            .into_iter()
            .map(|l| {
                (
                    "agent".to_string(),
                    now,
                    l.trim_end_matches('\r').to_string(),
                )
            })
            .collect();
        let mut o = self
            .offsets
            .lock()
            .map_err(|_| LabError("offsets lock".into()))?;
        o.insert(i.id.clone(), (offset + bytes.len() as u64, rest));
        Ok(out)
    }
}

impl Lab for ServerLab {
    async fn live_instances(&self) -> Result<Vec<Instance>, LabError> {
        let rows = self
            .state
            .store
            .buildomat_instances(true)
            .await
            .map_err(lab_err("reading instances"))?;
        // Oldest first: a pass treats instances in the order they were made.
        Ok(rows.iter().rev().map(to_instance).collect())
    }

    async fn free_board(&self, target: &str) -> Result<Option<String>, LabError> {
        let Some(selector) = self.targets.get(target) else {
            return Ok(None);
        };
        let busy: HashSet<String> = self
            .state
            .store
            .buildomat_instances(true)
            .await
            .map_err(lab_err("reading instances"))?
            .into_iter()
            .map(|r| r.board)
            .collect();
        let filter = ResourceFilter {
            kind: Some(ResourceKind::Board),
            state: Some(ResourceState::Available),
            after: None,
        };
        let boards = self
            .state
            .store
            .list_resources(&filter)
            .await
            .map_err(lab_err("listing boards"))?;
        Ok(boards
            .into_iter()
            .filter(|r| selector.matches(&r.selector_labels()) && !busy.contains(&r.name))
            .map(|r| r.name)
            .next())
    }

    async fn record(&self, new: NewInstance) -> Result<Instance, LabError> {
        let now = Utc::now();
        let row = BuildomatInstanceRow {
            id: crate::ids::next().to_string(),
            state: InstanceState::Created.as_str().to_string(),
            bmat_job: new.job,
            bmat_worker: new.worker,
            target: new.target,
            board: new.board,
            job_id: None,
            lease_id: None,
            hold: false,
            destroy_reason: None,
            created_at: now,
            last_progress: now,
            destroyed_at: None,
        };
        let mut tx = self.state.store.begin().await.map_err(lab_err("store"))?;
        tx.insert_buildomat_instance(&row)
            .await
            .map_err(lab_err("recording instance"))?;
        tx.record(
            NewEvent::new(
                "buildomat.instance_created",
                "buildomat_instance",
                &row.id,
                SUBMITTER,
            )
            .with_data(serde_json::json!({
                "board": row.board, "buildomat_job": row.bmat_job,
                "worker": row.bmat_worker, "target": row.target,
            })),
        );
        tx.commit().await.map_err(lab_err("store"))?;
        Ok(to_instance(&row))
    }

    async fn start(&self, instance: &Instance, bootstrap: &str) -> Result<(), LabError> {
        let mut row = self.row(&instance.id).await?;
        if row.job_id.is_some() {
            return Ok(());
        }
        let spec = self.spec(instance, bootstrap)?;
        let prepared = crate::submit::prepare(&self.state, spec, SUBMITTER, Role::Operator)
            .await
            .map_err(|e| LabError(format!("submitting the board's job: {}", e.describe())))?;
        let job_id = prepared.row.job.id.clone();
        row.job_id = Some(job_id.clone());
        row.state = InstanceState::Running.as_str().to_string();
        let mut tx = self.state.store.begin().await.map_err(lab_err("store"))?;
        prepared
            .insert(&mut tx)
            .await
            .map_err(lab_err("queueing the board's job"))?;
        tx.update_buildomat_instance(&row)
            .await
            .map_err(lab_err("updating instance"))?;
        tx.commit().await.map_err(lab_err("store"))?;
        self.state.wake.notify_one();
        if let Ok(mut o) = self.offsets.lock() {
            o.insert(instance.id.clone(), (0, String::new()));
        }
        Ok(())
    }

    async fn status(&self, instance: &Instance) -> Result<LabStatus, LabError> {
        let mut row = self.row(&instance.id).await?;
        let Some(job_id) = row.job_id.clone() else {
            // Recorded but never started (testfarm stopped in between): nothing holds a
            // board and no agent will come; the loop destroys it.
            return Ok(LabStatus {
                ended: instance.state == InstanceState::Created,
                output: Vec::new(),
            });
        };
        let job = self
            .state
            .store
            .get_job(&job_id)
            .await
            .map_err(lab_err("reading the board's job"))?;
        if job.job.lease_id.is_some() && job.job.lease_id != row.lease_id {
            row.lease_id = job.job.lease_id.clone();
            self.write(&row, None).await?;
        }
        let output = self.new_lines(instance, &job_id, job.job.log_bytes).await?;
        Ok(LabStatus {
            ended: job.job.state.is_terminal(),
            output,
        })
    }

    async fn note(
        &self,
        instance: &Instance,
        hold: bool,
        progress: Option<DateTime<Utc>>,
    ) -> Result<(), LabError> {
        let mut row = self.row(&instance.id).await?;
        let event = (row.hold != hold).then(|| {
            NewEvent::new(
                if hold {
                    "buildomat.instance_held"
                } else {
                    "buildomat.instance_released"
                },
                "buildomat_instance",
                &row.id,
                SUBMITTER,
            )
        });
        row.hold = hold;
        if let Some(p) = progress {
            row.last_progress = row.last_progress.max(p);
        }
        self.write(&row, event).await
    }

    async fn destroy(&self, instance: &Instance, reason: &str) -> Result<(), LabError> {
        let Some(mut row) = self.live_row(&instance.id).await? else {
            return Ok(()); // already destroyed
        };
        let first = row.state != InstanceState::Destroying.as_str();
        row.state = InstanceState::Destroying.as_str().to_string();
        if row.destroy_reason.is_none() {
            row.destroy_reason = Some(reason.to_string());
        }
        let now = Utc::now();
        let mut tx = self.state.store.begin().await.map_err(lab_err("store"))?;
        let mut after = crate::lifecycle::After::default();
        if let Some(job_id) = &row.job_id {
            let mut job = tx
                .get_job(job_id)
                .await
                .map_err(lab_err("reading the board's job"))?;
            if !job.job.state.is_terminal() && job.cancel_requested.is_none() {
                after = crate::lifecycle::cancel_job(
                    &mut tx,
                    &mut job,
                    format!("buildomat instance destroyed ({reason})"),
                    SUBMITTER,
                    now,
                )
                .await
                .map_err(|e| LabError(format!("cancelling job {job_id}: {e}")))?;
            }
        }
        tx.update_buildomat_instance(&row)
            .await
            .map_err(lab_err("updating instance"))?;
        if first {
            tx.record(
                NewEvent::new(
                    "buildomat.instance_destroying",
                    "buildomat_instance",
                    &row.id,
                    SUBMITTER,
                )
                .with_data(serde_json::json!({ "reason": reason, "job_id": row.job_id })),
            );
        }
        tx.commit().await.map_err(lab_err("store"))?;
        self.state.after_commit(after);
        self.state.work_changed();
        Ok(())
    }

    async fn finish(&self, instance: &Instance) -> Result<(), LabError> {
        let Some(mut row) = self.live_row(&instance.id).await? else {
            return Ok(()); // already destroyed
        };
        row.state = InstanceState::Destroyed.as_str().to_string();
        row.destroyed_at = Some(Utc::now());
        let event = NewEvent::new(
            "buildomat.instance_destroyed",
            "buildomat_instance",
            &row.id,
            SUBMITTER,
        )
        .with_data(serde_json::json!({ "reason": row.destroy_reason }));
        self.write(&row, Some(event)).await?;
        if let Ok(mut o) = self.offsets.lock() {
            o.remove(&instance.id);
        }
        Ok(())
    }
}
