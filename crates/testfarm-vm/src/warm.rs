//! Warm pods: a pod that stays booted in a small background daemon, so an edit-and-rerun
//! loop pays no boot. The daemon listens on `<runtime base>/pods/<key>.sock`; the key hashes
//! everything that makes VMs interchangeable (image id, project root, accel, hardware,
//! kernel arguments), so a pod whose image changed is simply not found, and not reused.
//!
//! Wire: one JSON request line, then JSON reply lines (a run streams one `Result` per test
//! and ends with `Done`). One run at a time; a second client waits its turn.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, mpsc};

use crate::agent::ProtocolChoice;
use crate::config::{ResolvedAccel, VmConfig};
use crate::error::{Result, VmError};
use crate::pod::{Pod, PodOptions, TestResult};
use crate::runtime_dir::{self, RuntimeDir};
use crate::vm::VmOptions;

/// Everything the daemon needs to boot its pod (passed to it as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WarmSpec {
    pub jobs: usize,
    pub image_id: String,
    pub root: PathBuf,
    pub config: VmConfig,
    pub accel: ResolvedAccel,
    pub boot_timeout_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub v1: bool,
}

impl WarmSpec {
    pub fn from_options(jobs: usize, image_id: &str, root: &Path, vm: &VmOptions) -> WarmSpec {
        WarmSpec {
            jobs,
            image_id: image_id.to_string(),
            root: root.to_path_buf(),
            config: vm.config.clone(),
            accel: vm.accel,
            boot_timeout_ms: u64::try_from(vm.boot_timeout.as_millis()).unwrap_or(u64::MAX),
            heartbeat_timeout_ms: u64::try_from(vm.heartbeat_timeout.as_millis())
                .unwrap_or(u64::MAX),
            v1: vm.protocol == ProtocolChoice::V1,
        }
    }

    pub fn vm_options(&self) -> VmOptions {
        let mut o = VmOptions::new(self.config.clone(), self.accel);
        o.boot_timeout = Duration::from_millis(self.boot_timeout_ms);
        o.heartbeat_timeout = Duration::from_millis(self.heartbeat_timeout_ms);
        if self.v1 {
            o.protocol = ProtocolChoice::V1;
        }
        o
    }

    /// Identity of interchangeable pods (the pod size is not part of it).
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.image_id.as_bytes());
        h.update([0]);
        h.update(self.root.to_string_lossy().as_bytes());
        h.update([0]);
        let mut cfg = self.config.clone();
        cfg.share = None;
        h.update(serde_json::to_vec(&cfg).unwrap_or_default());
        h.update(self.accel.name().as_bytes());
        h.update([u8::from(self.v1)]);
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodInfo {
    pub key: String,
    pub pid: u32,
    pub vms: Vec<String>,
    pub image_id: String,
    pub root: PathBuf,
    pub accel: ResolvedAccel,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    pub paths: Vec<String>,
    pub timeout_ms: u64,
    pub isolate: bool,
    pub retries: u32,
    pub fail_fast: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Status,
    Run(RunRequest),
    Down,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply {
    Status(PodInfo),
    Result(Box<TestResult>),
    Done,
    Error(String),
    Ok,
}

/// Where pod sockets live; created only by a daemon, so a plain run leaves nothing behind.
pub fn pods_dir() -> Result<PathBuf> {
    Ok(runtime_dir::base()?.join("pods"))
}

pub fn socket_path(key: &str) -> Result<PathBuf> {
    Ok(pods_dir()?.join(format!("{key}.sock")))
}

fn create_pods_dir() -> Result<PathBuf> {
    let d = pods_dir()?;
    std::fs::create_dir_all(&d).map_err(|e| VmError::io(format!("creating {}", d.display()), e))?;
    Ok(d)
}

/// Runs the daemon: boots the pod, then serves until `down` or SIGTERM/SIGINT.
pub async fn serve(spec: WarmSpec) -> Result<()> {
    let key = spec.key();
    create_pods_dir()?;
    let sock = socket_path(&key)?;
    let dir = RuntimeDir::new("pod-")?;
    let pod = Pod::start(PodOptions::new(spec.jobs, spec.vm_options()), dir).await?;
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)
        .map_err(|e| VmError::io(format!("listening on {}", sock.display()), e))?;
    let info = PodInfo {
        key: key.clone(),
        pid: std::process::id(),
        vms: pod.vm_names(),
        image_id: spec.image_id.clone(),
        root: spec.root.clone(),
        accel: spec.accel,
    };
    let pod = Arc::new(Mutex::new(Some(pod)));
    let (down_tx, mut down_rx) = mpsc::channel::<()>(1);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| VmError::io("installing a SIGTERM handler", e))?;
    loop {
        tokio::select! {
            conn = listener.accept() => {
                if let Ok((stream, _)) = conn {
                    let (pod, info, down_tx) = (pod.clone(), info.clone(), down_tx.clone());
                    tokio::spawn(async move { let _ = handle(stream, pod, info, down_tx).await; });
                }
            }
            _ = down_rx.recv() => break,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            // Someone removed the socket (or the whole runtime directory): nobody can reach
            // this pod any more, so it must not linger.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                if !sock.exists() {
                    break;
                }
            }
        }
    }
    let _ = std::fs::remove_file(&sock);
    if let Some(p) = pod.lock().await.take() {
        p.shutdown().await;
    }
    // The last pod out removes the directory (fails harmlessly while others remain).
    let _ = std::fs::remove_dir(pods_dir()?);
    Ok(())
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, r: &Reply) -> Result<()> {
    let mut line = serde_json::to_vec(r).map_err(|e| VmError::Config(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line)
        .await
        .map_err(|e| VmError::io("writing to a pod client", e))
}

async fn handle(
    stream: UnixStream,
    pod: Arc<Mutex<Option<Pod>>>,
    mut info: PodInfo,
    down: mpsc::Sender<()>,
) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r)
        .read_line(&mut line)
        .await
        .map_err(|e| VmError::io("reading a pod request", e))?;
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return send(&mut w, &Reply::Error(format!("bad request: {e}"))).await,
    };
    match req {
        Request::Status => {
            if let Some(p) = pod.lock().await.as_ref() {
                info.vms = p.vm_names();
            }
            send(&mut w, &Reply::Status(info)).await
        }
        Request::Down => {
            send(&mut w, &Reply::Ok).await?;
            let _ = down.send(()).await;
            Ok(())
        }
        Request::Run(run) => {
            let mut guard = pod.lock().await;
            let Some(p) = guard.as_mut() else {
                return send(&mut w, &Reply::Error("pod is shutting down".into())).await;
            };
            let o = p.options_mut();
            o.timeout = Duration::from_millis(run.timeout_ms);
            o.isolate = run.isolate;
            o.retries = run.retries;
            o.fail_fast = run.fail_fast;
            let (tx, mut rx) = mpsc::unbounded_channel();
            let forward = async {
                while let Some(r) = rx.recv().await {
                    if send(&mut w, &Reply::Result(Box::new(r))).await.is_err() {
                        break;
                    }
                }
                w
            };
            let (_, mut w) = tokio::join!(p.run(run.paths, tx), forward);
            let r = send(&mut w, &Reply::Done).await;
            // Stay warm: replace VMs lost in this run before the next client comes.
            p.refill().await;
            r
        }
    }
}

async fn request(sock: &Path, req: &Request) -> Result<BufReader<tokio::net::unix::OwnedReadHalf>> {
    let stream = UnixStream::connect(sock)
        .await
        .map_err(|e| VmError::io(format!("connecting to {}", sock.display()), e))?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| VmError::Config(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line)
        .await
        .map_err(|e| VmError::io("sending a pod request", e))?;
    Ok(BufReader::new(r))
}

async fn reply(r: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> Result<Reply> {
    let mut line = String::new();
    let n = r
        .read_line(&mut line)
        .await
        .map_err(|e| VmError::io("reading from the pod daemon", e))?;
    if n == 0 {
        return Err(VmError::Closed(
            "the pod daemon closed the connection".into(),
        ));
    }
    serde_json::from_str(&line).map_err(|e| VmError::Config(format!("bad pod reply: {e}")))
}

/// Status of the pod at `sock`; an error if no daemon answers.
pub async fn status(sock: &Path) -> Result<PodInfo> {
    let mut r = request(sock, &Request::Status).await?;
    match reply(&mut r).await? {
        Reply::Status(i) => Ok(i),
        other => Err(VmError::Config(format!("unexpected pod reply {other:?}"))),
    }
}

pub async fn down(sock: &Path) -> Result<()> {
    let mut r = request(sock, &Request::Down).await?;
    reply(&mut r).await.map(|_| ())
}

/// Runs tests on the warm pod, forwarding each result to `tx`.
pub async fn run(
    sock: &Path,
    req: RunRequest,
    tx: mpsc::UnboundedSender<TestResult>,
) -> Result<()> {
    let mut r = request(sock, &Request::Run(req)).await?;
    loop {
        match reply(&mut r).await? {
            Reply::Result(res) => {
                let _ = tx.send(*res);
            }
            Reply::Done => return Ok(()),
            Reply::Error(e) => return Err(VmError::Config(e)),
            other => return Err(VmError::Config(format!("unexpected pod reply {other:?}"))),
        }
    }
}

/// All pods with a socket under the runtime base: `(socket, status or why not)`.
pub async fn list() -> Result<Vec<(PathBuf, Result<PodInfo>)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(pods_dir()?) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "sock") {
            let s = status(&p).await;
            if s.is_err() {
                // The daemon is gone (killed): its socket is stale.
                let _ = std::fs::remove_file(&p);
            }
            out.push((p, s));
        }
    }
    Ok(out)
}
