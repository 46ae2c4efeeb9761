//! The artifact repository's metadata: the `builds`, `artifacts` and `build_tags` tables.
//! The bytes are blobs named by their sha256 (`testfarm-artifacts`); a row here is what
//! makes a blob an artifact, and a blob no row refers to is garbage for retention.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};
use testfarm_api::artifact::{Artifact, ArtifactKind, Build};
use testfarm_core::artifact_retention::BuildUsage;
use ulid::Ulid;

use crate::sql::{exec, get_ts, get_u64, get_ulid, int, query_all, query_opt, ts, unique};
use crate::{Result, Store, StoreError, Tx};

macro_rules! build_columns {
    () => {
        "b.id, b.commit_id, b.branch, b.arch, b.created_at, b.pinned, b.source_job"
    };
}

macro_rules! artifact_columns {
    () => {
        "a.build_id, a.name, a.kind, a.sha256, a.size, a.created_at, b.commit_id, b.branch, b.arch"
    };
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: "artifact",
        detail: detail.to_string(),
    }
}

fn not_found(id: Ulid) -> StoreError {
    StoreError::NotFound {
        what: "build",
        name: id.to_string(),
    }
}

/// A build row, without its tags and artifacts.
fn build_from_row(row: &Row<'_>) -> Result<Build> {
    Ok(Build {
        id: get_ulid(row, "build", "id")?,
        commit: row.get("commit_id")?,
        branch: row.get("branch")?,
        arch: row.get("arch")?,
        created_at: get_ts(row, "created_at")?,
        pinned: row.get("pinned")?,
        source_job: row.get("source_job")?,
        tags: Vec::new(),
        artifacts: Vec::new(),
    })
}

fn artifact_from_row(row: &Row<'_>) -> Result<Artifact> {
    let kind: String = row.get("kind")?;
    Ok(Artifact {
        build_id: get_ulid(row, "artifact", "build_id")?,
        name: row.get("name")?,
        kind: kind.parse::<ArtifactKind>().map_err(corrupt)?,
        sha256: row.get("sha256")?,
        size: get_u64(row, "artifact", "size")?,
        created_at: get_ts(row, "created_at")?,
        commit: row.get("commit_id")?,
        branch: row.get("branch")?,
        arch: row.get("arch")?,
    })
}

/// A build with its tags and artifacts.
fn fetch_build(conn: &Connection, id: Ulid) -> Result<Option<Build>> {
    let Some(mut b) = query_opt(
        conn,
        concat!("SELECT ", build_columns!(), " FROM builds b WHERE b.id = ?"),
        [id.to_string()],
        build_from_row,
    )?
    else {
        return Ok(None);
    };
    fill(conn, &mut b)?;
    Ok(Some(b))
}

fn fill(conn: &Connection, b: &mut Build) -> Result<()> {
    let id = b.id.to_string();
    b.tags = query_all(
        conn,
        "SELECT tag FROM build_tags WHERE build_id = ? ORDER BY tag",
        [&id],
        |r| Ok(r.get(0)?),
    )?;
    b.artifacts = query_all(
        conn,
        concat!(
            "SELECT ",
            artifact_columns!(),
            " FROM artifacts a JOIN builds b ON b.id = a.build_id WHERE a.build_id = ? ORDER BY a.name"
        ),
        [&id],
        artifact_from_row,
    )?;
    Ok(())
}

fn fetch_artifact(conn: &Connection, build: Ulid, name: &str) -> Result<Option<Artifact>> {
    query_opt(
        conn,
        concat!(
            "SELECT ",
            artifact_columns!(),
            " FROM artifacts a JOIN builds b ON b.id = a.build_id WHERE a.build_id = ? AND a.name = ?"
        ),
        params![build.to_string(), name],
        artifact_from_row,
    )
}

/// Filters for [`Store::list_artifacts`]; every one given must match.
#[derive(Debug, Clone, Default)]
pub struct ArtifactFilter {
    pub build: Option<Ulid>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub kind: Option<ArtifactKind>,
    pub tag: Option<String>,
    /// Continue after this (build id, name): the page order is newest build first, then name.
    pub after: Option<(Ulid, String)>,
    pub limit: u32,
}

/// What retention needs of one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRetention {
    pub commit: String,
    pub branch: String,
    pub usage: BuildUsage,
}

/// A new artifact row.
#[derive(Debug, Clone)]
pub struct NewArtifact<'a> {
    pub build: Ulid,
    pub name: &'a str,
    pub kind: ArtifactKind,
    pub sha256: &'a str,
    pub size: u64,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// A build with its tags and artifacts.
    pub async fn get_build(&self, id: Ulid) -> Result<Build> {
        self.read(|c| fetch_build(c, id))?
            .ok_or_else(|| not_found(id))
    }

    /// Artifacts matching `f`, newest build first, then by name.
    pub async fn list_artifacts(&self, f: &ArtifactFilter) -> Result<Vec<Artifact>> {
        let (after_build, after_name) = match &f.after {
            Some((b, n)) => (Some(b.to_string()), Some(n.as_str())),
            None => (None, None),
        };
        self.read(|c| {
            query_all(
                c,
                concat!(
                    "SELECT ",
                    artifact_columns!(),
                    " FROM artifacts a JOIN builds b ON b.id = a.build_id
                     WHERE (?1 IS NULL OR a.build_id = ?1) AND (?2 IS NULL OR b.commit_id = ?2)
                       AND (?3 IS NULL OR b.branch = ?3) AND (?4 IS NULL OR a.kind = ?4)
                       AND (?5 IS NULL OR EXISTS (SELECT 1 FROM build_tags t
                                                   WHERE t.build_id = a.build_id AND t.tag = ?5))
                       AND (?6 IS NULL OR a.build_id < ?6 OR (a.build_id = ?6 AND a.name > ?7))
                     ORDER BY a.build_id DESC, a.name ASC LIMIT ?8"
                ),
                params![
                    f.build.map(|b| b.to_string()),
                    f.commit,
                    f.branch,
                    f.kind.map(ArtifactKind::as_str),
                    f.tag,
                    after_build,
                    after_name,
                    i64::from(f.limit),
                ],
                artifact_from_row,
            )
        })
    }

    /// The newest build of `branch` (for `arch`, if given) that has an artifact of
    /// `kind`, with its tags and artifacts. One indexed query: the branch's builds
    /// newest first (`builds_branch`), each probed once in `artifacts_kind_build`.
    pub async fn latest_build_with(
        &self,
        branch: &str,
        kind: ArtifactKind,
        arch: Option<&str>,
    ) -> Result<Option<Build>> {
        self.read(|c| {
            let Some(mut b) = query_opt(
                c,
                LATEST_SQL,
                params![branch, kind.as_str(), arch],
                build_from_row,
            )?
            else {
                return Ok(None);
            };
            fill(c, &mut b)?;
            Ok(Some(b))
        })
    }

    /// One artifact of a build, by name.
    /// The builds a job made (`source_job`), oldest first, with their artifacts.
    pub async fn builds_of_job(&self, job_id: &str) -> Result<Vec<Build>> {
        self.read(|c| {
            let mut builds = query_all(
                c,
                concat!(
                    "SELECT ",
                    build_columns!(),
                    " FROM builds b WHERE b.source_job = ? ORDER BY b.id"
                ),
                [job_id],
                build_from_row,
            )?;
            for b in &mut builds {
                fill(c, b)?;
            }
            Ok(builds)
        })
    }

    pub async fn get_artifact(&self, build: Ulid, name: &str) -> Result<Option<Artifact>> {
        self.read(|c| fetch_artifact(c, build, name))
    }

    /// Some artifact whose bytes have this digest (the newest), if any does.
    pub async fn artifact_by_sha256(&self, sha256: &str) -> Result<Option<Artifact>> {
        self.read(|c| {
            query_opt(
                c,
                concat!(
                    "SELECT ",
                    artifact_columns!(),
                    " FROM artifacts a JOIN builds b ON b.id = a.build_id WHERE a.sha256 = ?
                     ORDER BY a.build_id DESC LIMIT 1"
                ),
                [sha256],
                artifact_from_row,
            )
        })
    }

    /// Every build as retention sees it: age, protection, and the blobs it refers to.
    pub async fn build_retention(&self) -> Result<Vec<BuildRetention>> {
        self.read(|c| {
            let mut out: Vec<BuildRetention> = Vec::new();
            let rows = query_all(
                c,
                "SELECT b.id, b.commit_id, b.branch, b.created_at, b.pinned,
                        EXISTS (SELECT 1 FROM build_tags t WHERE t.build_id = b.id) AS tagged,
                        a.sha256, a.size
                 FROM builds b LEFT JOIN artifacts a ON a.build_id = b.id
                 ORDER BY b.id",
                [],
                |r| {
                    let blob = match r.get::<_, Option<String>>("sha256")? {
                        Some(d) => Some((d, get_u64(r, "artifact", "size")?)),
                        None => None,
                    };
                    Ok((
                        BuildRetention {
                            commit: r.get("commit_id")?,
                            branch: r.get("branch")?,
                            usage: BuildUsage {
                                id: get_ulid(r, "build", "id")?,
                                created_at: get_ts(r, "created_at")?,
                                pinned: r.get("pinned")?,
                                tagged: r.get("tagged")?,
                                blobs: Vec::new(),
                            },
                        },
                        blob,
                    ))
                },
            )?;
            for (build, blob) in rows {
                match out.last_mut() {
                    Some(last) if last.usage.id == build.usage.id => {}
                    _ => out.push(build),
                }
                if let (Some(blob), Some(last)) = (blob, out.last_mut()) {
                    last.usage.blobs.push(blob);
                }
            }
            Ok(out)
        })
    }

    /// The digests some artifact refers to.
    pub async fn referenced_blobs(&self) -> Result<HashSet<String>> {
        self.read(|c| {
            Ok(
                query_all(c, "SELECT DISTINCT sha256 FROM artifacts", [], |r| {
                    Ok(r.get::<_, String>(0)?)
                })?
                .into_iter()
                .collect(),
            )
        })
    }
}

/// See [`Store::latest_build_with`].
const LATEST_SQL: &str = concat!(
    "SELECT ",
    build_columns!(),
    " FROM builds b WHERE b.branch = ?1 AND (?3 IS NULL OR b.arch = ?3)
       AND EXISTS (SELECT 1 FROM artifacts a WHERE a.kind = ?2 AND a.build_id = b.id)
     ORDER BY b.id DESC LIMIT 1"
);

impl Tx {
    pub async fn insert_build(&mut self, b: &Build, created_by: &str) -> Result<()> {
        let id = b.id.to_string();
        let res = exec(
            self.conn(),
            "INSERT INTO builds (id, commit_id, branch, arch, created_at, pinned, source_job, created_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                id,
                b.commit,
                b.branch,
                b.arch,
                ts(b.created_at),
                b.pinned,
                b.source_job,
                created_by
            ],
        );
        unique(res, "build", &id)?;
        for tag in &b.tags {
            self.add_tag(b.id, tag).await?;
        }
        Ok(())
    }

    pub async fn get_build(&mut self, id: Ulid) -> Result<Build> {
        fetch_build(self.conn(), id)?.ok_or_else(|| not_found(id))
    }

    pub async fn get_artifact(&mut self, build: Ulid, name: &str) -> Result<Option<Artifact>> {
        fetch_artifact(self.conn(), build, name)
    }

    /// Adds an artifact to its build; refused if the build has one of that name, or
    /// is gone.
    pub async fn insert_artifact(&mut self, a: &NewArtifact<'_>) -> Result<Artifact> {
        let build = a.build.to_string();
        let exists: bool = self
            .conn()
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM builds WHERE id = ?)")?
            .query_row([&build], |r| r.get(0))?;
        if !exists {
            return Err(not_found(a.build));
        }
        let res = exec(
            self.conn(),
            "INSERT INTO artifacts (build_id, name, kind, sha256, size, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            params![
                build,
                a.name,
                a.kind.as_str(),
                a.sha256,
                int(a.size),
                ts(a.created_at)
            ],
        );
        unique(res, "artifact", a.name)?;
        fetch_artifact(self.conn(), a.build, a.name)?.ok_or_else(|| not_found(a.build))
    }

    /// Pins or unpins; returns whether it changed.
    pub async fn set_pinned(&mut self, id: Ulid, pinned: bool) -> Result<bool> {
        let conn = self.conn();
        let current: Option<bool> = query_opt(
            conn,
            "SELECT pinned FROM builds WHERE id = ?",
            [id.to_string()],
            |r| Ok(r.get(0)?),
        )?;
        match current {
            None => Err(not_found(id)),
            Some(p) if p == pinned => Ok(false),
            Some(_) => {
                exec(
                    conn,
                    "UPDATE builds SET pinned = ? WHERE id = ?",
                    params![pinned, id.to_string()],
                )?;
                Ok(true)
            }
        }
    }

    /// Tags a build; false if it had the tag already.
    pub async fn add_tag(&mut self, id: Ulid, tag: &str) -> Result<bool> {
        let n = exec(
            self.conn(),
            "INSERT INTO build_tags (build_id, tag) SELECT id, ?2 FROM builds WHERE id = ?1
             ON CONFLICT DO NOTHING",
            params![id.to_string(), tag],
        )?;
        if n == 0 && fetch_build(self.conn(), id)?.is_none() {
            return Err(not_found(id));
        }
        Ok(n > 0)
    }

    /// Removes a tag; false if the build did not have it.
    pub async fn remove_tag(&mut self, id: Ulid, tag: &str) -> Result<bool> {
        let n = exec(
            self.conn(),
            "DELETE FROM build_tags WHERE build_id = ? AND tag = ?",
            params![id.to_string(), tag],
        )?;
        if n == 0 && fetch_build(self.conn(), id)?.is_none() {
            return Err(not_found(id));
        }
        Ok(n > 0)
    }

    /// Deletes a build with its artifacts and tags (their blobs stay until retention
    /// finds them unreferenced); false if it was gone already.
    pub async fn delete_build(&mut self, id: Ulid) -> Result<bool> {
        Ok(exec(
            self.conn(),
            "DELETE FROM builds WHERE id = ?",
            [id.to_string()],
        )? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_query_walks_the_branch_index_and_probes_artifacts_by_kind() -> Result<()> {
        let dir = tempfile::tempdir().map_err(corrupt)?;
        let mut c = crate::sqlite::open(&dir.path().join("t.db"))?;
        crate::sqlite::migrate(&mut c)?;
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {LATEST_SQL}"))?
            .query_map(params!["main", "kernel", Option::<String>::None], |r| {
                r.get::<_, String>(3)
            })?
            .collect::<rusqlite::Result<_>>()?;
        let plan = plan.join("\n");
        assert!(plan.contains("builds_branch"), "{plan}");
        assert!(plan.contains("artifacts_kind_build"), "{plan}");
        assert!(
            !plan.contains("SCAN a") && !plan.contains("TEMP B-TREE"),
            "{plan}"
        );
        Ok(())
    }
}
