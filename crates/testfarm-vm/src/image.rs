//! The default guest image, built from what Debian packages put on the host: the kernel of
//! `linux-image-*` (`/boot/vmlinuz-*`), its virtio and 9p modules, `busybox-static`, and the
//! static `testfarm-guest`, packed into an initramfs. No download, and content-addressed:
//! the image id is a hash of every input, so a changed kernel or agent is a new image (and a
//! warm pod of the old one is not reused).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cpio::CpioWriter;
use crate::error::{Result, VmError};

/// Modules the agent needs, in load order (dependencies first). Missing ones are skipped:
/// they may be built into the kernel.
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_console",
    "virtio_blk",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// Everything an image is built from.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    pub kernel: PathBuf,
    /// `/lib/modules/<release>`
    pub modules_dir: PathBuf,
    pub busybox: PathBuf,
    pub guest: PathBuf,
}

/// A built image: the files QEMU boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Where built images are kept: `$XDG_CACHE_HOME/testfarm/images` or `~/.cache/...`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("testfarm/images")
}

/// The newest `/boot/vmlinuz-*` that has a matching `/lib/modules/<release>`; the running
/// kernel's release first.
pub fn find_kernel() -> Result<(PathBuf, PathBuf)> {
    let running = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut candidates: Vec<String> = std::fs::read_dir("/boot")
        .map_err(|e| VmError::io("listing /boot", e))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .collect();
    candidates.sort();
    candidates.reverse();
    if let Some(i) = candidates.iter().position(|r| r == running.trim()) {
        let r = candidates.remove(i);
        candidates.insert(0, r);
    }
    for release in candidates {
        let kernel = PathBuf::from(format!("/boot/vmlinuz-{release}"));
        let modules = PathBuf::from(format!("/lib/modules/{release}"));
        if modules.join("modules.dep").is_file() && std::fs::File::open(&kernel).is_ok() {
            return Ok((kernel, modules));
        }
    }
    Err(VmError::Config(
        "no readable /boot/vmlinuz-* with /lib/modules: install linux-image-amd64".into(),
    ))
}

pub fn find_busybox() -> Result<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| crate::guest_build::is_static(p))
        .ok_or_else(|| VmError::Config("no static busybox: install busybox-static".into()))
}

/// Inputs from the host's packages and the given guest binary.
pub fn host_inputs(guest: PathBuf) -> Result<ImageInputs> {
    let (kernel, modules_dir) = find_kernel()?;
    Ok(ImageInputs {
        kernel,
        modules_dir,
        busybox: find_busybox()?,
        guest,
    })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| VmError::io(format!("reading {}", path.display()), e))
}

/// The module file for `name`, from `modules.dep` (decompressed if `.xz`/`.zst`).
fn module_bytes(modules_dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let dep = std::fs::read_to_string(modules_dir.join("modules.dep"))
        .map_err(|e| VmError::io("reading modules.dep", e))?;
    let alt = name.replace('_', "-");
    let rel = dep.lines().filter_map(|l| l.split(':').next()).find(|p| {
        let file = p.rsplit('/').next().unwrap_or(p);
        let stem = file.split(".ko").next().unwrap_or(file);
        stem == name || stem == alt
    });
    let Some(rel) = rel else {
        return Ok(None);
    };
    let path = modules_dir.join(rel);
    let tool = if rel.ends_with(".ko.xz") {
        Some("xz")
    } else if rel.ends_with(".ko.zst") {
        Some("zstd")
    } else if rel.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => read(&path).map(Some),
        Some(tool) => {
            let out = std::process::Command::new(tool)
                .arg("-dc")
                .arg(&path)
                .output()
                .map_err(|e| VmError::io(format!("running {tool} to decompress {rel}"), e))?;
            if !out.status.success() {
                return Err(VmError::Tool {
                    program: tool.into(),
                    message: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            Ok(Some(out.stdout))
        }
    }
}

/// PID 1 of the guest: mount the basics, load the modules, mount the share, then keep the
/// agent running. Staying a shell (not exec'ing the agent) means orphans get reaped and a
/// crashed agent restarts; if PID 1 itself dies the kernel panics and QEMU exits.
const INIT: &str = r#"#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
for m in $(cat /etc/testfarm/modules); do insmod /lib/modules/$m.ko 2>/dev/null; done
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
if grep -qs host_share /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag; then
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 host_share /mnt/host
fi
ip link set lo up 2>/dev/null
hostname testfarm-guest
while :; do /sbin/testfarm-guest; sleep 1; done
"#;

/// PID 1 of a QEMU machine used as a *board* (the `qemu` power, console and flash drivers
/// of `testfarm-board`): like a device, it prints what its "firmware" is — the first line
/// of its disk `/dev/vda`, which the `qemu` flash driver overwrites — then offers a
/// `login:` on the serial console and a shell to whoever logs in.
const BOARD_INIT: &str = r#"#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for m in $(cat /etc/testfarm/modules); do insmod /lib/modules/$m.ko 2>/dev/null; done
hostname qemu-board
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo "testfarm qemu board: firmware $(head -c 256 /dev/vda 2>/dev/null | tr -d '\000' | head -n 1)"
export PS1='root@qemu-board:~# '
while :; do
  printf 'qemu-board login: '
  read -r user || sleep 1
  [ -n "$user" ] && sh -i
done
"#;

/// `--isolate test`: runs "$@" in its own cgroup (killed whole at the end) and a private
/// mount namespace whose / is an overlay of the real root with a fresh tmpfs on top, so every
/// write the test makes disappears with it.
const ISOLATE: &str = r#"#!/bin/sh
# Clean up after isolated tests whose helper was killed (timeout): their cgroups may hold
# escaped processes.
for old in /sys/fs/cgroup/testfarm-*; do
  [ -d "$old" ] || continue
  kill -0 "${old##*-}" 2>/dev/null && continue
  echo 1 > "$old/cgroup.kill" 2>/dev/null; sleep 0.05; rmdir "$old" 2>/dev/null
done
cg=/sys/fs/cgroup/testfarm-$$
mkdir "$cg" 2>/dev/null || cg=
TF_CG="$cg" unshare -m /bin/sh -c '
  [ -n "$TF_CG" ] && echo $$ > "$TF_CG/cgroup.procs"
  set -e
  w=/run/isolate-$$; mkdir -p $w; mount -t tmpfs tmpfs $w
  mkdir -p $w/upper $w/work $w/root
  mount -t overlay overlay -o lowerdir=/,upperdir=$w/upper,workdir=$w/work $w/root
  for d in proc sys dev mnt/host; do [ -d /$d ] && mount --rbind /$d $w/root/$d; done
  mount -t tmpfs tmpfs $w/root/tmp
  mount -t tmpfs tmpfs $w/root/run
  exec chroot $w/root /bin/sh -c "cd \"\$0\" 2>/dev/null || cd /; exec \"\$@\"" "$PWD" "$@"
' testfarm-isolate "$@" &
child=$!
trap 'kill -9 $child 2>/dev/null' TERM INT
wait $child
rc=$?
if [ -n "$cg" ]; then
  echo 1 > "$cg/cgroup.kill" 2>/dev/null
  i=0
  while [ -n "$(cat "$cg/cgroup.procs" 2>/dev/null)" ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i+1)); done
  rmdir "$cg" 2>/dev/null
fi
exit $rc
"#;

/// Builds (or finds in `cache_dir`) the image for `inputs`.
pub fn build(inputs: &ImageInputs, cache_dir: &Path) -> Result<Image> {
    build_with(inputs, INIT, cache_dir)
}

/// The image of a QEMU machine that stands in for a board (see [`BOARD_INIT`]): same
/// kernel, modules and busybox, a device-like init instead of the guest agent.
pub fn build_board(inputs: &ImageInputs, cache_dir: &Path) -> Result<Image> {
    build_with(inputs, BOARD_INIT, cache_dir)
}

fn build_with(inputs: &ImageInputs, init: &str, cache_dir: &Path) -> Result<Image> {
    let kernel = read(&inputs.kernel)?;
    let busybox = read(&inputs.busybox)?;
    let guest = read(&inputs.guest)?;
    let mut modules = Vec::new();
    for m in MODULES {
        if let Some(bytes) = module_bytes(&inputs.modules_dir, m)? {
            modules.push((*m, bytes));
        }
    }
    let mut h = Sha256::new();
    h.update(b"testfarm-image-v1\0");
    for part in [&kernel, &busybox, &guest] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(init.as_bytes());
    h.update(ISOLATE.as_bytes());
    for (name, bytes) in &modules {
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let id: String = h
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache_dir.join(&id);
    let image = Image {
        id: id.clone(),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    if image.kernel.is_file() && image.initrd.is_file() {
        return Ok(image);
    }
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| VmError::io(format!("creating {}", cache_dir.display()), e))?;
    // Build next to the final place and rename: concurrent builders never see half an image.
    let tmp = tempfile::Builder::new()
        .prefix(".building-")
        .tempdir_in(cache_dir)
        .map_err(|e| VmError::io("creating a build directory", e))?;
    let io = |e| VmError::io("writing the initramfs", e);
    let file = std::fs::File::create(tmp.path().join("initrd.img")).map_err(io)?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(file));
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "etc",
        "etc/testfarm",
        "lib",
        "lib/modules",
        "mnt",
        "mnt/host",
        "usr",
        "usr/bin",
        "usr/sbin",
        "var",
    ] {
        w.dir(d).map_err(io)?;
    }
    w.file("init", 0o755, init.as_bytes()).map_err(io)?;
    w.file("sbin/testfarm-isolate", 0o755, ISOLATE.as_bytes())
        .map_err(io)?;
    w.file("bin/busybox", 0o755, &busybox).map_err(io)?;
    w.file("sbin/testfarm-guest", 0o755, &guest).map_err(io)?;
    w.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .map_err(io)?;
    w.file("etc/group", 0o644, b"root:x:0:\n").map_err(io)?;
    let names: Vec<&str> = modules.iter().map(|(n, _)| *n).collect();
    w.file(
        "etc/testfarm/modules",
        0o644,
        (names.join("\n") + "\n").as_bytes(),
    )
    .map_err(io)?;
    for (name, bytes) in &modules {
        w.file(&format!("lib/modules/{name}.ko"), 0o644, bytes)
            .map_err(io)?;
    }
    for applet in busybox_applets(&inputs.busybox)? {
        if applet != "busybox" && !applet.contains('/') {
            w.symlink(&format!("bin/{applet}"), "busybox").map_err(io)?;
        }
    }
    let mut out = w.finish().map_err(io)?;
    out.flush().map_err(io)?;
    std::fs::write(tmp.path().join("vmlinuz"), &kernel).map_err(io)?;
    let meta = serde_json::json!({
        "id": id,
        "kernel": inputs.kernel,
        "modules": names,
        "busybox": inputs.busybox,
        "guest": inputs.guest,
    });
    std::fs::write(tmp.path().join("image.json"), meta.to_string()).map_err(io)?;
    let built = tmp.keep();
    if let Err(e) = std::fs::rename(&built, &dir) {
        let _ = std::fs::remove_dir_all(&built);
        // Someone else finished the same image first: theirs is identical.
        if !(image.kernel.is_file() && image.initrd.is_file()) {
            return Err(VmError::io(
                format!("moving the image to {}", dir.display()),
                e,
            ));
        }
    }
    Ok(image)
}

fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let out = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| VmError::io("running busybox --list", e))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}
