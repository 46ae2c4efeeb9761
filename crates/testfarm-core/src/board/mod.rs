//! Board rules as functions over values, no I/O and no clock: time comes in as the
//! duration since a watch started. So each rule is unit- and property-tested on its own.
//! The agent's drivers (`testfarm-board`) feed them console lines and probe output; the
//! server applies the quarantine rules to what agents report.

pub mod boot;
pub mod garbage;
pub mod health;
pub mod liveness;
pub mod quarantine;
pub mod recovery;
