//! Finding the virtio-serial port. udev makes `/dev/virtio-ports/<name>` links; a busybox
//! initramfs has no udev, so the name is also looked up in sysfs, and the reference design's
//! `/dev/vport0p1` style nodes are the last resort.

use std::fs;
use std::path::{Path, PathBuf};

pub fn find_port(name: &str) -> Option<PathBuf> {
    let link = Path::new("/dev/virtio-ports").join(name);
    if link.exists() {
        return Some(link);
    }
    if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
        for e in entries.flatten() {
            let port_name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
            if port_name.trim() == name {
                let dev = Path::new("/dev").join(e.file_name());
                if dev.exists() {
                    return Some(dev);
                }
            }
        }
    }
    (0..4)
        .map(|i| PathBuf::from(format!("/dev/vport{i}p1")))
        .find(|p| p.exists())
}
