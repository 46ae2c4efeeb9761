//! The server's configuration file: its structs, defaults, documentation and validation,
//! all here. `testfarm init` writes [`DEFAULT_TOML`]; a test checks that it parses to
//! exactly [`Config::default`], so the commented file and the code cannot drift apart.
//!
//! Validation is strict: unknown keys, wrong types and bad values stop the server with the
//! file, line, column and what was expected (with a did-you-mean for misspelt keys).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The commented configuration `testfarm init` writes: every option, at its default.
pub const DEFAULT_TOML: &str = r#"# testfarm server configuration.
# Every option is listed at its default; delete what you do not change.
# Durations are written like 30s, 5m, 2h, 1h30m. Relative paths are relative to this file.

[server]
# Address the HTTP server listens on (API, web UI, agents).
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

[log]
# "text" for people, "json" for log collectors. `--log-format` overrides it.
format = "text"
# A tracing filter such as "info" or "info,testfarm_server=debug". RUST_LOG overrides it.
level = "info"
"#;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub log: LogSection,
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
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
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
            let (line, column) = e
                .span()
                .map(|s| line_col(text, s.start))
                .unwrap_or((0, 0));
            ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                message: with_suggestion(e.message()),
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
        };
        if !self.server.url.is_empty()
            && !(self.server.url.starts_with("http://") || self.server.url.starts_with("https://"))
        {
            return Err(bad(format!(
                "server.url {:?} must start with http:// or https://",
                self.server.url
            )));
        }
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

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Adds "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`".
fn with_suggestion(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| (strsim::jaro_winkler(unknown, cand), cand))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, cand)) => format!("{message}; did you mean `{cand}`?"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_is_the_default_config() {
        let parsed = Config::parse(Path::new("config.toml"), DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(Config::parse(Path::new("c"), "").unwrap(), Config::default());
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
        assert!(e.message.contains("text") && e.message.contains("json"), "{e}");
        let e = Config::parse(Path::new("c"), "[server]\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(e.message.contains("server.url"), "{e}");
        let e = Config::parse(Path::new("c"), "[sever]\n").unwrap_err();
        assert!(e.message.contains("did you mean `server`"), "{e}");
    }
}
