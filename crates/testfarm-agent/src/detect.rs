//! Capability detection: what a host can do, measured, never typed by hand.
//!
//! One set of facts ([`Detected`]) comes from two places: this machine (system calls and
//! `--version` runs) and a remote host over SSH (one shell script whose `key=value` output
//! is parsed by [`parse_probe`]). The same facts become the resource's [`Capabilities`]
//! and a few version labels, so a person can select `qemu.version` as well as `kvm`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testfarm_api::resource::{Capabilities, Labels};

/// Everything measured on one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detected {
    pub cpus: Option<u32>,
    /// Lab naming: `arm64`, `x86_64`, `riscv64`.
    pub arch: Option<String>,
    pub memory_mb: Option<u64>,
    pub disk_free_gb: Option<u64>,
    /// `/dev/kvm` opens read-write.
    pub kvm: Option<bool>,
    /// `qemu-system-<arch>` binaries with their versions.
    pub qemu: Vec<(String, String)>,
    /// Compilers found, by command name, with the first line of `--version`.
    pub toolchains: Vec<(String, String)>,
    /// Configured target triples whose `<triple>-gcc` answered.
    pub targets: Vec<String>,
    /// Configured target triples whose compiler is missing.
    pub missing_targets: Vec<String>,
    /// `virsh --version`, when libvirt is installed.
    pub libvirt: Option<String>,
}

/// Native compilers looked for on every host, besides the configured triples.
pub const NATIVE_TOOLCHAINS: &[&str] = &["gcc", "clang", "cargo", "rustc"];

/// QEMU system emulators looked for.
pub const QEMU_BINARIES: &[&str] = &[
    "qemu-system-x86_64",
    "qemu-system-aarch64",
    "qemu-system-riscv64",
    "qemu-system-arm",
];

/// Longest a single `--version` may take (a broken wrapper must not hang registration).
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

impl Detected {
    /// The wire form: capabilities plus version labels.
    pub fn capabilities(&self) -> Capabilities {
        let mut toolchains: Vec<String> = self
            .toolchains
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        toolchains.extend(self.qemu.iter().map(|(name, _)| name.clone()));
        toolchains.sort();
        toolchains.dedup();
        Capabilities {
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            disk_gb: self.disk_free_gb,
            arch: self.arch.clone(),
            kvm: self.kvm,
            toolchains,
            peripherals: Vec::new(),
            targets: self.targets.clone(),
        }
    }

    /// Labels derived from measurements (`arch`, `kvm`, `qemu.version`, `libvirt.version`),
    /// for selectors; labels from the config file win over these.
    pub fn labels(&self) -> Labels {
        let mut labels = Labels::new();
        if let Some(arch) = &self.arch {
            labels.insert("arch", arch.clone());
        }
        if let Some(kvm) = self.kvm {
            labels.insert("kvm", kvm.to_string());
        }
        if let Some((_, v)) = self.qemu.first()
            && let Some(v) = version_number(v)
        {
            labels.insert("qemu.version", v);
        }
        if let Some(v) = self.libvirt.as_deref().and_then(version_number) {
            labels.insert("libvirt.version", v);
        }
        labels
    }
}

/// Lab people say arm64 and x86_64; Rust and `uname -m` say aarch64 and x86_64.
pub fn normalise_arch(arch: &str) -> &str {
    match arch {
        "aarch64" | "arm64" => "arm64",
        "amd64" | "x86_64" => "x86_64",
        "armv7l" | "armv7" | "arm" => "arm",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The first dotted number in a version line (`QEMU emulator version 8.2.2 (Debian…)`).
pub fn version_number(line: &str) -> Option<String> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| w.contains('.') && w.starts_with(|c: char| c.is_ascii_digit()))
        .map(|w| w.trim_end_matches('.').to_string())
}

/// Measures this machine. `disk_path` is where work happens (its filesystem's free space
/// is what matters); `targets` are the configured triples.
pub async fn detect_local(disk_path: &Path, targets: &[String]) -> Detected {
    let mut d = Detected {
        cpus: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok()),
        arch: Some(normalise_arch(std::env::consts::ARCH).to_string()),
        memory_mb: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| meminfo_kb(&t, "MemTotal:"))
            .map(|kb| kb / 1024),
        disk_free_gb: disk_free_bytes(disk_path).map(|b| b / 1_000_000_000),
        kvm: Some(kvm_device_usable()),
        ..Detected::default()
    };
    for bin in QEMU_BINARIES {
        if let Some(v) = version_of(bin).await {
            d.qemu.push((bin.to_string(), v));
        }
    }
    for bin in NATIVE_TOOLCHAINS {
        if let Some(v) = version_of(bin).await {
            d.toolchains.push((bin.to_string(), v));
        }
    }
    for triple in targets {
        let gcc = format!("{triple}-gcc");
        match version_of(&gcc).await {
            Some(v) => {
                d.toolchains.push((gcc, v));
                d.targets.push(triple.clone());
            }
            None => d.missing_targets.push(triple.clone()),
        }
    }
    d.libvirt = version_of("virsh").await;
    d
}

/// Free bytes for unprivileged users on the filesystem holding `path` (or its nearest
/// existing parent, as the work directory may not exist yet).
pub fn disk_free_bytes(path: &Path) -> Option<u64> {
    let st = statvfs_nearest(path)?;
    st.blocks_available().checked_mul(st.fragment_size())
}

/// Total bytes of the filesystem holding `path`.
pub fn disk_total_bytes(path: &Path) -> Option<u64> {
    let st = statvfs_nearest(path)?;
    st.blocks().checked_mul(st.fragment_size())
}

fn statvfs_nearest(path: &Path) -> Option<nix::sys::statvfs::Statvfs> {
    let mut p: PathBuf = path.to_path_buf();
    loop {
        if let Ok(st) = nix::sys::statvfs::statvfs(&p) {
            return Some(st);
        }
        if !p.pop() {
            return nix::sys::statvfs::statvfs("/").ok();
        }
    }
}

/// A `/proc/meminfo` field in kB.
pub fn meminfo_kb(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `/dev/kvm` opens read-write: the cheap first test (the VM runner still probes
/// by booting, as a guest can hang under KVM on some hosts).
pub fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// The first line of `<bin> --version`, or None when it is not installed or fails.
pub async fn version_of(bin: &str) -> Option<String> {
    which(bin)?;
    let out = tokio::process::Command::new(bin)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(VERSION_TIMEOUT, out)
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    Some(line.trim().to_string())
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The shell script run on a remote host to measure it. It prints `key=value` lines only,
/// uses POSIX sh and coreutils, and never fails as a whole: a missing tool is a missing line.
pub fn probe_script(disk_path: &str, targets: &[String]) -> String {
    let mut s = String::from(
        "LC_ALL=C; export LC_ALL\n\
         echo \"probe=1\"\n\
         echo \"cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)\"\n\
         echo \"arch=$(uname -m)\"\n\
         sed -n 's/^MemTotal: *\\([0-9]*\\) kB/memtotal_kb=\\1/p' /proc/meminfo 2>/dev/null\n",
    );
    s.push_str(&format!(
        "d={}; mkdir -p \"$d\" 2>/dev/null; echo \"disk_free_kb=$(df -Pk \"$d\" 2>/dev/null | awk 'NR==2 {{print $4}}')\"\n",
        shell_quote(disk_path)
    ));
    s.push_str(
        "if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then echo kvm=true; else echo kvm=false; fi\n",
    );
    let mut bins: Vec<String> = QEMU_BINARIES.iter().map(|s| s.to_string()).collect();
    bins.extend(NATIVE_TOOLCHAINS.iter().map(|s| s.to_string()));
    bins.extend(targets.iter().map(|t| format!("{t}-gcc")));
    bins.push("virsh".into());
    for bin in bins {
        s.push_str(&format!(
            "if command -v {bin} >/dev/null 2>&1; then echo \"version.{bin}=$({bin} --version 2>/dev/null | sed -n '/./{{p;q;}}')\"; fi\n"
        ));
    }
    s
}

/// Parses [`probe_script`]'s output. `targets` are the configured triples.
pub fn parse_probe(output: &str, targets: &[String]) -> Detected {
    let mut d = Detected::default();
    let mut versions: Vec<(String, String)> = Vec::new();
    for line in output.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key {
            "cpus" => d.cpus = value.parse().ok(),
            "arch" if !value.is_empty() => d.arch = Some(normalise_arch(value).to_string()),
            "memtotal_kb" => d.memory_mb = value.parse::<u64>().ok().map(|kb| kb / 1024),
            "disk_free_kb" => {
                d.disk_free_gb = value
                    .parse::<u64>()
                    .ok()
                    .map(|kb| kb.saturating_mul(1024) / 1_000_000_000);
            }
            "kvm" => d.kvm = Some(value == "true"),
            k => {
                if let Some(bin) = k.strip_prefix("version.") {
                    versions.push((bin.to_string(), value.to_string()));
                }
            }
        }
    }
    for (bin, v) in versions {
        if bin == "virsh" {
            d.libvirt = Some(v);
        } else if bin.starts_with("qemu-system-") {
            d.qemu.push((bin, v));
        } else {
            d.toolchains.push((bin, v));
        }
    }
    for t in targets {
        let gcc = format!("{t}-gcc");
        if d.toolchains.iter().any(|(b, _)| *b == gcc) {
            d.targets.push(t.clone());
        } else {
            d.missing_targets.push(t.clone());
        }
    }
    d
}

/// Single-quotes a string for POSIX sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_detection_measures_this_machine() {
        let d = detect_local(Path::new("/tmp"), &["no-such-triple".to_string()]).await;
        assert!(d.cpus.unwrap() >= 1);
        assert!(d.memory_mb.unwrap() > 100);
        assert!(d.disk_free_gb.is_some());
        assert!(matches!(d.arch.as_deref(), Some("x86_64" | "arm64")));
        assert_eq!(d.missing_targets, vec!["no-such-triple".to_string()]);
        // This workspace is built with cargo, so it must be found with its version.
        let cargo = d.toolchains.iter().find(|(b, _)| b == "cargo").unwrap();
        assert!(cargo.1.starts_with("cargo "), "{cargo:?}");
        let caps = d.capabilities();
        assert!(caps.toolchains.contains(&"cargo".to_string()));
    }

    #[tokio::test]
    async fn the_probe_script_measures_the_same_facts() {
        let targets = vec!["no-such-triple".to_string()];
        let out = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(probe_script("/tmp", &targets))
            .output()
            .await
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let remote = parse_probe(&text, &targets);
        let local = detect_local(Path::new("/tmp"), &targets).await;
        assert_eq!(remote.cpus, local.cpus, "{text}");
        assert_eq!(remote.arch, local.arch);
        assert_eq!(remote.memory_mb, local.memory_mb);
        assert_eq!(remote.kvm, local.kvm);
        assert_eq!(remote.missing_targets, targets);
        let names = |d: &Detected| d.toolchains.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&remote), names(&local));
    }

    #[test]
    fn versions_and_arches() {
        assert_eq!(
            version_number("QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1)").as_deref(),
            Some("8.2.2")
        );
        assert_eq!(version_number("10.0.0").as_deref(), Some("10.0.0"));
        assert_eq!(version_number("none"), None);
        assert_eq!(normalise_arch("aarch64"), "arm64");
        assert_eq!(normalise_arch("x86_64"), "x86_64");
    }

    #[test]
    fn probe_output_parses() {
        let out = "probe=1\ncpus=8\narch=aarch64\nmemtotal_kb=16384000\ndisk_free_kb=52428800\nkvm=true\n\
                   version.qemu-system-aarch64=QEMU emulator version 9.1.0\n\
                   version.gcc=gcc (Debian 14.2.0-19) 14.2.0\n\
                   version.aarch64-linux-gnu-gcc=aarch64-linux-gnu-gcc (Debian 14.2.0-19) 14.2.0\n\
                   version.virsh=10.0.0\n";
        let t = vec![
            "aarch64-linux-gnu".to_string(),
            "riscv64-linux-gnu".to_string(),
        ];
        let d = parse_probe(out, &t);
        assert_eq!(d.cpus, Some(8));
        assert_eq!(d.arch.as_deref(), Some("arm64"));
        assert_eq!(d.memory_mb, Some(16000));
        assert_eq!(d.disk_free_gb, Some(53));
        assert_eq!(d.kvm, Some(true));
        assert_eq!(d.targets, vec!["aarch64-linux-gnu".to_string()]);
        assert_eq!(d.missing_targets, vec!["riscv64-linux-gnu".to_string()]);
        assert_eq!(d.libvirt.as_deref(), Some("10.0.0"));
        let labels = d.labels();
        assert_eq!(labels.get("qemu.version"), Some("9.1.0"));
        assert_eq!(labels.get("libvirt.version"), Some("10.0.0"));
        assert_eq!(labels.get("arch"), Some("arm64"));
    }
}
