//! testfarm as a buildomat factory, server side: the `[buildomat]` config, the [`Lab`]
//! over the store and the scheduler, and target name resolution. The loop itself is
//! `testfarm-buildomat`; the task that runs it is `tasks::buildomat`.
//!
//! [`Lab`]: testfarm_buildomat::lab::Lab

pub mod config;
pub mod lab;
pub mod targets;
