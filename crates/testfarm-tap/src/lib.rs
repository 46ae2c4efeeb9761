//! testfarm-tap (work in progress)
