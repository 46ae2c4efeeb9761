//! The QEMU command line of one pod VM, as a pure function so it can be checked without
//! starting anything (and printed for a user who wants to reproduce a VM by hand).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::{Arch, ResolvedAccel, VmConfig};
use testfarm_guest::protocol::SHARE_TAG;

/// Where one VM's sockets and files live (all inside its private runtime directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    pub dir: PathBuf,
    pub agent_sock: PathBuf,
    pub qmp_sock: PathBuf,
    pub console_sock: PathBuf,
    pub console_log: PathBuf,
    pub qemu_log: PathBuf,
    pub overlay: PathBuf,
}

impl VmPaths {
    /// Short file names: unix socket paths are limited to 107 bytes.
    pub fn in_dir(dir: &Path) -> VmPaths {
        VmPaths {
            dir: dir.to_path_buf(),
            agent_sock: dir.join("agent.sock"),
            qmp_sock: dir.join("qmp.sock"),
            console_sock: dir.join("con.sock"),
            console_log: dir.join("console.log"),
            qemu_log: dir.join("qemu.log"),
            overlay: dir.join("overlay.qcow2"),
        }
    }
}

/// Kernel arguments testfarm always passes: the serial console (whose log we keep), and
/// `panic=-1` so a guest kernel panic reboots at once, which `-no-reboot` turns into QEMU
/// exiting: a crashed guest is noticed immediately instead of at the next timeout.
pub fn kernel_args(cfg: &VmConfig) -> String {
    let console = match cfg.arch {
        Arch::X86_64 => "ttyS0",
        Arch::Aarch64 => "ttyAMA0",
    };
    let mut s = format!("console={console} panic=-1 quiet");
    if cfg.rootfs.is_some() && !cfg.append.contains("root=") {
        s.push_str(" root=/dev/vda");
    }
    if !cfg.append.trim().is_empty() {
        s.push(' ');
        s.push_str(cfg.append.trim());
    }
    s
}

fn path_arg(prefix: &str, p: &Path, suffix: &str) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(p.as_os_str());
    s.push(suffix);
    s
}

/// The full argv, program first.
pub fn qemu_argv(cfg: &VmConfig, accel: ResolvedAccel, paths: &VmPaths) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    push(cfg.arch.qemu_binary());
    match (cfg.arch, accel) {
        (Arch::X86_64, _) => {
            push("-machine");
            push(&format!("q35,accel={}", accel.name()));
            push("-cpu");
            push(if accel == ResolvedAccel::Kvm {
                "host"
            } else {
                "max"
            });
        }
        (Arch::Aarch64, _) => {
            push("-machine");
            push(&format!("virt,accel={}", accel.name()));
            push("-cpu");
            push(if accel == ResolvedAccel::Kvm {
                "host"
            } else {
                "cortex-a57"
            });
        }
    }
    push("-m");
    push(&cfg.memory_mb.to_string());
    push("-smp");
    push(&cfg.cpus.to_string());
    for s in [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ] {
        push(s);
    }
    a.push("-kernel".into());
    a.push(cfg.kernel.clone().into());
    if let Some(initrd) = &cfg.initrd {
        a.push("-initrd".into());
        a.push(initrd.clone().into());
    }
    a.push("-append".into());
    a.push(kernel_args(cfg).into());
    a.push("-chardev".into());
    let mut con = path_arg(
        "socket,id=con0,server=on,wait=off,path=",
        &paths.console_sock,
        "",
    );
    con.push(",logfile=");
    con.push(paths.console_log.as_os_str());
    a.push(con);
    a.push("-serial".into());
    a.push("chardev:con0".into());
    a.push("-qmp".into());
    a.push(path_arg("unix:", &paths.qmp_sock, ",server=on,wait=off"));
    a.push("-device".into());
    a.push("virtio-serial-pci,id=vser0".into());
    a.push("-chardev".into());
    a.push(path_arg(
        "socket,id=agent0,server=on,wait=off,path=",
        &paths.agent_sock,
        "",
    ));
    a.push("-device".into());
    a.push(
        format!(
            "virtserialport,bus=vser0.0,chardev=agent0,name={}",
            cfg.port_name
        )
        .into(),
    );
    if cfg.rootfs.is_some() {
        a.push("-drive".into());
        a.push(path_arg("if=virtio,format=qcow2,file=", &paths.overlay, ""));
    }
    if let Some(share) = &cfg.share {
        a.push("-virtfs".into());
        a.push(path_arg(
            "local,path=",
            share,
            &format!(",mount_tag={SHARE_TAG},security_model=none,readonly=on,id=share0"),
        ));
    }
    a.extend(cfg.extra_args.iter().map(OsString::from));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn x86_tcg_command_line() {
        let mut cfg = VmConfig::new("/k".into(), Some("/i".into()));
        cfg.share = Some("/proj".into());
        cfg.append = "foo=1".into();
        let argv = strs(&qemu_argv(
            &cfg,
            ResolvedAccel::Tcg,
            &VmPaths::in_dir(Path::new("/r/vm-1")),
        ));
        let line = argv.join(" ");
        assert_eq!(argv[0], "qemu-system-x86_64");
        assert!(line.contains("-machine q35,accel=tcg"), "{line}");
        assert!(line.contains("-no-reboot"));
        assert!(line.contains("console=ttyS0 panic=-1 quiet foo=1"));
        assert!(line.contains("path=/r/vm-1/agent.sock"));
        assert!(line.contains("name=testfarm.agent"));
        assert!(line.contains("logfile=/r/vm-1/console.log"));
        assert!(line.contains("local,path=/proj,mount_tag=host_share"));
        assert!(!line.contains("overlay.qcow2"));
    }

    #[test]
    fn aarch64_uses_virt_machine() {
        let mut cfg = VmConfig::new("/k".into(), None);
        cfg.arch = Arch::Aarch64;
        cfg.rootfs = Some("/root.qcow2".into());
        let argv = strs(&qemu_argv(
            &cfg,
            ResolvedAccel::Tcg,
            &VmPaths::in_dir(Path::new("/r")),
        ));
        let line = argv.join(" ");
        assert_eq!(argv[0], "qemu-system-aarch64");
        assert!(
            line.contains("-machine virt,accel=tcg -cpu cortex-a57"),
            "{line}"
        );
        assert!(line.contains("console=ttyAMA0"));
        assert!(line.contains("root=/dev/vda"));
        assert!(line.contains("file=/r/overlay.qcow2"));
    }
}
