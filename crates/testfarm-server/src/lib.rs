//! testfarm-server (work in progress)
