//! `build`: compile a source tree on a build server and keep what it produced.
//!
//! ```yaml
//! - build:
//!     source: https://git.example.com/linux.git   # or a local path on the build server
//!     ref: v6.12                                   # branch, tag or commit (default: HEAD)
//!     arch: arm64                                  # picks the toolchain (native or cross)
//!     config: defconfig                            # TESTFARM_BUILD_CONFIG for the command
//!     run: make $TESTFARM_BUILD_CONFIG && make -j$(nproc) Image dtbs
//!     artifacts:
//!       - { glob: arch/arm64/boot/Image, kind: kernel }
//!       - { glob: "arch/arm64/boot/dts/**/*.dtb", kind: dtb }
//!     server: auto                                 # or a build server's name
//!     timeout: 1h
//! ```
//!
//! The agent clones `source` into the job's work directory, checks out `ref` (recording
//! the commit it resolved to), runs `run` there as a shell step (live log, timeout,
//! cancel), then stores the files `artifacts` match as one build of the artifact
//! repository. Checks that need no lab (names, globs, refs) are made here, at submit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::HumanDuration;
use crate::artifact::{ArtifactKind, validate_artifact_name};

/// Which build server takes the build: `auto` (the scheduler's choice, see
/// [`crate::build`]) or one by name (checked at submit: it must have the toolchain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServerChoice {
    #[default]
    Auto,
    Named(String),
}

impl Serialize for ServerChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerChoice::Auto => s.serialize_str("auto"),
            ServerChoice::Named(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for ServerChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(if s.eq_ignore_ascii_case("auto") {
            ServerChoice::Auto
        } else {
            ServerChoice::Named(s)
        })
    }
}

/// One kind of file the build keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildArtifact {
    /// Relative to the source tree; `*`, `?` and `**` as in upload steps.
    pub glob: String,
    pub kind: ArtifactKind,
    /// The artifact's name in the build; default the file's name. Only for a glob that
    /// matches one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildStep {
    /// A git URL, or a path to a repository on the build server.
    pub source: String,
    /// Branch, tag or commit; default the repository's HEAD.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Target architecture (`arm64`, `x86_64`, `riscv64`, `arm`); default the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// A defconfig name or a config file in the tree, given to the command as
    /// `TESTFARM_BUILD_CONFIG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The build command (sh), run at the top of the checked-out tree.
    pub run: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<BuildArtifact>,
    #[serde(default, skip_serializing_if = "is_auto")]
    pub server: ServerChoice,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

fn is_auto(c: &ServerChoice) -> bool {
    *c == ServerChoice::Auto
}

impl BuildStep {
    /// The server name when one is asked for.
    pub fn named_server(&self) -> Option<&str> {
        match &self.server {
            ServerChoice::Auto => None,
            ServerChoice::Named(n) => Some(n),
        }
    }
}

/// A git ref as a person writes it; refused when git would take it as an option or it
/// cannot be a ref (`git check-ref-format`'s main rules), so it is safe on a command line.
pub fn validate_ref(r: &str) -> Result<(), String> {
    let bad = r.is_empty()
        || r.len() > 255
        || r.starts_with('-')
        || r.starts_with('/')
        || r.ends_with('/')
        || r.ends_with('.')
        || r.ends_with(".lock")
        || r.contains("..")
        || r.contains("@{")
        || r.contains("//")
        || r.chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        Err(format!(
            "{r:?} is not a branch, tag or commit (no spaces, no leading '-', none of ~^:?*[\\ or '..')"
        ))
    } else {
        Ok(())
    }
}

/// Whether a relative glob stays inside the tree.
fn check_glob(g: &str) -> Result<(), String> {
    if g.trim().is_empty() {
        return Err("the glob is empty".into());
    }
    if g.starts_with('/') || g.split('/').any(|p| p == "..") {
        return Err(format!(
            "{g:?} must be relative to the source tree and stay inside it (no leading / or ..)"
        ));
    }
    Ok(())
}

/// The step's own rules. Returns the field below the step (`.artifacts[1].name`) and why.
pub(super) fn check(b: &BuildStep) -> Result<(), (String, String)> {
    let source = b.source.trim();
    if source.is_empty() {
        return Err((
            ".source".into(),
            "the source (a git URL or path) is empty".into(),
        ));
    }
    if source.starts_with('-') || source.chars().any(char::is_control) {
        return Err((
            ".source".into(),
            format!("{source:?} is not a git URL or path"),
        ));
    }
    if let Some(r) = &b.git_ref {
        validate_ref(r).map_err(|m| (".ref".into(), m))?;
    }
    if let Some(arch) = &b.arch
        && (arch.is_empty()
            || arch.len() > 32
            || !arch
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return Err((
            ".arch".into(),
            format!("{arch:?} is not an architecture (arm64, x86_64, riscv64, arm…)"),
        ));
    }
    if let Some(c) = &b.config
        && (c.trim().is_empty() || c.chars().any(char::is_control))
    {
        return Err((
            ".config".into(),
            "the config is empty or has control characters".into(),
        ));
    }
    if b.run.trim().is_empty() {
        return Err((".run".into(), "the build command is empty".into()));
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, a) in b.artifacts.iter().enumerate() {
        check_glob(&a.glob).map_err(|m| (format!(".artifacts[{i}].glob"), m))?;
        if let Some(n) = &a.name {
            validate_artifact_name(n)
                .map_err(|e| (format!(".artifacts[{i}].name"), e.to_string()))?;
            if let Some(first) = names.insert(n, i) {
                return Err((
                    format!(".artifacts[{i}].name"),
                    format!("artifact name {n:?} is already used by artifacts[{first}]"),
                ));
            }
        }
    }
    if let ServerChoice::Named(n) = &b.server {
        crate::resource::validate_name(n).map_err(|e| (".server".into(), e.to_string()))?;
    }
    for k in b.env.keys() {
        if k.is_empty()
            || k.starts_with(|c: char| c.is_ascii_digit())
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err((
                format!(".env.{k}"),
                format!("{k:?} is not an environment variable name"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        for ok in ["main", "v6.12", "feature/x", "0123abcd", "release-1.0"] {
            assert!(validate_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-c", "a b", "a..b", "x:y", "x~1", "/main", "main/", "x.lock", "a\nb",
        ] {
            assert!(validate_ref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn globs_stay_inside() {
        assert!(check_glob("out/*.bin").is_ok());
        assert!(check_glob("**/*.dtb").is_ok());
        assert!(check_glob("/etc/passwd").is_err());
        assert!(check_glob("../x").is_err());
        assert!(check_glob(" ").is_err());
    }
}
