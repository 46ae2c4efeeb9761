//! Artifacts: the kinds of file a build leaves (a kernel, a device tree, a root file
//! system…) and what their names, tags, branches and checksums may look like. The bytes
//! live behind the blob store (`testfarm-artifacts`); their metadata in the store; the
//! rules about both here, so server, agent and CLI refuse the same input with the same words.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an artifact is for: deploy steps pick images by kind ("the kernel of the latest
/// build of main").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    Kernel,
    Dtb,
    Initrd,
    Rootfs,
    Modules,
    Firmware,
    Other,
}

impl ArtifactKind {
    pub const ALL: [ArtifactKind; 7] = [
        ArtifactKind::Kernel,
        ArtifactKind::Dtb,
        ArtifactKind::Initrd,
        ArtifactKind::Rootfs,
        ArtifactKind::Modules,
        ArtifactKind::Firmware,
        ArtifactKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Kernel => "kernel",
            ArtifactKind::Dtb => "dtb",
            ArtifactKind::Initrd => "initrd",
            ArtifactKind::Rootfs => "rootfs",
            ArtifactKind::Modules => "modules",
            ArtifactKind::Firmware => "firmware",
            ArtifactKind::Other => "other",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown artifact kind {0:?}: expected one of kernel, dtb, initrd, rootfs, modules, firmware, other"
)]
pub struct UnknownKind(pub String);

impl FromStr for ArtifactKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ArtifactKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// Why a name, tag, branch or checksum was refused: what was wrong, for a person to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct BadValue {
    pub what: &'static str,
    pub value: String,
    pub why: &'static str,
}

fn bad(what: &'static str, value: &str, why: &'static str) -> BadValue {
    BadValue {
        what,
        value: value.chars().take(80).collect(),
        why,
    }
}

/// The shapes of the validators below, for the API's OpenAPI document.
pub mod patterns {
    /// [`super::validate_artifact_name`].
    pub const ARTIFACT_NAME: &str = r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,199}$";
    /// [`super::validate_tag`].
    pub const TAG: &str = r"^[A-Za-z0-9._+/-]{1,100}$";
    /// [`super::validate_build_field`]: printable ASCII, no spaces.
    pub const BUILD_FIELD: &str = r"^[!-~]{1,200}$";
    /// [`super::normalize_sha256`].
    pub const SHA256: &str = r"^[0-9A-Fa-f]{64}$";
}

/// An artifact's name within its build: one path segment that is safe as a file name
/// everywhere it lands (`Image`, `bcm2711-rpi-4-b.dtb`, `rootfs.ext4.zst`).
pub fn validate_artifact_name(name: &str) -> Result<(), BadValue> {
    let what = "artifact name";
    if name.is_empty() || name.len() > 200 {
        return Err(bad(what, name, "it must be 1 to 200 characters"));
    }
    if name.starts_with('.') {
        return Err(bad(what, name, "it must not start with a dot"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
    {
        return Err(bad(what, name, "use letters, digits and . _ - +"));
    }
    Ok(())
}

/// A build tag (`release`, `v6.12-rc3`, `known-good`): tagged builds are kept by retention.
pub fn validate_tag(tag: &str) -> Result<(), BadValue> {
    let what = "tag";
    if tag.is_empty() || tag.len() > 100 {
        return Err(bad(what, tag, "it must be 1 to 100 characters"));
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '/'))
    {
        return Err(bad(what, tag, "use letters, digits and . _ - + /"));
    }
    Ok(())
}

/// A branch, commit or architecture as a build records it: printable, no spaces, short.
pub fn validate_build_field(what: &'static str, value: &str) -> Result<(), BadValue> {
    if value.is_empty() || value.len() > 200 {
        return Err(bad(what, value, "it must be 1 to 200 characters"));
    }
    if !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(
            what,
            value,
            "it must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// A SHA-256 as the API spells it: 64 lowercase hex digits. Upper case is accepted and
/// lowered, as `sha256sum` users paste either.
pub fn normalize_sha256(value: &str) -> Result<String, BadValue> {
    if value.len() != 64 || !value.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("sha256", value, "expected 64 hexadecimal digits"));
    }
    Ok(value.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds_round_trip_and_unknown_names_the_choices() {
        for k in ArtifactKind::ALL {
            assert_eq!(k.as_str().parse::<ArtifactKind>(), Ok(k));
            assert_eq!(
                serde_json::to_string(&k).ok(),
                Some(format!("\"{}\"", k.as_str()))
            );
        }
        let e = "vmlinuz"
            .parse::<ArtifactKind>()
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("kernel, dtb")));
    }

    #[test]
    fn names_tags_and_checksums() {
        assert!(validate_artifact_name("bcm2711-rpi-4-b.dtb").is_ok());
        assert!(validate_artifact_name("Image").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(201)] {
            assert!(validate_artifact_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_tag("release/v1.2").is_ok());
        assert!(validate_tag("a b").is_err());
        assert!(validate_build_field("branch", "feature/x").is_ok());
        assert!(validate_build_field("branch", "").is_err());
        assert!(validate_build_field("commit", "a\nb").is_err());
        let hex = "AB".repeat(32);
        assert_eq!(normalize_sha256(&hex).ok(), Some("ab".repeat(32)));
        assert!(normalize_sha256("abc").is_err());
        assert!(normalize_sha256(&"g".repeat(64)).is_err());
    }

    proptest! {
        #[test]
        fn a_valid_name_is_one_safe_path_segment(s in "\\PC{0,40}") {
            if validate_artifact_name(&s).is_ok() {
                prop_assert!(!s.contains('/') && !s.starts_with('.') && !s.is_empty());
            }
        }
    }

    proptest! {
        #[test]
        fn patterns_agree_with_the_validators(s in "[a-zA-Z0-9._+/! -]{0,8}|[0-9a-fA-Fg]{63,65}") {
            let re = |p: &str| regex::Regex::new(p).unwrap();
            prop_assert_eq!(re(patterns::ARTIFACT_NAME).is_match(&s), validate_artifact_name(&s).is_ok(), "{:?}", s);
            prop_assert_eq!(re(patterns::TAG).is_match(&s), validate_tag(&s).is_ok(), "{:?}", s);
            prop_assert_eq!(re(patterns::BUILD_FIELD).is_match(&s), validate_build_field("x", &s).is_ok(), "{:?}", s);
            prop_assert_eq!(re(patterns::SHA256).is_match(&s), normalize_sha256(&s).is_ok(), "{:?}", s);
        }
    }
}
