//! Flags + `vmtest.toml` + defaults → what the pod runs with. Flags win over the file, the
//! file over built-in defaults; the default image is built (or found in the cache) when no
//! kernel is configured.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use testfarm_vm::agent::ProtocolChoice;
use testfarm_vm::config::{self, Accel, Arch, FileConfig, VmConfig};
use testfarm_vm::vm::VmOptions;

use super::RunArgs;

/// VM flags shared by `vmtest`, `vmtest pod up` and `bench vm`.
#[derive(Debug, Clone, clap::Args)]
pub struct VmFlags {
    /// Project root shared into the guest (default: the directory holding vmtest.toml, else .).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// kvm, tcg, or auto (KVM only if a probe boot succeeds).
    #[arg(long)]
    pub accel: Option<String>,
    /// x86_64 or aarch64 (qemu-system-aarch64, `virt` machine; needs --kernel/--initrd).
    #[arg(long)]
    pub arch: Option<String>,
    /// Guest memory (e.g. 256M, 1G).
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Kernel image (default: the built default image).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Disk image each VM gets a private qcow2 overlay of.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Extra kernel command line.
    #[arg(long)]
    pub append: Option<String>,
    /// Extra QEMU argument (repeatable).
    #[arg(long = "qemu-arg", allow_hyphen_values = true)]
    pub qemu_args: Vec<String>,
    /// Boot deadline per VM (to the agent's hello).
    #[arg(long)]
    pub boot_timeout: Option<String>,
    /// Guest protocol: auto (v2 when the guest accepts) or v1.
    #[arg(long, value_parser = ["auto", "v1"])]
    pub protocol: Option<String>,
    /// Static testfarm-guest binary for the default image (default: $TESTFARM_GUEST or found).
    #[arg(long)]
    pub guest: Option<PathBuf>,
}

pub struct Settings {
    pub root: PathBuf,
    pub paths: Vec<PathBuf>,
    pub filters: Vec<String>,
    pub jobs: usize,
    pub timeout: Duration,
    pub isolate: bool,
    pub retries: u32,
    pub vm: VmOptions,
    pub accel_reason: String,
    pub image_id: String,
}

fn find_root(flag: Option<&Path>) -> anyhow::Result<(PathBuf, FileConfig)> {
    let start = match flag {
        Some(p) => p.to_path_buf(),
        None => std::env::current_dir()?,
    };
    let root = std::fs::canonicalize(&start)
        .with_context(|| format!("project root {}", start.display()))?;
    let file = root.join("vmtest.toml");
    let cfg = if file.is_file() {
        FileConfig::load(&file)?
    } else {
        FileConfig::default()
    };
    Ok((root, cfg))
}

/// The VM part of the settings (also used by `bench vm`).
pub async fn vm_options(
    flags: &VmFlags,
) -> anyhow::Result<(PathBuf, FileConfig, VmOptions, String, String)> {
    let (root, file) = find_root(flags.root.as_deref())?;
    let fv = &file.vm;
    let arch = Arch::parse(
        flags
            .arch
            .as_deref()
            .or(fv.arch.as_deref())
            .unwrap_or("x86_64"),
    )?;
    let accel = Accel::parse(
        flags
            .accel
            .as_deref()
            .or(fv.accel.as_deref())
            .unwrap_or("auto"),
    )?;
    let kernel = flags.kernel.clone().or(fv.kernel.clone());
    let initrd = flags.initrd.clone().or(fv.initrd.clone());
    let (kernel, initrd, image_id) = match kernel {
        Some(k) => {
            let id = format!("custom:{}", k.display());
            (k, initrd, id)
        }
        None => {
            if arch != Arch::X86_64 {
                anyhow::bail!("the default image is x86_64 only: give --kernel and --initrd");
            }
            let img = super::image::default_image(flags.guest.clone())?;
            (img.kernel, Some(img.initrd), img.id)
        }
    };
    let mut cfg = VmConfig::new(kernel, initrd);
    cfg.arch = arch;
    if let Some(m) = flags.memory.as_deref().or(fv.memory.as_deref()) {
        cfg.memory_mb = config::parse_memory_mb(m)?;
    }
    cfg.cpus = flags.cpus.or(fv.cpus).unwrap_or(1).max(1);
    cfg.rootfs = flags.rootfs.clone().or(fv.rootfs.clone());
    cfg.append = flags
        .append
        .clone()
        .or(fv.append.clone())
        .unwrap_or_default();
    cfg.extra_args = fv.extra_args.clone().unwrap_or_default();
    cfg.extra_args.extend(flags.qemu_args.iter().cloned());
    cfg.share = Some(root.clone());
    let mut vm = VmOptions::new(cfg, testfarm_vm::config::ResolvedAccel::Tcg);
    if let Some(t) = flags.boot_timeout.as_deref().or(fv.boot_timeout.as_deref()) {
        vm.boot_timeout = config::parse_duration(t)?;
    }
    vm.protocol = match flags.protocol.as_deref() {
        Some("v1") => ProtocolChoice::V1,
        _ => ProtocolChoice::Auto,
    };
    let (resolved, reason) = testfarm_vm::accel::resolve(accel, &vm, &image_id).await;
    vm.accel = resolved;
    Ok((root, file, vm, reason, image_id))
}

pub async fn resolve(args: &RunArgs) -> anyhow::Result<Settings> {
    let (root, file, vm, accel_reason, image_id) = vm_options(&args.vm).await?;
    let fr = &file.run;
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("t")]
    } else {
        args.paths.clone()
    };
    let mut filters = args.filter.clone();
    if filters.is_empty() {
        filters = fr.filter.clone().unwrap_or_default();
    }
    let timeout = match args.timeout.as_deref().or(fr.timeout.as_deref()) {
        Some(t) => config::parse_duration(t)?,
        None => Duration::from_secs(60),
    };
    let isolate = match args.isolate.as_deref().or(fr.isolate.as_deref()) {
        None | Some("worker") => false,
        Some("test") => true,
        Some(other) => anyhow::bail!("isolate must be worker or test, not {other:?}"),
    };
    Ok(Settings {
        root,
        paths,
        filters,
        jobs: args.jobs.or(fr.jobs).unwrap_or(1).max(1),
        timeout,
        isolate,
        retries: args.retries.or(fr.retries).unwrap_or(0),
        vm,
        accel_reason,
        image_id,
    })
}
