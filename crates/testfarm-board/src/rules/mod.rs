//! Board rules as functions over values, no I/O and no clock: time comes in as the
//! duration since a watch started. So each rule is unit- and property-tested on its own,
//! and could move to `testfarm-core` beside the job and lease rules unchanged.

pub mod boot;
pub mod garbage;
pub mod health;
pub mod quarantine;
pub mod recovery;
