//! testfarm-core (work in progress)
