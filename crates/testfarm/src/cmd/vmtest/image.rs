//! `testfarm vmtest image build`: the default guest image from the host's Debian packages.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use testfarm_vm::image::{self, Image};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCmd {
    /// Build (or find cached) the default image and print where it is.
    Build {
        /// Static testfarm-guest binary (default: $TESTFARM_GUEST, a static one next to
        /// testfarm, or the one built into testfarm).
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
            let cache = cache.unwrap_or_else(image::default_cache_dir);
            let guest = guest_binary(guest, &cache)?;
            let inputs = image::host_inputs(guest)?;
            let img = image::build(&inputs, &cache)?;
            outln!(
                "{}",
                serde_json::json!({ "id": img.id, "kernel": img.kernel, "initrd": img.initrd })
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn guest_binary(flag: Option<PathBuf>, cache: &Path) -> anyhow::Result<PathBuf> {
    let guest = match flag {
        Some(p) => p,
        None => testfarm_vm::guest_build::find_guest(&cache.join("guests"))?.context(
            "this testfarm was built without a guest agent (TESTFARM_EMBED_GUEST=0, or its \
             build could not make one): pass --guest PATH or set TESTFARM_GUEST to a static \
             testfarm-guest (see docs/vmtest.md)",
        )?,
    };
    if !testfarm_vm::guest_build::is_static(&guest) {
        anyhow::bail!("{} is not a static binary", guest.display());
    }
    Ok(guest)
}

/// The default image, built on first use.
pub fn default_image(guest: Option<PathBuf>) -> anyhow::Result<Image> {
    let cache = image::default_cache_dir();
    let guest = guest_binary(guest, &cache)?;
    let inputs = image::host_inputs(guest)?;
    Ok(image::build(&inputs, &cache)?)
}
