//! testfarm-agent: the `testfarm agent` process, and the server's built-in local agent.
//!
//! An agent registers the resources it manages (this host as a build server or QEMU host,
//! boards wired to it, remote hosts over SSH) with capabilities it measured, heartbeats
//! with their load, long-polls for work, runs it, ships its log in numbered chunks, and
//! renews each job's lease while it works. Agents pull; the server never dials one.
//!
//! Map of the crate:
//! - [`config`]: `agent.toml`, strict, with line/column errors.
//! - [`detect`]: capabilities, measured (CPU, memory, disk, KVM, QEMU, toolchains, libvirt).
//! - [`metrics`]: load for heartbeats (CPU/memory/disk use, running compilations).
//! - [`client`]: the protocol client (`testfarm_api::agent`), 409 as a typed stale epoch.
//! - [`control`]: run / cancel / drop, the one signal a running job obeys.
//! - [`logs`]: log shipping in numbered chunks, retried, never lost or doubled.
//! - [`shell`]: one process group per step: spawn, pipe to the log, timeout, kill.
//! - [`upload`]: `upload` steps' globs and file listing.
//! - [`executor`]: one job: work directory, steps, `always`, outcomes.
//! - [`vm_steps`]: deploy, boot and `via: guest` steps on a qemu-host (VMs through testfarm-vm).
//! - [`board`]: boards with drivers: verification, board jobs, board actions, health.
//! - [`detect_boards`]: serial devices and switchable USB hubs, proposed `[[board]]`s.
//! - [`ssh`]: remote hosts through the system OpenSSH client, with precise errors.
//! - [`agent`]: the loop tying them together: [`run`].

pub mod agent;
pub mod board;
pub mod build;
pub mod client;
pub mod config;
pub mod control;
pub mod detect;
pub mod detect_boards;
pub mod executor;
pub mod logs;
pub mod metrics;
pub mod process_usage;
pub mod shell;
pub mod ssh;
pub mod upload;
pub mod vm_steps;

pub use agent::{AgentError, run};
pub use config::AgentConfig;
