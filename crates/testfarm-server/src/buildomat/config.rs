//! `[buildomat]`: testfarm as a buildomat factory (docs/buildomat.md).
//!
//! Values whose shape can be checked while reading (the URL, each target's board selector,
//! the agent command template) are newtypes checked in `TryFrom<String>`, so a bad one is
//! reported by the TOML reader with the line and column of the value, like every other
//! config error. Rules across fields (token or token_file, name or id) are checked after.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use testfarm_core::duration::HumanDuration;
use testfarm_core::selector::Selector;

/// The default agent command: installs the buildomat agent with the worker's bootstrap
/// string (on Linux `install` also starts it as the `buildomat-agent` systemd service),
/// then follows the service's journal. That keeps the testfarm job (and so the board's
/// lease) alive while the agent works, and makes the agent's log the job's output: it is
/// appended to the buildomat job and counts as progress for `silent_limit`. The factory
/// ends the job when buildomat recycles the worker.
pub const DEFAULT_AGENT_COMMAND: &str = "buildomat-agent install '{{ url }}' '{{ bootstrap }}' && exec journalctl --no-pager -o cat -f -u buildomat-agent";

/// `[buildomat]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildomatSection {
    /// buildomat-server's base URL (`http://buildomat:8000`).
    pub url: BuildomatUrl,
    /// The factory token inline (prefer `token_file`).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the factory token, relative to the config file (mode 0600).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A buildomat user token with `target.read`, only to resolve target names to ids
    /// (`GET /0/admin/targets`); the factory API cannot list targets.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Time between factory passes.
    #[serde(default = "default_poll")]
    pub poll: HumanDuration,
    /// A worker not online this long after its instance was created is recycled.
    #[serde(default = "default_boot_limit")]
    pub boot_limit: HumanDuration,
    /// An online worker whose job log shows nothing this long is recycled; `0s`: never
    /// (buildomat-server itself holds a worker whose agent went silent).
    #[serde(default = "default_silent_limit")]
    pub silent_limit: HumanDuration,
    /// The longest one buildomat job may hold a board (the testfarm job's timeout).
    #[serde(default = "default_max_runtime")]
    pub max_runtime: HumanDuration,
    /// The shell command the board's job runs, with `{{ url }}` and `{{ bootstrap }}`.
    #[serde(default)]
    pub agent_command: AgentCommand,
    /// Targets served, each mapped to the boards that serve it.
    #[serde(default)]
    pub target: Vec<TargetConfig>,
}

/// `[[buildomat.target]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The target's name on buildomat (resolved to its id at start), or its id.
    #[serde(default)]
    pub name: Option<String>,
    /// The target's ULID, when known (no resolution needed).
    #[serde(default)]
    pub id: Option<String>,
    /// The boards that may serve it (`board_type=grapefruit,!retired`).
    pub boards: BoardSelector,
}

fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_boot_limit() -> HumanDuration {
    HumanDuration(Duration::from_secs(10 * 60))
}
fn default_silent_limit() -> HumanDuration {
    HumanDuration(Duration::from_secs(20 * 60))
}
fn default_max_runtime() -> HumanDuration {
    HumanDuration(Duration::from_secs(8 * 3600))
}

/// An http:// or https:// URL, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BuildomatUrl(pub String);

impl TryFrom<String> for BuildomatUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = (s.starts_with("http://") || s.starts_with("https://"))
            && reqwest::Url::parse(&s).is_ok_and(|u| u.host().is_some());
        if !ok {
            return Err(format!(
                "buildomat.url {s:?} must be an http:// or https:// URL"
            ));
        }
        Ok(BuildomatUrl(s.trim_end_matches('/').to_string()))
    }
}

/// A board selector, parsed while reading.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BoardSelector(pub Selector);

impl TryFrom<String> for BoardSelector {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Selector::parse(&s)
            .map(BoardSelector)
            .map_err(|e| format!("buildomat.target.boards {s:?}: {e}"))
    }
}

/// The agent command template; must name `{{ bootstrap }}` (the agent cannot start
/// without it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AgentCommand(pub String);

impl Default for AgentCommand {
    fn default() -> Self {
        AgentCommand(DEFAULT_AGENT_COMMAND.to_string())
    }
}

impl TryFrom<String> for AgentCommand {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if !mentions(&s, "bootstrap") {
            return Err(format!(
                "buildomat.agent_command {s:?} must contain {{{{ bootstrap }}}} (the worker's bootstrap string)"
            ));
        }
        Ok(AgentCommand(s))
    }
}

fn mentions(template: &str, var: &str) -> bool {
    let squeezed: String = template.chars().filter(|c| !c.is_whitespace()).collect();
    squeezed.contains(&format!("{{{{{var}}}}}"))
}

impl AgentCommand {
    /// The command for one worker. Values are substituted as given: the template decides
    /// the quoting (bootstrap strings and URLs carry no shell metacharacters we accept).
    pub fn render(&self, url: &str, bootstrap: &str) -> String {
        let mut out = self.0.clone();
        for (var, value) in [("url", url), ("bootstrap", bootstrap)] {
            for form in [format!("{{{{ {var} }}}}"), format!("{{{{{var}}}}}")] {
                out = out.replace(&form, value);
            }
        }
        out
    }
}

impl BuildomatSection {
    /// The silence limit the loop applies (`0s`: none).
    pub fn silent(&self) -> Duration {
        if self.silent_limit.0.is_zero() {
            Duration::MAX
        } else {
            self.silent_limit.0
        }
    }

    /// Rules across fields: one of `token` and `token_file`, a name or an id per target,
    /// no target twice. Returns the message; the caller locates it.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err("buildomat: give token or token_file, not both".into());
            }
            (None, None) => {
                return Err("buildomat: token_file (or token) is required".into());
            }
            (Some(t), None) if t.trim().is_empty() => {
                return Err("buildomat.token is empty".into());
            }
            _ => {}
        }
        if self.poll.0.is_zero() {
            return Err("buildomat.poll must be more than zero".into());
        }
        if self.boot_limit.0.is_zero() || self.silent_limit.0.is_zero() {
            return Err(
                "buildomat.boot_limit and buildomat.silent_limit must be more than zero".into(),
            );
        }
        if self.max_runtime.0 < Duration::from_secs(60) {
            return Err("buildomat.max_runtime must be at least 1m".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in self.target.iter().enumerate() {
            let key = match (&t.name, &t.id) {
                (None, None) => {
                    return Err(format!("buildomat.target[{i}]: give its name or its id"));
                }
                (_, Some(id)) => {
                    if ulid::Ulid::from_string(id).is_err() {
                        return Err(format!(
                            "buildomat.target[{i}].id {id:?} is not a ULID (buildomat target ids are ULIDs)"
                        ));
                    }
                    id.clone()
                }
                (Some(n), None) => {
                    if n.trim().is_empty() {
                        return Err(format!("buildomat.target[{i}].name is empty"));
                    }
                    n.clone()
                }
            };
            if !seen.insert(key.clone()) {
                return Err(format!("buildomat.target[{i}]: {key:?} is listed twice"));
            }
        }
        Ok(())
    }

    /// The factory token, from `token` or `token_file` (relative to `config_dir`).
    pub fn read_token(&self, config_dir: &Path) -> Result<String, String> {
        read_secret(
            self.token.as_deref(),
            self.token_file.as_deref(),
            config_dir,
        )
        .and_then(|t| t.ok_or_else(|| "buildomat: no token configured".to_string()))
    }

    /// The admin token for name resolution, when configured.
    pub fn read_admin_token(&self, config_dir: &Path) -> Result<Option<String>, String> {
        read_secret(None, self.admin_token_file.as_deref(), config_dir)
    }
}

fn read_secret(
    inline: Option<&str>,
    file: Option<&Path>,
    config_dir: &Path,
) -> Result<Option<String>, String> {
    if let Some(t) = inline {
        return Ok(Some(t.trim().to_string()));
    }
    let Some(f) = file else { return Ok(None) };
    let path = config_dir.join(f);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("buildomat token file {}: {e}", path.display()))?;
    let t = text.trim().to_string();
    if t.is_empty() {
        return Err(format!("buildomat token file {} is empty", path.display()));
    }
    Ok(Some(t))
}

/// Renders the section as TOML (for `testfarm buildomat setup`).
pub fn section_toml(url: &str, token_file: &str, targets: &[(String, String)]) -> String {
    let q = |s: &str| toml_quote(s);
    let mut out = format!(
        "[buildomat]\nurl = {}\ntoken_file = {}\n",
        q(url),
        q(token_file)
    );
    for (name, selector) in targets {
        let key = if ulid::Ulid::from_string(name).is_ok() {
            "id"
        } else {
            "name"
        };
        out.push_str(&format!(
            "\n[[buildomat.target]]\n{key} = {}\nboards = {}\n",
            q(name),
            q(selector)
        ));
    }
    out
}

fn toml_quote(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("server.toml"), text).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
[buildomat]
url = "http://127.0.0.1:9000/"
token_file = "bmat.token"
poll = "1s"

[[buildomat.target]]
name = "sp-sim"
boards = "board_type=sim"

[[buildomat.target]]
id = "01JD3Z6S0R8W9Q2A5Y7C4K1M3N"
boards = "team=bsp"
"#;

    #[test]
    fn a_full_section_parses() {
        let c = parse(GOOD).unwrap();
        let b = c.buildomat.unwrap();
        assert_eq!(b.url.0, "http://127.0.0.1:9000");
        assert_eq!(b.target.len(), 2);
        assert_eq!(b.poll.0, std::time::Duration::from_secs(1));
        assert_eq!(
            b.agent_command.render("http://u", "BOOT"),
            "buildomat-agent install 'http://u' 'BOOT' && exec journalctl --no-pager -o cat -f -u buildomat-agent"
        );
    }

    #[test]
    fn bad_values_name_the_field_with_line_and_column() {
        let e = parse(&GOOD.replace("board_type=sim", "board_type in (")).unwrap_err();
        assert!(e.starts_with("server.toml:9:"), "{e}");
        assert!(e.contains("buildomat.target.boards"), "{e}");
        let e = parse(&GOOD.replace("http://127.0.0.1:9000/", "buildomat:9000")).unwrap_err();
        assert!(e.starts_with("server.toml:3:"), "{e}");
        assert!(e.contains("buildomat.url"), "{e}");
        let e = parse(&GOOD.replace("poll = \"1s\"", "agent_command = \"buildomat-agent run\""))
            .unwrap_err();
        assert!(e.contains("{{ bootstrap }}"), "{e}");
        let e = parse(&GOOD.replace("poll", "pol")).unwrap_err();
        assert!(e.starts_with("server.toml:5:"), "{e}");
    }

    #[test]
    fn rules_across_fields_point_at_the_section() {
        let e = parse(&GOOD.replace("token_file = \"bmat.token\"", "")).unwrap_err();
        assert!(e.starts_with("server.toml:2:1:"), "{e}");
        assert!(e.contains("token_file (or token) is required"), "{e}");
        let e = parse(&GOOD.replace("id = \"01JD3Z6S0R8W9Q2A5Y7C4K1M3N\"", "id = \"nope\""))
            .unwrap_err();
        assert!(
            e.contains("buildomat.target[1].id \"nope\" is not a ULID"),
            "{e}"
        );
        let e = parse(&GOOD.replace("name = \"sp-sim\"", "")).unwrap_err();
        assert!(
            e.contains("buildomat.target[0]: give its name or its id"),
            "{e}"
        );
    }
}
