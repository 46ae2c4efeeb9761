//! testfarm-tap: a streaming TAP 12/13/14 parser, verdicts, and JUnit XML / JSON / human
//! reports. It depends on nothing else of testfarm.
//!
//! - [`Parser`] turns bytes (any chunking) into [`Event`]s with memory bounded by the line,
//!   YAML and nesting caps ([`parser::MAX_LINE`], [`parser::MAX_YAML`],
//!   [`parser::MAX_DEPTH`]), never by the stream length. Invalid UTF-8 is decoded lossily.
//! - [`Document`] keeps a whole stream (the `testfarm tap --format json` shape);
//!   [`verdict::Counter`] only counts, for huge streams.
//! - [`Summary`] is the verdict; each way to fail is a named [`Reason`].
//! - [`report::SuiteRun`] is one script's run; [`junit`], [`json`] and [`summary`] render
//!   lists of them. [`report::Collector`] splits a `TAP_START`/`TAP_END` marked stream.
//!
//! Where the TAP specification is silent, the parser does what node's tap-parser (the
//! reference implementation) does; `docs/tap.md` lists each such choice, and the few
//! places we deliberately differ.

pub mod document;
pub mod event;
pub mod json;
pub mod junit;
mod line;
pub mod parser;
pub mod report;
pub mod summary;
pub mod verdict;
pub mod yaml;

pub use document::{Document, DocumentBuilder};
pub use event::{BailOut, Directive, DirectiveKind, Event, Plan, TestPoint};
pub use parser::{Options, Parser};
pub use verdict::{Counter, Reason, Summary, Tally};
