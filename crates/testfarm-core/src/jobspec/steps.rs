//! The step kinds of a job: one file per kind, the `Step` enum that names them here.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::build::BuildStep;
use super::deploy::{BootStep, DeployStep};
use super::http::{HttpStep, WaitForStep};
pub use crate::duration::HumanDuration;

/// Where a command runs: the agent's host shell, the guest agent inside a VM, over SSH to
/// the leased board or VM, or on its serial console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    #[default]
    Host,
    Guest,
    Ssh,
    Console,
}

/// How a test step reports results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestFormat {
    #[default]
    Tap,
    Junit,
    /// Only the exit status counts.
    ExitCode,
}

/// `shell: "cmd"` or `shell: { run: cmd, via: ssh, timeout: 10m, env: {K: v} }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct ShellStep {
    pub run: String,
    #[serde(default)]
    pub via: Via,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// `test: { run: "t/**/*_test.sh", via: guest, format: tap, timeout: 10m }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct TestStep {
    pub run: String,
    #[serde(default)]
    pub via: Via,
    #[serde(default)]
    pub format: TestFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// `upload: "out/report.html"` or `upload: { path, name, kind }`: keep a file as an artifact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct UploadStep {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

// `remote = "Self"` keeps the derived map form callable as `X::deserialize`-by-path while
// the public impl accepts the short string form too.
macro_rules! remote_self_impls {
    ($ty:ident, $field:ident, $what:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $ty::serialize(self, s)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        Ok($ty {
                            $field: v.to_string(),
                            ..Default::default()
                        })
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        $ty::deserialize(de::value::MapAccessDeserializer::new(map))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

remote_self_impls!(ShellStep, run, "a command, or a map with `run`");
remote_self_impls!(TestStep, run, "a test command or glob, or a map with `run`");
remote_self_impls!(UploadStep, path, "a path, or a map with `path`");

/// One step. Written as a one-key map (`- shell: "make"`); new kinds are new variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Shell(ShellStep),
    Test(TestStep),
    /// Compiles a source tree and stores its artifacts ([`super::build`]).
    Build(BuildStep),
    Deploy(DeployStep),
    Boot(BootStep),
    Http(HttpStep),
    WaitFor(WaitForStep),
    Sleep(HumanDuration),
    Upload(UploadStep),
    /// Fails the job when the expression ([`crate::expr`]) holds over the saved values.
    FailIf(String),
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Shell(_) => "shell",
            Step::Test(_) => "test",
            Step::Build(_) => "build",
            Step::Deploy(_) => "deploy",
            Step::Boot(_) => "boot",
            Step::Http(_) => "http",
            Step::WaitFor(_) => "wait_for",
            Step::Sleep(_) => "sleep",
            Step::Upload(_) => "upload",
            Step::FailIf(_) => "fail_if",
        }
    }

    /// Steps the server can run itself, without a leased resource.
    pub fn runs_on_server(&self) -> bool {
        matches!(
            self,
            Step::Http(_) | Step::WaitFor(_) | Step::Sleep(_) | Step::FailIf(_)
        )
    }
}
