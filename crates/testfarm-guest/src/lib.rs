//! testfarm-guest (work in progress)
