//! `deploy`: resolve the artifact query through the server, download the chosen build's
//! kernel, initrd and rootfs into the job's work directory, each streamed to a temporary
//! file while hashed and kept only when its sha256 is the repository's. A rootfs gets its
//! qcow2 overlay at boot (one fresh overlay per attempt, so a failed boot leaves nothing
//! for the next); the downloaded base is never written.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use testfarm_api::artifact::Artifact;
use testfarm_artifacts::Digest;
use testfarm_core::artifact::ArtifactKind;
use testfarm_core::deploy::{self as choice, Listed};
use testfarm_core::jobspec::{ArtifactQuery, DeployStep};
use tokio::io::AsyncWriteExt;

use super::{Ctx, Deployed, End};
use crate::client::{Client, ClientError};
use crate::executor::Reporter;

/// Why a deploy could not finish (the step's reason).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("cannot resolve {query}: {source}")]
    Resolve {
        query: String,
        #[source]
        source: ClientError,
    },
    #[error("{0}")]
    NoMatch(#[from] choice::NoMatch),
    #[error("downloading {name} ({sha256}): {message}")]
    Download {
        name: String,
        sha256: String,
        message: String,
    },
    #[error("{name}: the download's sha256 is {got}, not {want}; nothing was kept")]
    Checksum {
        name: String,
        got: String,
        want: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Most artifacts read to resolve a commit (a commit has a handful of builds).
const LIST_LIMIT: &str = "200";

fn listed(a: Artifact) -> Listed {
    Listed {
        build_id: a.build_id.to_string(),
        name: a.name,
        kind: a.kind,
        sha256: a.sha256,
        size: a.size,
        commit: a.commit,
        branch: a.branch,
        arch: a.arch,
    }
}

/// The repository's listing for `q`: one build's artifacts (by id, or the newest build of
/// the branch that has the first kind asked for, a kernel when none is), or a commit's
/// builds, newest first. Shared with board deploys (`crate::board::deploy`).
pub(crate) async fn listing(
    client: &Client,
    q: &ArtifactQuery,
) -> Result<Vec<Listed>, DeployError> {
    let query = choice::describe(q);
    let resolve = |source| DeployError::Resolve {
        query: query.clone(),
        source,
    };
    let build = if let Some(b) = &q.build {
        b.clone()
    } else if let Some(branch) = &q.branch {
        let kind = q.kinds.first().copied().unwrap_or(ArtifactKind::Kernel);
        let newest = client
            .latest_artifact(branch, kind.as_str(), q.arch.as_deref())
            .await
            .map_err(resolve)?;
        newest.build_id.to_string()
    } else if let Some(commit) = &q.commit {
        let page = client
            .list_artifacts(&[("commit", commit), ("limit", LIST_LIMIT)])
            .await
            .map_err(resolve)?;
        return Ok(page.items.into_iter().map(listed).collect());
    } else {
        return Err(DeployError::NoMatch(choice::NoMatch::Nothing { query }));
    };
    let page = client
        .list_artifacts(&[("build", &build), ("limit", LIST_LIMIT)])
        .await
        .map_err(resolve)?;
    Ok(page.items.into_iter().map(listed).collect())
}

/// Streams artifact `a` to `dest` through a temporary file beside it, renamed into place
/// only when its sha256 matches the listing's and the server's header.
pub(crate) async fn download(client: &Client, a: &Listed, dest: &Path) -> Result<u64, DeployError> {
    let failed = |message: String| DeployError::Download {
        name: a.name.clone(),
        sha256: a.sha256.clone(),
        message,
    };
    let want: Digest = a
        .sha256
        .parse()
        .map_err(|e: testfarm_artifacts::DigestError| failed(e.to_string()))?;
    let resp = client
        .open_artifact(&a.sha256)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let announced = resp
        .headers()
        .get("x-checksum-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let dir = dest.parent().unwrap_or(Path::new("."));
    let io = |what: String| move |source| DeployError::Io { what, source };
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(io(format!("creating a file in {}", dir.display())))?;
    let (std_file, tmp_path) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(std_file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| failed(format!("the download was cut off: {e}")))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(io(format!("writing {}", dest.display())))?;
    }
    file.sync_all()
        .await
        .map_err(io(format!("writing {}", dest.display())))?;
    drop(file);
    let got = Digest::from_bytes(hasher.finalize().into());
    for w in [Some(want.hex()), announced].into_iter().flatten() {
        if !w.eq_ignore_ascii_case(&got.hex()) {
            return Err(DeployError::Checksum {
                name: a.name.clone(),
                got: got.hex(),
                want: w,
            });
        }
    }
    tmp_path.persist(dest).map_err(|e| DeployError::Io {
        what: format!("renaming the download to {}", dest.display()),
        source: e.error,
    })?;
    Ok(size)
}

/// Resolves and downloads; the files and what they are.
async fn fetch<R: Reporter>(
    ctx: &Ctx<'_, R>,
    client: &Client,
    d: &DeployStep,
) -> Result<Deployed, DeployError> {
    let list = listing(client, &d.artifacts).await?;
    let chosen = choice::choose(&d.artifacts, &list)?;
    let paths = download_chosen(ctx, client, &chosen).await?;
    let path = |k: ArtifactKind| {
        paths
            .iter()
            .find(|(kind, _)| *kind == k)
            .map(|(_, p)| p.clone())
    };
    let kernel = path(ArtifactKind::Kernel).ok_or_else(|| {
        DeployError::NoMatch(choice::NoMatch::Nothing {
            query: format!("a kernel in {}", choice::describe(&d.artifacts)),
        })
    })?;
    Ok(Deployed {
        kernel,
        initrd: path(ArtifactKind::Initrd),
        rootfs: path(ArtifactKind::Rootfs),
        size: d.vm_size(&ctx.job.spec),
        append: d.append.clone().unwrap_or_default(),
        ssh: d.ssh,
        kvm: ctx
            .job
            .spec
            .requires
            .as_ref()
            .and_then(|r| r.kvm)
            .unwrap_or(false),
        at: testfarm_core::timestamp::rfc3339(&chrono::Utc::now(), true),
        chosen,
    })
}

/// Downloads what was chosen into `.testfarm/deploy/` of the work directory, each file
/// checked against its sha256; the local path of each kind.
pub(crate) async fn download_chosen<R: Reporter>(
    ctx: &Ctx<'_, R>,
    client: &Client,
    chosen: &choice::Chosen,
) -> Result<Vec<(ArtifactKind, PathBuf)>, DeployError> {
    ctx.log
        .note(&format!(
            "deploying build {} (commit {}, branch {}, arch {}): {}",
            chosen.build_id,
            chosen.commit,
            chosen.branch,
            chosen.arch,
            chosen
                .artifacts
                .iter()
                .map(|a| format!("{} {} ({} bytes)", a.kind, a.name, a.size))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await;
    let dir = ctx.work_dir.join(".testfarm").join("deploy");
    std::fs::create_dir_all(&dir).map_err(|source| DeployError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let mut paths: Vec<(ArtifactKind, PathBuf)> = Vec::new();
    for a in &chosen.artifacts {
        let short: String = a.sha256.chars().take(12).collect();
        let dest = dir.join(format!("{}-{short}", a.kind));
        let size = download(client, a, &dest).await?;
        ctx.log
            .note(&format!(
                "downloaded {} {} ({size} bytes, sha256 {} verified)",
                a.kind, a.name, a.sha256
            ))
            .await;
        paths.push((a.kind, dest));
    }
    Ok(paths)
}

/// The `deploy` step.
pub async fn run<R: Reporter>(ctx: &Ctx<'_, R>, slot: &super::VmSlot, d: &DeployStep) -> End {
    let Some(client) = ctx.reporter.client() else {
        return End::error("this agent has no server connection to fetch artifacts through");
    };
    match fetch(ctx, client, d).await {
        Ok(deployed) => {
            let mut s = slot.state.lock().await;
            s.stop_vm().await;
            s.deployed = Some(deployed);
            End::passed()
        }
        Err(e) => End::error(e.to_string()),
    }
}
