//! Builds the static `testfarm-guest` and embeds it, so `testfarm vmtest image build` works
//! from any `testfarm` binary without a separate build step.
//!
//! The guest must be static (the initramfs has no libc) and only the gnu target exists here,
//! so it is built with `-C target-feature=+crt-static` by a nested cargo into its own target
//! directory (`<target>/guest-static`): its flags differ from the workspace's, and sharing
//! the main target directory would both deadlock on its lock and throw away the build cache.
//! The nested build is incremental, so it costs nothing when the guest did not change.
//!
//! `TESTFARM_EMBED_GUEST=0` skips it (a cross build for another host, say); the binary then
//! looks for a guest on disk at run time (`--guest`, `$TESTFARM_GUEST`, next to itself).
//! A failed nested build is a warning, not an error, for the same reason.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo:rerun-if-env-changed=TESTFARM_EMBED_GUEST");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let embedded = out_dir.join("testfarm-guest");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest.join("../..");
    let guest_crate = workspace.join("crates/testfarm-guest");
    for p in ["src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", guest_crate.join(p).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!(
        "cargo:rustc-env=TESTFARM_EMBEDDED_GUEST={}",
        embedded.display()
    );

    let bytes = if std::env::var("TESTFARM_EMBED_GUEST").as_deref() == Ok("0") {
        Vec::new()
    } else if !guest_crate.join("Cargo.toml").is_file() {
        warn("the testfarm-guest sources are not beside this crate: no guest embedded");
        Vec::new()
    } else {
        match build(&workspace, &target_root(&out_dir)) {
            Ok(b) => b,
            Err(e) => {
                warn(&format!("no guest embedded: {e}"));
                Vec::new()
            }
        }
    };
    if let Err(e) = std::fs::write(&embedded, bytes) {
        // Nothing to embed is a valid outcome; an unwritable OUT_DIR is not.
        panic!("cannot write {}: {e}", embedded.display());
    }
}

fn warn(msg: &str) {
    println!("cargo:warning={msg}");
}

/// The outer target directory (the one with `CACHEDIR.TAG`), or OUT_DIR if none is found.
fn target_root(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|a| a.join("CACHEDIR.TAG").is_file())
        .unwrap_or(out_dir)
        .to_path_buf()
}

fn build(workspace: &Path, target_root: &Path) -> Result<Vec<u8>, String> {
    let target_dir = target_root.join("guest-static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            "testfarm-guest",
            "--target",
            GUEST_TARGET,
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Ctarget-feature=+crt-static\x1f-Cstrip=symbols",
        );
    // The outer build's settings are not the guest's (clippy's driver, the host's flags,
    // a `--target` for the host binary).
    for var in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p testfarm-guest failed:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let built = target_dir.join(GUEST_TARGET).join("release/testfarm-guest");
    std::fs::read(&built).map_err(|e| format!("cannot read {}: {e}", built.display()))
}
