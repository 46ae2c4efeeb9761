//! The server's configuration file: its structs, defaults, documentation and validation,
//! all here. `testfarm init` writes [`DEFAULT_TOML`]; a test checks that it parses to
//! exactly [`Config::default`], so the commented file and the code cannot drift apart.
//!
//! Validation is strict: unknown keys, wrong types and bad values stop the server with the
//! file, line, column and what was expected (with a did-you-mean for misspelt keys).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use testfarm_core::diagnostic::{line_col, with_suggestion};
pub use testfarm_core::duration::HumanDuration;
pub use testfarm_core::jobspec::ByteSize;

/// The commented configuration `testfarm init` writes: every option, at its default.
pub const DEFAULT_TOML: &str = r#"# testfarm server configuration.
# Every option is listed at its default; delete what you do not change.
# Durations are written like 30s, 5m, 2h, 1h30m. Relative paths are relative to this file.

[server]
# Address the HTTP server listens on (the API, for people, CI and agents).
listen = "127.0.0.1:8080"
# The URL people and agents use to reach this server; printed in messages and links.
# Empty: derived from `listen`.
url = ""
# Directory for the database and job data (logs, artifacts).
data_dir = "."
# SQLite database file, relative to data_dir. `testfarm server -d PATH` overrides it.
database = "data.sqlite3"
# File holding the bootstrap admin token (mode 0600), relative to this file.
# The environment variable TESTFARM_ADMIN_TOKEN_FILE overrides it.
admin_token_file = "admin.token"
# How long in-flight requests may take to finish on shutdown (SIGTERM, Ctrl-C).
shutdown_grace = "10s"
# Threads that serve requests and run the server's tasks. SQLite takes one writer at a
# time, and on one thread the transactions of every request ready at once share a
# commit: the lease round trip costs ~22% less CPU than on two. Raise it for a server
# whose load is mostly reads (dashboards, log downloads) on a machine with cores to spare.
workers = 1

[log]
# "text" for people, "json" for log collectors. `--log-format` overrides it.
format = "text"
# A tracing filter such as "info" or "info,testfarm_server=debug". RUST_LOG overrides it.
level = "info"

[scheduler]
# How often the scheduler runs even when nothing wakes it (submissions, lease ends and
# resource changes wake it at once).
tick = "2s"
# Jobs without a timeout hold their lease at most this long.
default_job_timeout = "2h"
# After a restart, how long a running job's agent has to report before the job ends `error`.
restart_grace = "60s"

[leases]
# A holder silent for this long loses its lease (renew more often than this).
heartbeat_ttl = "30s"
# How often the reaper looks for expired leases (they end within this of their expiry).
reap_interval = "1s"
# Command run (by /bin/sh) after a lease ends abnormally (expired, force-released, its job
# ended error or cancelled), with TESTFARM_RESOURCE, TESTFARM_RESOURCE_KIND,
# TESTFARM_LEASE_ID and TESTFARM_CLEANUP (power_off_board, stop_vm, stop_all_vms,
# clean_workdir) in its environment. The resource is out of the pool while it runs; if it
# fails, the resource stays in maintenance with the reason. Empty: no cleanup.
cleanup_command = ""
# Longest a cleanup may run before it counts as failed.
cleanup_timeout = "5m"

[health]
# An agent silent this long has its resources marked offline.
offline_after = "30s"
# Agents are told to heartbeat this often.
heartbeat_interval = "5s"
# A build server with less free disk than this is degraded and takes no new builds.
min_disk_gb = 10
# Above this CPU, memory or disk use (percent) a host takes no new VMs. 100: the hosts'
# reported use never holds VMs back (their cpus and memory still count what leases hold).
max_utilization_pct = 85

[retention]
# Events (the audit log, and the history live streams resume from) older than this are
# deleted, all but the newest. "0s" keeps them forever.
events = "90d"
# Leases that ended (released or expired) longer ago than this are deleted; active leases
# never are. "0s" keeps them forever.
ended_leases = "90d"
# How often old history is looked for (it is deleted in small transactions).
interval = "1h"

[artifacts]
# Builds older than this are deleted with their artifacts, unless pinned or tagged.
# "0s" keeps them however old.
max_age = "30d"
# Most the artifact blobs may take on disk, in GiB (identical files count once); above
# it the oldest builds that are neither pinned nor tagged go first. 0: no limit.
max_total_gb = 50
# Largest artifact one upload may carry (the rest of the API takes bodies of 4 MiB).
max_upload = "8G"
# How often retention looks for builds to delete and blobs nothing refers to.
interval = "1h"
# Where the blobs live: "local" (<data_dir>/artifacts) or an S3-compatible bucket,
# "s3://bucket/prefix", with its [artifacts.s3] table. Servers sharing a database share
# the bucket. Credentials are names in [secrets], never the values:
#   store = "s3://lab-artifacts/testfarm"
#   [artifacts.s3]
#   endpoint = "https://minio.lab.example:9000"   # omit for AWS's endpoint of the region
#   region = "us-east-1"
#   access_key_id = "s3_key_id"                   # these three name [secrets] entries
#   secret_access_key = "s3_secret"
#   session_token = "s3_session"                  # optional
#   virtual_hosted = false                        # bucket.endpoint/key addressing
store = "local"

[secrets]
# Values jobs use as {{ secrets.NAME }} in http steps (headers, URLs, bodies). They are
# masked (****) in job logs and never stored in events or step records; a job naming a
# secret not listed here is refused at submit. One line per secret:
#   sums_token = "the value"                   # inline
#   sums_token = { env = "SUMS_TOKEN" }        # from the server's environment
#   sums_token = { file = "secrets/sums" }     # a file's content (trailing newline cut),
#                                              # relative to this file

[boards]
# A board action (power, health check, lease-end release, console) the board's agent has
# not answered this long after taking it (or after it was queued, if the agent never took
# it) fails with "the agent did not answer".
action_timeout = "60s"
# Longest interactive console session (`testfarm console NAME`); it then ends with a notice.
# A client may ask for less (`--limit`), never more.
console_session_limit = "30m"

[alerts]
# Evaluate the alert rules and deliver alerts. false: no alerts are raised or sent.
enabled = true
# How often the rules look at the lab (an alert is raised within about this plus the
# rule's own bound, e.g. health.offline_after for an unreachable agent).
interval = "5s"
# disk_low: a build server with less free disk than this (GiB) raises an alert.
min_disk_gb = 10
# host_resources: a host above this CPU or memory use (percent) raises an alert.
max_cpu_pct = 95
max_memory_pct = 95
# Failed deliveries are retried after retry_initial, doubling up to retry_max, for
# retry_attempts attempts in all; then the delivery is `undelivered` with the last error.
retry_initial = "1s"
retry_max = "5m"
retry_attempts = 8
# Longest one webhook POST or SMTP conversation may take.
delivery_timeout = "10s"

# Each rule may be turned off or given another severity (info, warning, critical):
#   [alerts.rules.unreachable]      # an agent's resource is offline (critical)
#   enabled = true
#   severity = "critical"
# Rules: unreachable, disk_low (critical), host_resources (warning), board_health
# (critical), build_failed (warning), deploy_failed (warning), cleanup_failed (critical).

# Webhooks get a JSON POST for every raised and resolved alert, signed with
# X-Testfarm-Signature: sha256=<hex HMAC-SHA256 of the body> when `secret` names a
# [secrets] entry. One table per receiver:
#   [[alerts.webhook]]
#   name = "ops"
#   url = "https://hooks.example.com/testfarm"
#   secret = "ops_hook"          # a name in [secrets], never the value itself

# Email through an SMTP server (lettre). tls: "none", "starttls" or "tls".
#   [alerts.email]
#   host = "smtp.example.com"
#   port = 587
#   tls = "starttls"
#   username = "testfarm"
#   password = "smtp_password"   # a name in [secrets]
#   from = "testfarm <testfarm@example.com>"
#   to = ["lab-ops@example.com"]

# Serve buildomat jobs on boards (docs/buildomat.md). Absent: testfarm is no factory.
#   [buildomat]
#   url = "http://buildomat:8000"
#   token_file = "buildomat.token"     # the factory token (mode 0600); or token = "…"
#   admin_token_file = "bmat-admin.token"  # only to resolve target names to ids
#   poll = "5s"                        # time between factory passes
#   boot_limit = "10m"                 # a worker not online this long is recycled
#   silent_limit = "20m"               # an online worker silent this long is recycled ("0s": never)
#   max_runtime = "8h"                 # longest one buildomat job holds a board
#   agent_command = "buildomat-agent install '{{ url }}' '{{ bootstrap }}' && exec journalctl --no-pager -o cat -f -u buildomat-agent"
#   [[buildomat.target]]
#   name = "sp-grapefruit"             # or id = "01J…" (the target's ULID)
#   boards = "board_type=grapefruit"   # a board selector

[agent.local]
# Run the built-in agent in the server process, registering this machine's resources.
enabled = true
# The name it registers under (also its token's name).
name = "local"
"#;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub log: LogSection,
    pub scheduler: SchedulerSection,
    pub leases: LeasesSection,
    pub health: HealthSection,
    pub retention: RetentionSection,
    pub artifacts: ArtifactsSection,
    pub secrets: BTreeMap<String, SecretSource>,
    pub boards: BoardsSection,
    pub alerts: AlertsSection,
    pub agent: AgentSection,
    /// `[buildomat]`: serve buildomat jobs on boards (absent: not a factory).
    pub buildomat: Option<crate::buildomat::config::BuildomatSection>,
}

/// `[alerts]`: the alert rules' thresholds and where alerts are delivered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    pub enabled: bool,
    pub interval: HumanDuration,
    pub min_disk_gb: u64,
    pub max_cpu_pct: u32,
    pub max_memory_pct: u32,
    pub retry_initial: HumanDuration,
    pub retry_max: HumanDuration,
    pub retry_attempts: u32,
    pub delivery_timeout: HumanDuration,
    pub rules: AlertRules,
    pub webhook: Vec<WebhookConfig>,
    pub email: Option<EmailConfig>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            enabled: true,
            interval: HumanDuration(Duration::from_secs(5)),
            min_disk_gb: 10,
            max_cpu_pct: 95,
            max_memory_pct: 95,
            retry_initial: HumanDuration(Duration::from_secs(1)),
            retry_max: HumanDuration(Duration::from_secs(300)),
            retry_attempts: 8,
            delivery_timeout: HumanDuration(Duration::from_secs(10)),
            rules: AlertRules::default(),
            webhook: Vec::new(),
            email: None,
        }
    }
}

/// `[alerts.rules.NAME]`, one per built-in rule.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRules {
    pub unreachable: AlertRule,
    pub disk_low: AlertRule,
    pub host_resources: AlertRule,
    pub board_health: AlertRule,
    pub build_failed: AlertRule,
    pub deploy_failed: AlertRule,
    pub cleanup_failed: AlertRule,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRule {
    pub enabled: bool,
    /// None: the rule's own default (`core::alert::default_severity`).
    pub severity: Option<testfarm_core::alert::Severity>,
}

impl Default for AlertRule {
    fn default() -> Self {
        AlertRule {
            enabled: true,
            severity: None,
        }
    }
}

/// `[[alerts.webhook]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    /// A name in `[secrets]`: the HMAC key of `X-Testfarm-Signature`.
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    #[default]
    Starttls,
    Tls,
}

/// `[alerts.email]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    /// A name in `[secrets]`.
    #[serde(default)]
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
}

fn default_smtp_port() -> u16 {
    587
}

impl AlertsSection {
    /// The core's view of the rules and thresholds.
    pub fn thresholds(&self) -> testfarm_core::alert::Thresholds {
        use testfarm_core::alert::{Rule, RuleSettings, default_severity};
        let r = &self.rules;
        let rules = [
            (Rule::Unreachable, &r.unreachable),
            (Rule::DiskLow, &r.disk_low),
            (Rule::HostResources, &r.host_resources),
            (Rule::BoardHealth, &r.board_health),
            (Rule::BuildFailed, &r.build_failed),
            (Rule::DeployFailed, &r.deploy_failed),
            (Rule::CleanupFailed, &r.cleanup_failed),
        ]
        .into_iter()
        .map(|(rule, c)| {
            (
                rule,
                RuleSettings {
                    enabled: c.enabled,
                    severity: c.severity.unwrap_or_else(|| default_severity(rule)),
                },
            )
        })
        .collect();
        testfarm_core::alert::Thresholds {
            rules,
            min_disk_gb: self.min_disk_gb as f64,
            max_cpu_pct: f64::from(self.max_cpu_pct),
            max_memory_pct: f64::from(self.max_memory_pct),
        }
    }

    pub fn backoff(&self) -> testfarm_core::alert::Backoff {
        testfarm_core::alert::Backoff {
            initial: self.retry_initial.0,
            max: self.retry_max.0,
            attempts: self.retry_attempts,
        }
    }

    fn validate(&self, secrets: &BTreeMap<String, SecretSource>) -> Result<(), String> {
        if self.interval.0.is_zero() {
            return Err("alerts.interval must be more than zero".into());
        }
        if self.retry_attempts == 0 {
            return Err("alerts.retry_attempts must be at least 1".into());
        }
        if self.retry_initial.0.is_zero() || self.delivery_timeout.0.is_zero() {
            return Err(
                "alerts.retry_initial and alerts.delivery_timeout must be more than zero".into(),
            );
        }
        for (key, v) in [
            ("max_cpu_pct", self.max_cpu_pct),
            ("max_memory_pct", self.max_memory_pct),
        ] {
            if v == 0 || v > 100 {
                return Err(format!("alerts.{key} must be between 1 and 100, not {v}"));
            }
        }
        let secret = |field: String, name: &Option<String>| match name {
            // The value is not repeated: it may be the secret itself, typed in the wrong place.
            Some(n) if !secrets.contains_key(n) => Err(format!(
                "{field} is not a name in [secrets] (give the name of a [secrets] entry, not the value)"
            )),
            _ => Ok(()),
        };
        let mut names = std::collections::BTreeSet::new();
        for (i, w) in self.webhook.iter().enumerate() {
            if w.name.trim().is_empty() {
                return Err(format!("alerts.webhook[{i}].name must not be empty"));
            }
            if !names.insert(w.name.as_str()) {
                return Err(format!(
                    "alerts.webhook[{i}].name {:?} is used twice",
                    w.name
                ));
            }
            if !(w.url.starts_with("http://") || w.url.starts_with("https://"))
                || reqwest::Url::parse(&w.url).is_err()
            {
                return Err(format!(
                    "alerts.webhook[{i}].url {:?} must be an http:// or https:// URL",
                    w.url
                ));
            }
            secret(format!("alerts.webhook[{i}].secret"), &w.secret)?;
        }
        if let Some(e) = &self.email {
            if e.host.trim().is_empty() {
                return Err("alerts.email.host must not be empty".into());
            }
            if e.from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(format!(
                    "alerts.email.from {:?} is not an email address",
                    e.from
                ));
            }
            if e.to.is_empty() {
                return Err("alerts.email.to must list at least one address".into());
            }
            for (i, to) in e.to.iter().enumerate() {
                if to.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(format!(
                        "alerts.email.to[{i}] {to:?} is not an email address"
                    ));
                }
            }
            if e.password.is_some() && e.username.is_none() {
                return Err("alerts.email.password needs alerts.email.username".into());
            }
            secret("alerts.email.password".into(), &e.password)?;
        }
        Ok(())
    }
}

/// `[boards]`: how long the server waits for a board's agent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardsSection {
    pub action_timeout: HumanDuration,
    /// Longest interactive console session (`testfarm console`); a client may ask for
    /// less, never more.
    pub console_session_limit: HumanDuration,
}

impl Default for BoardsSection {
    fn default() -> Self {
        BoardsSection {
            action_timeout: HumanDuration(Duration::from_secs(60)),
            console_session_limit: HumanDuration(Duration::from_secs(30 * 60)),
        }
    }
}

/// Where a secret's value comes from (`[secrets]`). Read when the server starts, so a
/// missing variable or file stops it at once rather than failing a job later.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretSource {
    Value(String),
    Env { env: String },
    File { file: PathBuf },
}

impl SecretSource {
    /// The value; `config_dir` anchors relative files.
    pub fn read(&self, config_dir: &Path) -> Result<String, String> {
        match self {
            SecretSource::Value(v) => Ok(v.clone()),
            SecretSource::Env { env } => {
                std::env::var(env).map_err(|e| format!("environment variable {env}: {e}"))
            }
            SecretSource::File { file } => {
                let path = config_dir.join(file);
                std::fs::read_to_string(&path)
                    .map(|t| t.trim_end_matches(['\r', '\n']).to_string())
                    .map_err(|e| format!("file {}: {e}", path.display()))
            }
        }
    }
}

/// `[artifacts]`: the artifact repository's limits, and where its blobs live.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactsSection {
    pub max_age: HumanDuration,
    pub max_total_gb: u64,
    pub max_upload: ByteSize,
    pub interval: HumanDuration,
    /// `local` or `s3://bucket/prefix`.
    pub store: String,
    pub s3: Option<S3Section>,
}

/// `[artifacts.s3]`: how to reach the bucket of `artifacts.store = "s3://…"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// A name in `[secrets]`.
    pub access_key_id: String,
    /// A name in `[secrets]`.
    pub secret_access_key: String,
    /// A name in `[secrets]`.
    #[serde(default)]
    pub session_token: Option<String>,
    #[serde(default)]
    pub virtual_hosted: bool,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

/// Where artifact blobs live, as `[artifacts]` says.
#[derive(Debug, Clone, PartialEq)]
pub enum BlobLocation {
    Local,
    S3 {
        bucket: String,
        prefix: String,
        s3: S3Section,
    },
}

impl Default for ArtifactsSection {
    fn default() -> Self {
        ArtifactsSection {
            max_age: HumanDuration(Duration::from_secs(30 * 86_400)),
            max_total_gb: 50,
            max_upload: ByteSize(8 << 30),
            interval: HumanDuration(Duration::from_secs(3600)),
            store: "local".into(),
            s3: None,
        }
    }
}

impl ArtifactsSection {
    /// The blob location `store` names, checked against `[artifacts.s3]` and `[secrets]`.
    pub fn location(
        &self,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<BlobLocation, String> {
        if self.store == "local" {
            if self.s3.is_some() {
                return Err(
                    "artifacts.s3 is set but artifacts.store is \"local\" (set store = \"s3://bucket/prefix\")".into(),
                );
            }
            return Ok(BlobLocation::Local);
        }
        let (bucket, prefix) = testfarm_artifacts::parse_s3_url(&self.store)
            .map_err(|why| format!("artifacts.store: {why} (or \"local\")"))?;
        let s3 = self.s3.clone().ok_or_else(|| {
            format!(
                "artifacts.store is {:?} but there is no [artifacts.s3] table (region and credentials)",
                self.store
            )
        })?;
        if let Some(e) = &s3.endpoint
            && (!(e.starts_with("http://") || e.starts_with("https://"))
                || reqwest::Url::parse(e).is_err())
        {
            return Err(format!(
                "artifacts.s3.endpoint {e:?} must be an http:// or https:// URL"
            ));
        }
        if s3.region.trim().is_empty() {
            return Err("artifacts.s3.region must not be empty".into());
        }
        for (field, name) in [
            ("access_key_id", Some(&s3.access_key_id)),
            ("secret_access_key", Some(&s3.secret_access_key)),
            ("session_token", s3.session_token.as_ref()),
        ] {
            if let Some(name) = name
                && !secrets.contains_key(name)
            {
                // The value is not repeated: it may be the secret itself.
                return Err(format!(
                    "artifacts.s3.{field} is not a name in [secrets] (give the name of a [secrets] entry, not the value)"
                ));
            }
        }
        Ok(BlobLocation::S3 { bucket, prefix, s3 })
    }

    /// The core's view: zero is no limit.
    pub fn budget(&self) -> testfarm_core::artifact_retention::Budget {
        testfarm_core::artifact_retention::Budget::from_config(self.max_age.0, self.max_total_gb)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    pub events: HumanDuration,
    pub ended_leases: HumanDuration,
    pub interval: HumanDuration,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            events: HumanDuration(Duration::from_secs(90 * 86_400)),
            ended_leases: HumanDuration(Duration::from_secs(90 * 86_400)),
            interval: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

impl RetentionSection {
    /// The core's view: zero ages keep forever.
    pub fn rule(&self) -> testfarm_core::retention::Retention {
        testfarm_core::retention::Retention::from_ages(self.events.0, self.ended_leases.0)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    pub tick: HumanDuration,
    pub default_job_timeout: HumanDuration,
    pub restart_grace: HumanDuration,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            tick: HumanDuration(Duration::from_secs(2)),
            default_job_timeout: HumanDuration(Duration::from_secs(2 * 3600)),
            restart_grace: HumanDuration(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeasesSection {
    pub heartbeat_ttl: HumanDuration,
    pub reap_interval: HumanDuration,
    pub cleanup_command: String,
    pub cleanup_timeout: HumanDuration,
}

impl Default for LeasesSection {
    fn default() -> Self {
        LeasesSection {
            heartbeat_ttl: HumanDuration(Duration::from_secs(30)),
            reap_interval: HumanDuration(Duration::from_secs(1)),
            cleanup_command: String::new(),
            cleanup_timeout: HumanDuration(Duration::from_secs(300)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    pub offline_after: HumanDuration,
    pub heartbeat_interval: HumanDuration,
    pub min_disk_gb: u64,
    pub max_utilization_pct: u32,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            offline_after: HumanDuration(Duration::from_secs(30)),
            heartbeat_interval: HumanDuration(Duration::from_secs(5)),
            min_disk_gb: 10,
            max_utilization_pct: 85,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    pub local: LocalAgentSection,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalAgentSection {
    pub enabled: bool,
    pub name: String,
}

impl Default for LocalAgentSection {
    fn default() -> Self {
        LocalAgentSection {
            enabled: true,
            name: "local".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: SocketAddr,
    pub url: String,
    pub data_dir: PathBuf,
    pub database: PathBuf,
    pub admin_token_file: PathBuf,
    pub shutdown_grace: HumanDuration,
    /// Threads of the server's async runtime (see the template for why one).
    pub workers: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            url: String::new(),
            data_dir: PathBuf::from("."),
            database: PathBuf::from("data.sqlite3"),
            admin_token_file: PathBuf::from("admin.token"),
            shutdown_grace: HumanDuration(Duration::from_secs(10)),
            workers: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

/// A configuration error located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses configuration text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                message: with_suggestion(e.message()),
            }
        })?;
        config.validate(path)?;
        if let Some(b) = &config.buildomat {
            b.validate().map_err(|message| {
                // Rules across fields: point at the section's header.
                let (line, column) = text
                    .find("[buildomat]")
                    .map(|at| line_col(text, at))
                    .unwrap_or((0, 0));
                ConfigError {
                    file: path.to_path_buf(),
                    line,
                    column,
                    message,
                }
            })?;
        }
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
        };
        let url = &self.server.url;
        let has_scheme = url.starts_with("http://") || url.starts_with("https://");
        if !url.is_empty() && !has_scheme {
            return Err(bad(format!(
                "server.url {:?} must start with http:// or https://",
                self.server.url
            )));
        }
        if self.server.workers == 0 || self.server.workers > 256 {
            return Err(bad(format!(
                "server.workers must be between 1 and 256, not {}",
                self.server.workers
            )));
        }
        if self.health.max_utilization_pct == 0 || self.health.max_utilization_pct > 100 {
            return Err(bad(format!(
                "health.max_utilization_pct must be between 1 and 100, not {}",
                self.health.max_utilization_pct
            )));
        }
        if self.leases.heartbeat_ttl.0.is_zero() || self.health.offline_after.0.is_zero() {
            return Err(bad(
                "leases.heartbeat_ttl and health.offline_after must be more than zero".into(),
            ));
        }
        if self.retention.interval.0.is_zero() {
            return Err(bad(
                "retention.interval must be more than zero (set the ages to \"0s\" to keep everything)".into(),
            ));
        }
        if self.artifacts.interval.0.is_zero() {
            return Err(bad(
                "artifacts.interval must be more than zero (set max_age to \"0s\" and max_total_gb to 0 to keep everything)".into(),
            ));
        }
        if self.artifacts.max_upload.0 == 0 {
            return Err(bad(
                "artifacts.max_upload must be more than zero (e.g. \"8G\")".into(),
            ));
        }
        for (name, source) in &self.secrets {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(bad(format!(
                    "secrets.{name}: secret names use letters, digits and _"
                )));
            }
            if matches!(source, SecretSource::Value(v) if v.is_empty()) {
                return Err(bad(format!("secrets.{name} is empty")));
            }
        }
        self.alerts.validate(&self.secrets).map_err(bad)?;
        self.artifacts.location(&self.secrets).map_err(bad)?;
        if self.log.level.trim().is_empty() {
            return Err(bad("log.level must not be empty (e.g. \"info\")".into()));
        }
        Ok(())
    }

    /// The URL to advertise: `server.url`, or one derived from `listen`.
    pub fn public_url(&self) -> String {
        if self.server.url.is_empty() {
            format!("http://{}", self.server.listen)
        } else {
            self.server.url.trim_end_matches('/').to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_is_the_default_config() {
        let parsed = Config::parse(Path::new("config.toml"), DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(
            Config::parse(Path::new("c"), "").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn secrets_from_value_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "from-file\n").unwrap();
        let text = "[secrets]\na = \"inline\"\nb = { env = \"PATH\" }\nc = { file = \"s\" }\nd = { env = \"TESTFARM_SURELY_UNSET_VAR\" }\n";
        let c = Config::parse(Path::new("c"), text).unwrap();
        assert_eq!(c.secrets["a"].read(dir.path()).unwrap(), "inline");
        assert!(!c.secrets["b"].read(dir.path()).unwrap().is_empty());
        assert_eq!(c.secrets["c"].read(dir.path()).unwrap(), "from-file");
        assert!(
            c.secrets["d"]
                .read(dir.path())
                .unwrap_err()
                .contains("TESTFARM_SURELY_UNSET_VAR")
        );
    }

    #[test]
    fn alerts_section_names_the_field_at_fault() {
        let e = Config::parse(Path::new("c"), "[alerts]\nintervall = \"5s\"\n").unwrap_err();
        assert!(e.message.contains("did you mean `interval`"), "{e}");
        let e = Config::parse(
            Path::new("c"),
            "[alerts.rules.unreachable]\nseverity = \"loud\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("critical"), "{e}");
        let e = Config::parse(
            Path::new("c"),
            "[[alerts.webhook]]\nname = \"a\"\nurl = \"http://x/\"\nsecret = \"nope\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("alerts.webhook[0].secret"), "{e}");
        let e = Config::parse(
            Path::new("c"),
            "[alerts.email]\nhost = \"h\"\nfrom = \"a@b\"\nto = []\n",
        )
        .unwrap_err();
        assert!(e.message.contains("alerts.email.to"), "{e}");
        let e = Config::parse(
            Path::new("c"),
            "[alerts.email]\nhost = \"h\"\ntls = \"ssl\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n",
        )
        .unwrap_err();
        assert!(e.message.contains("starttls"), "{e}");
        let ok = Config::parse(
            Path::new("c"),
            "[secrets]\nk = \"v\"\n[[alerts.webhook]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\nsecret = \"k\"\n[alerts.email]\nhost = \"h\"\nport = 25\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"c@d.e\"]\n",
        )
        .unwrap();
        assert_eq!(ok.alerts.webhook.len(), 1);
        assert_eq!(ok.alerts.email.as_ref().map(|e| e.tls), Some(SmtpTls::None));
    }

    #[test]
    fn typo_has_line_column_and_suggestion() {
        let text = "[server]\nlisten = \"127.0.0.1:9\"\nlistn = \"x\"\n";
        let e = Config::parse(Path::new("c.toml"), text).unwrap_err();
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.message.contains("did you mean `listen`"), "{e}");
        assert!(e.to_string().starts_with("c.toml:3:1: "), "{e}");
    }

    #[test]
    fn wrong_type_and_bad_values() {
        let e = Config::parse(Path::new("c"), "[server]\nlisten = 8080\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = Config::parse(Path::new("c"), "[server]\nlisten = \"nope\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = Config::parse(Path::new("c"), "[server]\nshutdown_grace = \"10\"\n").unwrap_err();
        assert!(e.message.contains("unit"), "{e}");
        let e = Config::parse(Path::new("c"), "[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(
            e.message.contains("text") && e.message.contains("json"),
            "{e}"
        );
        let e = Config::parse(Path::new("c"), "[server]\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(e.message.contains("server.url"), "{e}");
        let e = Config::parse(Path::new("c"), "[sever]\n").unwrap_err();
        assert!(e.message.contains("did you mean `server`"), "{e}");
        let e = Config::parse(Path::new("c"), "[server]\nworkers = 0\n").unwrap_err();
        assert!(e.message.contains("server.workers"), "{e}");
        let e = Config::parse(Path::new("c"), "[server]\nworkers = -1\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = Config::parse(Path::new("c"), "[secrets]\nx = { envv = \"A\" }\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let ok = Config::parse(Path::new("c"), "[server]\nworkers = 4\n").unwrap();
        assert_eq!(ok.server.workers, 4);
    }

    #[test]
    fn s3_artifact_stores_are_checked() {
        let ok = "[secrets]\nk = \"id\"\ns = { env = \"PATH\" }\n[artifacts]\nstore = \"s3://lab-artifacts/tf\"\n[artifacts.s3]\nendpoint = \"http://127.0.0.1:9000\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n";
        let c = Config::parse(Path::new("c"), ok).unwrap();
        match c.artifacts.location(&c.secrets).unwrap() {
            BlobLocation::S3 { bucket, prefix, s3 } => {
                assert_eq!((bucket.as_str(), prefix.as_str()), ("lab-artifacts", "tf"));
                assert_eq!(s3.region, "us-east-1");
            }
            other => panic!("{other:?}"),
        }
        for (text, says) in [
            (
                "[artifacts]\nstore = \"s3://lab-artifacts\"\n",
                "no [artifacts.s3] table",
            ),
            ("[artifacts]\nstore = \"/srv/blobs\"\n", "artifacts.store"),
            ("[artifacts]\nstore = \"s3://Bad_Bucket\"\n", "bucket name"),
            (
                "[artifacts]\nstore = \"s3://lab-artifacts\"\n[artifacts.s3]\naccess_key_id = \"AKIA123\"\nsecret_access_key = \"x\"\n",
                "artifacts.s3.access_key_id is not a name in [secrets]",
            ),
            (
                "[secrets]\nk = \"a\"\n[artifacts]\nstore = \"s3://lab-artifacts\"\n[artifacts.s3]\nendpoint = \"minio:9000\"\naccess_key_id = \"k\"\nsecret_access_key = \"k\"\n",
                "artifacts.s3.endpoint",
            ),
            (
                "[artifacts.s3]\naccess_key_id = \"k\"\nsecret_access_key = \"k\"\n",
                "store is \"local\"",
            ),
        ] {
            let e = Config::parse(Path::new("c"), text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(!e.contains("AKIA123"), "the value is not repeated: {e}");
        }
    }
}
