//! What a VM is made of (`VmConfig`), and `vmtest.toml`, the file next to `t/` that sets it
//! and the run's defaults. Flags override the file; the file overrides built-in defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VmError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Arch {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    pub fn parse(s: &str) -> Result<Arch> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(VmError::Config(format!(
                "unknown arch {s:?} (expected x86_64 or aarch64)"
            ))),
        }
    }

    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// Whether this host can run the guest with KVM at all (same architecture).
    pub fn is_native(self) -> bool {
        matches!(
            (self, std::env::consts::ARCH),
            (Arch::X86_64, "x86_64") | (Arch::Aarch64, "aarch64")
        )
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn parse(s: &str) -> Result<Accel> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(VmError::Config(format!(
                "unknown accel {s:?} (expected kvm, tcg or auto)"
            ))),
        }
    }
}

/// What a VM actually runs with, after probing (`auto` is resolved before any VM boots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolvedAccel {
    Kvm,
    Tcg,
}

impl ResolvedAccel {
    pub fn name(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        }
    }
}

/// One VM's hardware and boot payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmConfig {
    pub arch: Arch,
    pub memory_mb: u32,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Disk image each VM gets a private copy-on-write overlay of.
    pub rootfs: Option<PathBuf>,
    /// Appended to the kernel command line after testfarm's own arguments.
    pub append: String,
    /// Passed to QEMU verbatim, last.
    pub extra_args: Vec<String>,
    /// Host directory shared read-only into the guest (virtfs tag `host_share`).
    pub share: Option<PathBuf>,
    /// `virtserialport` name the guest agent looks for.
    pub port_name: String,
}

impl VmConfig {
    pub fn new(kernel: PathBuf, initrd: Option<PathBuf>) -> VmConfig {
        VmConfig {
            arch: Arch::X86_64,
            memory_mb: 256,
            cpus: 1,
            kernel,
            initrd,
            rootfs: None,
            append: String::new(),
            extra_args: Vec::new(),
            share: None,
            port_name: testfarm_guest::protocol::DEFAULT_PORT_NAME.to_string(),
        }
    }
}

/// `256`, `256M`, `1G` (MiB when no unit).
pub fn parse_memory_mb(s: &str) -> Result<u32> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'M' | 'm')) => (&s[..i], 1),
        Some((i, 'G' | 'g')) => (&s[..i], 1024),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n >= 16)
        .ok_or_else(|| VmError::Config(format!("bad memory size {s:?} (e.g. 256M, 1G)")))
}

/// `60s`, `500ms`, `5m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let bad = || VmError::Config(format!("bad duration {s:?} (e.g. 500ms, 60s, 5m)"));
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `vmtest.toml`. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub vm: FileVm,
    #[serde(default)]
    pub run: FileRun,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileVm {
    pub arch: Option<String>,
    pub accel: Option<String>,
    pub memory: Option<String>,
    pub cpus: Option<u32>,
    /// Paths are relative to the file's directory.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub append: Option<String>,
    pub extra_args: Option<Vec<String>>,
    pub boot_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileRun {
    pub jobs: Option<usize>,
    pub timeout: Option<String>,
    pub isolate: Option<String>,
    pub retries: Option<u32>,
    pub filter: Option<Vec<String>>,
}

impl FileConfig {
    /// Reads `path`; relative paths inside are made relative to its directory.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| VmError::io(format!("reading {}", path.display()), e))?;
        let mut cfg: FileConfig = toml::from_str(&text).map_err(|e| VmError::ConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.vm.kernel, &mut cfg.vm.initrd, &mut cfg.vm.rootfs]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_memory_mb("256").unwrap(), 256);
        assert_eq!(parse_memory_mb("1G").unwrap(), 1024);
        assert!(parse_memory_mb("lots").is_err());
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn file_config_rejects_unknown_keys() {
        let err = toml::from_str::<FileConfig>("[vm]\nmemroy = \"1G\"\n").unwrap_err();
        assert!(err.to_string().contains("memroy"));
        let ok: FileConfig = toml::from_str("[vm]\nmemory = \"512M\"\n[run]\njobs = 2\n").unwrap();
        assert_eq!(ok.run.jobs, Some(2));
    }
}
