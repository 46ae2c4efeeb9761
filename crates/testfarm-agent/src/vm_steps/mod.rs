//! The steps of a job on a `qemu-host`: `deploy` fetches a build's images into the job's
//! work directory ([`deploy`]), `boot` starts a VM from them and verifies it ([`boot`]),
//! and `shell`/`test` steps with `via: guest` run inside it through the guest agent
//! ([`guest`]).
//!
//! What they share lives in one [`VmSlot`] per job, owned by the executor: the deployed
//! files, the running VM, and the console text of every boot attempt. [`VmSlot::end`] runs
//! in the executor's cleanup, after `always`, whatever happened (failure, timeout, cancel,
//! a dropped lease): the VM is killed, its overlay removed, and its console stored as the
//! job's `console.log` output. If even that is skipped (the job's task is aborted), the VM
//! dies with its guard ([`testfarm_vm::job_vm`]).

pub mod boot;
pub mod deploy;
pub mod guest;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use testfarm_api::agent::Outcome;
use testfarm_core::deploy::Chosen;
use testfarm_core::jobspec::VmSize;
use testfarm_vm::job_vm::JobVm;
use testfarm_vm::runtime_dir::RuntimeDir;
use tokio::sync::Mutex;

use crate::control::JobControl;
use crate::executor::{JobRun, ReportError, Reporter};
use crate::logs::LogWriter;

/// The job output holding every boot attempt's console (`testfarm logs ID --console`).
pub const CONSOLE_OUTPUT: &str = "console.log";
/// The job output saying what was deployed and how to reach the VM.
pub const ENVIRONMENT_OUTPUT: &str = "environment.json";
/// Most console text kept per job (the last of it): a chatty guest must not fill memory.
const CONSOLE_KEEP: usize = 4 * 1024 * 1024;

/// What a vm step needs from the executor.
pub struct Ctx<'a, R: Reporter> {
    pub job: &'a JobRun,
    pub reporter: &'a R,
    pub log: &'a LogWriter,
    pub control: &'a JobControl,
    /// The job's local work directory.
    pub work_dir: &'a Path,
}

/// How a vm step ended (`None` from a step: the job was dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
}

impl End {
    pub fn passed() -> End {
        End {
            outcome: Outcome::Passed,
            reason: None,
            exit_code: None,
        }
    }

    pub fn error(reason: impl Into<String>) -> End {
        End {
            outcome: Outcome::Error,
            reason: Some(reason.into()),
            exit_code: None,
        }
    }
}

/// Files a deploy step left, ready to boot.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub chosen: Chosen,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub size: VmSize,
    pub append: String,
    pub ssh: bool,
    pub kvm: bool,
    /// When the deploy finished (RFC 3339).
    pub at: String,
}

/// A booted VM with the directory its sockets live in.
pub struct Running {
    pub vm: JobVm,
    pub attempt: u32,
    pub ssh_port: Option<u16>,
    /// Dropped after the VM: removes sockets and logs.
    pub dir: RuntimeDir,
}

#[derive(Default)]
pub struct State {
    pub deployed: Option<Deployed>,
    pub running: Option<Running>,
    /// Console text of attempts whose VM is gone, each under its own header.
    pub console: String,
}

impl State {
    /// Every attempt's console, the running VM's last.
    pub fn console_text(&self) -> String {
        let mut s = self.console.clone();
        if let Some(r) = &self.running {
            s.push_str(&attempt_header(r.attempt));
            s.push_str(&r.vm.console());
        }
        s
    }

    /// Keeps the console of an attempt whose VM is going away.
    pub fn keep_console(&mut self, attempt: u32, text: &str) {
        self.console.push_str(&attempt_header(attempt));
        self.console.push_str(text);
        if !text.ends_with('\n') {
            self.console.push('\n');
        }
        if self.console.len() > CONSOLE_KEEP {
            let cut = self.console.len() - CONSOLE_KEEP;
            let cut = (cut..self.console.len())
                .find(|i| self.console.is_char_boundary(*i))
                .unwrap_or(self.console.len());
            self.console.drain(..cut);
        }
    }

    /// Kills the running VM (if any), keeping its console.
    pub async fn stop_vm(&mut self) {
        if let Some(r) = self.running.take() {
            let text = r.vm.console();
            self.keep_console(r.attempt, &text);
            r.vm.kill().await;
            drop(r.dir);
        }
    }
}

fn attempt_header(attempt: u32) -> String {
    format!("===== testfarm: boot attempt {attempt} =====\n")
}

/// One job's VM state; see the module doc.
#[derive(Default)]
pub struct VmSlot {
    pub state: Mutex<State>,
}

impl VmSlot {
    /// Whether anything was deployed or booted (so the end has work to do).
    async fn used(&self) -> bool {
        let s = self.state.lock().await;
        s.deployed.is_some() || s.running.is_some() || !s.console.is_empty()
    }

    /// The end of the job: kill the VM, store the console. Safe to call more than once.
    pub async fn end<R: Reporter>(&self, reporter: &R, log: &LogWriter) {
        if !self.used().await {
            return;
        }
        let mut s = self.state.lock().await;
        let had_vm = s.running.is_some();
        s.stop_vm().await;
        if had_vm {
            log.note("the VM was stopped and its overlay removed").await;
        }
        if !s.console.is_empty() {
            let _ = store_console(reporter, &s.console).await;
        }
        if let Some(d) = s.deployed.take() {
            for f in [Some(d.kernel), d.initrd, d.rootfs].into_iter().flatten() {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// Stores the console text as the job's `console.log` output.
pub async fn store_console<R: Reporter>(reporter: &R, text: &str) -> Result<(), ReportError> {
    reporter
        .output(CONSOLE_OUTPUT, Bytes::from(text.to_string()))
        .await
}
