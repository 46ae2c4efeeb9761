//! One module per subcommand. Each exposes `Args` (clap) and a `run` returning the exit code.

pub mod agent;
pub mod alerts;
pub mod artifacts;
pub mod bench;
pub mod board;
pub mod buildomat;
pub mod builds;
pub mod console;
pub mod demo;
pub mod demo_pipeline;
pub mod events;
pub mod group;
pub mod init;
pub mod job;
pub mod lease;
pub mod pipeline;
pub mod policy;
pub mod prove;
pub mod resource;
pub mod server;
pub mod sim_board;
pub mod tap;
pub mod token;
pub mod vmtest;
