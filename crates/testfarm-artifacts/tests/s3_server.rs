//! A real S3-compatible server for tests: `s3s-fs` (crates.io, `cargo install s3s-fs
//! --features binary`; `.ci/run` installs it) on a loopback port, over a temporary
//! directory. Shared with the server-level tests by `#[path]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "testfarm-test-key";
pub const SECRET_KEY: &str = "testfarm-test-secret-0123456789";

pub struct S3Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `s3s-fs` program: `$S3S_FS`, else on `PATH` or in `~/.cargo/bin`.
fn program() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("S3S_FS") {
        return Some(p.into());
    }
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(std::path::Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
}

impl S3Server {
    /// Starts the server with one bucket, or `None` (with a message) when `s3s-fs` is not
    /// installed and this is not CI, where it must be.
    pub fn start(bucket: &str) -> Option<S3Server> {
        let Some(program) = program() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "s3s-fs is not installed (.ci/run installs it with cargo install)"
            );
            eprintln!("skipped: s3s-fs is not installed (cargo install s3s-fs --features binary)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // s3s-fs serves each directory under its root as a bucket.
        std::fs::create_dir(dir.path().join(bucket)).unwrap();
        // s3s-fs takes a port, not a listener: pick a free one, retry if it is taken.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(&program)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(S3Server {
                        child,
                        dir,
                        endpoint: format!("http://127.0.0.1:{port}"),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start");
    }

    /// Files under the bucket's directory (what is really stored).
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }
}
