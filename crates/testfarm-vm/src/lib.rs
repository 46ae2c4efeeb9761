//! testfarm-vm (work in progress)
