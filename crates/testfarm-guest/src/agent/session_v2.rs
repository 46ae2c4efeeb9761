//! Serving version 2: a reader loop on this thread, one thread per running command, and a
//! heartbeat thread, all writing whole frames through one locked writer.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::SessionEnd;
use super::exec::{self, Running};
use crate::protocol::v2::{self, Frame, GuestMsg, HostMsg, MAX_PAYLOAD};

/// How often an idle or busy guest says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Frame writer shared by the threads of a session. After the first failed write (the host is
/// gone) every send is a no-op that returns false.
#[derive(Clone)]
pub(crate) struct Writer {
    port: Arc<Mutex<File>>,
    broken: Arc<AtomicBool>,
}

impl Writer {
    pub(crate) fn send(&self, id: u32, msg: &GuestMsg) -> bool {
        if self.broken.load(Ordering::SeqCst) {
            return false;
        }
        let bytes = v2::encode(id, msg);
        let ok = match self.port.lock() {
            Ok(mut p) => p.write_all(&bytes).is_ok(),
            Err(_) => false,
        };
        if !ok {
            self.broken.store(true, Ordering::SeqCst);
        }
        ok
    }
}

pub(crate) fn serve(port: File, mut pending: Vec<u8>) -> io::Result<SessionEnd> {
    let mut reader = port.try_clone()?;
    let writer = Writer {
        port: Arc::new(Mutex::new(port)),
        broken: Arc::new(AtomicBool::new(false)),
    };
    let running = Running::default();
    let done = Arc::new(AtomicBool::new(false));
    {
        let (writer, done) = (writer.clone(), done.clone());
        let start = Instant::now();
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let uptime_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                if !writer.send(0, &GuestMsg::Heartbeat { uptime_ms }) {
                    break;
                }
                std::thread::sleep(HEARTBEAT_EVERY);
            }
        });
    }
    let end = read_loop(&mut reader, &mut pending, &writer, &running);
    done.store(true, Ordering::SeqCst);
    running.cancel_all();
    end
}

fn read_loop(
    reader: &mut File,
    pending: &mut Vec<u8>,
    writer: &Writer,
    running: &Running,
) -> io::Result<SessionEnd> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        loop {
            match v2::decode::<HostMsg>(pending) {
                Ok(Some((frame, used))) => {
                    pending.drain(..used);
                    if let Some(end) = handle(frame, writer, running) {
                        return Ok(end);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The stream cannot be resynchronised: say why, then start over.
                    writer.send(0, &GuestMsg::Error(format!("protocol error: {e}")));
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        }
        let n = reader.read(&mut buf)?;
        if n == 0 {
            if let Err(e) = v2::check_eof(pending) {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, e));
            }
            return Ok(SessionEnd::HostGone);
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

fn handle(frame: Frame<HostMsg>, writer: &Writer, running: &Running) -> Option<SessionEnd> {
    let id = frame.id;
    match frame.msg {
        HostMsg::Exec(e) => {
            let (writer, running) = (writer.clone(), running.clone());
            std::thread::spawn(move || exec::run(id, e, writer, running));
        }
        HostMsg::Cancel => {
            if !running.cancel(id) {
                writer.send(id, &GuestMsg::Error(format!("no running request {id}")));
            }
        }
        HostMsg::Push { path, mode, data } => {
            let reply = match push(Path::new(&path), mode, &data) {
                Ok(()) => GuestMsg::Done,
                Err(e) => GuestMsg::Error(format!("cannot write {path}: {e}")),
            };
            writer.send(id, &reply);
        }
        HostMsg::Pull { path } => {
            let reply = match fs::metadata(&path) {
                Ok(m) if m.len() > MAX_PAYLOAD as u64 => GuestMsg::Error(format!(
                    "{path} has {} bytes, more than a frame carries ({MAX_PAYLOAD})",
                    m.len()
                )),
                _ => match fs::read(&path) {
                    Ok(d) => GuestMsg::FileData(d),
                    Err(e) => GuestMsg::Error(format!("cannot read {path}: {e}")),
                },
            };
            writer.send(id, &reply);
        }
        HostMsg::Ping => {
            writer.send(id, &GuestMsg::Pong);
        }
        HostMsg::Bye => {
            writer.send(id, &GuestMsg::Bye);
            return Some(SessionEnd::Goodbye);
        }
    }
    None
}

fn push(path: &Path, mode: u32, data: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, data)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
}
