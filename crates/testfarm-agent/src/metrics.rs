//! Load metrics sent with every heartbeat: CPU, memory and disk use, and running compiler
//! processes. The server's health monitor turns these into `degraded` and the "above 85%,
//! no new VMs" rule, so they are measured the same way on every host.
//!
//! CPU use is a delta between two `/proc/stat` samples (a single sample only gives use
//! since boot). The parsers take text, so a remote host's `/proc` read over SSH goes
//! through the same code as this machine's.

use std::path::{Path, PathBuf};

use testfarm_api::agent::ResourceMetrics;

use crate::detect;

/// Process names counted as active compilations on a build server.
pub const COMPILER_PROCESSES: &[&str] = &["cc1", "cc1plus", "rustc", "clang", "clang++", "cc1obj"];

/// The aggregate `cpu` line of `/proc/stat`: busy and total jiffies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Parses the first (`cpu `) line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Percentage busy between two samples (0 when no time passed).
pub fn cpu_pct(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let busy = after.busy.saturating_sub(before.busy);
    (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
}

/// Percentage of memory in use, from `/proc/meminfo` (MemAvailable counts caches as free).
pub fn memory_pct(meminfo: &str) -> Option<f64> {
    let total = detect::meminfo_kb(meminfo, "MemTotal:")?;
    let avail = detect::meminfo_kb(meminfo, "MemAvailable:")?;
    if total == 0 {
        return None;
    }
    Some((total.saturating_sub(avail) as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
}

/// Counts compiler processes given each process's `comm`.
pub fn count_compilers<'a>(comms: impl IntoIterator<Item = &'a str>) -> u32 {
    let n = comms
        .into_iter()
        .filter(|c| COMPILER_PROCESSES.contains(&c.trim()))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Samples this machine. Keeps the previous CPU sample for the next delta.
#[derive(Debug)]
pub struct LocalSampler {
    disk_path: PathBuf,
    last_cpu: Option<CpuTimes>,
}

/// One measurement of a host, before it is attached to resource names.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostLoad {
    pub cpu_pct: f64,
    pub memory_pct: f64,
    pub disk_pct: f64,
    pub disk_free_gb: f64,
    pub active_compilations: u32,
}

impl HostLoad {
    pub fn for_resource(&self, resource: &str, running_jobs: u32) -> ResourceMetrics {
        ResourceMetrics {
            resource: resource.to_string(),
            cpu_pct: round1(self.cpu_pct),
            memory_pct: round1(self.memory_pct),
            disk_pct: round1(self.disk_pct),
            disk_free_gb: round1(self.disk_free_gb),
            active_compilations: self.active_compilations,
            running_jobs,
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl LocalSampler {
    /// `disk_path`: the work directory, whose filesystem is the one that fills up.
    pub fn new(disk_path: &Path) -> LocalSampler {
        let mut s = LocalSampler {
            disk_path: disk_path.to_path_buf(),
            last_cpu: None,
        };
        s.last_cpu = s.read_cpu();
        s
    }

    fn read_cpu(&self) -> Option<CpuTimes> {
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Measures now; CPU is the use since the previous call (or since `new`).
    pub fn sample(&mut self) -> HostLoad {
        let now = self.read_cpu();
        let cpu = match (self.last_cpu, now) {
            (Some(a), Some(b)) => cpu_pct(a, b),
            _ => 0.0,
        };
        if now.is_some() {
            self.last_cpu = now;
        }
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| memory_pct(&t))
            .unwrap_or(0.0);
        let free = detect::disk_free_bytes(&self.disk_path).unwrap_or(0);
        let total = detect::disk_total_bytes(&self.disk_path).unwrap_or(0);
        let disk_pct = if total == 0 {
            0.0
        } else {
            (total.saturating_sub(free) as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
        };
        HostLoad {
            cpu_pct: cpu,
            memory_pct: memory,
            disk_pct,
            disk_free_gb: free as f64 / 1e9,
            active_compilations: local_compilations(),
        }
    }
}

/// Compiler processes running on this machine, from `/proc/<pid>/comm`.
pub fn local_compilations() -> u32 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let comms: Vec<String> = dir
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .collect();
    count_compilers(comms.iter().map(String::as_str))
}

/// The script a remote host runs to report its load; [`parse_remote`] reads its output.
/// It ends in `true`: a process exiting between the glob and `cat` is not a failure.
pub fn remote_script(disk_path: &str) -> String {
    format!(
        "LC_ALL=C; export LC_ALL\n\
         head -n1 /proc/stat\n\
         grep -E '^(MemTotal|MemAvailable):' /proc/meminfo\n\
         d={}; mkdir -p \"$d\" 2>/dev/null; df -Pk \"$d\" | awk 'NR==2 {{print \"df\", $2, $4}}'\n\
         echo comm_start\n\
         cat /proc/[0-9]*/comm 2>/dev/null\n\
         true\n",
        detect::shell_quote(disk_path)
    )
}

/// Parses [`remote_script`] output: CPU times (for a delta kept by the caller) and the rest.
pub fn parse_remote(text: &str) -> (Option<CpuTimes>, HostLoad) {
    let cpu = parse_proc_stat(text);
    let memory = memory_pct(text).unwrap_or(0.0);
    let (mut disk_pct, mut free_gb) = (0.0, 0.0);
    if let Some(line) = text.lines().find(|l| l.starts_with("df ")) {
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [total, free] = v[..]
            && total > 0
        {
            disk_pct = (total.saturating_sub(free) as f64 * 100.0 / total as f64).clamp(0.0, 100.0);
            free_gb = free as f64 * 1024.0 / 1e9;
        }
    }
    let comms = text
        .split_once("comm_start\n")
        .map(|(_, rest)| rest)
        .unwrap_or("");
    let load = HostLoad {
        cpu_pct: 0.0,
        memory_pct: memory,
        disk_pct,
        disk_free_gb: free_gb,
        active_compilations: count_compilers(comms.lines()),
    };
    (cpu, load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_delta() {
        let a = parse_proc_stat("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = parse_proc_stat("cpu  200 0 200 1400 200 0 0 0 0 0\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        // 200 busy of 1000 elapsed (600 idle + 200 iowait)
        assert!((cpu_pct(a, b) - 20.0).abs() < 1e-9);
        assert_eq!(cpu_pct(b, b), 0.0);
        assert_eq!(parse_proc_stat("nothing"), None);
    }

    #[test]
    fn memory_and_compilers() {
        let m = "MemTotal:       1000 kB\nMemFree: 1 kB\nMemAvailable:    250 kB\n";
        assert!((memory_pct(m).unwrap() - 75.0).abs() < 1e-9);
        assert_eq!(count_compilers(["cc1\n", "bash", "rustc", "cc1plus"]), 3);
    }

    #[test]
    fn local_sample_is_in_range() {
        let mut s = LocalSampler::new(Path::new("/tmp"));
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let l = s.sample();
        assert!((0.0..=100.0).contains(&l.cpu_pct));
        assert!(l.memory_pct > 0.0 && l.memory_pct <= 100.0, "{l:?}");
        assert!(l.disk_pct > 0.0 && l.disk_pct <= 100.0, "{l:?}");
        assert!(l.disk_free_gb > 0.0);
    }

    #[tokio::test]
    async fn remote_script_parses_like_local() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("5")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(remote_script("/tmp"))
            .output()
            .await
            .unwrap();
        let _ = child.kill().await;
        let text = String::from_utf8_lossy(&out.stdout);
        let (cpu, load) = parse_remote(&text);
        assert!(cpu.is_some(), "{text}");
        assert!(load.memory_pct > 0.0, "{text}");
        assert!(load.disk_free_gb > 0.0, "{text}");
    }
}
