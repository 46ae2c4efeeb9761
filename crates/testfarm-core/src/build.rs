//! Build jobs' rules: which detected toolchain serves a target architecture, how `Auto`
//! ranks build servers, and what a build server's history says.
//!
//! Toolchains are measured by the agent (`detect.rs`): the native compilers (`gcc`,
//! `clang`) by command name, and cross compilers as `<triple>-gcc`. A native compiler
//! builds for the host's own architecture; a cross compiler for its triple's. Lab people
//! say `arm64` where GNU says `aarch64`, so both sides are normalised before comparing.
//!
//! `Auto` placement (seed 004 R3.2, R13.1): only servers with a toolchain for the arch
//! (a static requirement, [`crate::jobspec::Requirements::build_arches`]), then the lowest
//! current load in 10% steps (so two nearly idle servers are equal and history decides),
//! then the shortest estimated duration of similar builds there (same job name,
//! [`crate::estimate`]); names break ties. [`auto_score`] is that order; the scheduler
//! (`placement`) uses it, so `why` explains the same choice.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Lab naming of an architecture: `aarch64` is `arm64`, `amd64` is `x86_64`, `armv7l` is
/// `arm`. Unknown names are kept as given.
pub fn normalise_arch(arch: &str) -> &str {
    match arch {
        "aarch64" | "arm64" => "arm64",
        "amd64" | "x86_64" | "x86-64" => "x86_64",
        "arm" | "armv7" | "armv7l" | "armhf" | "armel" => "arm",
        "riscv64" | "riscv" => "riscv64",
        "i386" | "i686" | "x86" => "i686",
        other => other,
    }
}

/// Compilers that build for the machine they run on.
pub const NATIVE_COMPILERS: &[&str] = &["gcc", "clang", "cc"];

/// The architecture a cross compiler (`aarch64-linux-gnu-gcc`) builds for: its triple's
/// first part, normalised. `None` for a name that is not `<triple>-gcc`.
pub fn cross_target_arch(toolchain: &str) -> Option<&str> {
    let triple = toolchain.strip_suffix("-gcc")?;
    let (cpu, rest) = triple.split_once('-')?;
    if rest.is_empty() {
        return None;
    }
    let cpu = if cpu.starts_with("arm") && cpu != "arm64" {
        "arm"
    } else {
        cpu
    };
    Some(normalise_arch(cpu))
}

/// How a toolchain serves an arch: natively (`gcc` on an arm64 host for arm64) or as a
/// cross compiler (then builds want `CROSS_COMPILE=<triple>-`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Serves {
    Native { compiler: String },
    Cross { compiler: String, prefix: String },
}

impl Serves {
    pub fn compiler(&self) -> &str {
        match self {
            Serves::Native { compiler } | Serves::Cross { compiler, .. } => compiler,
        }
    }

    /// `CROSS_COMPILE` as kernel and U-Boot builds take it (empty for native).
    pub fn cross_compile(&self) -> &str {
        match self {
            Serves::Native { .. } => "",
            Serves::Cross { prefix, .. } => prefix,
        }
    }
}

/// The toolchain of `toolchains` (as detected on a host of `host_arch`) that builds for
/// `arch`: a native compiler when the host is that arch (preferred: no sysroot needed),
/// else the first cross compiler for it.
pub fn toolchain_for(arch: &str, host_arch: Option<&str>, toolchains: &[String]) -> Option<Serves> {
    let want = normalise_arch(arch);
    if host_arch.map(normalise_arch) == Some(want)
        && let Some(native) = NATIVE_COMPILERS
            .iter()
            .find(|n| toolchains.iter().any(|t| t == *n))
    {
        return Some(Serves::Native {
            compiler: native.to_string(),
        });
    }
    let mut cross: Vec<&String> = toolchains
        .iter()
        .filter(|t| cross_target_arch(t) == Some(want))
        .collect();
    cross.sort();
    cross.first().map(|t| Serves::Cross {
        compiler: t.to_string(),
        prefix: t.strip_suffix("gcc").unwrap_or(t).to_string(),
    })
}

/// The kernel's `ARCH=` for a lab arch (`x86_64` builds with `ARCH=x86`).
pub fn kernel_arch(arch: &str) -> &str {
    match normalise_arch(arch) {
        "x86_64" | "i686" => "x86",
        "riscv64" => "riscv",
        other => other,
    }
}

/// The `Auto` order of a build server that can take the job now: lower is better.
/// `load` is the 1-minute load per cpu (or the share of cpus already leased, whichever
/// is higher); `estimate` the expected duration of this build there, if known.
pub fn auto_score(load: f64, estimate: Option<Duration>) -> (u64, u64) {
    let load = if load.is_finite() {
        load.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let bucket = (load * 10.0).floor() as u64;
    let est = estimate.map_or(u64::MAX, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    });
    (bucket, est)
}

/// One finished build, as history counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFact {
    pub server: String,
    /// Whether the build passed (its build step ended `passed`).
    pub passed: bool,
    pub duration: Duration,
}

/// What history says about one build server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ServerHistory {
    pub server: String,
    /// Builds that ended (passed or not).
    pub count: u64,
    pub passed: u64,
    /// `passed / count`, 0 to 1.
    pub success_rate: f64,
    /// Mean duration of all its builds, in seconds.
    pub average_duration_s: f64,
    /// Mean duration of its passed builds (a failed build often ends early), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_passed_duration_s: Option<f64>,
}

/// Per-server history from finished builds, by server name.
pub fn history(facts: &[BuildFact]) -> Vec<ServerHistory> {
    #[derive(Default)]
    struct Acc {
        count: u64,
        passed: u64,
        total_ms: u128,
        passed_ms: u128,
    }
    let mut by: BTreeMap<&str, Acc> = BTreeMap::new();
    for f in facts {
        let a = by.entry(f.server.as_str()).or_default();
        let ms = f.duration.as_millis();
        a.count += 1;
        a.total_ms += ms;
        if f.passed {
            a.passed += 1;
            a.passed_ms += ms;
        }
    }
    by.into_iter()
        .map(|(server, a)| ServerHistory {
            server: server.to_string(),
            count: a.count,
            passed: a.passed,
            success_rate: if a.count == 0 {
                0.0
            } else {
                a.passed as f64 / a.count as f64
            },
            average_duration_s: a.total_ms as f64 / 1000.0 / a.count.max(1) as f64,
            average_passed_duration_s: (a.passed > 0)
                .then(|| a.passed_ms as f64 / 1000.0 / a.passed as f64),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tc(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn native_compiler_serves_the_host_arch_only() {
        let t = tc(&["cargo", "gcc"]);
        assert_eq!(
            toolchain_for("x86_64", Some("x86_64"), &t),
            Some(Serves::Native {
                compiler: "gcc".into()
            })
        );
        assert_eq!(
            toolchain_for("amd64", Some("x86_64"), &t).map(|s| s.compiler().to_string()),
            Some("gcc".into())
        );
        assert_eq!(toolchain_for("arm64", Some("x86_64"), &t), None);
        assert_eq!(toolchain_for("x86_64", None, &t), None);
    }

    #[test]
    fn cross_compilers_serve_their_triple() {
        let t = tc(&[
            "gcc",
            "aarch64-linux-gnu-gcc",
            "arm-linux-gnueabihf-gcc",
            "riscv64-linux-gnu-gcc",
            "qemu-system-aarch64",
        ]);
        let arm64 = toolchain_for("arm64", Some("x86_64"), &t).unwrap();
        assert_eq!(arm64.compiler(), "aarch64-linux-gnu-gcc");
        assert_eq!(arm64.cross_compile(), "aarch64-linux-gnu-");
        assert_eq!(
            toolchain_for("armv7l", Some("x86_64"), &t)
                .unwrap()
                .compiler(),
            "arm-linux-gnueabihf-gcc"
        );
        assert_eq!(
            toolchain_for("riscv64", Some("x86_64"), &t)
                .unwrap()
                .compiler(),
            "riscv64-linux-gnu-gcc"
        );
        // On an arm64 host the native compiler wins over a cross one.
        assert_eq!(
            toolchain_for("aarch64", Some("arm64"), &t)
                .unwrap()
                .cross_compile(),
            ""
        );
        assert_eq!(cross_target_arch("qemu-system-aarch64"), None);
        assert_eq!(cross_target_arch("gcc"), None);
        assert_eq!(cross_target_arch("-gcc"), None);
    }

    #[test]
    fn kernel_arch_names() {
        assert_eq!(kernel_arch("x86_64"), "x86");
        assert_eq!(kernel_arch("aarch64"), "arm64");
        assert_eq!(kernel_arch("riscv64"), "riscv");
    }

    #[test]
    fn auto_prefers_load_then_estimate() {
        let idle_slow = auto_score(0.02, Some(Duration::from_secs(600)));
        let idle_fast = auto_score(0.05, Some(Duration::from_secs(60)));
        let busy_fast = auto_score(0.9, Some(Duration::from_secs(10)));
        let idle_unknown = auto_score(0.0, None);
        assert!(
            idle_fast < idle_slow,
            "same load step: shorter estimate wins"
        );
        assert!(idle_slow < busy_fast, "load decides before the estimate");
        assert!(idle_slow < idle_unknown, "a known estimate beats none");
        assert_eq!(auto_score(f64::NAN, None).0, 0);
    }

    #[test]
    fn history_counts_rates_and_means() {
        let f = |s: &str, passed, secs| BuildFact {
            server: s.into(),
            passed,
            duration: Duration::from_secs(secs),
        };
        let h = history(&[
            f("b", true, 10),
            f("a", true, 30),
            f("a", false, 10),
            f("a", true, 50),
        ]);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].server, "a");
        assert_eq!(h[0].count, 3);
        assert_eq!(h[0].passed, 2);
        assert!((h[0].success_rate - 2.0 / 3.0).abs() < 1e-9);
        assert!((h[0].average_duration_s - 30.0).abs() < 1e-9);
        assert_eq!(h[0].average_passed_duration_s, Some(40.0));
        assert_eq!(h[1].success_rate, 1.0);
        assert!(history(&[]).is_empty());
    }

    proptest! {
        #[test]
        fn auto_score_is_monotone_in_load(a in 0.0f64..10.0, b in 0.0f64..10.0, e in 0u64..10_000) {
            let d = Some(Duration::from_millis(e));
            if (a * 10.0).floor() < (b * 10.0).floor() {
                prop_assert!(auto_score(a, d) < auto_score(b, d));
            }
        }

        #[test]
        fn history_totals_match(runs in proptest::collection::vec((0usize..4, any::<bool>(), 0u64..100_000), 0..50)) {
            let facts: Vec<BuildFact> = runs.iter().map(|(s, p, ms)| BuildFact {
                server: format!("s{s}"), passed: *p, duration: Duration::from_millis(*ms),
            }).collect();
            let h = history(&facts);
            prop_assert_eq!(h.iter().map(|x| x.count).sum::<u64>(), facts.len() as u64);
            for x in &h {
                prop_assert!((0.0..=1.0).contains(&x.success_rate));
                prop_assert!(x.passed <= x.count);
            }
        }

        #[test]
        fn a_served_arch_is_the_asked_one(arch in "(arm64|aarch64|x86_64|amd64|riscv64|arm)", host in "(arm64|x86_64|riscv64)") {
            let t = tc(&["gcc", "aarch64-linux-gnu-gcc", "riscv64-linux-gnu-gcc", "x86_64-linux-gnu-gcc"]);
            if let Some(s) = toolchain_for(&arch, Some(&host), &t) {
                match s {
                    Serves::Native { .. } => prop_assert_eq!(normalise_arch(&host), normalise_arch(&arch)),
                    Serves::Cross { compiler, .. } => prop_assert_eq!(cross_target_arch(&compiler), Some(normalise_arch(&arch))),
                }
            }
        }
    }
}

#[cfg(test)]
mod placement_tests {
    use chrono::Duration as Chrono;

    use crate::jobspec::JobSpec;
    use crate::placement::tests::{qjob, res, t0};
    use crate::placement::{Decision, Snapshot, place};
    use crate::policy::Policies;
    use crate::resource::ResourceKind;

    /// `Auto` end to end through the scheduler: only a server that can build for the arch
    /// matches (a native compiler on an arm64 host, or a cross compiler elsewhere), and
    /// of those the less loaded one wins.
    #[test]
    fn auto_places_a_build_by_toolchain_then_load() {
        let mut x86 = res(1, "x86-native", ResourceKind::BuildServer);
        x86.capabilities.arch = Some("x86_64".into());
        x86.capabilities.toolchains = vec!["gcc".into()];
        let mut cross = res(2, "x86-cross", ResourceKind::BuildServer);
        cross.capabilities.arch = Some("x86_64".into());
        cross.capabilities.toolchains = vec!["gcc".into(), "aarch64-linux-gnu-gcc".into()];
        let mut arm = res(3, "arm-native", ResourceKind::BuildServer);
        arm.capabilities.arch = Some("arm64".into());
        arm.capabilities.toolchains = vec!["gcc".into()];
        let spec = JobSpec::parse(
            "name: k\nsteps:\n  - build: { source: /src, arch: arm64, run: make }\n",
        )
        .unwrap();
        let mut job = qjob(1, ResourceKind::BuildServer);
        job.requirements = spec.requirements();
        let mut snap = Snapshot {
            resources: vec![x86.clone(), cross.clone(), arm.clone()],
            ..Snapshot::default()
        };
        snap.usage.entry(arm.id).or_default().load = Some(0.9);
        snap.usage.entry(cross.id).or_default().load = Some(0.1);
        let now = t0() + Chrono::seconds(1);
        let d = place(&snap, std::slice::from_ref(&job), &Policies::default(), now);
        assert!(
            matches!(&d[0], Decision::Place { resource, .. } if *resource == cross.id),
            "{d:?}"
        );
        snap.usage.entry(arm.id).or_default().load = Some(0.0);
        snap.usage.entry(cross.id).or_default().load = Some(0.5);
        let d = place(&snap, std::slice::from_ref(&job), &Policies::default(), now);
        assert!(
            matches!(&d[0], Decision::Place { resource, .. } if *resource == arm.id),
            "{d:?}"
        );
        // Nothing builds for riscv64: the job waits, and `why` says which toolchain.
        let rv = JobSpec::parse(
            "name: r\nsteps:\n  - build: { source: /s, arch: riscv64, run: make }\n",
        )
        .unwrap();
        job.requirements = rv.requirements();
        let d = place(&snap, std::slice::from_ref(&job), &Policies::default(), now);
        assert!(matches!(&d[0], Decision::Wait { .. }), "{d:?}");
        let text = format!("{d:?}");
        assert!(text.contains("riscv64"), "{text}");
    }
}
