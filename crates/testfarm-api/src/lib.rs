//! testfarm-api: the types that travel between server, agents and clients, so all three
//! agree on one definition. Domain values (resources, roles, labels) are the core's own
//! types, re-exported; this crate adds requests, responses, pages and problems.
//!
//! Every type here derives `utoipa::ToSchema` so the OpenAPI document is generated from
//! the same definitions the code uses.

pub mod agent;
pub mod alert;
pub mod artifact;
pub mod board;
pub mod build;
pub mod event;
pub mod group;
pub mod job;
pub mod lease;
pub mod page;
pub mod pipeline;
pub mod problem;
pub mod resource;
pub mod token;

pub use event::Event;
pub use page::Page;
pub use problem::Problem;

/// The prefix every versioned route lives under.
pub const API_PREFIX: &str = "/api/v1";
