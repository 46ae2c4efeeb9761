//! testfarm-api (work in progress)
