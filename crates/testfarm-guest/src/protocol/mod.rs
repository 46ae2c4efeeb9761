//! Wire protocol between the host (`testfarm-vm`) and the guest agent.
//!
//! A session always starts in version 1 (line based, see [`v1`]): the guest says
//! [`v1::HELLO`]. A host that knows version 2 then sends [`v1::UPGRADE_REQUEST`]; a guest that
//! knows it answers [`v1::UPGRADE_ACCEPTED`] and from the next byte on both sides speak framed
//! version 2 ([`v2`]). A host written to the v1 table never sends the upgrade line, so it keeps
//! the v1 behaviour; a v1-only guest answers something else, so our host stays on v1.

pub mod v1;
pub mod v2;

/// Name of the virtio-serial port (`virtserialport,name=…`) the agent looks for.
pub const DEFAULT_PORT_NAME: &str = "testfarm.agent";

/// Where the host's project tree is mounted in the guest (virtfs tag [`SHARE_TAG`]).
pub const DEFAULT_SHARE_DIR: &str = "/mnt/host";

/// virtfs mount tag of the shared project tree.
pub const SHARE_TAG: &str = "host_share";
