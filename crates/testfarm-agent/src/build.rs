//! The `build` step: fetch the source into the job's work directory, run the build
//! command, and store what it produced as one build of the artifact repository.
//!
//! Each phase runs as a shell script through the shell step's machinery, so the log
//! streams live and a timeout, cancel or drop stops it the same way. Outcomes keep the
//! line the executor draws: a source that cannot be fetched or a ref that does not exist
//! is `error` (nothing was built, the build did not fail); a build command that exits
//! non-zero is `failed`; a glob that matches no file is `failed` (the build did not make
//! what it promised); an upload the server refuses (checksum mismatch, no room) is
//! `error`. Whatever happened, the step's report carries a [`BuildSummary`].
//!
//! Local hosts only stream artifacts from disk and sample the build's peak CPU and
//! memory; on an SSH host the build runs the same way but artifacts are read whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use testfarm_api::agent::Outcome;
use testfarm_api::artifact::CreateBuild;
use testfarm_api::build::{BuildSummary, BuiltArtifact};
use testfarm_core::artifact::validate_artifact_name;
use testfarm_core::build::{Serves, kernel_arch, normalise_arch, toolchain_for};
use testfarm_core::jobspec::{BuildStep, ShellStep};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::control::JobControl;
use crate::detect::shell_quote;
use crate::executor::{
    ArtifactUpload, PGID_FILE, ReportError, Reporter, Run, StepResult, Target, WorkDir,
};
use crate::process_usage::{Peaks, sample_group, ticks_per_sec};
use crate::upload;

/// The checked-out tree, relative to the work directory.
pub const SOURCE_DIR: &str = "src";
/// What the fetch script leaves for the agent to read, in the work directory.
const COMMIT_FILE: &str = ".testfarm/build-commit";
const BRANCH_FILE: &str = ".testfarm/build-branch";
/// How often the build's process group is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Cross compilers looked for when a build names an arch (`<triple>-gcc`).
const CROSS_TRIPLES: &[&str] = &[
    "aarch64-linux-gnu",
    "arm-linux-gnueabihf",
    "riscv64-linux-gnu",
    "x86_64-linux-gnu",
];

/// The script that clones `source` into [`SOURCE_DIR`], checks out `git_ref` and writes
/// the resolved commit and branch. Branch: the one checked out; for a tag or commit, a
/// remote branch that contains it (the default branch first); else the ref as written.
pub fn fetch_script(source: &str, git_ref: Option<&str>) -> String {
    let mut s = String::from("set -e\n");
    s.push_str(&format!(
        "git clone --no-hardlinks --quiet -- {} {SOURCE_DIR}\n",
        shell_quote(source)
    ));
    s.push_str(&format!("cd {SOURCE_DIR}\n"));
    if let Some(r) = git_ref {
        s.push_str(&format!(
            "git -c advice.detachedHead=false checkout --quiet {}\n",
            shell_quote(r)
        ));
    }
    s.push_str(&format!("git rev-parse HEAD > ../{COMMIT_FILE}\n"));
    let asked = git_ref.map(shell_quote).unwrap_or_else(|| "''".into());
    s.push_str(&format!(
        "b=$(git symbolic-ref --short -q HEAD || true)\n\
         if [ -z \"$b\" ]; then\n\
         \x20 d=$(git symbolic-ref --short -q refs/remotes/origin/HEAD 2>/dev/null | sed 's|^origin/||' || true)\n\
         \x20 if [ -n \"$d\" ] && git merge-base --is-ancestor HEAD \"origin/$d\" 2>/dev/null; then b=$d;\n\
         \x20 else b=$(git branch -r --contains HEAD --format='%(refname:short)' 2>/dev/null | grep -v '/HEAD$' | sed -n 's|^origin/||p' | head -n 1); fi\n\
         fi\n\
         [ -n \"$b\" ] || b={asked}\n\
         printf '%s' \"$b\" > ../{BRANCH_FILE}\n\
         echo \"source $(cat ../{COMMIT_FILE}) on ${{b:-no branch}}\"\n"
    ));
    s
}

/// Artifact names for the files one glob matched: the spec's `name` for a single file,
/// else each file's own name, or its flattened path when two files share a name.
pub fn artifact_names(spec_name: Option<&str>, matched: &[String]) -> Vec<String> {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    matched
        .iter()
        .map(|rel| match spec_name {
            Some(n) if matched.len() == 1 => n.to_string(),
            _ => {
                let b = base(rel);
                if matched.iter().filter(|o| base(o) == b).count() > 1 {
                    upload::output_name(None, rel, matched.len())
                } else {
                    upload::output_name(Some(&b), rel, 1)
                }
            }
        })
        .collect()
}

/// The toolchain on this machine that builds for `arch`.
fn local_toolchain(arch: &str) -> Option<Serves> {
    let mut found: Vec<String> = testfarm_core::build::NATIVE_COMPILERS
        .iter()
        .filter(|c| crate::detect::which(c).is_some())
        .map(|c| c.to_string())
        .collect();
    for t in CROSS_TRIPLES {
        let gcc = format!("{t}-gcc");
        if crate::detect::which(&gcc).is_some() {
            found.push(gcc);
        }
    }
    let host = crate::detect::normalise_arch(std::env::consts::ARCH);
    toolchain_for(arch, Some(host), &found)
}

/// The sha256 and size of a file, read in chunks (artifacts can be gigabytes).
pub async fn file_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest as _;
    let mut f = tokio::fs::File::open(path).await?;
    let mut hasher = sha2::Sha256::new();
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

impl<R: Reporter> Run<'_, R> {
    /// Runs a build step. `None`: dropped.
    pub(crate) async fn build(
        &self,
        index: u32,
        b: &BuildStep,
        deadline: Option<Instant>,
        control: &JobControl,
        timed_out: &impl Fn(()) -> String,
    ) -> Option<StepResult> {
        let t0 = Instant::now();
        let host_arch = match self.target {
            Target::Local | Target::Board(_) => {
                Some(crate::detect::normalise_arch(std::env::consts::ARCH))
            }
            Target::Ssh(_) => None,
        };
        let arch = b
            .arch
            .as_deref()
            .map(normalise_arch)
            .or(host_arch)
            .map(str::to_string);
        let toolchain = match (self.target, &b.arch) {
            (Target::Local, Some(a)) => local_toolchain(a),
            _ => None,
        };
        let mut summary = BuildSummary {
            source: b.source.clone(),
            git_ref: b.git_ref.clone(),
            arch: arch.clone(),
            config: b.config.clone(),
            toolchain: toolchain.as_ref().map(|t| t.compiler().to_string()),
            server: self.job.resource.clone(),
            ..BuildSummary::default()
        };
        let finish = |mut r: StepResult, mut s: BuildSummary| {
            s.duration_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
            r.build = Some(s);
            Some(r)
        };

        // 1. Source.
        self.log
            .note(&format!(
                "build: fetching {}{}",
                b.source,
                b.git_ref
                    .as_deref()
                    .map(|r| format!(" at {r}"))
                    .unwrap_or_default()
            ))
            .await;
        let fetch = ShellStep {
            run: fetch_script(&b.source, b.git_ref.as_deref()),
            ..ShellStep::default()
        };
        let env = self.env(index, &BTreeMap::new());
        let file = format!(".testfarm/step-{index}-fetch.sh");
        let r = self
            .shell_as(&file, &fetch, env, deadline, control, timed_out)
            .await?;
        match r.outcome {
            Outcome::Passed => {}
            Outcome::Failed => {
                let reason = format!(
                    "cannot fetch the source {} {}({}; see the log)",
                    b.source,
                    b.git_ref
                        .as_deref()
                        .map(|r| format!("at {r} "))
                        .unwrap_or_default(),
                    r.reason.unwrap_or_default()
                );
                return finish(StepResult::new(Outcome::Error, reason), summary);
            }
            _ => return finish(r, summary),
        }
        summary.commit = self.read_text(COMMIT_FILE).await;
        summary.branch = self.read_text(BRANCH_FILE).await;

        // 2. Build, sampling the process group's peaks on a local host.
        let mut env = self.env(index, &b.env);
        if let Some(a) = &arch {
            env.entry("TESTFARM_BUILD_ARCH".into()).or_insert(a.clone());
            if b.arch.is_some() {
                env.entry("ARCH".into())
                    .or_insert_with(|| kernel_arch(a).to_string());
            }
        }
        if let Some(t) = &toolchain
            && !t.cross_compile().is_empty()
        {
            env.entry("CROSS_COMPILE".into())
                .or_insert_with(|| t.cross_compile().to_string());
        }
        if let Some(c) = &b.config {
            env.entry("TESTFARM_BUILD_CONFIG".into())
                .or_insert(c.clone());
        }
        if let Some(c) = &summary.commit {
            env.insert("TESTFARM_BUILD_COMMIT".into(), c.clone());
        }
        let script = ShellStep {
            run: format!("cd {SOURCE_DIR}\n{}", b.run),
            ..ShellStep::default()
        };
        let file = format!(".testfarm/step-{index}-build.sh");
        let sampler = self.sampler();
        let r = self
            .shell_as(&file, &script, env, deadline, control, timed_out)
            .await;
        if let Some((task, peaks)) = sampler {
            task.abort();
            if let Ok(p) = peaks.lock() {
                summary.peak_cpu_pct = p.cpu_pct.map(|c| (c * 10.0).round() / 10.0);
                summary.peak_memory_bytes = p.memory_bytes;
            }
        }
        let r = r?;
        if r.outcome != Outcome::Passed {
            return finish(r, summary);
        }

        // 3. Artifacts.
        if b.artifacts.is_empty() {
            return finish(StepResult::new(Outcome::Passed, None), summary);
        }
        let files = match self.list().await {
            Ok(f) => f,
            Err(e) => return finish(StepResult::new(Outcome::Error, e), summary),
        };
        let prefix = format!("{SOURCE_DIR}/");
        let tree: Vec<&str> = files
            .iter()
            .filter_map(|f| f.strip_prefix(&prefix))
            .filter(|f| !f.starts_with(".git/"))
            .collect();
        let mut chosen: Vec<(String, String, testfarm_core::artifact::ArtifactKind)> = Vec::new();
        for (i, a) in b.artifacts.iter().enumerate() {
            let matched: Vec<String> = tree
                .iter()
                .filter(|f| upload::glob_match(&a.glob, f))
                .map(|f| f.to_string())
                .collect();
            if matched.is_empty() {
                return finish(
                    StepResult::new(
                        Outcome::Failed,
                        format!("artifacts[{i}]: no file of the build matches {:?}", a.glob),
                    ),
                    summary,
                );
            }
            for (rel, name) in matched
                .iter()
                .zip(artifact_names(a.name.as_deref(), &matched))
            {
                if let Err(e) = validate_artifact_name(&name) {
                    return finish(
                        StepResult::new(Outcome::Failed, format!("artifacts[{i}]: {rel}: {e}")),
                        summary,
                    );
                }
                if chosen.iter().any(|(_, n, _)| *n == name) {
                    return finish(
                        StepResult::new(
                            Outcome::Failed,
                            format!(
                                "artifacts[{i}]: {rel} would be stored as {name:?}, a name another file already has; give `name`"
                            ),
                        ),
                        summary,
                    );
                }
                chosen.push((rel.clone(), name, a.kind));
            }
        }
        let created = self
            .reporter
            .create_build(CreateBuild {
                commit: summary.commit.clone().unwrap_or_else(|| "unknown".into()),
                branch: summary.branch.clone().unwrap_or_else(|| "unknown".into()),
                arch: arch.clone().unwrap_or_else(|| "unknown".into()),
                source_job: Some(self.job.job_id.clone()),
                tags: Vec::new(),
            })
            .await;
        let build = match created {
            Ok(build) => build,
            Err(ReportError::Stale(_)) => {
                control.drop_job();
                return None;
            }
            Err(ReportError::Failed(e)) => {
                return finish(
                    StepResult::new(Outcome::Error, format!("cannot record the build: {e}")),
                    summary,
                );
            }
        };
        summary.build_id = Some(build.id.to_string());
        self.log
            .note(&format!("build: recorded build {}", build.id))
            .await;
        for (rel, name, kind) in chosen {
            match self
                .store_artifact(&build.id.to_string(), &rel, &name, kind)
                .await
            {
                Ok(a) => {
                    self.log
                        .note(&format!(
                            "build: stored {rel} as {} {name} ({} bytes, sha256 {})",
                            a.kind, a.size, a.sha256
                        ))
                        .await;
                    summary.artifacts.push(a);
                }
                Err(reason) => {
                    return finish(StepResult::new(Outcome::Error, reason), summary);
                }
            }
        }
        finish(StepResult::new(Outcome::Passed, None), summary)
    }

    /// Hashes and uploads one file of the tree.
    async fn store_artifact(
        &self,
        build: &str,
        rel: &str,
        name: &str,
        kind: testfarm_core::artifact::ArtifactKind,
    ) -> Result<BuiltArtifact, String> {
        let path = match &self.dir {
            WorkDir::Local(d) => d.join(SOURCE_DIR).join(rel),
            WorkDir::Remote(_) => {
                // Remote trees are fetched whole into a local spool file first.
                let bytes = self.read(&format!("{SOURCE_DIR}/{rel}")).await?;
                let spool = self.settings.work_dir.join("spool");
                std::fs::create_dir_all(&spool)
                    .map_err(|e| format!("cannot create {}: {e}", spool.display()))?;
                let p = spool.join(format!("{}-{name}", self.job.job_id));
                std::fs::write(&p, &bytes)
                    .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
                p
            }
        };
        let (sha256, size) = file_sha256(&path)
            .await
            .map_err(|e| format!("cannot read {rel}: {e}"))?;
        let up = ArtifactUpload {
            path,
            name: name.to_string(),
            kind,
            sha256: sha256.clone(),
            size,
        };
        let res = self.reporter.put_artifact(build, up).await;
        if let WorkDir::Remote(_) = &self.dir {
            let _ = std::fs::remove_file(
                self.settings
                    .work_dir
                    .join("spool")
                    .join(format!("{}-{name}", self.job.job_id)),
            );
        }
        match res {
            Ok(a) => Ok(BuiltArtifact {
                name: a.name,
                kind: a.kind,
                size: a.size,
                sha256: a.sha256,
            }),
            Err(ReportError::Stale(e) | ReportError::Failed(e)) => Err(format!(
                "the server refused {rel} as {name} (sha256 {sha256}, {size} bytes): {e}"
            )),
        }
    }

    /// A small text file of the work directory, trimmed; `None` if absent or empty.
    async fn read_text(&self, rel: &str) -> Option<String> {
        let bytes = self.read(rel).await.ok()?;
        let s = String::from_utf8_lossy(&bytes).trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// Samples the process group of the running step (local hosts: its id is in
    /// [`PGID_FILE`]) until aborted.
    #[allow(clippy::type_complexity)]
    fn sampler(
        &self,
    ) -> Option<(
        tokio::task::JoinHandle<()>,
        std::sync::Arc<std::sync::Mutex<Peaks>>,
    )> {
        let WorkDir::Local(dir) = &self.dir else {
            return None;
        };
        let pgid_file = dir.join(PGID_FILE);
        let _ = std::fs::remove_file(&pgid_file);
        let peaks = std::sync::Arc::new(std::sync::Mutex::new(Peaks::default()));
        let out = peaks.clone();
        let hz = ticks_per_sec();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(SAMPLE_EVERY).await;
                let Some(pgid) = std::fs::read_to_string(&pgid_file)
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok())
                else {
                    continue;
                };
                let s =
                    tokio::task::spawn_blocking(move || sample_group(pgid, start.elapsed())).await;
                if let (Ok(s), Ok(mut p)) = (s, peaks.lock()) {
                    p.add(s, hz);
                }
            }
        });
        Some((task, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_matched_files() {
        let one = vec!["out/hello".to_string()];
        assert_eq!(artifact_names(Some("hello-bin"), &one), vec!["hello-bin"]);
        assert_eq!(artifact_names(None, &one), vec!["hello"]);
        let two = vec![
            "a/x.dtb".to_string(),
            "b/x.dtb".to_string(),
            "b/y.dtb".to_string(),
        ];
        assert_eq!(
            artifact_names(Some("ignored"), &two),
            vec!["a_x.dtb", "b_x.dtb", "y.dtb"]
        );
    }

    #[test]
    fn the_fetch_script_quotes_what_it_is_given() {
        let s = fetch_script("/tmp/my repo", Some("main"));
        assert!(s.contains("-- '/tmp/my repo' src"), "{s}");
        assert!(s.contains("checkout --quiet 'main'"), "{s}");
        assert!(!fetch_script("x", None).contains("checkout"));
    }

    #[tokio::test]
    async fn file_digest_matches_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        let (sha, size) = file_sha256(&p).await.unwrap();
        assert_eq!(size, 6);
        assert_eq!(
            sha,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }
}
