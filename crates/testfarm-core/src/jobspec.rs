//! The YAML job spec: what a person or CI writes to `testfarm submit`.
//!
//! Parsing is strict because a typo in a lab job costs a board-hour: unknown keys are
//! errors, and every error names the field path (`requires.labels.team`) and the line and
//! column, so the fix is obvious without reading this code. Types are checked while the
//! YAML is read (durations, sizes, priorities, selectors), and cross-field rules after,
//! with the location found again from the path.
//!
//! Templates (`{{ vars.api }}`) are not expanded here: strings keep them verbatim for the
//! runner to render with minijinja. Fields that must be typed values (durations, sizes)
//! cannot be templated.
//!
//! ```yaml
//! name: kernel-smoke
//! priority: high              # low | normal | high | urgent | 0..1000
//! timeout: 30m
//! queue_timeout: 2h
//! retry_on_error: 1           # re-queue once if the lab (not the test) fails
//! requires:
//!   kind: board
//!   labels: { arch: arm64, team: { in: [kernel, bsp] }, gpu: { exists: true } }
//!   selector: "board_type notin (rpi3)"
//!   peripherals: [ethernet]
//! steps:
//!   - shell: "make test"
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

pub use crate::duration::HumanDuration;
use crate::labels::{self, Labels};
use crate::priority::Priority;
use crate::resource::{Resource, ResourceKind};
use crate::selector::{Requirement, Selector};
use crate::size;

/// A spec that could not be read: where (field path, 1-based line and column) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[error("{}line {line}, column {column}: {message}", path_prefix(.path))]
pub struct SpecError {
    /// Dotted path to the field at fault (`requires.labels.team`, `steps[2].shell`); empty
    /// for the document itself.
    pub path: String,
    /// 1-based; 0 when the position is unknown.
    pub line: u64,
    /// 1-based; 0 when the position is unknown.
    pub column: u64,
    pub message: String,
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// A byte size as users type it (`512M`, `4G`), kept in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "schema", schema(value_type = String, example = "4G"))]
pub struct ByteSize(pub u64);

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}B", self.0))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 512M, 4G, 2T")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                size::parse_bytes(v).map(ByteSize).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Err(E::custom(format!(
                    "invalid size {v}: a unit is required (write {v}M or {v}G)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                Err(E::custom(format!(
                    "invalid size {v}: a unit is required (write {v}M or {v}G)"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A selector string in a spec (`selector: "team in (a,b)"`), parsed while reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorSpec(pub Selector);

impl Serialize for SelectorSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for SelectorSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Selector::parse(&s)
            .map(SelectorSpec)
            .map_err(de::Error::custom)
    }
}

/// One label condition in `requires.labels`: a plain value means equality; a one-key map
/// gives a set form.
///
/// ```yaml
/// labels:
///   arch: arm64                 # equal
///   team: { in: [kernel, bsp] } # one of
///   site: { notin: [lab-b] }    # none of (or absent)
///   gpu: { exists: true }       # present, any value (false: absent)
///   os: { not: windows }        # anything but (or absent)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelMatch {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists(bool),
}

const LABEL_OPS: &[&str] = &["in", "notin", "exists", "not"];

impl LabelMatch {
    fn requirement(&self, key: &str) -> Requirement {
        let key = key.to_string();
        match self {
            LabelMatch::Equals(value) => Requirement::Eq {
                key,
                value: value.clone(),
            },
            LabelMatch::NotEquals(value) => Requirement::NotEq {
                key,
                value: value.clone(),
            },
            LabelMatch::In(values) => Requirement::In {
                key,
                values: values.clone(),
            },
            LabelMatch::NotIn(values) => Requirement::NotIn {
                key,
                values: values.clone(),
            },
            LabelMatch::Exists(true) => Requirement::Exists { key },
            LabelMatch::Exists(false) => Requirement::NotExists { key },
        }
    }
}

impl Serialize for LabelMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if let LabelMatch::Equals(v) = self {
            return s.serialize_str(v);
        }
        let mut m = s.serialize_map(Some(1))?;
        match self {
            LabelMatch::Equals(_) => {}
            LabelMatch::NotEquals(v) => m.serialize_entry("not", v)?,
            LabelMatch::In(v) => m.serialize_entry("in", v)?,
            LabelMatch::NotIn(v) => m.serialize_entry("notin", v)?,
            LabelMatch::Exists(b) => m.serialize_entry("exists", b)?,
        }
        m.end()
    }
}

/// A label value: YAML scalars of any type are taken as their text (`version: 5`).
struct LabelValue(String);

impl<'de> Deserialize<'de> for LabelValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LabelValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a label value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn label_values<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Vec<String>, A::Error> {
    let v: Vec<LabelValue> = map.next_value()?;
    if v.is_empty() {
        return Err(de::Error::custom("the set of values is empty"));
    }
    Ok(v.into_iter().map(|l| l.0).collect())
}

impl<'de> Deserialize<'de> for LabelMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LabelMatch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a label value, or one of {in: [..]}, {notin: [..]}, {exists: true|false}, {not: value}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LabelMatch, E> {
                Ok(LabelMatch::Equals(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LabelMatch, E> {
                Ok(LabelMatch::Equals(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LabelMatch, E> {
                Ok(LabelMatch::Equals(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LabelMatch, E> {
                Ok(LabelMatch::Equals(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<LabelMatch, E> {
                Ok(LabelMatch::Equals(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LabelMatch, A::Error> {
                let Some(op) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "empty condition: use one of in, notin, exists, not",
                    ));
                };
                let m = match op.as_str() {
                    "in" => LabelMatch::In(label_values(&mut map)?),
                    "notin" => LabelMatch::NotIn(label_values(&mut map)?),
                    "exists" => LabelMatch::Exists(map.next_value()?),
                    "not" => LabelMatch::NotEquals(map.next_value::<LabelValue>()?.0),
                    other => return Err(de::Error::unknown_field(other, LABEL_OPS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "one condition per label: {extra:?} after {op:?} (write a `selector` for more)"
                    )));
                }
                Ok(m)
            }
        }
        d.deserialize_any(V)
    }
}

/// `requires` as written. [`Requires::requirements`] gives the normalised form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ResourceKind>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, LabelMatch>,
    /// Extra conditions in selector syntax, joined with `labels` (all must hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toolchains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peripherals: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Pin to one resource by name; checked at submit ([`crate::pinned`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

impl Requires {
    /// The normalised requirements the scheduler matches resources against.
    pub fn requirements(&self) -> Requirements {
        let mut selector = Selector {
            requirements: self.labels.iter().map(|(k, m)| m.requirement(k)).collect(),
        };
        if let Some(s) = &self.selector {
            selector = selector.and(&s.0);
        }
        Requirements {
            kind: self.kind,
            selector,
            cpus: self.cpus,
            memory_mb: self.memory.map(|b| size::bytes_to_mib(b.0)),
            disk_gb: self.disk.map(|b| size::bytes_to_gib(b.0)),
            kvm: self.kvm.unwrap_or(false),
            toolchains: self.toolchains.clone(),
            peripherals: self.peripherals.clone(),
            arch: self.arch.clone(),
            resource: self.resource.clone(),
        }
    }
}

/// What a job needs from a resource, normalised: one selector, sizes in MiB/GiB.
/// `kind: None` means the job runs on the server itself (only http/wait_for/sleep steps).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Requirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ResourceKind>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = String, example = "arch=arm64"))]
    pub selector: Selector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<u64>,
    #[serde(default)]
    pub kvm: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toolchains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peripherals: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// One reason a resource does not meet a job's requirements (static: it would not serve
/// the job even if idle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "mismatch", rename_all = "snake_case")]
pub enum Mismatch {
    WrongKind {
        wanted: ResourceKind,
        got: ResourceKind,
    },
    /// A selector requirement (`team in (a,b)`) the resource's labels fail.
    Label {
        requirement: String,
    },
    WrongArch {
        wanted: String,
        got: Option<String>,
    },
    TooFewCpus {
        wanted: u32,
        got: Option<u32>,
    },
    TooLittleMemory {
        wanted_mb: u64,
        got_mb: Option<u64>,
    },
    TooLittleDisk {
        wanted_gb: u64,
        got_gb: Option<u64>,
    },
    NoKvm,
    MissingToolchain {
        toolchain: String,
    },
    MissingPeripheral {
        peripheral: String,
    },
    NotThePinnedResource {
        pinned: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_unknown = |o: Option<String>| o.unwrap_or_else(|| "unknown".into());
        match self {
            Mismatch::WrongKind { wanted, got } => {
                write!(f, "is a {got}, the job needs a {wanted}")
            }
            Mismatch::Label { requirement } => {
                write!(f, "has labels that do not satisfy {requirement}")
            }
            Mismatch::WrongArch { wanted, got } => {
                write!(
                    f,
                    "has arch {}, the job needs {wanted}",
                    or_unknown(got.clone())
                )
            }
            Mismatch::TooFewCpus { wanted, got } => write!(
                f,
                "has {} cpus, the job needs {wanted}",
                or_unknown(got.map(|g| g.to_string()))
            ),
            Mismatch::TooLittleMemory { wanted_mb, got_mb } => write!(
                f,
                "has {} memory, the job needs {}",
                or_unknown(got_mb.map(size::format_mib)),
                size::format_mib(*wanted_mb)
            ),
            Mismatch::TooLittleDisk { wanted_gb, got_gb } => write!(
                f,
                "has {} disk, the job needs {wanted_gb}G",
                or_unknown(got_gb.map(|g| format!("{g}G")))
            ),
            Mismatch::NoKvm => f.write_str("has no KVM"),
            Mismatch::MissingToolchain { toolchain } => {
                write!(f, "lacks toolchain {toolchain}")
            }
            Mismatch::MissingPeripheral { peripheral } => {
                write!(f, "lacks peripheral {peripheral}")
            }
            Mismatch::NotThePinnedResource { pinned } => {
                write!(f, "is not {pinned}, the resource the job is pinned to")
            }
        }
    }
}

impl Requirements {
    /// Requirements of a job that runs on the server (no `requires`).
    pub fn server() -> Self {
        Requirements::default()
    }

    /// Whether the job needs a resource at all.
    pub fn needs_resource(&self) -> bool {
        self.kind.is_some() || self.resource.is_some()
    }

    /// Every static reason `resource` cannot serve this job; empty when it can.
    /// `labels` must be `resource.selector_labels()` (passed in so callers compute it once
    /// per resource, not once per job).
    pub fn mismatches(&self, resource: &Resource, labels: &Labels) -> Vec<Mismatch> {
        let mut out = Vec::new();
        self.check(resource, labels, &mut |m| {
            out.push(m);
            true
        });
        out
    }

    /// Whether `resource` meets every requirement; stops at the first miss.
    pub fn fits(&self, resource: &Resource, labels: &Labels) -> bool {
        let mut ok = true;
        self.check(resource, labels, &mut |_| {
            ok = false;
            false
        });
        ok
    }

    /// Reports each mismatch to `found`; stops when it returns false.
    fn check(&self, r: &Resource, labels: &Labels, found: &mut dyn FnMut(Mismatch) -> bool) {
        let caps = &r.capabilities;
        if let Some(pinned) = &self.resource
            && *pinned != r.name
            && !found(Mismatch::NotThePinnedResource {
                pinned: pinned.clone(),
            })
        {
            return;
        }
        if let Some(kind) = self.kind
            && kind != r.kind
            && !found(Mismatch::WrongKind {
                wanted: kind,
                got: r.kind,
            })
        {
            return;
        }
        for req in &self.selector.requirements {
            if !req.matches(labels)
                && !found(Mismatch::Label {
                    requirement: req.to_string(),
                })
            {
                return;
            }
        }
        if let Some(arch) = &self.arch {
            let got = labels.get("arch");
            if got != Some(arch.as_str())
                && !found(Mismatch::WrongArch {
                    wanted: arch.clone(),
                    got: got.map(str::to_string),
                })
            {
                return;
            }
        }
        if let Some(cpus) = self.cpus
            && caps.cpus.is_none_or(|c| c < cpus)
            && !found(Mismatch::TooFewCpus {
                wanted: cpus,
                got: caps.cpus,
            })
        {
            return;
        }
        if let Some(mem) = self.memory_mb
            && caps.memory_mb.is_none_or(|m| m < mem)
            && !found(Mismatch::TooLittleMemory {
                wanted_mb: mem,
                got_mb: caps.memory_mb,
            })
        {
            return;
        }
        if let Some(disk) = self.disk_gb
            && caps.disk_gb.is_none_or(|d| d < disk)
            && !found(Mismatch::TooLittleDisk {
                wanted_gb: disk,
                got_gb: caps.disk_gb,
            })
        {
            return;
        }
        if self.kvm && caps.kvm != Some(true) && !found(Mismatch::NoKvm) {
            return;
        }
        for t in &self.toolchains {
            if !caps.toolchains.contains(t)
                && !found(Mismatch::MissingToolchain {
                    toolchain: t.clone(),
                })
            {
                return;
            }
        }
        for p in &self.peripherals {
            if !caps.peripherals.contains(p)
                && !found(Mismatch::MissingPeripheral {
                    peripheral: p.clone(),
                })
            {
                return;
            }
        }
    }

    /// A stable text key: jobs with equal keys match the same resources. The scheduler
    /// uses it to compute matches once per distinct requirement, not once per job.
    pub fn key(&self) -> String {
        let mut k = String::new();
        use std::fmt::Write;
        let _ = write!(
            k,
            "{:?}|{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}",
            self.kind.map(ResourceKind::as_str),
            self.selector,
            self.cpus,
            self.memory_mb,
            self.disk_gb,
            self.kvm,
            self.toolchains,
            self.peripherals,
            self.arch,
            self.resource
        );
        k
    }
}

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

/// Which artifacts a deploy step takes (by build, commit, or latest of a branch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default)]
    pub latest: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// kernel, dtb, initrd, rootfs, modules, firmware; empty = all of the build's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
}

/// `deploy: { artifacts: {branch: main, latest: true} }`: flash, copy or boot images.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployStep {
    pub artifacts: ArtifactQuery,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// `boot: { expect: "login:", timeout: 5m }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

/// An HTTP request; `save` copies JSONPath results into variables for later steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStep {
    #[serde(default)]
    pub method: HttpMethod,
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Accepted statuses; empty means any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub save: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// Polls a request until a condition holds; `timeout` is required so every wait ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitForStep {
    pub http: HttpStep,
    pub until: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    pub timeout: HumanDuration,
}

/// One step. Written as a one-key map (`- shell: "make"`); new kinds are new variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Shell(ShellStep),
    Test(TestStep),
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

/// A parsed job spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    #[serde(default)]
    pub priority: Priority,
    /// Longest run once started; the job ends `timed_out` after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Longest wait in the queue; the job ends `error` after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<HumanDuration>,
    /// How many times a job that ends `error` (the lab's fault) is queued again.
    #[serde(default)]
    pub retry_on_error: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<Requires>,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Runs whatever happened in `steps`, before the lease ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub always: Vec<Step>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, serde_json::Value>,
}

/// Largest spec accepted; specs are small, a bigger input is a mistake or an attack.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// Longest job name; names appear in listings and history keys.
pub const MAX_NAME_LEN: usize = 128;

impl JobSpec {
    /// Parses and checks a spec. Errors carry the field path and line/column.
    pub fn parse(text: &str) -> Result<JobSpec, SpecError> {
        if text.len() > MAX_SPEC_BYTES {
            return Err(SpecError {
                path: String::new(),
                line: 0,
                column: 0,
                message: format!("the spec is larger than {MAX_SPEC_BYTES} bytes"),
            });
        }
        let mut path_out: Option<String> = None;
        let options = serde_saphyr::options! { with_snippet: false };
        let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_path_to_error::deserialize::<_, JobSpec>(de).map_err(|e| {
                path_out = Some(e.path().to_string());
                e.into_inner()
            })
        });
        let spec = match parsed {
            Ok(spec) => spec,
            Err(e) => return Err(from_yaml_error(&e, path_out, text)),
        };
        spec.validate()
            .map_err(|(path, message)| locate::error_at(text, &path, message))?;
        Ok(spec)
    }

    /// Cross-field rules that serde cannot express. Returns the path and message.
    fn validate(&self) -> Result<(), (String, String)> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err((
                "name".into(),
                format!("the job name must be 1 to {MAX_NAME_LEN} printable characters"),
            ));
        }
        if self.steps.is_empty() {
            return Err(("steps".into(), "a job needs at least one step".into()));
        }
        for (list, steps) in [("steps", &self.steps), ("always", &self.always)] {
            for (i, step) in steps.iter().enumerate() {
                check_workflow_step(step)
                    .map_err(|(field, m)| (format!("{list}[{i}].{}{field}", step.kind()), m))?;
            }
        }
        if let Some(req) = &self.requires {
            if req.kind.is_none() && req.resource.is_none() {
                return Err((
                    "requires.kind".into(),
                    "`requires` needs a `kind` (build-server, qemu-host, board) or a pinned `resource`"
                        .into(),
                ));
            }
            for key in req.labels.keys() {
                labels::validate_key(key)
                    .map_err(|e| (format!("requires.labels.{key}"), e.to_string()))?;
            }
            if req.cpus == Some(0) {
                return Err(("requires.cpus".into(), "cpus must be at least 1".into()));
            }
            if let Some(name) = &req.resource {
                crate::resource::validate_name(name)
                    .map_err(|e| ("requires.resource".into(), e.to_string()))?;
            }
        } else {
            for (list, steps) in [("steps", &self.steps), ("always", &self.always)] {
                if let Some((i, s)) = steps.iter().enumerate().find(|(_, s)| !s.runs_on_server()) {
                    return Err((
                        format!("{list}[{i}].{}", s.kind()),
                        format!(
                            "a {} step needs a resource: add `requires` (without it the job runs on the server, where only http, wait_for, sleep and fail_if steps run)",
                            s.kind()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The normalised requirements ([`Requirements::server`] when `requires` is absent).
    pub fn requirements(&self) -> Requirements {
        self.requires
            .as_ref()
            .map(Requires::requirements)
            .unwrap_or_else(Requirements::server)
    }

    /// Applies `--var k=v` (as strings, overriding the spec's `vars`) and `--priority P`.
    pub fn apply_overrides(
        &mut self,
        vars: &[(String, String)],
        priority: Option<Priority>,
    ) -> Result<(), SpecError> {
        for (k, v) in vars {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(SpecError {
                    path: format!("vars.{k}"),
                    line: 0,
                    column: 0,
                    message: format!(
                        "variable name {k:?} is invalid: use letters, digits and _ (from --var)"
                    ),
                });
            }
            self.vars
                .insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        if let Some(p) = priority {
            self.priority = p;
        }
        Ok(())
    }
}

/// The expressions and paths of an http/wait_for/fail_if step, checked at submit. Returns
/// the field below the step (`.until`) and the message (with the expression's column).
fn check_workflow_step(step: &Step) -> Result<(), (String, String)> {
    use crate::expr::Expr;
    let check_http = |h: &HttpStep, prefix: &str| -> Result<(), (String, String)> {
        for (name, path) in &h.save {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err((
                    format!("{prefix}.save.{name}"),
                    format!("saved value name {name:?} is invalid: use letters, digits and _"),
                ));
            }
            if matches!(name.as_str(), "vars" | "secrets") {
                return Err((
                    format!("{prefix}.save.{name}"),
                    format!("`{name}` is reserved for the job's {name}; choose another name"),
                ));
            }
            serde_json_path::JsonPath::parse(path).map_err(|e| {
                (
                    format!("{prefix}.save.{name}"),
                    format!("JSON path {path:?}: {e}"),
                )
            })?;
        }
        if h.json.is_some() && h.body.is_some() {
            return Err((
                format!("{prefix}.body"),
                "give either `json` or `body`, not both".into(),
            ));
        }
        if let Some(s) = h.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
            return Err((
                format!("{prefix}.expect_status"),
                format!("{s} is not an HTTP status (100-599)"),
            ));
        }
        Ok(())
    };
    match step {
        Step::Http(h) => check_http(h, ""),
        Step::WaitFor(w) => {
            check_http(&w.http, ".http")?;
            Expr::parse(&w.until)
                .map_err(|e| (".until".into(), format!("{e} in {:?}", w.until)))?;
            if w.interval.is_some_and(|i| i.get().is_zero()) {
                return Err((
                    ".interval".into(),
                    "the interval must be more than zero".into(),
                ));
            }
            Ok(())
        }
        Step::FailIf(e) => Expr::parse(e)
            .map(|_| ())
            .map_err(|err| (String::new(), format!("{err} in {e:?}"))),
        _ => Ok(()),
    }
}

/// A [`SpecError`] for a rule checked outside this module (the server's template check),
/// located in the spec's text from its field path (`steps[0].http.url`).
pub fn error_at(text: &str, path: &str, message: String) -> SpecError {
    locate::error_at(text, path, message)
}

/// Parses `k=v` as given to `--var`.
pub fn parse_var(arg: &str) -> Result<(String, String), SpecError> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(SpecError {
            path: "vars".into(),
            line: 0,
            column: 0,
            message: format!("--var {arg:?} must be written name=value"),
        }),
    }
}

fn from_yaml_error(e: &serde_saphyr::Error, path: Option<String>, text: &str) -> SpecError {
    use serde_saphyr::MessageFormatter;
    let mut message = serde_saphyr::DefaultMessageFormatter
        .format_message(e)
        .into_owned();
    // A misspelt key or step kind gets the closest known one ("did you mean `steps`?").
    let unknown = match e {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => Some((field.as_str(), expected)),
        serde_saphyr::Error::SerdeUnknownVariant {
            variant, expected, ..
        } => Some((variant.as_str(), expected)),
        _ => None,
    };
    if let Some((got, expected)) = unknown {
        let listed: Vec<String> = expected.iter().map(|x| format!("`{x}`")).collect();
        let serde_style = format!("unknown field `{got}`, expected {}", listed.join(", "));
        let suggested = crate::diagnostic::with_suggestion(&serde_style);
        if let Some(hint) = suggested.strip_prefix(serde_style.as_str()) {
            message.push_str(hint);
        }
    }
    let mut path = path.filter(|p| p != ".").unwrap_or_default();
    // An unknown key's path stops at its parent: name the key itself.
    if let serde_saphyr::Error::SerdeUnknownField { field, .. } = e
        && !path.ends_with(field.as_str())
    {
        path = if path.is_empty() {
            field.clone()
        } else {
            format!("{path}.{field}")
        };
    }
    let (line, column) = match e.location() {
        Some(l) if l.line() > 0 => (l.line(), l.column()),
        _ => locate::position(text, &path).unwrap_or((0, 0)),
    };
    SpecError {
        path,
        line,
        column,
        message,
    }
}

/// Finds the line/column of a field path in the YAML text, for errors found after
/// deserialization (when serde no longer knows where it was).
mod locate {
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_saphyr::Spanned;

    use super::SpecError;

    /// A YAML tree with the position of every key and value.
    enum Node {
        Map(Vec<(Spanned<String>, Spanned<Node>)>),
        Seq(Vec<Spanned<Node>>),
        Scalar,
    }

    impl<'de> Deserialize<'de> for Node {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Node;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any YAML node")
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                    Node::deserialize(d)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                    let mut v = Vec::new();
                    while let Some(n) = seq.next_element()? {
                        v.push(n);
                    }
                    Ok(Node::Seq(v))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                    let mut v = Vec::new();
                    while let Some(k) = map.next_key::<Spanned<String>>()? {
                        let n = map.next_value()?;
                        v.push((k, n));
                    }
                    Ok(Node::Map(v))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// Splits `a.b[2].c` into keys and indices.
    fn segments(path: &str) -> Vec<Result<String, usize>> {
        let mut out = Vec::new();
        for part in path.split('.').filter(|p| !p.is_empty()) {
            let mut rest = part;
            if let Some(i) = rest.find('[') {
                if i > 0 {
                    out.push(Ok(rest[..i].to_string()));
                }
                rest = &rest[i..];
                while let Some(stripped) = rest.strip_prefix('[') {
                    let Some(end) = stripped.find(']') else { break };
                    if let Ok(n) = stripped[..end].parse() {
                        out.push(Err(n));
                    }
                    rest = &stripped[end + 1..];
                }
            } else {
                out.push(Ok(rest.to_string()));
            }
        }
        out
    }

    /// The deepest position along `path` that exists in the text: the key when the path
    /// ends at a key, else the value.
    pub(super) fn position(text: &str, path: &str) -> Option<(u64, u64)> {
        let root: Spanned<Node> = serde_saphyr::from_str(text).ok()?;
        let mut best = (root.referenced.line(), root.referenced.column());
        let mut node = &root.value;
        for seg in segments(path) {
            match (seg, node) {
                (Ok(key), Node::Map(entries)) => {
                    let Some((k, v)) = entries.iter().find(|(k, _)| k.value == key) else {
                        break;
                    };
                    best = (k.referenced.line(), k.referenced.column());
                    node = &v.value;
                }
                (Err(i), Node::Seq(items)) => {
                    let Some(item) = items.get(i) else { break };
                    best = (item.referenced.line(), item.referenced.column());
                    node = &item.value;
                }
                _ => break,
            }
        }
        Some(best)
    }

    pub(super) fn error_at(text: &str, path: &str, message: String) -> SpecError {
        let (line, column) = position(text, path).unwrap_or((0, 0));
        SpecError {
            path: path.to_string(),
            line,
            column,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GOOD: &str = r#"
name: kernel-smoke
priority: high            # low | normal | high | urgent, or an integer
timeout: 30m
queue_timeout: 2h
retry_on_error: 1
requires:
  kind: board
  labels: { arch: arm64, board_type: rpi4, team: { in: [kernel, bsp] }, gpu: { exists: true }, site: { notin: [b] }, os: { not: win } }
  selector: "rack!=r9"
  peripherals: [ethernet]
  memory: 512M
steps:
  - deploy: { artifacts: { branch: main, latest: true } }
  - boot: { expect: "login:", timeout: 5m }
  - test: { run: "t/**/*_test.sh", via: guest, format: tap, timeout: 10m }
  - shell: "sp-runner --config ~/ci/config.toml --baseline v16 run"
  - http: { method: POST, url: "{{ vars.api }}/events", json: { vin: "{{ vars.vin }}" },
            save: { event_id: "$.id" } }
  - wait_for: { http: { url: "{{ vars.api }}/deployments/{{ event_id }}" },
                until: "$.state in ['COMPLETE', 'FAILED']", interval: 60s, timeout: 2h }
  - sleep: 10s
  - upload: out/report.html
always:
  - shell: "collect-diagnostics"
vars:
  api: http://localhost:9
  vin: 5
"#;

    fn err(text: &str) -> SpecError {
        JobSpec::parse(text).unwrap_err()
    }

    #[test]
    fn parses_the_design_example() {
        let s = JobSpec::parse(GOOD).unwrap();
        assert_eq!(s.priority, Priority::HIGH);
        assert_eq!(s.timeout.unwrap().get(), Duration::from_secs(1800));
        assert_eq!(s.retry_on_error, 1);
        assert_eq!(s.steps.len(), 8);
        assert!(matches!(&s.steps[3], Step::Shell(sh) if sh.run.starts_with("sp-runner")));
        assert!(matches!(&s.steps[7], Step::Upload(u) if u.path == "out/report.html"));
        let r = s.requirements();
        assert_eq!(r.kind, Some(ResourceKind::Board));
        assert_eq!(r.memory_mb, Some(512));
        assert_eq!(
            r.selector.to_string(),
            "arch=arm64,board_type=rpi4,gpu,os!=win,site notin (b),team in (kernel,bsp),rack!=r9"
        );
        // Templates are left alone.
        assert!(matches!(&s.steps[4], Step::Http(h) if h.url == "{{ vars.api }}/events"));
        // Round trip through JSON (how the server stores it).
        let json = serde_json::to_string(&s).unwrap();
        let back: JobSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn server_only_job_and_integer_priority() {
        let s = JobSpec::parse("name: ping\npriority: 350\nsteps:\n  - sleep: 1s\n").unwrap();
        assert_eq!(s.priority.value(), 350);
        assert!(!s.requirements().needs_resource());
        let e = err("name: x\nsteps:\n  - sleep: 1s\n  - shell: make\n");
        assert_eq!(e.path, "steps[1].shell");
        assert_eq!((e.line, e.column), (4, 5), "{e}");
    }

    #[test]
    fn workflow_expressions_are_checked_at_submit() {
        let ok = "name: x\nsteps:\n  - http: { url: u, save: { id: \"$.items[0].id\" } }\n  - wait_for: { http: { url: u }, until: \"$.state in ['A', 'B']\", timeout: 1m }\n  - fail_if: \"$.id == null\"\n";
        let s = JobSpec::parse(ok).unwrap();
        assert!(matches!(&s.steps[2], Step::FailIf(e) if e == "$.id == null"));
        let e = err(
            "name: x\nsteps:\n  - wait_for:\n      http: { url: u }\n      until: \"$.state = 'A'\"\n      timeout: 1m\n",
        );
        assert_eq!(e.path, "steps[0].wait_for.until", "{e}");
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("column 9"), "{e}");
        let e = err("name: x\nsteps:\n  - http: { url: u, save: { id: \"id\" } }\n");
        assert_eq!(e.path, "steps[0].http.save.id", "{e}");
        let e = err("name: x\nsteps:\n  - sleep: 1s\nalways:\n  - fail_if: \"(\"\n");
        assert_eq!(e.path, "always[0].fail_if", "{e}");
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn unknown_key_names_path_and_position() {
        let e = err("name: x\nrequires:\n  kind: board\n  colour: red\nsteps:\n  - shell: a\n");
        assert_eq!(e.path, "requires.colour", "{e}");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("colour"), "{e}");
        let e = err("name: x\nstep:\n  - shell: a\n");
        assert_eq!(e.path, "step", "{e}");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.ends_with("did you mean `steps`?"), "{e}");
        assert!(
            !err("name: x\nzzz: 1\nsteps:\n  - sleep: 1s\n")
                .message
                .contains("did you mean")
        );
        let e = err("name: x\nsteps:\n  - shel: a\n");
        assert!(e.message.ends_with("did you mean `shell`?"), "{e}");
    }

    #[test]
    fn unknown_label_op() {
        let e = err(
            "name: x\nrequires:\n  kind: board\n  labels:\n    team: { among: [a] }\nsteps:\n  - shell: a\n",
        );
        assert!(e.path.starts_with("requires.labels.team"), "{e}");
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn wrong_type() {
        let e = err("name: x\nretry_on_error: lots\nsteps:\n  - sleep: 1s\n");
        assert_eq!(e.path, "retry_on_error", "{e}");
        assert_eq!((e.line, e.column), (2, 17), "{e}");
        let e = err("name: x\nrequires:\n  kind: board\n  cpus: [1]\nsteps:\n  - shell: a\n");
        assert_eq!(e.path, "requires.cpus", "{e}");
        assert_eq!(e.line, 4, "{e}");
    }

    #[test]
    fn bad_priority() {
        let e = err("name: x\npriority: top\nsteps:\n  - sleep: 1s\n");
        assert_eq!(e.path, "priority");
        assert_eq!((e.line, e.column), (2, 11), "{e}");
        assert!(e.message.contains("low, normal, high, urgent"), "{e}");
        let e = err("name: x\npriority: 5000\nsteps:\n  - sleep: 1s\n");
        assert_eq!(e.path, "priority");
    }

    #[test]
    fn bad_duration() {
        let e = err("name: x\ntimeout: 30\nsteps:\n  - sleep: 1s\n");
        assert_eq!(e.path, "timeout");
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        assert!(e.message.contains("unit"), "{e}");
        let e = err("name: x\nsteps:\n  - sleep: 1s\n  - sleep: 3 weeks\n");
        assert_eq!(e.path, "steps[1].sleep", "{e}");
        assert_eq!(e.line, 4, "{e}");
    }

    #[test]
    fn bad_selector_and_size() {
        let e = err(
            "name: x\nrequires:\n  kind: board\n  selector: \"team in a\"\nsteps:\n  - shell: a\n",
        );
        assert_eq!(e.path, "requires.selector", "{e}");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("column"), "{e}");
        let e =
            err("name: x\nrequires:\n  kind: qemu-host\n  memory: 4096\nsteps:\n  - shell: a\n");
        assert_eq!(e.path, "requires.memory", "{e}");
        assert_eq!(e.line, 4, "{e}");
    }

    #[test]
    fn cross_field_rules_have_positions() {
        let e = err("name: x\nrequires:\n  cpus: 2\nsteps:\n  - shell: a\n");
        assert_eq!(e.path, "requires.kind");
        assert_eq!(e.line, 2, "{e}");
        let e = err("name: x\nsteps: []\n");
        assert_eq!(e.path, "steps");
        assert_eq!(e.line, 2, "{e}");
        let e = err("steps:\n  - sleep: 1s\n");
        assert!(e.message.contains("name"), "{e}");
        let e = err("name: x\nsteps:\n  - reboot: {}\n");
        assert!(e.path.starts_with("steps[0]"), "{e}");
        assert!(e.message.contains("shell"), "{e}");
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        for t in [
            "",
            ":",
            "[",
            "name: [",
            "- a\n- b",
            "name: x\nsteps: {a: 1}",
            "\t\t",
        ] {
            let e = err(t);
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn overrides() {
        let mut s = JobSpec::parse(GOOD).unwrap();
        let v = parse_var("vin=WAUZZZ").unwrap();
        s.apply_overrides(&[v], Some(Priority::LOW)).unwrap();
        assert_eq!(s.vars["vin"], serde_json::json!("WAUZZZ"));
        assert_eq!(s.priority, Priority::LOW);
        assert!(parse_var("novalue").is_err());
        assert!(
            s.apply_overrides(&[("a b".into(), "1".into())], None)
                .is_err()
        );
    }

    /// YAML-shaped input built from the spec's own keys and values, to reach deep paths.
    fn yamlish() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("name"),
            Just("priority"),
            Just("timeout"),
            Just("requires"),
            Just("kind"),
            Just("labels"),
            Just("selector"),
            Just("in"),
            Just("notin"),
            Just("exists"),
            Just("steps"),
            Just("always"),
            Just("shell"),
            Just("test"),
            Just("http"),
            Just("wait_for"),
            Just("sleep"),
            Just("memory"),
            Just("cpus"),
            Just("run"),
            Just("vars"),
            Just("x"),
        ];
        let value = prop_oneof![
            Just("board"),
            Just("1s"),
            Just("4G"),
            Just("high"),
            Just("[a, b]"),
            Just("{}"),
            Just("true"),
            Just("-1"),
            Just("99999999999999999999"),
            Just("\"team in (a\""),
            Just("~"),
            Just("&a x"),
            Just("*a"),
            Just("|\n  t"),
            Just(""),
        ];
        let line = (
            0usize..4,
            key,
            prop_oneof![Just(": "), Just(":\n"), Just("- ")],
            value,
        )
            .prop_map(|(indent, k, sep, v)| format!("{}{k}{sep}{v}", "  ".repeat(indent)));
        proptest::collection::vec(line, 0..16).prop_map(|l| l.join("\n"))
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = JobSpec::parse(&s);
        }

        #[test]
        fn never_panics_on_yamlish(s in yamlish()) {
            if let Err(e) = JobSpec::parse(&s) {
                proptest::prop_assert!(!e.message.is_empty());
            }
        }
    }
}
