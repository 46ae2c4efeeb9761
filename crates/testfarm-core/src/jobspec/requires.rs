//! `requires`: what a job needs from a resource, as written and normalised.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::labels::Labels;
use crate::resource::{Resource, ResourceKind};
use crate::selector::{Requirement, Selector};
use crate::size;

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
            build_arches: Vec::new(),
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
    /// Architectures the job's build steps compile for: the resource needs a toolchain
    /// for each, native or cross ([`crate::build::toolchain_for`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_arches: Vec<String>,
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
    /// No detected compiler builds for this arch (neither native nor cross).
    NoToolchainFor {
        arch: String,
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
            Mismatch::NoToolchainFor { arch } => {
                write!(f, "has no toolchain that builds for {arch}")
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
        for arch in &self.build_arches {
            let host_arch = caps.arch.as_deref().or_else(|| labels.get("arch"));
            if crate::build::toolchain_for(arch, host_arch, &caps.toolchains).is_none()
                && !found(Mismatch::NoToolchainFor { arch: arch.clone() })
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
            "{:?}|{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.kind.map(ResourceKind::as_str),
            self.selector,
            self.cpus,
            self.memory_mb,
            self.disk_gb,
            self.kvm,
            self.toolchains,
            self.peripherals,
            self.arch,
            self.resource,
            self.build_arches
        );
        k
    }
}
