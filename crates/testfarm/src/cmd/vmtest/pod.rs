//! `testfarm vmtest pod up|status|down`: warm pods (see `testfarm_vm::warm`). `up` starts a
//! daemon (`pod serve`, hidden) in its own process group, waits until its VMs are booted,
//! and returns; `vmtest` then finds it by key and runs on it.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use testfarm_vm::warm::{self, WarmSpec};

use super::settings::{self, VmFlags};

#[derive(Debug, clap::Subcommand)]
pub enum PodCmd {
    /// Boot a pod that stays up in the background for this project and image.
    Up {
        #[arg(short = 'j', long = "jobs", default_value_t = 2)]
        jobs: usize,
        #[command(flatten)]
        vm: VmFlags,
    },
    /// List warm pods (and whether they match the current project and image).
    Status {
        #[command(flatten)]
        vm: VmFlags,
    },
    /// Stop the warm pod of this project and image (or all with --all).
    Down {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        vm: VmFlags,
    },
    /// The daemon itself (started by `up`).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        spec: String,
    },
}

/// The spec a `vmtest` run or `pod up` with these flags would use.
pub async fn current_spec(jobs: usize, flags: &VmFlags) -> anyhow::Result<WarmSpec> {
    let (root, _file, vm, _reason, image_id) = settings::vm_options(flags).await?;
    Ok(WarmSpec::from_options(jobs, &image_id, &root, &vm))
}

pub async fn run(cmd: PodCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PodCmd::Serve { spec } => {
            let spec: WarmSpec = serde_json::from_str(&spec).context("bad --spec")?;
            warm::serve(spec).await?;
            Ok(ExitCode::SUCCESS)
        }
        PodCmd::Up { jobs, vm } => up(jobs, &vm).await,
        PodCmd::Status { vm } => {
            let current = current_spec(1, &vm).await.ok().map(|s| s.key());
            let pods = warm::list().await?;
            if pods.iter().all(|(_, s)| s.is_err()) {
                outln!("no warm pods");
            }
            for (_, s) in pods {
                if let Ok(i) = s {
                    let mark = if Some(&i.key) == current.as_ref() {
                        "current"
                    } else {
                        "other project or image"
                    };
                    outln!(
                        "pod {} pid {} vms {} accel {} image {} root {} ({mark})",
                        i.key,
                        i.pid,
                        i.vms.join(","),
                        i.accel.name(),
                        i.image_id,
                        i.root.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PodCmd::Down { all, vm } => {
            let targets: Vec<_> = if all {
                warm::list().await?.into_iter().map(|(p, _)| p).collect()
            } else {
                vec![warm::socket_path(&current_spec(1, &vm).await?.key())?]
            };
            let mut stopped = 0;
            for sock in targets {
                if warm::down(&sock).await.is_ok() {
                    // Wait for the daemon to shut its VMs down and remove its socket.
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while sock.exists() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    stopped += 1;
                }
            }
            outln!("stopped {stopped} pod(s)");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn up(jobs: usize, flags: &VmFlags) -> anyhow::Result<ExitCode> {
    let spec = current_spec(jobs.max(1), flags).await?;
    let sock = warm::socket_path(&spec.key())?;
    if let Ok(info) = warm::status(&sock).await {
        outln!("pod {} already up (vms {})", info.key, info.vms.join(","));
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = sock.with_extension("log");
    let log_file = std::fs::File::create(&log)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["vmtest", "pod", "serve", "--spec"])
        .arg(serde_json::to_string(&spec)?)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .context("starting the pod daemon")?;
    let deadline = Instant::now() + Duration::from_millis(spec.boot_timeout_ms) * 2;
    loop {
        if let Ok(info) = warm::status(&sock).await {
            outln!(
                "pod {} up: {} VMs ({}), accel {}, pid {}",
                info.key,
                info.vms.len(),
                info.vms.join(","),
                info.accel.name(),
                info.pid
            );
            let _ = std::fs::remove_file(&log);
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            anyhow::bail!("the pod daemon exited ({status}):\n{text}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = std::fs::remove_file(&log);
            anyhow::bail!("the pod did not come up in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

use std::os::unix::process::CommandExt;
