//! Driving a v2 agent: one reader task routes frames to requests by id, so several commands
//! can run at once on one VM; every frame (heartbeats included) proves the guest alive, and a
//! request whose guest stays silent longer than the heartbeat timeout fails as unresponsive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testfarm_guest::protocol::v2::{self, Exec, ExitStatus, GuestMsg, HostMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::error::{Result, VmError};

/// How often a waiting request checks that the guest is still alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Shared {
    routes: Mutex<HashMap<u32, mpsc::UnboundedSender<GuestMsg>>>,
    last_frame: Mutex<Instant>,
    dead: Mutex<Option<String>>,
}

impl Shared {
    fn dead_reason(&self) -> Option<String> {
        self.dead.lock().ok().and_then(|d| d.clone())
    }

    fn silent_for(&self) -> Duration {
        self.last_frame
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct AgentV2 {
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    next_id: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
    heartbeat_timeout: Duration,
}

impl Drop for AgentV2 {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub pid: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

/// A started request: its id (for [`AgentV2::cancel`]) and its frames.
#[derive(Debug)]
pub struct Request {
    pub id: u32,
    rx: mpsc::UnboundedReceiver<GuestMsg>,
}

impl AgentV2 {
    /// Takes over `stream` right after the upgrade; `pending` are bytes already read.
    pub fn start(stream: UnixStream, pending: Vec<u8>, heartbeat_timeout: Duration) -> AgentV2 {
        let (mut r, w) = stream.into_split();
        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            last_frame: Mutex::new(Instant::now()),
            dead: Mutex::new(None),
        });
        let s = shared.clone();
        let reader = tokio::spawn(async move {
            let reason = read_frames(&mut r, pending, &s).await;
            if let Ok(mut d) = s.dead.lock() {
                *d = Some(reason);
            }
            if let Ok(mut routes) = s.routes.lock() {
                routes.clear();
            }
        });
        AgentV2 {
            shared,
            writer: tokio::sync::Mutex::new(w),
            next_id: AtomicU32::new(1),
            reader,
            heartbeat_timeout,
        }
    }

    /// Why the connection is unusable, if it is.
    pub fn dead_reason(&self) -> Option<String> {
        self.shared.dead_reason()
    }

    pub fn silent_for(&self) -> Duration {
        self.shared.silent_for()
    }

    async fn send(&self, id: u32, msg: &HostMsg) -> Result<()> {
        let bytes = v2::encode(id, msg);
        let mut w = self.writer.lock().await;
        w.write_all(&bytes)
            .await
            .map_err(|e| VmError::io("writing to the guest agent", e))
    }

    /// Sends `msg` as a new request.
    pub async fn request(&self, msg: &HostMsg) -> Result<Request> {
        if let Some(reason) = self.dead_reason() {
            return Err(VmError::Closed(reason));
        }
        let mut id = self.next_id.fetch_add(1, Ordering::SeqCst);
        if id == 0 {
            id = self.next_id.fetch_add(1, Ordering::SeqCst);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut routes) = self.shared.routes.lock() {
            routes.insert(id, tx);
        }
        self.send(id, msg).await?;
        Ok(Request { id, rx })
    }

    /// The next frame of `req`. Fails when the connection dies, when the guest is silent
    /// for longer than the heartbeat timeout, or at `deadline`.
    pub async fn next(&self, req: &mut Request, deadline: Option<Instant>) -> Result<GuestMsg> {
        loop {
            tokio::select! {
                m = req.rx.recv() => {
                    return match m {
                        Some(m) => Ok(m),
                        None => Err(VmError::Closed(
                            self.dead_reason().unwrap_or_else(|| "agent connection ended".into()),
                        )),
                    };
                }
                _ = tokio::time::sleep(LIVENESS_CHECK) => {
                    let silent = self.silent_for();
                    if silent > self.heartbeat_timeout {
                        return Err(VmError::Unresponsive(silent));
                    }
                    if let Some(d) = deadline.filter(|d| Instant::now() >= *d) {
                        let _ = d;
                        return Err(VmError::Timeout {
                            what: format!("request {}", req.id),
                            after: Duration::ZERO,
                        });
                    }
                }
            }
        }
    }

    /// Forgets a request whose frames are no longer wanted (after its `Exit`).
    pub fn finish(&self, req: &Request) {
        if let Ok(mut routes) = self.shared.routes.lock() {
            routes.remove(&req.id);
        }
    }

    pub async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        let mut req = self.request(&HostMsg::Ping).await?;
        let r = self.expect(&mut req, |m| matches!(m, GuestMsg::Pong)).await;
        self.finish(&req);
        r.map(|_| start.elapsed())
    }

    async fn expect(&self, req: &mut Request, ok: impl Fn(&GuestMsg) -> bool) -> Result<GuestMsg> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let m = self.next(req, Some(deadline)).await?;
        match m {
            m if ok(&m) => Ok(m),
            GuestMsg::Error(e) => Err(VmError::Guest(e)),
            other => Err(VmError::Guest(format!("unexpected answer {other:?}"))),
        }
    }

    /// Runs a command to its end, collecting its output.
    pub async fn exec(&self, exec: Exec) -> Result<ExecOutput> {
        self.exec_with(exec, |_, _| {}).await
    }

    /// Runs a command, handing each output chunk to `on_output(is_stderr, bytes)` as it comes.
    pub async fn exec_with(
        &self,
        exec: Exec,
        mut on_output: impl FnMut(bool, &[u8]),
    ) -> Result<ExecOutput> {
        // The guest enforces the timeout; the host only gives up if the guest does not.
        let deadline = (exec.timeout_ms > 0).then(|| {
            Instant::now() + Duration::from_millis(exec.timeout_ms) + self.heartbeat_timeout
        });
        let mut req = self.request(&HostMsg::Exec(exec)).await?;
        let mut out = ExecOutput::default();
        let result = loop {
            match self.next(&mut req, deadline).await {
                Ok(GuestMsg::Started { pid }) => out.pid = Some(pid),
                Ok(GuestMsg::Stdout(d)) => {
                    on_output(false, &d);
                    out.stdout.extend_from_slice(&d);
                }
                Ok(GuestMsg::Stderr(d)) => {
                    on_output(true, &d);
                    out.stderr.extend_from_slice(&d);
                }
                Ok(GuestMsg::Exit(s)) => {
                    out.status = s;
                    break Ok(out);
                }
                Ok(GuestMsg::Error(e)) => break Err(VmError::Guest(e)),
                Ok(other) => {
                    break Err(VmError::Guest(format!(
                        "unexpected frame {other:?} for exec"
                    )));
                }
                Err(e) => break Err(e),
            }
        };
        self.finish(&req);
        result
    }

    /// Starts a command without waiting (see [`AgentV2::cancel`], [`AgentV2::next`]).
    pub async fn spawn(&self, exec: Exec) -> Result<Request> {
        self.request(&HostMsg::Exec(exec)).await
    }

    /// Kills the process group of request `id`; its `Exit` says `cancelled`.
    pub async fn cancel(&self, id: u32) -> Result<()> {
        self.send(id, &HostMsg::Cancel).await
    }

    pub async fn push(&self, path: &str, mode: u32, data: Vec<u8>) -> Result<()> {
        let mut req = self
            .request(&HostMsg::Push {
                path: path.into(),
                mode,
                data,
            })
            .await?;
        let r = self.expect(&mut req, |m| matches!(m, GuestMsg::Done)).await;
        self.finish(&req);
        r.map(|_| ())
    }

    pub async fn pull(&self, path: &str) -> Result<Vec<u8>> {
        let mut req = self.request(&HostMsg::Pull { path: path.into() }).await?;
        let r = self
            .expect(&mut req, |m| matches!(m, GuestMsg::FileData(_)))
            .await;
        self.finish(&req);
        match r? {
            GuestMsg::FileData(d) => Ok(d),
            _ => Ok(Vec::new()),
        }
    }

    /// Ends the session politely.
    pub async fn bye(&self) -> Result<()> {
        let mut req = self.request(&HostMsg::Bye).await?;
        let r = self.expect(&mut req, |m| matches!(m, GuestMsg::Bye)).await;
        self.finish(&req);
        r.map(|_| ())
    }
}

/// The reader task: decodes frames until the stream ends or breaks; returns why.
async fn read_frames(
    r: &mut tokio::net::unix::OwnedReadHalf,
    mut pending: Vec<u8>,
    shared: &Shared,
) -> String {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        loop {
            match v2::decode::<GuestMsg>(&pending) {
                Ok(Some((frame, used))) => {
                    pending.drain(..used);
                    if let Ok(mut t) = shared.last_frame.lock() {
                        *t = Instant::now();
                    }
                    if frame.id == 0 {
                        if let GuestMsg::Error(e) = frame.msg {
                            return format!("guest reported: {e}");
                        }
                        continue;
                    }
                    let route = shared
                        .routes
                        .lock()
                        .ok()
                        .and_then(|r| r.get(&frame.id).cloned());
                    // Frames for finished requests (late output) are dropped.
                    if let Some(tx) = route {
                        let _ = tx.send(frame.msg);
                    }
                }
                Ok(None) => break,
                Err(e) => return format!("guest protocol error (v2): {e}"),
            }
        }
        match r.read(&mut buf).await {
            Ok(0) => {
                return match v2::check_eof(&pending) {
                    Ok(()) => "guest closed the connection".into(),
                    Err(e) => format!("guest protocol error (v2): {e}"),
                };
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            // A reset is an end of stream too: say what was left half-received, if anything.
            Err(e) => {
                return match v2::check_eof(&pending) {
                    Err(t) => format!("guest protocol error (v2): {t} ({e})"),
                    Ok(()) => format!("reading from the guest failed: {e}"),
                };
            }
        }
    }
}
