//! testfarm-store (work in progress)
