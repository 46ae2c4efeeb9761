//! Carrying the simulated console: TCP (one client at a time, the newest wins, as
//! ser2net does) or a pty pair (the slave is what a serial driver opens). With nobody
//! connected, TCP output is dropped, as a serial line's is.

use std::fs::File;

use nix::pty::openpty;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::ConsoleSpec;
use crate::error::{BoardError, Result};

/// Kept alive for as long as the board runs (the pty's slave side).
pub type Keep = Option<std::os::fd::OwnedFd>;

pub async fn start(
    spec: &ConsoleSpec,
    out: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<Vec<u8>>,
) -> Result<(String, Keep)> {
    match spec {
        ConsoleSpec::Tcp(addr) => tcp(addr, out, input).await,
        ConsoleSpec::Pty => pty(out, input),
    }
}

async fn tcp(
    addr: &str,
    mut out: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<Vec<u8>>,
) -> Result<(String, Keep)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| BoardError::io(format!("listening on {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| BoardError::io("local address", e))?
        .to_string();
    let (conn_tx, mut conn_rx) = mpsc::channel::<OwnedWriteHalf>(4);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (mut r, w) = stream.into_split();
            if conn_tx.send(w).await.is_err() {
                return;
            }
            let input = input.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 || input.send(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    tokio::spawn(async move {
        let mut client: Option<OwnedWriteHalf> = None;
        loop {
            tokio::select! {
                c = conn_rx.recv() => match c {
                    Some(c) => client = Some(c),
                    None => return,
                },
                data = out.recv() => {
                    let Some(data) = data else { return };
                    if let Some(w) = client.as_mut()
                        && w.write_all(&data).await.is_err()
                    {
                        client = None;
                    }
                }
            }
        }
    });
    Ok((local, None))
}

fn pty(mut out: mpsc::Receiver<Vec<u8>>, input: mpsc::Sender<Vec<u8>>) -> Result<(String, Keep)> {
    let pair = openpty(None, None).map_err(|e| BoardError::io("openpty", e.into()))?;
    // Raw: no echo and no newline translation by the line discipline; the board echoes.
    let mut t = tcgetattr(&pair.slave).map_err(|e| BoardError::io("tcgetattr", e.into()))?;
    cfmakeraw(&mut t);
    tcsetattr(&pair.slave, SetArg::TCSANOW, &t)
        .map_err(|e| BoardError::io("tcsetattr", e.into()))?;
    let path = nix::unistd::ttyname(&pair.slave)
        .map_err(|e| BoardError::io("ttyname", e.into()))?
        .to_string_lossy()
        .into_owned();
    let master = File::from(pair.master);
    let reader = master
        .try_clone()
        .map_err(|e| BoardError::io("dup pty master", e))?;
    let mut reader = tokio::fs::File::from_std(reader);
    let mut writer = tokio::fs::File::from_std(master);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 || input.send(buf[..n].to_vec()).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(data) = out.recv().await {
            if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
    });
    Ok((path, Some(pair.slave)))
}
