//! The agent's main loop: open the port, say hello, serve a session, and start over when the
//! host goes away or says goodbye. Sessions begin in v1 and may upgrade to v2.

mod exec;
mod port;
mod session_v1;
mod session_v2;

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use exec::ISOLATE_HELPER;
pub use port::find_port;

use crate::protocol::{DEFAULT_PORT_NAME, DEFAULT_SHARE_DIR};

#[derive(Debug, Clone)]
pub struct Options {
    /// Explicit port device; otherwise found by `port_name`.
    pub port: Option<PathBuf>,
    pub port_name: String,
    /// Where `TEST <path>` looks for relative paths (the virtfs share).
    pub share_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: None,
            port_name: DEFAULT_PORT_NAME.to_string(),
            share_dir: PathBuf::from(DEFAULT_SHARE_DIR),
        }
    }
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The host closed its side (read returned end of file).
    HostGone,
    /// `EXIT` / `Bye`: reopen the port and greet again.
    Goodbye,
}

/// Serves sessions until an unrecoverable error (the port vanished for good).
pub fn run(opts: &Options) -> io::Result<()> {
    let mut missing_since = None;
    loop {
        let path = match &opts.port {
            Some(p) => p.clone(),
            None => match find_port(&opts.port_name) {
                Some(p) => p,
                None => {
                    // Modules may still be loading: wait for the device, quietly.
                    let since = *missing_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > Duration::from_secs(120) {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("no virtio-serial port named {}", opts.port_name),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let port = File::options().read(true).write(true).open(&path)?;
        match serve(port, opts) {
            Ok(SessionEnd::Goodbye) => {}
            // The host is not connected: reads return EOF at once until it is, so do not spin.
            Ok(SessionEnd::HostGone) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                eprintln!("testfarm-guest: session ended: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One session on an open port. Public so tests can run the agent over a socket pair.
pub fn serve(port: File, opts: &Options) -> io::Result<SessionEnd> {
    match session_v1::serve(&port, opts)? {
        session_v1::V1End::Ended(end) => Ok(end),
        session_v1::V1End::Upgrade(rest) => session_v2::serve(port, rest),
    }
}
