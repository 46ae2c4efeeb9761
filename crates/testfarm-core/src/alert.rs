//! Alert rules, with no I/O: what counts as a problem in a snapshot of the lab, how the
//! open alerts follow the conditions (raise, touch, resolve), and when a failed delivery
//! is tried again.
//!
//! An alert is identified by its (rule, subject): while a condition holds there is one
//! open alert for it, and every evaluation that still sees it bumps its `last_seen` and
//! count instead of raising another. When the condition is gone the alert resolves by
//! itself. The server loads the snapshot, calls [`evaluate`] and [`reconcile`], and writes
//! the plan in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The built-in rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// An agent's resource went offline (its agent is silent).
    Unreachable,
    /// A build server's free disk is below `min_disk_gb`.
    DiskLow,
    /// A host's CPU or memory use is above its threshold.
    HostResources,
    /// A board is out of the pool by the server's judgement (quarantine, failed recovery)
    /// or its health check says critical.
    BoardHealth,
    /// The newest run of a job ended `error` in a build step.
    BuildFailed,
    /// The newest deploy or boot on a resource ended `error`.
    DeployFailed,
    /// A lease-end cleanup failed and left the resource in maintenance.
    CleanupFailed,
}

impl Rule {
    pub const ALL: [Rule; 7] = [
        Rule::Unreachable,
        Rule::DiskLow,
        Rule::HostResources,
        Rule::BoardHealth,
        Rule::BuildFailed,
        Rule::DeployFailed,
        Rule::CleanupFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Unreachable => "unreachable",
            Rule::DiskLow => "disk_low",
            Rule::HostResources => "host_resources",
            Rule::BoardHealth => "board_health",
            Rule::BuildFailed => "build_failed",
            Rule::DeployFailed => "deploy_failed",
            Rule::CleanupFailed => "cleanup_failed",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?}; expected one of: {expected}")]
pub struct UnknownWord {
    pub what: &'static str,
    pub got: String,
    pub expected: String,
}

impl FromStr for Rule {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Rule, UnknownWord> {
        Rule::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownWord {
                what: "rule",
                got: s.to_string(),
                expected: Rule::ALL.map(Rule::as_str).join(", "),
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Severity, UnknownWord> {
        Severity::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownWord {
                what: "severity",
                got: s.to_string(),
                expected: "info, warning, critical".into(),
            })
    }
}

/// Where an alert stands. `acknowledged` is still open: a person has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn is_open(self) -> bool {
        !matches!(self, AlertState::Resolved)
    }
}

impl FromStr for AlertState {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<AlertState, UnknownWord> {
        match s {
            "open" => Ok(AlertState::Open),
            "acknowledged" => Ok(AlertState::Acknowledged),
            "resolved" => Ok(AlertState::Resolved),
            _ => Err(UnknownWord {
                what: "alert state",
                got: s.to_string(),
                expected: "open, acknowledged, resolved".into(),
            }),
        }
    }
}

/// One rule's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleSettings {
    pub enabled: bool,
    pub severity: Severity,
}

/// What the rules judge by: every rule and its thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub rules: BTreeMap<Rule, RuleSettings>,
    /// `disk_low`: free GiB below this on a build server.
    pub min_disk_gb: f64,
    /// `host_resources`: CPU use above this (percent).
    pub max_cpu_pct: f64,
    /// `host_resources`: memory use above this (percent).
    pub max_memory_pct: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        let rules = Rule::ALL
            .into_iter()
            .map(|r| {
                (
                    r,
                    RuleSettings {
                        enabled: true,
                        severity: default_severity(r),
                    },
                )
            })
            .collect();
        Thresholds {
            rules,
            min_disk_gb: 10.0,
            max_cpu_pct: 95.0,
            max_memory_pct: 95.0,
        }
    }
}

impl Thresholds {
    pub fn settings(&self, rule: Rule) -> RuleSettings {
        self.rules.get(&rule).copied().unwrap_or(RuleSettings {
            enabled: true,
            severity: default_severity(rule),
        })
    }
}

/// How bad each rule is when not configured.
pub fn default_severity(rule: Rule) -> Severity {
    match rule {
        Rule::Unreachable | Rule::DiskLow | Rule::BoardHealth | Rule::CleanupFailed => {
            Severity::Critical
        }
        Rule::HostResources | Rule::BuildFailed | Rule::DeployFailed => Severity::Warning,
    }
}

/// What a resource looks like to the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceFacts {
    pub name: String,
    /// `build-server`, `qemu-host`, `board`.
    pub kind: String,
    /// Managed by an agent (the built-in or a remote one).
    pub has_agent: bool,
    pub offline: bool,
    /// Why it is offline (the health monitor's words).
    pub offline_reason: Option<String>,
    /// In maintenance because its lease-end cleanup failed: the reason.
    pub cleanup_failed: Option<String>,
    /// A board the server took out of the pool (quarantine, failed recovery): the reason.
    pub board_out: Option<String>,
    /// A board whose last health check was critical: its findings.
    pub board_critical: Option<String>,
    /// Newest reported metrics.
    pub disk_free_gb: Option<f64>,
    pub cpu_pct: Option<f64>,
    pub memory_pct: Option<f64>,
}

/// A run of a job, newest runs decide.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFacts {
    pub id: String,
    pub name: String,
    pub resource: Option<String>,
    /// `passed`, `failed`, `error`, ….
    pub state: String,
    pub ended_at: DateTime<Utc>,
    /// Its steps: (kind, outcome), as recorded (`build`, `error`).
    pub steps: Vec<(String, String)>,
    pub reason: Option<String>,
}

/// What the evaluator sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub resources: Vec<ResourceFacts>,
    /// Recently ended jobs, any order.
    pub jobs: Vec<JobFacts>,
}

/// A condition that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub rule: Rule,
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
    pub details: serde_json::Value,
}

fn cond(
    t: &Thresholds,
    rule: Rule,
    subject: &str,
    summary: String,
    details: serde_json::Value,
) -> Option<Condition> {
    let s = t.settings(rule);
    s.enabled.then(|| Condition {
        rule,
        subject: subject.to_string(),
        severity: s.severity,
        summary,
        details,
    })
}

/// Every condition that holds in `snap`, in a stable order.
pub fn evaluate(snap: &Snapshot, t: &Thresholds) -> Vec<Condition> {
    let mut out = Vec::new();
    for r in &snap.resources {
        if r.has_agent && r.offline {
            out.extend(cond(
                t,
                Rule::Unreachable,
                &r.name,
                format!(
                    "{} {} is unreachable: {}",
                    r.kind,
                    r.name,
                    r.offline_reason.as_deref().unwrap_or("its agent is silent")
                ),
                serde_json::json!({ "kind": r.kind, "reason": r.offline_reason }),
            ));
            // An offline resource's metrics are stale: judge nothing else by them.
            continue;
        }
        if r.kind == "build-server"
            && let Some(free) = r.disk_free_gb
            && free < t.min_disk_gb
        {
            out.extend(cond(
                t,
                Rule::DiskLow,
                &r.name,
                format!(
                    "build server {} has {free:.1} GiB free disk (threshold {} GiB)",
                    r.name, t.min_disk_gb
                ),
                serde_json::json!({ "disk_free_gb": free, "threshold_gb": t.min_disk_gb }),
            ));
        }
        let cpu = r.cpu_pct.filter(|c| *c > t.max_cpu_pct);
        let mem = r.memory_pct.filter(|m| *m > t.max_memory_pct);
        if cpu.is_some() || mem.is_some() {
            let mut what = Vec::new();
            if let Some(c) = cpu {
                what.push(format!("CPU {c:.0}% > {}%", t.max_cpu_pct));
            }
            if let Some(m) = mem {
                what.push(format!("memory {m:.0}% > {}%", t.max_memory_pct));
            }
            out.extend(cond(
                t,
                Rule::HostResources,
                &r.name,
                format!("{} {}: {}", r.kind, r.name, what.join(", ")),
                serde_json::json!({ "cpu_pct": r.cpu_pct, "memory_pct": r.memory_pct }),
            ));
        }
        if let Some(why) = r.board_out.as_ref().or(r.board_critical.as_ref()) {
            out.extend(cond(
                t,
                Rule::BoardHealth,
                &r.name,
                format!("board {}: {why}", r.name),
                serde_json::json!({ "reason": why }),
            ));
        }
        if let Some(why) = &r.cleanup_failed {
            out.extend(cond(
                t,
                Rule::CleanupFailed,
                &r.name,
                format!("cleanup of {} failed: {why}", r.name),
                serde_json::json!({ "reason": why }),
            ));
        }
    }
    out.extend(job_conditions(&snap.jobs, t));
    out
}

fn step_errored(j: &JobFacts, kinds: &[&str]) -> bool {
    j.steps
        .iter()
        .any(|(k, o)| kinds.contains(&k.as_str()) && o == "error")
}

fn has_step(j: &JobFacts, kinds: &[&str]) -> bool {
    j.steps.iter().any(|(k, _)| kinds.contains(&k.as_str()))
}

const BUILD: &[&str] = &["build"];
const DEPLOY: &[&str] = &["deploy", "boot"];

/// A build failure holds while the newest run of that job name that ran a build step
/// ended `error` in it; a deploy failure while the newest run with a deploy or boot step
/// on that resource ended `error` in one.
fn job_conditions(jobs: &[JobFacts], t: &Thresholds) -> Vec<Condition> {
    let newer = |a: &&JobFacts, b: &&JobFacts| (a.ended_at, &a.id).cmp(&(b.ended_at, &b.id));
    let mut by_name: BTreeMap<&str, &JobFacts> = BTreeMap::new();
    let mut by_resource: BTreeMap<&str, &JobFacts> = BTreeMap::new();
    for j in jobs {
        if has_step(j, BUILD) {
            let e = by_name.entry(&j.name).or_insert(j);
            if newer(&j, e).is_gt() {
                *e = j;
            }
        }
        if has_step(j, DEPLOY)
            && let Some(r) = &j.resource
        {
            let e = by_resource.entry(r).or_insert(j);
            if newer(&j, e).is_gt() {
                *e = j;
            }
        }
    }
    let mut out = Vec::new();
    for (name, j) in by_name {
        if j.state == "error" && step_errored(j, BUILD) {
            out.extend(cond(
                t,
                Rule::BuildFailed,
                name,
                format!(
                    "build of job {name} failed{}: {}",
                    j.resource
                        .as_deref()
                        .map(|r| format!(" on {r}"))
                        .unwrap_or_default(),
                    j.reason.as_deref().unwrap_or("a build step ended error")
                ),
                serde_json::json!({ "job_id": j.id, "resource": j.resource }),
            ));
        }
    }
    for (resource, j) in by_resource {
        if j.state == "error" && step_errored(j, DEPLOY) {
            out.extend(cond(
                t,
                Rule::DeployFailed,
                resource,
                format!(
                    "deploy or boot on {resource} failed (job {}): {}",
                    j.name,
                    j.reason
                        .as_deref()
                        .unwrap_or("a deploy/boot step ended error")
                ),
                serde_json::json!({ "job_id": j.id, "job": j.name }),
            ));
        }
    }
    out
}

/// An open alert as the reconciler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAlert {
    pub id: String,
    pub rule: Rule,
    pub subject: String,
}

/// What to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Conditions with no open alert: raise one.
    pub raise: Vec<Condition>,
    /// Open alerts whose condition still holds: bump last_seen and count.
    pub touch: Vec<(String, Condition)>,
    /// Open alerts whose condition is gone: resolve them.
    pub resolve: Vec<String>,
}

/// Matches the open alerts to the conditions. Only rules in `judged` resolve: an alert of
/// a rule the evaluator did not look at (it is disabled, or its facts could not be read)
/// stays as it is. One alert per (rule, subject): duplicate conditions count once.
pub fn reconcile(open: &[OpenAlert], now: &[Condition], judged: &BTreeSet<Rule>) -> Plan {
    let mut plan = Plan::default();
    let mut by_key: BTreeMap<(Rule, &str), &OpenAlert> = BTreeMap::new();
    for a in open {
        by_key.entry((a.rule, a.subject.as_str())).or_insert(a);
    }
    let mut seen: BTreeSet<(Rule, &str)> = BTreeSet::new();
    for c in now {
        let key = (c.rule, c.subject.as_str());
        if !seen.insert(key) {
            continue;
        }
        match by_key.get(&key) {
            Some(a) => plan.touch.push((a.id.clone(), c.clone())),
            None => plan.raise.push(c.clone()),
        }
    }
    for a in open {
        let key = (a.rule, a.subject.as_str());
        if judged.contains(&a.rule) && !seen.contains(&key) {
            plan.resolve.push(a.id.clone());
        }
    }
    plan
}

/// The retry schedule of a delivery: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Attempts in all (the first one included); after the last the delivery is
    /// undelivered.
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            attempts: 8,
        }
    }
}

impl Backoff {
    /// After failed attempt number `attempt` (1-based): how long until the next one, or
    /// `None` when that was the last.
    pub fn after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let shift = attempt.saturating_sub(1).min(31);
        let d = self.initial.saturating_mul(1u32 << shift);
        Some(d.min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn res(name: &str) -> ResourceFacts {
        ResourceFacts {
            name: name.into(),
            kind: "build-server".into(),
            has_agent: true,
            offline: false,
            offline_reason: None,
            cleanup_failed: None,
            board_out: None,
            board_critical: None,
            disk_free_gb: Some(100.0),
            cpu_pct: Some(10.0),
            memory_pct: Some(10.0),
        }
    }

    fn job(id: &str, name: &str, state: &str, at: i64, steps: &[(&str, &str)]) -> JobFacts {
        JobFacts {
            id: id.into(),
            name: name.into(),
            resource: Some("b1".into()),
            state: state.into(),
            ended_at: DateTime::from_timestamp(at, 0).unwrap_or_default(),
            steps: steps
                .iter()
                .map(|(k, o)| (k.to_string(), o.to_string()))
                .collect(),
            reason: None,
        }
    }

    fn rules(c: &[Condition]) -> Vec<(Rule, &str)> {
        c.iter().map(|c| (c.rule, c.subject.as_str())).collect()
    }

    #[test]
    fn offline_and_low_disk_and_busy_host() {
        let t = Thresholds::default();
        let mut a = res("a");
        a.offline = true;
        a.disk_free_gb = Some(1.0);
        let mut b = res("b");
        b.disk_free_gb = Some(9.5);
        let mut c = res("c");
        c.kind = "qemu-host".into();
        c.memory_pct = Some(99.0);
        c.disk_free_gb = Some(1.0); // not a build server: no disk rule
        let snap = Snapshot {
            resources: vec![a, b, c, res("ok")],
            jobs: vec![],
        };
        let got = evaluate(&snap, &t);
        assert_eq!(
            rules(&got),
            vec![
                (Rule::Unreachable, "a"),
                (Rule::DiskLow, "b"),
                (Rule::HostResources, "c")
            ]
        );
        assert_eq!(got[0].severity, Severity::Critical);
    }

    #[test]
    fn disabled_rule_raises_nothing() {
        let mut t = Thresholds::default();
        t.rules.insert(
            Rule::Unreachable,
            RuleSettings {
                enabled: false,
                severity: Severity::Info,
            },
        );
        let mut a = res("a");
        a.offline = true;
        let snap = Snapshot {
            resources: vec![a],
            jobs: vec![],
        };
        assert!(evaluate(&snap, &t).is_empty());
    }

    #[test]
    fn build_failure_clears_with_a_later_passing_build() {
        let t = Thresholds::default();
        let failed = job("1", "k", "error", 10, &[("build", "error")]);
        let snap = Snapshot {
            resources: vec![],
            jobs: vec![failed.clone()],
        };
        assert_eq!(rules(&evaluate(&snap, &t)), vec![(Rule::BuildFailed, "k")]);
        let passed = job("2", "k", "passed", 20, &[("build", "passed")]);
        let snap = Snapshot {
            resources: vec![],
            jobs: vec![passed, failed],
        };
        assert!(evaluate(&snap, &t).is_empty());
        // A test failure is the test's fault, not the lab's.
        let snap = Snapshot {
            resources: vec![],
            jobs: vec![job("3", "k", "failed", 30, &[("build", "failed")])],
        };
        assert!(evaluate(&snap, &t).is_empty());
    }

    #[test]
    fn deploy_failure_by_board_clears_with_next_boot() {
        let t = Thresholds::default();
        let a = job(
            "1",
            "x",
            "error",
            10,
            &[("deploy", "passed"), ("boot", "error")],
        );
        let snap = Snapshot {
            resources: vec![],
            jobs: vec![a.clone()],
        };
        assert_eq!(
            rules(&evaluate(&snap, &t)),
            vec![(Rule::DeployFailed, "b1")]
        );
        let b = job(
            "2",
            "y",
            "failed",
            20,
            &[("deploy", "passed"), ("test", "failed")],
        );
        let snap = Snapshot {
            resources: vec![],
            jobs: vec![a, b],
        };
        assert!(evaluate(&snap, &t).is_empty());
    }

    fn c(rule: Rule, subject: &str) -> Condition {
        Condition {
            rule,
            subject: subject.into(),
            severity: Severity::Critical,
            summary: String::new(),
            details: serde_json::Value::Null,
        }
    }

    #[test]
    fn reconcile_raises_touches_and_resolves() {
        let open = vec![
            OpenAlert {
                id: "A".into(),
                rule: Rule::Unreachable,
                subject: "x".into(),
            },
            OpenAlert {
                id: "B".into(),
                rule: Rule::Unreachable,
                subject: "y".into(),
            },
            OpenAlert {
                id: "C".into(),
                rule: Rule::BoardHealth,
                subject: "z".into(),
            },
        ];
        let now = vec![
            c(Rule::Unreachable, "x"),
            c(Rule::Unreachable, "x"),
            c(Rule::DiskLow, "x"),
        ];
        let judged: BTreeSet<Rule> = [Rule::Unreachable, Rule::DiskLow].into();
        let p = reconcile(&open, &now, &judged);
        assert_eq!(p.raise.len(), 1);
        assert_eq!(p.raise[0].rule, Rule::DiskLow);
        assert_eq!(p.touch.len(), 1);
        assert_eq!(p.touch[0].0, "A");
        // C's rule was not judged: it stays.
        assert_eq!(p.resolve, vec!["B".to_string()]);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_ends() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
            attempts: 5,
        };
        let got: Vec<_> = (1..=5).map(|a| b.after(a)).collect();
        let s = Duration::from_secs;
        assert_eq!(
            got,
            vec![Some(s(1)), Some(s(2)), Some(s(4)), Some(s(5)), None]
        );
    }

    #[test]
    fn words_round_trip() {
        for r in Rule::ALL {
            assert_eq!(r.as_str().parse::<Rule>(), Ok(r));
        }
        assert!("nope".parse::<Rule>().is_err());
        assert_eq!("warning".parse::<Severity>(), Ok(Severity::Warning));
    }

    proptest! {
        #[test]
        fn reconcile_keeps_one_alert_per_key(
            open_keys in proptest::collection::vec((0usize..7, 0u8..4), 0..10),
            now_keys in proptest::collection::vec((0usize..7, 0u8..4), 0..10),
        ) {
            let mut open = Vec::new();
            let mut seen = BTreeSet::new();
            for (i, (r, s)) in open_keys.iter().enumerate() {
                if seen.insert((*r, *s)) {
                    open.push(OpenAlert { id: i.to_string(), rule: Rule::ALL[*r], subject: s.to_string() });
                }
            }
            let now: Vec<_> = now_keys.iter().map(|(r, s)| c(Rule::ALL[*r], &s.to_string())).collect();
            let judged: BTreeSet<Rule> = Rule::ALL.into();
            let p = reconcile(&open, &now, &judged);
            // Every open alert is either touched or resolved, never both.
            prop_assert_eq!(p.touch.len() + p.resolve.len(), open.len());
            // After the plan, each key that holds has exactly one open alert.
            let mut keys: BTreeSet<(Rule, String)> = BTreeSet::new();
            for (_, c) in &p.touch { prop_assert!(keys.insert((c.rule, c.subject.clone()))); }
            for c in &p.raise { prop_assert!(keys.insert((c.rule, c.subject.clone()))); }
            let want: BTreeSet<(Rule, String)> = now.iter().map(|c| (c.rule, c.subject.clone())).collect();
            prop_assert_eq!(keys, want);
        }

        #[test]
        fn backoff_never_exceeds_cap(initial in 1u64..100, max in 1u64..1000, attempts in 1u32..40, a in 1u32..50) {
            let b = Backoff { initial: Duration::from_millis(initial), max: Duration::from_millis(max), attempts };
            match b.after(a) {
                Some(d) => { prop_assert!(a < attempts); prop_assert!(d <= Duration::from_millis(max)); }
                None => prop_assert!(a >= attempts),
            }
        }
    }
}
