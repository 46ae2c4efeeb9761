//! `testfarm artifacts …`: the artifact repository, through the API. Downloads stream to
//! a temporary file next to the output, are checked against the server's sha256, and
//! only then renamed into place: a partial or corrupt download never sits at `-o FILE`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use sha2::{Digest, Sha256};
use testfarm_api::Page;
use testfarm_api::artifact::{Artifact, Build, CreateBuild, GcReport};
use tokio::io::AsyncReadExt;

use crate::client::{Client, Connection, enc};
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    format: Format,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List artifacts (newest build first).
    List {
        #[arg(long)]
        build: Option<String>,
        #[arg(long)]
        commit: Option<String>,
        #[arg(long)]
        branch: Option<String>,
        /// kernel, dtb, initrd, rootfs, modules, firmware or other.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        tag: Option<String>,
    },
    /// Download one artifact to FILE, checked against its sha256.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["sha256", "build", "latest"])))]
    Get {
        /// The artifact's sha256.
        sha256: Option<String>,
        /// A build id (with --name).
        #[arg(long, requires = "name")]
        build: Option<String>,
        /// The artifact's name in --build.
        #[arg(long)]
        name: Option<String>,
        /// The newest build of --branch with an artifact of --kind.
        #[arg(long, requires_all = ["branch", "kind"])]
        latest: bool,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// With --latest: only builds for this architecture.
        #[arg(long)]
        arch: Option<String>,
        /// Where to write it.
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Upload FILE as an artifact of a build (streamed; its sha256 is checked by the server).
    Upload {
        #[arg(long)]
        build: String,
        #[arg(long)]
        kind: String,
        /// Its name in the build; default: the file's name.
        #[arg(long)]
        name: Option<String>,
        file: PathBuf,
    },
    /// Record a new build (then upload its artifacts); prints its id.
    NewBuild {
        #[arg(long)]
        commit: String,
        #[arg(long)]
        branch: String,
        #[arg(long)]
        arch: String,
        /// The job that built it.
        #[arg(long)]
        job: Option<String>,
        /// A tag, repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Show a build and its artifacts.
    Show { build: String },
    /// Pin a build: retention never deletes it.
    Pin { build: String },
    /// Unpin a build.
    Unpin { build: String },
    /// Tag a build (tagged builds are kept by retention).
    Tag { build: String, tag: String },
    /// Remove a tag from a build.
    Untag { build: String, tag: String },
    /// Run artifact retention now (operators); --dry-run only reports.
    Gc {
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let json = args.format.json;
    match args.cmd {
        Cmd::List {
            build,
            commit,
            branch,
            kind,
            tag,
        } => {
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = vec![("limit", "1000".to_string())];
                q.extend(build.clone().map(|v| ("build", v)));
                q.extend(commit.clone().map(|v| ("commit", v)));
                q.extend(branch.clone().map(|v| ("branch", v)));
                q.extend(kind.clone().map(|v| ("kind", v)));
                q.extend(tag.clone().map(|v| ("tag", v)));
                q.extend(cursor.clone().map(|c| ("cursor", c)));
                let page: Page<Artifact> = client
                    .send(client.request(Method::GET, "/api/v1/artifacts").query(&q))
                    .await?;
                items.extend(page.items);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            if json {
                output::json(&items)?;
            } else {
                list(&items);
            }
        }
        Cmd::Get {
            sha256,
            build,
            name,
            latest,
            branch,
            kind,
            arch,
            output,
        } => {
            let (path, expected) = if let Some(sha) = sha256 {
                (format!("/api/v1/artifacts/{}", enc(&sha)), Some(sha))
            } else if let (Some(build), Some(name)) = (build, name) {
                (
                    format!("/api/v1/builds/{}/artifacts/{}", enc(&build), enc(&name)),
                    None,
                )
            } else if latest {
                let mut q = vec![
                    ("branch", branch.unwrap_or_default()),
                    ("kind", kind.unwrap_or_default()),
                ];
                q.extend(arch.map(|a| ("arch", a)));
                let a: Artifact = client
                    .send(
                        client
                            .request(Method::GET, "/api/v1/artifacts/latest")
                            .query(&q),
                    )
                    .await?;
                (format!("/api/v1/artifacts/{}", a.sha256), Some(a.sha256))
            } else {
                bail!(
                    "say which artifact: SHA256, --build ID --name N, or --branch B --latest --kind K"
                );
            };
            let (sha, size) = download(&client, &path, expected.as_deref(), &output).await?;
            if json {
                output::json(&serde_json::json!({
                    "path": output, "sha256": sha, "size": size,
                }))?;
            } else {
                outln!("{} ({size} bytes, sha256 {sha})", output.display());
            }
        }
        Cmd::Upload {
            build,
            kind,
            name,
            file,
        } => {
            let name = match name {
                Some(n) => n,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("{} has no file name; pass --name", file.display()))?,
            };
            let a = upload(&client, &build, &kind, &name, &file).await?;
            if json {
                output::json(&a)?;
            } else {
                outln!(
                    "stored {} {} in build {} ({} bytes, sha256 {})",
                    a.kind,
                    a.name,
                    a.build_id,
                    a.size,
                    a.sha256
                );
            }
        }
        Cmd::NewBuild {
            commit,
            branch,
            arch,
            job,
            tags,
        } => {
            let b: Build = client
                .post(
                    "/api/v1/builds",
                    &CreateBuild {
                        commit,
                        branch,
                        arch,
                        source_job: job,
                        tags,
                    },
                )
                .await?;
            if json {
                output::json(&b)?;
            } else {
                outln!("{}", b.id);
            }
        }
        Cmd::Show { build } => {
            let b: Build = client
                .get(&format!("/api/v1/builds/{}", enc(&build)))
                .await?;
            print_build(&b, json)?;
        }
        Cmd::Pin { build } => {
            let b: Build = client
                .send(client.request(Method::POST, &format!("/api/v1/builds/{}/pin", enc(&build))))
                .await?;
            print_build(&b, json)?;
        }
        Cmd::Unpin { build } => {
            let b: Build = client
                .send(client.request(
                    Method::POST,
                    &format!("/api/v1/builds/{}/unpin", enc(&build)),
                ))
                .await?;
            print_build(&b, json)?;
        }
        Cmd::Tag { build, tag } => {
            let b: Build = client
                .send(client.request(
                    Method::PUT,
                    &format!("/api/v1/builds/{}/tags/{}", enc(&build), enc(&tag)),
                ))
                .await?;
            print_build(&b, json)?;
        }
        Cmd::Untag { build, tag } => {
            let b: Build = client
                .delete(&format!(
                    "/api/v1/builds/{}/tags/{}",
                    enc(&build),
                    enc(&tag)
                ))
                .await?;
            print_build(&b, json)?;
        }
        Cmd::Gc { dry_run } => {
            let r: GcReport = client
                .send(
                    client
                        .request(Method::POST, "/api/v1/artifacts/gc")
                        .query(&[("dry_run", dry_run)]),
                )
                .await?;
            if json {
                output::json(&r)?;
            } else {
                let verb = if r.dry_run { "would delete" } else { "deleted" };
                for b in &r.builds {
                    outln!(
                        "{verb} build {} ({} {}, {}, {:?})",
                        b.id,
                        b.branch,
                        b.commit,
                        output::when(Some(b.created_at)),
                        b.reason
                    );
                }
                outln!(
                    "{verb} {} builds and {} blobs ({} bytes); {} blobs in use kept",
                    r.builds.len(),
                    r.blobs.len(),
                    r.freed_bytes,
                    r.skipped_in_use.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(items: &[Artifact]) {
    output::table(
        &[
            "build", "name", "kind", "size", "branch", "commit", "sha256",
        ],
        items
            .iter()
            .map(|a| {
                vec![
                    a.build_id.to_string(),
                    a.name.clone(),
                    a.kind.to_string(),
                    a.size.to_string(),
                    a.branch.clone(),
                    a.commit.clone(),
                    a.sha256.clone(),
                ]
            })
            .collect(),
    );
}

fn print_build(b: &Build, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(b);
    }
    output::fields(&[
        ("id", b.id.to_string()),
        ("commit", b.commit.clone()),
        ("branch", b.branch.clone()),
        ("arch", b.arch.clone()),
        ("created", output::when(Some(b.created_at))),
        ("pinned", b.pinned.to_string()),
        ("tags", b.tags.join(", ")),
        ("job", b.source_job.clone().unwrap_or_else(|| "-".into())),
    ]);
    if !b.artifacts.is_empty() {
        outln!();
        list(&b.artifacts);
    }
    Ok(())
}

/// Streams `path` into a temporary file beside `output`, hashing; renames it into place
/// only if its sha256 is what the server (and `expected`, when known) says.
async fn download(
    client: &Client,
    path: &str,
    expected: Option<&str>,
    output: &Path,
) -> anyhow::Result<(String, u64)> {
    let resp = client.open(client.request(Method::GET, path)).await?;
    let announced = resp
        .headers()
        .get("x-checksum-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".testfarm-download-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download was cut off")?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        tmp.write_all(&chunk)
            .with_context(|| format!("cannot write to {}", dir.display()))?;
    }
    tmp.as_file().sync_all()?;
    let got = format!("{:x}", hasher.finalize());
    for want in [announced.as_deref(), expected].into_iter().flatten() {
        if !want.eq_ignore_ascii_case(&got) {
            bail!(
                "the download's sha256 is {got}, not {want}; nothing was written to {}",
                output.display()
            );
        }
    }
    if announced.is_none() && expected.is_none() {
        bail!("the server sent no checksum to verify the download against");
    }
    tmp.persist(output).map_err(|e| {
        anyhow!(
            "cannot rename the download to {}: {}",
            output.display(),
            e.error
        )
    })?;
    Ok((got, size))
}

/// The sha256 of a file, read in chunks.
async fn file_sha256(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("{:x}", hasher.finalize()), size))
}

async fn upload(
    client: &Client,
    build: &str,
    kind: &str,
    name: &str,
    file: &Path,
) -> anyhow::Result<Artifact> {
    let (sha, size) = file_sha256(file).await?;
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let stream = futures::stream::try_unfold(f, |mut f| async move {
        let mut buf = vec![0u8; 256 * 1024];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), f)))
    })
    .into_stream();
    let req = client
        .request(
            Method::PUT,
            &format!("/api/v1/builds/{}/artifacts/{}", enc(build), enc(name)),
        )
        .query(&[("kind", kind), ("sha256", &sha)])
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(stream));
    let resp = client.open(req).await?;
    resp.json::<Artifact>()
        .await
        .context("unexpected response from the server")
}
