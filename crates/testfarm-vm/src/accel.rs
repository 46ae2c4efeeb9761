//! Choosing KVM or TCG. `/dev/kvm` existing proves nothing (guests have hung under KVM at
//! early boot on machines where it exists), so `auto` boots the real image under KVM with a
//! short deadline and falls back to TCG. The verdict is cached per host boot and image.

use std::time::Duration;

use crate::config::{Accel, ResolvedAccel};
use crate::vm::{Vm, VmOptions};

/// How long a KVM probe boot may take; KVM boots this image in well under a second.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The accelerator to use and why.
pub async fn resolve(
    requested: Accel,
    opts: &VmOptions,
    image_id: &str,
) -> (ResolvedAccel, String) {
    match requested {
        Accel::Kvm => return (ResolvedAccel::Kvm, "requested".into()),
        Accel::Tcg => return (ResolvedAccel::Tcg, "requested".into()),
        Accel::Auto => {}
    }
    if !opts.config.arch.is_native() {
        return (
            ResolvedAccel::Tcg,
            "guest arch differs from the host".into(),
        );
    }
    if std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return (ResolvedAccel::Tcg, "/dev/kvm is not usable".into());
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let cache = crate::runtime_dir::base()
        .ok()
        .map(|b| b.join(format!("kvm-probe-{}-{image_id}", boot_id.trim())));
    if let Some(c) = &cache
        && let Ok(v) = std::fs::read_to_string(c)
    {
        return match v.trim() {
            "kvm" => (ResolvedAccel::Kvm, "probe passed (cached)".into()),
            _ => (
                ResolvedAccel::Tcg,
                "KVM probe failed earlier (cached)".into(),
            ),
        };
    }
    let ok = probe(opts).await;
    if let Some(c) = &cache {
        let _ = std::fs::write(c, if ok { "kvm" } else { "tcg" });
    }
    if ok {
        (ResolvedAccel::Kvm, "probe boot passed".into())
    } else {
        (
            ResolvedAccel::Tcg,
            format!("a KVM guest did not say hello within {PROBE_TIMEOUT:?}"),
        )
    }
}

async fn probe(opts: &VmOptions) -> bool {
    let Ok(dir) = crate::runtime_dir::RuntimeDir::new("kvm-probe-") else {
        return false;
    };
    let mut o = opts.clone();
    o.accel = ResolvedAccel::Kvm;
    o.boot_timeout = PROBE_TIMEOUT;
    match Vm::boot("kvm-probe", &o, dir.path()).await {
        Ok(vm) => {
            vm.kill().await;
            true
        }
        Err(_) => false,
    }
}
