//! Which artifacts a deploy step takes, from a listing of the repository: one build (the
//! newest that matches and has every required kind), and from it one artifact per wanted
//! kind. Kernel, initrd and rootfs of one deploy never mix builds: a kernel from one build
//! and modules or an initrd from another is a VM that boots wrong in confusing ways.

use std::fmt;

use crate::artifact::ArtifactKind;
use crate::jobspec::ArtifactQuery;

/// One listed artifact, as the repository describes it (newest build first in a listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub build_id: String,
    pub name: String,
    pub kind: ArtifactKind,
    pub sha256: String,
    pub size: u64,
    pub commit: String,
    pub branch: String,
    pub arch: String,
}

/// What to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub build_id: String,
    pub commit: String,
    pub branch: String,
    pub arch: String,
    /// One per kind, in [`ArtifactKind`] order (kernel first).
    pub artifacts: Vec<Listed>,
}

impl Chosen {
    pub fn get(&self, kind: ArtifactKind) -> Option<&Listed> {
        self.artifacts.iter().find(|a| a.kind == kind)
    }
}

/// Why nothing was chosen, in words for the step's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoMatch {
    #[error("no artifact matches {query}")]
    Nothing { query: String },
    #[error("{query}: no build for arch {arch} (found {found})")]
    WrongArch {
        query: String,
        arch: String,
        found: String,
    },
    #[error("{query}: build {build} has no {missing} artifact (it has {has})")]
    Missing {
        query: String,
        build: String,
        missing: String,
        has: String,
    },
}

/// The query in words: "build 01H…", "commit abc", "the latest build of branch main".
pub fn describe(q: &ArtifactQuery) -> String {
    let mut s = if let Some(b) = &q.build {
        format!("build {b}")
    } else if let Some(c) = &q.commit {
        format!("commit {c}")
    } else if let Some(b) = &q.branch {
        format!("the latest build of branch {b}")
    } else {
        "an empty artifact query".to_string()
    };
    if let Some(a) = &q.arch {
        s.push_str(&format!(" for {a}"));
    }
    s
}

/// Kinds that must be present, and kinds taken when present.
fn kinds(q: &ArtifactQuery) -> (Vec<ArtifactKind>, Vec<ArtifactKind>) {
    if q.kinds.is_empty() {
        (
            vec![ArtifactKind::Kernel],
            vec![
                ArtifactKind::Kernel,
                ArtifactKind::Initrd,
                ArtifactKind::Rootfs,
            ],
        )
    } else {
        let mut k = q.kinds.clone();
        k.sort();
        k.dedup();
        (k.clone(), k)
    }
}

struct Names<'a>(Vec<&'a str>);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&self.0.join(", "))
        }
    }
}

/// Chooses from `listing` (newest build first, as the repository lists) what `q` deploys:
/// the first build that matches the query and the arch and has every required kind.
pub fn choose(q: &ArtifactQuery, listing: &[Listed]) -> Result<Chosen, NoMatch> {
    let query = describe(q);
    let matching: Vec<&Listed> = listing
        .iter()
        .filter(|a| q.build.as_ref().is_none_or(|b| *b == a.build_id))
        .filter(|a| q.commit.as_ref().is_none_or(|c| *c == a.commit))
        .filter(|a| q.branch.as_ref().is_none_or(|b| *b == a.branch))
        .collect();
    if matching.is_empty() {
        return Err(NoMatch::Nothing { query });
    }
    let for_arch: Vec<&Listed> = matching
        .iter()
        .copied()
        .filter(|a| q.arch.as_ref().is_none_or(|x| *x == a.arch))
        .collect();
    if let Some(arch) = &q.arch
        && for_arch.is_empty()
    {
        let mut found: Vec<&str> = matching.iter().map(|a| a.arch.as_str()).collect();
        found.sort();
        found.dedup();
        return Err(NoMatch::WrongArch {
            query,
            arch: arch.clone(),
            found: Names(found).to_string(),
        });
    }
    let (required, wanted) = kinds(q);
    // Builds in listing order, each once.
    let mut builds: Vec<&str> = Vec::new();
    for a in &for_arch {
        if !builds.contains(&a.build_id.as_str()) {
            builds.push(&a.build_id);
        }
    }
    let mut first_miss = None;
    for build in builds {
        let of_build: Vec<&Listed> = for_arch
            .iter()
            .copied()
            .filter(|a| a.build_id == build)
            .collect();
        let missing: Vec<&str> = required
            .iter()
            .filter(|k| !of_build.iter().any(|a| a.kind == **k))
            .map(|k| k.as_str())
            .collect();
        if !missing.is_empty() {
            if first_miss.is_none() {
                let mut has: Vec<&str> = of_build.iter().map(|a| a.kind.as_str()).collect();
                has.sort();
                has.dedup();
                first_miss = Some(NoMatch::Missing {
                    query: query.clone(),
                    build: build.to_string(),
                    missing: missing.join(", "),
                    has: Names(has).to_string(),
                });
            }
            continue;
        }
        let mut artifacts = Vec::new();
        for k in &wanted {
            // Several of one kind: the first by name, as `artifacts/latest` answers.
            if let Some(a) = of_build
                .iter()
                .filter(|a| a.kind == *k)
                .min_by(|x, y| x.name.cmp(&y.name))
            {
                artifacts.push((*a).clone());
            }
        }
        let first = of_build[0];
        return Ok(Chosen {
            build_id: build.to_string(),
            commit: first.commit.clone(),
            branch: first.branch.clone(),
            arch: first.arch.clone(),
            artifacts,
        });
    }
    Err(first_miss.unwrap_or(NoMatch::Nothing { query }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(build: &str, name: &str, kind: ArtifactKind, arch: &str) -> Listed {
        Listed {
            build_id: build.into(),
            name: name.into(),
            kind,
            sha256: format!("{build}-{name}"),
            size: 1,
            commit: format!("c-{build}"),
            branch: "main".into(),
            arch: arch.into(),
        }
    }

    fn listing() -> Vec<Listed> {
        use ArtifactKind::*;
        vec![
            // Newest: an initrd only (a half-finished build).
            a("b3", "initrd.img", Initrd, "x86_64"),
            a("b2", "vmlinuz", Kernel, "x86_64"),
            a("b2", "initrd.img", Initrd, "x86_64"),
            a("b2", "zz-other-initrd", Initrd, "x86_64"),
            a("b2", "notes.txt", Other, "x86_64"),
            a("b1", "Image", Kernel, "arm64"),
        ]
    }

    fn branch_main() -> ArtifactQuery {
        ArtifactQuery {
            branch: Some("main".into()),
            latest: true,
            ..Default::default()
        }
    }

    #[test]
    fn the_newest_complete_build_and_one_artifact_per_kind() {
        let c = choose(&branch_main(), &listing()).unwrap();
        assert_eq!(c.build_id, "b2");
        assert_eq!(c.commit, "c-b2");
        let names: Vec<&str> = c.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["vmlinuz", "initrd.img"]);
        assert!(c.get(ArtifactKind::Rootfs).is_none());
        // By arch.
        let mut q = branch_main();
        q.arch = Some("arm64".into());
        assert_eq!(choose(&q, &listing()).unwrap().build_id, "b1");
    }

    #[test]
    fn nothing_wrong_arch_and_missing_kinds_say_why() {
        let q = ArtifactQuery {
            build: Some("nope".into()),
            ..Default::default()
        };
        assert_eq!(
            choose(&q, &listing()).unwrap_err().to_string(),
            "no artifact matches build nope"
        );
        let mut q = branch_main();
        q.arch = Some("riscv64".into());
        assert_eq!(
            choose(&q, &listing()).unwrap_err().to_string(),
            "the latest build of branch main for riscv64: no build for arch riscv64 (found arm64, x86_64)"
        );
        let q = ArtifactQuery {
            build: Some("b3".into()),
            ..Default::default()
        };
        assert_eq!(
            choose(&q, &listing()).unwrap_err().to_string(),
            "build b3: build b3 has no kernel artifact (it has initrd)"
        );
        let mut q = branch_main();
        q.kinds = vec![ArtifactKind::Kernel, ArtifactKind::Rootfs];
        let e = choose(&q, &listing()).unwrap_err().to_string();
        assert!(e.contains("rootfs artifact"), "{e}");
    }
}
