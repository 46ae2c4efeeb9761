//! Peak CPU and memory of a process group (a build), sampled from `/proc`.
//!
//! A build is many short processes (make, cc1, as, ld), so the group's use is summed over
//! every live member at each sample, and CPU is the growth of their summed ticks between
//! two samples. A member that exits between samples takes its ticks with it: the sum may
//! shrink, and such a drop counts as no use rather than negative use. The result is a
//! lower bound of the true peak, good to a sample interval, which is what "how big a
//! server does this build want" needs.

use std::time::Duration;

/// One look at the group: summed `utime + stime` (clock ticks) and resident bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Duration,
    pub ticks: u64,
    pub rss_bytes: u64,
}

/// The peaks seen so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peaks {
    last: Option<Sample>,
    /// Percent of one cpu (200 = two cpus busy).
    pub cpu_pct: Option<f64>,
    pub memory_bytes: Option<u64>,
}

impl Peaks {
    /// Adds a sample; `ticks_per_sec` is the kernel's `USER_HZ` (`sysconf(_SC_CLK_TCK)`).
    pub fn add(&mut self, s: Sample, ticks_per_sec: u64) {
        self.memory_bytes = Some(self.memory_bytes.unwrap_or(0).max(s.rss_bytes));
        if let Some(prev) = self.last
            && s.at > prev.at
            && ticks_per_sec > 0
        {
            let dt = (s.at - prev.at).as_secs_f64();
            let used = s.ticks.saturating_sub(prev.ticks) as f64 / ticks_per_sec as f64;
            let pct = used / dt * 100.0;
            if pct.is_finite() {
                self.cpu_pct = Some(self.cpu_pct.unwrap_or(0.0).max(pct));
            }
        }
        self.last = Some(s);
    }
}

/// The process group, user+system ticks and resident pages of one `/proc/PID/stat` line,
/// `None` when it cannot be read (the command name may hold spaces and parentheses: the
/// fields are counted after its last `)`).
pub fn parse_stat(line: &str) -> Option<(i32, u64, u64)> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) … utime(11) stime(12) … rss(21).
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss: u64 = f.get(21)?.parse().ok()?;
    Some((pgrp, utime + stime, rss))
}

/// Sums the members of process group `pgid` now.
pub fn sample_group(pgid: i32, at: Duration) -> Sample {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    let mut ticks = 0u64;
    let mut rss_pages = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(line) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some((g, t, r)) = parse_stat(&line)
                && g == pgid
            {
                ticks += t;
                rss_pages += r;
            }
        }
    }
    Sample {
        at,
        ticks,
        rss_bytes: rss_pages.saturating_mul(page),
    }
}

/// The kernel's clock ticks per second (100 on Linux).
pub fn ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64, ticks: u64, rss: u64) -> Sample {
        Sample {
            at: Duration::from_millis(ms),
            ticks,
            rss_bytes: rss,
        }
    }

    #[test]
    fn peaks_of_cpu_and_memory() {
        let mut p = Peaks::default();
        p.add(s(0, 0, 10), 100);
        assert_eq!(p.cpu_pct, None);
        p.add(s(1000, 50, 30), 100); // half a cpu
        p.add(s(2000, 250, 20), 100); // two cpus
        p.add(s(3000, 100, 5), 100); // members exited: no negative use
        assert_eq!(p.memory_bytes, Some(30));
        assert!((p.cpu_pct.unwrap() - 200.0).abs() < 1e-9);
        // A sample at the same instant adds memory, not a division by zero.
        p.add(s(3000, 900, 40), 100);
        assert_eq!(p.memory_bytes, Some(40));
        assert!((p.cpu_pct.unwrap() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn stat_lines_parse_with_odd_names() {
        let line = "1234 (cc1 (x) y) R 1 1200 1200 0 -1 4194304 100 0 0 0 70 30 0 0 20 0 1 0 555 1000000 256 18446744073709551615";
        assert_eq!(parse_stat(line), Some((1200, 100, 256)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_group_is_seen() {
        let pgid = nix::unistd::getpgrp().as_raw();
        let sample = sample_group(pgid, Duration::ZERO);
        assert!(sample.rss_bytes > 0);
        assert!(ticks_per_sec() > 0);
    }
}
