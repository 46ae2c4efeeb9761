//! testfarm-guest: the agent that runs inside a test VM, and the wire protocol it speaks.
//!
//! The protocol lives here (not in `testfarm-vm`) so that both ends share one encoder and one
//! decoder: the host side (`testfarm-vm`) depends on this crate's [`protocol`] module, the
//! guest binary uses [`agent`]. The crate stays small and synchronous (threads, no async
//! runtime) so the binary links statically into a busybox initramfs.
//!
//! See `docs/guest-protocol.md` for the protocol: version 1 is the line protocol of the
//! reference design (`HELLO AGENT_v1`, `PING`, `EXEC`, `TEST`, `SHELL`, `EXIT`), version 2 is
//! a framed protocol negotiated after the v1 hello with `UPGRADE v2`.

pub mod agent;
pub mod protocol;
