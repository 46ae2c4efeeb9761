//! The factory loop against a fake buildomat-server (tests/fake_buildomat) and an
//! in-memory lab whose "agent" is a real shell script that bootstraps over HTTP, as
//! `buildomat-agent install URL BOOTSTRAP` would. Every test bounds its own time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_buildomat;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fake_buildomat::Fake;
use testfarm_buildomat::client::{Client, ClientError};
use testfarm_buildomat::factory::{FactoryConfig, PassError, pass};
use testfarm_buildomat::lab::{Instance, InstanceState, Lab, LabError, LabStatus, NewInstance};
use testfarm_core::factory::StuckLimits;

const TOKEN: &str = "factory-token";
const LIMIT: Duration = Duration::from_secs(30);

/// What a testfarm store would keep: survives a "testfarm restart" (a new MemLab over it).
#[derive(Default)]
struct Store {
    instances: Vec<Instance>,
    /// board → leased by instance
    leased: HashMap<String, String>,
    boards: Vec<String>,
    ended: Vec<String>,
    output: Vec<(String, String)>,
    lease_ends: usize,
}

#[derive(Clone)]
struct MemLab {
    store: Arc<Mutex<Store>>,
    url: String,
}

impl Lab for MemLab {
    async fn live_instances(&self) -> Result<Vec<Instance>, LabError> {
        let s = self.store.lock().unwrap();
        Ok(s.instances
            .iter()
            .filter(|i| i.state != InstanceState::Destroyed)
            .cloned()
            .collect())
    }
    async fn free_board(&self, _target: &str) -> Result<Option<String>, LabError> {
        let s = self.store.lock().unwrap();
        Ok(s.boards
            .iter()
            .find(|b| !s.leased.contains_key(*b))
            .cloned())
    }
    async fn record(&self, n: NewInstance) -> Result<Instance, LabError> {
        let now = Utc::now();
        let i = Instance {
            id: ulid::Ulid::new().to_string(),
            state: InstanceState::Created,
            job: n.job,
            worker: n.worker,
            target: n.target,
            board: n.board,
            created_at: now,
            last_progress: now,
            hold: false,
            destroy_reason: None,
        };
        let mut s = self.store.lock().unwrap();
        s.leased.insert(i.board.clone(), i.id.clone());
        s.instances.push(i.clone());
        Ok(i)
    }
    async fn start(&self, i: &Instance, bootstrap: &str) -> Result<(), LabError> {
        let script = format!(
            "curl -sf -X POST -H 'content-type: application/json' \
             -d '{{\"bootstrap\":\"{bootstrap}\",\"token\":\"t\"}}' {}/0/worker/bootstrap",
            self.url
        );
        let out = tokio::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .await
            .map_err(|e| LabError(e.to_string()))?;
        if !out.status.success() {
            return Err(LabError(format!("agent exited {}", out.status)));
        }
        let mut s = self.store.lock().unwrap();
        s.output.push((i.id.clone(), "agent: bootstrapped".into()));
        if let Some(r) = s.instances.iter_mut().find(|r| r.id == i.id) {
            r.state = InstanceState::Running;
        }
        Ok(())
    }
    async fn status(&self, i: &Instance) -> Result<LabStatus, LabError> {
        let mut s = self.store.lock().unwrap();
        let ended = s.ended.contains(&i.id);
        let (mine, rest): (Vec<_>, Vec<_>) = s.output.drain(..).partition(|(id, _)| id == &i.id);
        s.output = rest;
        let output = mine
            .into_iter()
            .map(|(_, l)| ("console".to_string(), Utc::now(), l))
            .collect();
        Ok(LabStatus { ended, output })
    }
    async fn note(
        &self,
        i: &Instance,
        hold: bool,
        p: Option<DateTime<Utc>>,
    ) -> Result<(), LabError> {
        let mut s = self.store.lock().unwrap();
        if let Some(r) = s.instances.iter_mut().find(|r| r.id == i.id) {
            r.hold = hold;
            if let Some(p) = p {
                r.last_progress = p;
            }
        }
        Ok(())
    }
    async fn destroy(&self, i: &Instance, reason: &str) -> Result<(), LabError> {
        let mut s = self.store.lock().unwrap();
        if s.leased.remove(&i.board).is_some() {
            s.lease_ends += 1;
        }
        if let Some(r) = s.instances.iter_mut().find(|r| r.id == i.id) {
            r.state = InstanceState::Destroying;
            r.destroy_reason.get_or_insert_with(|| reason.to_string());
        }
        Ok(())
    }
    async fn finish(&self, i: &Instance) -> Result<(), LabError> {
        let mut s = self.store.lock().unwrap();
        if let Some(r) = s.instances.iter_mut().find(|r| r.id == i.id) {
            r.state = InstanceState::Destroyed;
        }
        Ok(())
    }
}

struct Rig {
    fake: Fake,
    store: Arc<Mutex<Store>>,
    target: String,
}

impl Rig {
    async fn new(boards: &[&str]) -> Rig {
        let fake = Fake::start(TOKEN).await;
        let store = Arc::new(Mutex::new(Store {
            boards: boards.iter().map(|b| b.to_string()).collect(),
            ..Default::default()
        }));
        Rig {
            fake,
            store,
            target: ulid::Ulid::new().to_string(),
        }
    }
    /// A fresh client and lab over the same store: what a restarted testfarm server has.
    fn factory(&self, token: &str) -> (Client, MemLab, FactoryConfig) {
        let client = Client::new(&self.fake.url, token, Duration::from_secs(5)).unwrap();
        let lab = MemLab {
            store: self.store.clone(),
            url: self.fake.url.clone(),
        };
        let config = FactoryConfig {
            targets: vec![self.target.clone()],
            ..Default::default()
        };
        (client, lab, config)
    }
    fn instances(&self) -> Vec<Instance> {
        self.store.lock().unwrap().instances.clone()
    }
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test took too long");
}

#[tokio::test]
async fn wrong_token_is_reported_as_such() {
    bounded(async {
        let rig = Rig::new(&["b1"]).await;
        let (client, lab, config) = rig.factory("wrong");
        let err = pass(&client, &lab, &config).await.unwrap_err();
        assert!(
            matches!(
                err,
                PassError::Client(ClientError::Unauthorized { status: 401, .. })
            ),
            "{err}"
        );
        assert!(rig.instances().is_empty());
    })
    .await;
}

#[tokio::test]
async fn null_lease_creates_nothing() {
    bounded(async {
        let rig = Rig::new(&["b1"]).await;
        let (client, lab, config) = rig.factory(TOKEN);
        let r = pass(&client, &lab, &config).await.unwrap();
        assert!(r.created.is_empty());
        assert!(rig.instances().is_empty());
        assert_eq!(rig.fake.inner.lock().unwrap().lease_calls, 1);
    })
    .await;
}

#[tokio::test]
async fn unreachable_server_is_reported_as_such() {
    bounded(async {
        let rig = Rig::new(&["b1"]).await;
        let client = Client::new("http://127.0.0.1:9", TOKEN, Duration::from_secs(2)).unwrap();
        let (_, lab, config) = rig.factory(TOKEN);
        let err = pass(&client, &lab, &config).await.unwrap_err();
        assert!(
            matches!(err, PassError::Client(ClientError::Unreachable { .. })),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn lease_worker_associate_agent_recycle_destroy_with_restarts() {
    bounded(async {
        let rig = Rig::new(&["b1", "b2"]).await;
        let job = rig.fake.add_job(&rig.target);
        let (client, lab, config) = rig.factory(TOKEN);

        let r = pass(&client, &lab, &config).await.unwrap();
        assert_eq!(r.created.len(), 1, "{r:?}");
        let i = rig.instances().remove(0);
        assert_eq!(i.job, job);
        assert_eq!(i.state, InstanceState::Running);
        let w = rig.fake.live_workers().remove(0);
        assert_eq!(
            w.private.as_deref(),
            Some(i.id.as_str()),
            "associated before the agent ran"
        );
        assert!(w.online, "the fake agent bootstrapped");

        // Both servers restart: testfarm (new client and lab over the same store) and
        // buildomat-server (forgets its leases). No second worker, no second instance, and
        // the second free board does not get the same job (a double lease is refused).
        rig.fake.restart();
        let (client, lab, config) = rig.factory(TOKEN);
        let r = pass(&client, &lab, &config).await.unwrap();
        assert!(r.created.is_empty(), "{r:?}");
        assert_eq!(rig.fake.live_workers().len(), 1);
        assert_eq!(rig.instances().len(), 1);
        let appended = rig.fake.inner.lock().unwrap().appended.clone();
        assert_eq!(
            appended,
            vec![(w.id.clone(), "agent: bootstrapped".to_string())]
        );

        // The job completes: the server recycles the worker.
        rig.fake.with_worker(&w.id, |w| w.recycle = true);
        let r = pass(&client, &lab, &config).await.unwrap();
        assert_eq!(r.destroyed, vec![(i.id.clone(), "recycled".to_string())]);
        assert!(rig.fake.live_workers().is_empty(), "worker DELETEd");
        let s = rig.store.lock().unwrap();
        assert_eq!(s.instances[0].state, InstanceState::Destroyed);
        assert!(s.leased.is_empty(), "board lease ended");
        assert_eq!(s.lease_ends, 1);
    })
    .await;
}

#[tokio::test]
async fn restart_between_record_and_associate_associates_again() {
    bounded(async {
        let rig = Rig::new(&["b1"]).await;
        let job = rig.fake.add_job(&rig.target);
        let (client, lab, config) = rig.factory(TOKEN);
        // As if the factory crashed after creating the worker and recording the instance.
        let w = client.create_worker(&rig.target, &job).await.unwrap();
        let i = lab
            .record(NewInstance {
                job,
                worker: w.id.clone(),
                target: rig.target.clone(),
                board: "b1".into(),
            })
            .await
            .unwrap();
        let r = pass(&client, &lab, &config).await.unwrap();
        assert_eq!(r.associated, vec![i.id.clone()]);
        assert_eq!(
            rig.fake.live_workers()[0].private.as_deref(),
            Some(i.id.as_str())
        );
    })
    .await;
}

#[tokio::test]
async fn held_worker_is_kept_until_released() {
    bounded(async {
        let rig = Rig::new(&["b1"]).await;
        rig.fake.add_job(&rig.target);
        let (client, lab, config) = rig.factory(TOKEN);
        pass(&client, &lab, &config).await.unwrap();
        let w = rig.fake.live_workers().remove(0);
        rig.fake.with_worker(&w.id, |w| {
            w.hold = true;
            w.recycle = true;
        });
        for _ in 0..2 {
            let r = pass(&client, &lab, &config).await.unwrap();
            assert_eq!(r.held.len(), 1);
            assert!(r.destroyed.is_empty());
        }
        assert!(rig.instances()[0].hold, "the record shows the hold");
        assert_eq!(rig.store.lock().unwrap().leased.len(), 1, "board kept");
        rig.fake.with_worker(&w.id, |w| w.hold = false);
        let r = pass(&client, &lab, &config).await.unwrap();
        assert_eq!(r.destroyed.len(), 1);
        assert!(rig.store.lock().unwrap().leased.is_empty());
    })
    .await;
}

#[tokio::test]
async fn stray_worker_is_deleted_and_held_stray_kept() {
    bounded(async {
        let rig = Rig::new(&[]).await;
        let stray = rig.fake.add_stray_worker(&rig.target);
        let held = rig.fake.add_stray_worker(&rig.target);
        rig.fake.with_worker(&held, |w| w.hold = true);
        let (client, lab, config) = rig.factory(TOKEN);
        let r = pass(&client, &lab, &config).await.unwrap();
        assert_eq!(r.orphans_deleted, vec![stray]);
        assert_eq!(rig.fake.live_workers().len(), 1);
        assert_eq!(
            rig.fake.inner.lock().unwrap().pings,
            1,
            "no free board: ping, not lease"
        );
    })
    .await;
}

#[tokio::test]
async fn stuck_agent_and_failed_board_are_destroyed() {
    bounded(async {
        let rig = Rig::new(&["b1"]).await;
        rig.fake.add_job(&rig.target);
        let (client, lab, mut config) = rig.factory(TOKEN);
        pass(&client, &lab, &config).await.unwrap();
        let w = rig.fake.live_workers().remove(0);
        // The agent goes offline and stays silent past the limit.
        rig.fake.with_worker(&w.id, |w| w.online = false);
        config.limits = StuckLimits {
            boot: Duration::ZERO,
            silent: Duration::ZERO,
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = pass(&client, &lab, &config).await.unwrap();
        assert_eq!(r.destroyed[0].1, "boot_stuck");
        assert!(rig.fake.live_workers().is_empty());

        // A second job; its board fails (the lab ends the instance's lease).
        rig.fake.add_job(&rig.target);
        config.limits = StuckLimits::default();
        pass(&client, &lab, &config).await.unwrap();
        let i = rig
            .instances()
            .into_iter()
            .find(|i| i.state == InstanceState::Running)
            .unwrap();
        rig.store.lock().unwrap().ended.push(i.id.clone());
        let r = pass(&client, &lab, &config).await.unwrap();
        assert_eq!(r.destroyed, vec![(i.id, "lab_ended".to_string())]);
        assert!(rig.store.lock().unwrap().leased.is_empty());
    })
    .await;
}

#[tokio::test]
async fn against_a_real_buildomat_server() {
    match std::env::var("BUILDOMAT_SERVER") {
        Err(_) => {
            eprintln!("skipped: set BUILDOMAT_SERVER=path/to/buildomat-server (docs/buildomat.md)")
        }
        Ok(p) => eprintln!("skipped: running the contract against {p} is not implemented yet"),
    }
}
