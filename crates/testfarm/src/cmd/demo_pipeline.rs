//! The demo's pipeline: a small program and a guest image built from a local git
//! repository on the local build server, deployed and booted on the local QEMU host, and a
//! TAP test run inside the VM. Without QEMU the same program is built, then tested on the
//! build server itself, and the demo says so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use testfarm_api::pipeline::{Pipeline, SubmitPipeline};

use crate::client::Client;

const HELLO_C: &str = r#"#include <stdio.h>
int main(int argc, char **argv) {
    printf("hello from %s\n", argc > 1 ? argv[1] : "testfarm");
    return 0;
}
"#;

/// The build script of the demo repository: the program, and with `--image` the guest
/// image (kernel and initramfs with testfarm's guest agent) it is tested in.
const BUILD_SH: &str = r#"#!/bin/sh
set -eu
mkdir -p out
# Static, so the same binary runs on this host and in the guest's busybox userland.
cc -O2 -static -o out/hello hello.c 2>/dev/null || cc -O2 -o out/hello hello.c
if [ "${1:-}" = "--image" ]; then
    "$TESTFARM_BIN" vmtest image build --cache "$PWD/.images" > out/image.json
    kernel=$(sed -n 's/.*"kernel":"\([^"]*\)".*/\1/p' out/image.json)
    initrd=$(sed -n 's/.*"initrd":"\([^"]*\)".*/\1/p' out/image.json)
    cp "$kernel" out/vmlinuz
    cp "$initrd" out/initrd.img
fi
echo "built: $(ls out)"
"#;

/// Fetches the program the build stage stored and writes the TAP test that runs it.
const TEST_SETUP: &str = r#"mkdir -p t
"$TESTFARM_BIN" artifacts get "{{ stages.build.artifacts.other }}" -o t/hello
chmod +x t/hello
cat > t/hello_test.sh <<'EOF'
#!/bin/sh
here=$(dirname "$0")
echo "1..2"
out=$("$here/hello" guest)
if [ "$out" = "hello from guest" ]; then echo "ok 1 - hello runs"; else echo "not ok 1 - hello runs: $out"; fi
if uname -a >/dev/null; then echo "ok 2 - uname answers ($(uname -r))"; else echo "not ok 2 - uname"; fi
EOF
chmod +x t/hello_test.sh
"#;

/// Creates the demo's source repository (one commit on `main`) under `base`.
pub fn write_source(base: &Path) -> anyhow::Result<PathBuf> {
    let repo = base.join("demo-src");
    std::fs::create_dir_all(&repo).with_context(|| format!("creating {}", repo.display()))?;
    std::fs::write(repo.join("hello.c"), HELLO_C)?;
    let script = repo.join("build.sh");
    std::fs::write(&script, BUILD_SH)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "testfarm demo")
            .env("GIT_AUTHOR_EMAIL", "demo@testfarm.invalid")
            .env("GIT_COMMITTER_NAME", "testfarm demo")
            .env("GIT_COMMITTER_EMAIL", "demo@testfarm.invalid")
            .output()
            .context("running git (Debian: apt-get install git)")?;
        if !out.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "hello.c", "build.sh"])?;
    git(&["commit", "-q", "-m", "hello: the demo's program"])?;
    Ok(repo)
}

/// The pipeline spec: with `qemu`, build → boot-and-test in a VM; else build → test on
/// the build server.
pub fn spec(repo: &Path, testfarm: &Path, url: &str, token_file: &Path, qemu: bool) -> String {
    let image = if qemu { " --image" } else { "" };
    let image_artifacts = if qemu {
        "              - { glob: out/vmlinuz, kind: kernel }\n              - { glob: out/initrd.img, kind: initrd }\n"
    } else {
        ""
    };
    let setup = TEST_SETUP
        .lines()
        .map(|l| format!("            {l}\n"))
        .collect::<String>();
    let test_stage = if qemu {
        format!(
            r#"  - name: test
    job:
      timeout: 15m
      requires: {{ kind: qemu-host }}
      steps:
        - deploy:
            artifacts: {{ build: "{{{{ stages.build.build }}}}" }}
            memory: 256M
        - shell: |
{setup}        - boot: {{ timeout: 5m, retries: 1 }}
        - test: {{ run: "t/*_test.sh", via: guest, timeout: 5m }}
"#
        )
    } else {
        format!(
            r#"  - name: test
    job:
      timeout: 10m
      requires: {{ kind: build-server }}
      steps:
        - shell: |
{setup}        - test: {{ run: "t/*_test.sh", timeout: 5m }}
"#
        )
    };
    format!(
        r#"# Written by `testfarm demo`; run it again with: testfarm pipeline run THIS-FILE --follow
name: demo-pipeline
vars:
  TESTFARM_BIN: "{bin}"
  TESTFARM_URL: "{url}"
  TESTFARM_TOKEN_FILE: "{token}"
stages:
  - name: build
    job:
      timeout: 15m
      requires: {{ kind: build-server }}
      steps:
        - build:
            source: "{repo}"
            ref: main
            run: ./build.sh{image}
            artifacts:
              - {{ glob: out/hello, kind: other }}
{image_artifacts}{test_stage}"#,
        bin = testfarm.display(),
        token = token_file.display(),
        repo = repo.display(),
    )
}

/// Runs the pipeline and waits for it (bounded); returns how it ended.
pub async fn run(client: &Client, spec: String, limit: Duration) -> anyhow::Result<Pipeline> {
    let p: Pipeline = client
        .post(
            "/api/v1/pipelines",
            &SubmitPipeline {
                spec,
                vars: Default::default(),
                priority: None,
            },
        )
        .await?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now: Pipeline = client.get(&format!("/api/v1/pipelines/{}", p.id)).await?;
        if now.state.is_terminal() || tokio::time::Instant::now() > deadline {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
