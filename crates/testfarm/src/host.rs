//! Measures the machine this process runs on: the capabilities of the local resources
//! (CPU count and arch, memory, free disk, usable KVM, QEMU binaries). Measured, never
//! typed by hand.

use std::path::Path;

use testfarm_api::resource::Capabilities;

/// What could be measured here; fields that cannot be read stay `None`.
pub fn detect(data_dir: &Path) -> Capabilities {
    Capabilities {
        cpus: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok()),
        memory_mb: memory_mb(),
        disk_gb: disk_free_gb(data_dir),
        arch: Some(normalise_arch(std::env::consts::ARCH).to_string()),
        kvm: Some(kvm_device_usable()),
        toolchains: toolchains(),
        peripherals: Vec::new(),
        targets: Vec::new(),
    }
}

/// Lab people say arm64 and x86_64; Rust says aarch64 and x86_64.
pub fn normalise_arch(arch: &str) -> &str {
    match arch {
        "aarch64" => "arm64",
        other => other,
    }
}

fn memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn disk_free_gb(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let free = u64::from(st.blocks_available()).checked_mul(st.fragment_size())?;
    Some(free / 1_000_000_000)
}

/// Whether `/dev/kvm` opens read-write. A guest can still hang under KVM on some hosts,
/// so the VM runner probes by booting before trusting it; this is the cheap first test.
fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Compilers on PATH, by the names build jobs ask for.
fn toolchains() -> Vec<String> {
    ["gcc", "clang", "cargo", "aarch64-linux-gnu-gcc", "riscv64-linux-gnu-gcc", "arm-linux-gnueabihf-gcc"]
        .iter()
        .filter(|name| which(name).is_some())
        .map(|s| s.to_string())
        .collect()
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
