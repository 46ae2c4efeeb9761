//! Ids of the records the server creates (resources, jobs, leases).
//!
//! ULIDs sort by creation time to the millisecond, and lists are ordered (and paged) by
//! id. Plain `Ulid::new()` makes ids created in the same millisecond sort at random, so
//! two boards registered together listed in either order. One process-wide monotonic
//! generator makes the order exactly the order of creation.

use std::sync::{LazyLock, Mutex, PoisonError};

use ulid::{Generator, Ulid};

static GENERATOR: LazyLock<Mutex<Generator>> = LazyLock::new(|| Mutex::new(Generator::new()));

/// A new id, greater than every id this process made before.
pub fn next() -> Ulid {
    let mut g = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    // The only error is 2^80 ids within one millisecond; a random one will do then.
    g.generate().unwrap_or_else(|_| Ulid::new())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_made_back_to_back_are_in_creation_order() {
        let ids: Vec<_> = (0..10_000).map(|_| super::next()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
