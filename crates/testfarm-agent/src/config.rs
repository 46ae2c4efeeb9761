//! `agent.toml`: what an agent manages and how it reaches the server, all in one place
//! with defaults and documentation beside each field.
//!
//! The agent measures capabilities itself ([`crate::detect`]); the file only says what the
//! host *is for* (build server, QEMU host, the boards wired to it, the remote hosts it drives
//! over SSH), the labels people select on, and the target triples to look for toolchains of.
//! Parsing is strict, like the server's file: unknown keys, wrong types and bad values are
//! errors with the file, line and column, and a did-you-mean for misspelt keys.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use testfarm_api::resource::{BoardInfo, Labels, ResourceKind};

/// The whole `agent.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The server's base URL (`http://lab:8080`), without `/api/v1`.
    pub url: String,
    /// File holding the agent-role token (relative to the config file). The token's name
    /// is the agent's name on the server.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The token itself, for an agent run in-process (the server's built-in agent); never
    /// read from the file, so a token is not written into configuration by mistake.
    #[serde(skip)]
    pub token: Option<String>,
    /// The agent's name; must equal its token's name. Also the prefix of default resource
    /// names.
    pub name: String,
    /// How often to heartbeat; unset: the interval the server asks for at registration.
    #[serde(default)]
    pub heartbeat_interval: Option<HumanDuration>,
    /// Where each job gets its fresh work directory (`<work_dir>/jobs/<job id>`), and where
    /// the agent remembers what it runs across restarts (`<work_dir>/running`).
    #[serde(default = "default_work_dir")]
    pub work_dir: PathBuf,
    /// After SIGTERM to a step's process group, how long before SIGKILL.
    #[serde(default = "default_kill_grace")]
    pub kill_grace: HumanDuration,
    /// Time limit of an `always` step that sets none (they run after a job timeout too, so
    /// they need a bound of their own).
    #[serde(default = "default_always_timeout")]
    pub always_timeout: HumanDuration,
    /// How often SSH hosts that could not be registered are probed again.
    #[serde(default = "default_reprobe_interval")]
    pub reprobe_interval: HumanDuration,
    /// Keep a job's work directory after it ends (for debugging); default: removed.
    #[serde(default)]
    pub keep_work_dirs: bool,
    /// Resources on this host: the host itself (`build-server`, `qemu-host`) and boards.
    #[serde(default, rename = "resource")]
    pub resources: Vec<ResourceConfig>,
    /// Remote hosts this agent drives over SSH.
    #[serde(default, rename = "ssh_host")]
    pub ssh_hosts: Vec<SshHostConfig>,
    /// The `[[board]]` tables as written; read for real by `testfarm_board::parse_boards`
    /// on the same text (into [`AgentConfig::boards`]), which checks every driver field
    /// with its line and column.
    #[serde(default, rename = "board")]
    board_tables: Vec<toml::Value>,
    /// Boards with drivers (power, console, flash), from the `[[board]]` tables.
    #[serde(skip)]
    pub boards: Boards,
}

/// The checked `[[board]]` tables. Compared by name: a board's patterns (regexes) have no
/// equality of their own.
#[derive(Debug, Clone, Default)]
pub struct Boards(pub Vec<testfarm_board::BoardConfig>);

impl PartialEq for Boards {
    fn eq(&self, other: &Boards) -> bool {
        let names = |b: &Boards| b.0.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        names(self) == names(other)
    }
}

/// `[[resource]]`: something on this host that jobs are placed on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub kind: ResourceKind,
    /// Unset: `<agent name>-build` or `<agent name>-qemu`; required for boards.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    /// Target triples to find toolchains for (`aarch64-linux-gnu` → `aarch64-linux-gnu-gcc`).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Boards only: how to identify, power and flash it (drivers come with the boards work).
    #[serde(default)]
    pub board: Option<BoardInfo>,
    /// Boards only: peripherals wired to it (`ethernet`, `can0`); a board's cannot be
    /// measured from the host, so they are declared.
    #[serde(default)]
    pub peripherals: Vec<String>,
    /// Boards only: the board's architecture (`arm64`), as it cannot be measured from here.
    #[serde(default)]
    pub arch: Option<String>,
}

/// `[[ssh_host]]`: a remote host reached with the system `ssh`, so `~/.ssh/config`,
/// ssh-agent and ProxyJump work as they do for people.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshHostConfig {
    /// The resource's name on the server.
    pub name: String,
    /// `user@host` or a `Host` alias from `~/.ssh/config`.
    pub destination: String,
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_ssh_kind")]
    pub kind: ResourceKind,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub targets: Vec<String>,
    /// Extra `-o` options (`["ProxyJump=bastion", "StrictHostKeyChecking=accept-new"]`).
    #[serde(default)]
    pub options: Vec<String>,
    /// Remote directory for job work directories (relative: to the remote home).
    #[serde(default = "default_remote_work_dir")]
    pub work_dir: String,
    /// Longest wait for the TCP connection and SSH handshake.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
}

fn default_work_dir() -> PathBuf {
    PathBuf::from("/var/lib/testfarm-agent")
}
fn default_kill_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_always_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_reprobe_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_ssh_kind() -> ResourceKind {
    ResourceKind::BuildServer
}
fn default_remote_work_dir() -> String {
    ".testfarm-agent/jobs".to_string()
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// A duration written the human way (`30s`), parsed by the core's one parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        testfarm_core::duration::parse(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// A configuration error located in its file (line 0: no position).
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
            let (file, line, col) = (self.file.display(), self.line, self.column);
            write!(f, "{file}:{line}:{col}: {}", self.message)
        }
    }
}

impl AgentConfig {
    /// A config for `--url --token-file --name` on the command line: the host as a build
    /// server, everything else at its default.
    pub fn minimal(url: &str, token_file: Option<PathBuf>, name: &str) -> AgentConfig {
        AgentConfig {
            url: url.to_string(),
            token_file,
            token: None,
            name: name.to_string(),
            heartbeat_interval: None,
            work_dir: default_work_dir(),
            kill_grace: default_kill_grace(),
            always_timeout: default_always_timeout(),
            reprobe_interval: default_reprobe_interval(),
            keep_work_dirs: false,
            resources: vec![ResourceConfig {
                kind: ResourceKind::BuildServer,
                name: None,
                labels: Labels::new(),
                targets: Vec::new(),
                board: None,
                peripherals: Vec::new(),
                arch: None,
            }],
            ssh_hosts: Vec::new(),
            board_tables: Vec::new(),
            boards: Boards::default(),
        }
    }

    /// Reads and validates a file; relative paths in it become relative to its directory.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        let mut config = Self::parse(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_relative_to(base);
        Ok(config)
    }

    /// Parses configuration text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<AgentConfig, ConfigError> {
        let mut config: AgentConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| testfarm_core::diagnostic::line_col(text, s.start))
                .unwrap_or((0, 0));
            ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                message: testfarm_core::diagnostic::with_suggestion(e.message()),
            }
        })?;
        config.boards = Boards(testfarm_board::parse_boards(text).map_err(|e| {
            let mut message = String::new();
            if let Some(b) = &e.board {
                message.push_str(&format!("board `{b}`: "));
            }
            if !e.field.is_empty() {
                message.push_str(&format!("`{}`: ", e.field));
            }
            message.push_str(&e.message);
            ConfigError {
                file: path.to_path_buf(),
                line: e.line,
                column: e.column,
                message,
            }
        })?);
        config.validate().map_err(|(needle, message)| {
            let (line, column) = find(text, &needle).unwrap_or((0, 0));
            ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                message,
            }
        })?;
        Ok(config)
    }

    fn resolve_relative_to(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(t) = &mut self.token_file {
            fix(t);
        }
        fix(&mut self.work_dir);
        for h in &mut self.ssh_hosts {
            if let Some(i) = &mut h.identity_file
                && !i.starts_with("~")
            {
                fix(i);
            }
        }
    }

    /// Rules serde cannot express. Errors carry a text to locate in the file.
    fn validate(&self) -> Result<(), (String, String)> {
        let has_scheme = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !has_scheme {
            return Err((
                "url".into(),
                format!("url {:?} must start with http:// or https://", self.url),
            ));
        }
        testfarm_core::resource::validate_name(&self.name)
            .map_err(|e| ("name".into(), format!("name: {e}")))?;
        if let Some(h) = self.heartbeat_interval
            && h.0 < Duration::from_millis(100)
        {
            return Err((
                "heartbeat_interval".into(),
                "heartbeat_interval must be at least 100ms".into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.resources.iter().enumerate() {
            let name = self.resource_name(r);
            testfarm_core::resource::validate_name(&name)
                .map_err(|e| ("[[resource]]".into(), format!("resource[{i}].name: {e}")))?;
            r.labels
                .validate()
                .map_err(|e| ("[[resource]]".into(), format!("resource[{i}].labels: {e}")))?;
            let is_board = r.kind == ResourceKind::Board;
            if is_board && r.name.is_none() {
                return Err((
                    "[[resource]]".into(),
                    format!("resource[{i}]: a board needs a `name`"),
                ));
            }
            if !is_board && (r.board.is_some() || !r.peripherals.is_empty() || r.arch.is_some()) {
                return Err((
                    "[[resource]]".into(),
                    format!(
                        "resource[{i}]: `board`, `peripherals` and `arch` are for boards only (the host's own are measured)"
                    ),
                ));
            }
            check_triples(&r.targets).map_err(|m| ("targets".into(), m))?;
            if !names.insert(name.clone()) {
                return Err((
                    name.clone(),
                    format!("resource name {name:?} is used twice"),
                ));
            }
        }
        for b in &self.boards.0 {
            let at = format!("\"{}\"", b.name);
            testfarm_core::resource::validate_name(&b.name)
                .map_err(|e| (at.clone(), format!("board {:?}: name: {e}", b.name)))?;
            if !names.insert(b.name.clone()) {
                return Err((
                    at,
                    format!(
                        "resource name {:?} is used twice (a [[board]] and another resource)",
                        b.name
                    ),
                ));
            }
        }
        for h in &self.ssh_hosts {
            testfarm_core::resource::validate_name(&h.name)
                .map_err(|e| (h.name.clone(), format!("ssh_host.name: {e}")))?;
            h.labels
                .validate()
                .map_err(|e| (h.name.clone(), format!("ssh_host {}: labels: {e}", h.name)))?;
            if h.destination.trim().is_empty() || h.destination.starts_with('-') {
                return Err((
                    "destination".into(),
                    format!(
                        "ssh_host {}: destination must be user@host or a host alias",
                        h.name
                    ),
                ));
            }
            if h.kind == ResourceKind::Board {
                return Err((
                    h.name.clone(),
                    format!(
                        "ssh_host {}: kind must be build-server or qemu-host",
                        h.name
                    ),
                ));
            }
            check_triples(&h.targets).map_err(|m| ("targets".into(), m))?;
            if !names.insert(h.name.clone()) {
                return Err((
                    h.name.clone(),
                    format!("resource name {:?} is used twice", h.name),
                ));
            }
        }
        Ok(())
    }

    /// The name a `[[resource]]` registers under.
    pub fn resource_name(&self, r: &ResourceConfig) -> String {
        match (&r.name, r.kind) {
            (Some(n), _) => n.clone(),
            (None, ResourceKind::BuildServer) => format!("{}-build", self.name),
            (None, ResourceKind::QemuHost) => format!("{}-qemu", self.name),
            (None, ResourceKind::Board) => format!("{}-board", self.name),
        }
    }

    /// The bearer token: given in-process, or read from `token_file`.
    pub fn read_token(&self) -> Result<String, ConfigError> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let Some(file) = &self.token_file else {
            return Err(ConfigError {
                file: PathBuf::from("agent.toml"),
                line: 0,
                column: 0,
                message: "no token: set token_file".into(),
            });
        };
        let token = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the token file: {e}"),
        })?;
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(ConfigError {
                file: file.clone(),
                line: 0,
                column: 0,
                message: "the token file is empty".into(),
            });
        }
        Ok(token)
    }
}

/// Target triples are used in command names: keep them to their alphabet.
fn check_triples(targets: &[String]) -> Result<(), String> {
    for t in targets {
        let ok = !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(format!(
                "target {t:?} is not a target triple (like aarch64-linux-gnu)"
            ));
        }
    }
    Ok(())
}

/// Where `needle` first appears as a key or value, for errors found after parsing.
fn find(text: &str, needle: &str) -> Option<(usize, usize)> {
    let offset = text.find(needle)?;
    Some(testfarm_core::diagnostic::line_col(text, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
url = "http://127.0.0.1:8080"
token_file = "agent.token"
name = "lab1"
heartbeat_interval = "2s"
work_dir = "/tmp/tf-agent"

[[resource]]
kind = "build-server"
labels = { team = "kernel" }
targets = ["aarch64-linux-gnu"]

[[resource]]
kind = "qemu-host"

[[resource]]
kind = "board"
name = "rpi4-1"
labels = { board_type = "rpi4" }
arch = "arm64"
peripherals = ["ethernet"]
board = { board_type = "rpi4", power_method = "manual" }

[[ssh_host]]
name = "remote1"
destination = "root@testbed"
port = 2222
identity_file = "/root/.ssh/id_ed25519"
"#;

    #[test]
    fn full_file_parses() {
        let c = AgentConfig::parse(Path::new("a.toml"), FULL).unwrap();
        assert_eq!(c.name, "lab1");
        assert_eq!(c.resources.len(), 3);
        assert_eq!(c.resource_name(&c.resources[0]), "lab1-build");
        assert_eq!(c.resource_name(&c.resources[1]), "lab1-qemu");
        assert_eq!(c.resource_name(&c.resources[2]), "rpi4-1");
        assert_eq!(c.ssh_hosts[0].port, Some(2222));
        assert_eq!(c.ssh_hosts[0].kind, ResourceKind::BuildServer);
        assert_eq!(
            c.heartbeat_interval,
            Some(HumanDuration(Duration::from_secs(2)))
        );
    }

    #[test]
    fn typo_has_line_column_and_suggestion() {
        let text = "url = \"http://x\"\nname = \"a\"\n\n[[ssh_host]]\nname = \"r\"\ndestnation = \"u@h\"\n";
        let e = AgentConfig::parse(Path::new("a.toml"), text).unwrap_err();
        assert_eq!((e.line, e.column), (6, 1), "{e}");
        assert!(e.message.contains("did you mean `destination`"), "{e}");
        assert!(e.to_string().starts_with("a.toml:6:1: "), "{e}");
    }

    #[test]
    fn wrong_types_and_values_are_located() {
        let e = AgentConfig::parse(
            Path::new("a"),
            "url = \"http://x\"\nname = \"a\"\nheartbeat_interval = \"5\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("unit"), "{e}");
        let e = AgentConfig::parse(
            Path::new("a"),
            "url = \"http://x\"\nname = \"a\"\n[[resource]]\nkind = \"toaster\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("build-server"), "{e}");
        let e =
            AgentConfig::parse(Path::new("a"), "url = \"ftp://x\"\nname = \"a\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (1, 1), "{e}");
        let e = AgentConfig::parse(
            Path::new("a"),
            "url = \"http://x\"\nname = \"a\"\n[[resource]]\nkind = \"board\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("needs a `name`"), "{e}");
        let e = AgentConfig::parse(Path::new("a"), "url = \"http://x\"\n").unwrap_err();
        assert!(e.message.contains("name"), "{e}");
        let e = AgentConfig::parse(
            Path::new("a"),
            "url = \"http://x\"\nname = \"a\"\n[[resource]]\nkind = \"build-server\"\ntargets = [\"a b\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 5, "{e}");
    }

    const BOARD: &str = r#"url = "http://x"
name = "a"

[[resource]]
kind = "board"
name = "plain-1"

[[board]]
name = "sim-1"
board_type = "sim"
arch = "arm"
power = { driver = "command", on = "true", off = "true" }
console = { driver = "tcp", address = "127.0.0.1:9" }
"#;

    #[test]
    fn board_tables_are_read_with_their_drivers() {
        let c = AgentConfig::parse(Path::new("a.toml"), BOARD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.boards.0.len(), 1);
        assert_eq!(c.boards.0[0].name, "sim-1");
        assert_eq!(c.resources.len(), 1);
    }

    #[test]
    fn a_bad_board_is_refused_with_board_field_line_and_column() {
        let text = BOARD.replace("off = \"true\"", "of = \"true\"");
        let e = AgentConfig::parse(Path::new("a.toml"), &text).unwrap_err();
        assert_eq!(e.line, 12, "{e}");
        assert!(e.column > 1, "{e}");
        assert!(e.message.contains("board `sim-1`"), "{e}");
        assert!(e.message.contains("power"), "{e}");
        assert!(e.to_string().starts_with("a.toml:12:"), "{e}");
        let twice = BOARD.replace("\"sim-1\"", "\"plain-1\"");
        let e = AgentConfig::parse(Path::new("a.toml"), &twice).unwrap_err();
        assert!(e.message.contains("used twice"), "{e}");
        assert!(e.line > 0, "{e}");
    }

    #[test]
    fn load_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(
            &p,
            "url = \"http://x\"\nname = \"a\"\ntoken_file = \"t\"\nwork_dir = \"w\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("t"), "secret\n").unwrap();
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(
            c.token_file.as_deref(),
            Some(dir.path().join("t").as_path())
        );
        assert_eq!(c.work_dir, dir.path().join("w"));
        assert_eq!(c.read_token().unwrap(), "secret");
    }

    #[test]
    fn examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(
            n >= 2,
            "expected example agent configs in {}",
            dir.display()
        );
    }
}
