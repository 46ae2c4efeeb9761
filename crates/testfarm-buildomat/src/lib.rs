//! testfarm as a buildomat factory.
//!
//! buildomat (Oxide's CI) hands jobs for a target to whichever factory leases them; a
//! factory creates a worker on the server, provides a machine for it, and starts the
//! buildomat agent there with the worker's bootstrap string. This crate makes testfarm
//! such a factory for boards: the buildomat job runs on a testfarm board, under a
//! testfarm lease, so allocation, cleanup, health and quarantine stay testfarm's.
//!
//! Map of the crate:
//! - [`client`]: typed calls to buildomat-server's `/0/factory/...` API, with errors that
//!   name the call and the cause (unreachable, 401, 5xx, malformed answer).
//! - [`lab`]: the [`lab::Lab`] trait, the testfarm side (find a free board, start an
//!   instance on it, say how it is doing, destroy it), so the loop is tested without a
//!   testfarm server and the server implements it over its own rules.
//! - [`factory`]: one pass of the factory loop, and the loop with backoff.
//!
//! What to do with an instance given the server's view of its worker is a pure rule in
//! [`testfarm_core::factory`].

pub mod client;
pub mod factory;
pub mod lab;
