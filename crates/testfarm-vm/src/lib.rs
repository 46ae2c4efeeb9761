//! testfarm-vm: QEMU test pods. Command lines ([`qemu_cmd`]), overlays ([`overlay`]),
//! private runtime directories ([`runtime_dir`]), the QEMU process guard ([`process`]),
//! QMP ([`qmp`]), the host side of the guest protocol ([`agent`]), one VM ([`vm`]), the
//! default guest image ([`image`]), an agent job's VM ([`job_vm`]), and the pod that runs a test tree across N VMs ([`pod`]).
//!
//! Used by `testfarm vmtest` (standalone, on a laptop) and meant for the agent's `qemu-host`
//! work, so nothing here prints or reads flags: it takes configs and returns values.

pub mod accel;
pub mod agent;
pub mod config;
mod cpio;
pub mod discover;
pub mod error;
pub mod guest_build;
pub mod image;
pub mod job_vm;
pub mod overlay;
pub mod pod;
pub mod process;
pub mod qemu_cmd;
pub mod qmp;
pub mod report;
pub mod runtime_dir;
pub mod vm;
pub mod warm;

pub use error::{Result, VmError};
