//! `testfarm vmtest image build`: the default guest image from the host's Debian packages.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use testfarm_vm::image::{self, Image};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCmd {
    /// Build (or find cached) the default image and print where it is.
    Build {
        /// Static testfarm-guest binary (default: $TESTFARM_GUEST, next to testfarm, or
        /// target/guest-static in a source tree).
        #[arg(long)]
        guest: Option<PathBuf>,
        /// Image cache directory (default: ~/.cache/testfarm/images).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
}

pub async fn run(cmd: ImageCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCmd::Build { guest, cache } => {
            let guest = guest_binary(guest)?;
            let inputs = image::host_inputs(guest)?;
            let cache = cache.unwrap_or_else(image::default_cache_dir);
            let img = image::build(&inputs, &cache)?;
            println!(
                "{}",
                serde_json::json!({ "id": img.id, "kernel": img.kernel, "initrd": img.initrd })
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn guest_binary(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let guest = flag.or_else(testfarm_vm::guest_build::find_guest).context(
        "no static testfarm-guest found: build it with\n  CARGO_TARGET_DIR=target/guest-static \
         RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p testfarm-guest \
         --target x86_64-unknown-linux-gnu\nor pass --guest PATH / set TESTFARM_GUEST",
    )?;
    if !testfarm_vm::guest_build::is_static(&guest) {
        anyhow::bail!("{} is not a static binary", guest.display());
    }
    Ok(guest)
}

/// The default image, built on first use.
pub fn default_image(guest: Option<PathBuf>) -> anyhow::Result<Image> {
    let guest = guest_binary(guest)?;
    let inputs = image::host_inputs(guest)?;
    Ok(image::build(&inputs, &image::default_cache_dir())?)
}
