//! Shared by the VM tests: the default image, built once per machine (cached by content) from
//! the host's kernel, busybox-static and the static testfarm-guest this crate embeds.

#![allow(dead_code, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use testfarm_vm::config::{ResolvedAccel, VmConfig};
use testfarm_vm::image::{self, Image};
use testfarm_vm::vm::VmOptions;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn image() -> Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let ws = workspace();
            let guest = testfarm_vm::guest_build::find_guest(&ws.join("target/vmtest-images"))
                .expect("write the embedded guest")
                .expect("this build embeds a guest");
            let inputs = image::host_inputs(guest).expect("host kernel/busybox");
            image::build(&inputs, &ws.join("target/vmtest-images")).expect("build image")
        })
        .clone()
}

pub fn vm_options(share: Option<&Path>) -> VmOptions {
    let img = image();
    let mut cfg = VmConfig::new(img.kernel, Some(img.initrd));
    cfg.share = share.map(Path::to_path_buf);
    let mut o = VmOptions::new(cfg, ResolvedAccel::Tcg);
    o.boot_timeout = Duration::from_secs(90);
    o
}
