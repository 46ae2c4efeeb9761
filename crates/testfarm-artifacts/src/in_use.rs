//! Which blobs are being read right now. A download holds an [`InUseGuard`] for as long
//! as its response streams; retention skips a held blob and deletes it on a later pass.
//! (On a local file system an open file survives its deletion anyway; an object store's
//! ranged reads do not, and a registry keeps both backends honest.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::Digest;

/// The registry; cheap to clone, shared by every request.
#[derive(Debug, Clone, Default)]
pub struct InUse {
    held: Arc<Mutex<HashMap<Digest, usize>>>,
}

impl InUse {
    /// Marks `digest` as being read until the guard is dropped.
    pub fn hold(&self, digest: Digest) -> InUseGuard {
        *self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(digest)
            .or_insert(0) += 1;
        InUseGuard {
            registry: self.clone(),
            digest,
        }
    }

    pub fn is_held(&self, digest: &Digest) -> bool {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(digest)
    }

    /// How many reads are open (for metrics and tests).
    pub fn open_reads(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }
}

/// One open read of a blob.
#[derive(Debug)]
pub struct InUseGuard {
    registry: InUse,
    digest: Digest,
}

impl Drop for InUseGuard {
    fn drop(&mut self) {
        let mut held = self
            .registry
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.digest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_the_last_guard_goes() {
        let reg = InUse::default();
        let d = Digest::of(b"x");
        let a = reg.hold(d);
        let b = reg.hold(d);
        assert!(reg.is_held(&d));
        assert_eq!(reg.open_reads(), 2);
        drop(a);
        assert!(reg.is_held(&d));
        drop(b);
        assert!(!reg.is_held(&d));
        assert_eq!(reg.open_reads(), 0);
    }
}
