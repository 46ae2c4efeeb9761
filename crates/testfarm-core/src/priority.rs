//! Job priority and aging.
//!
//! A priority is a number from 0 to 1000; the four named classes sit on round numbers so a
//! spec can say `priority: high` or `priority: 350` and both mean something obvious:
//!
//! | name   | value |
//! |--------|-------|
//! | low    | 100   |
//! | normal | 200   |
//! | high   | 300   |
//! | urgent | 400   |
//!
//! Waiting raises a job's rank ("aging") so that low priority is never starved: the
//! scheduler orders by [`rank`] = priority + 100 × waited / `aging_per_class`. With the
//! default `aging_per_class` of 15 minutes a `low` job that has waited 15 minutes ranks like
//! a fresh `normal` one, and after 45 minutes like a fresh `urgent` one. The bonus has no
//! cap: a cap would bring starvation back for a busy enough lab.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A job's priority, 0 (lowest) to [`Priority::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "schema", schema(value_type = u16, example = 200))]
pub struct Priority(u16);

/// The distance between two named classes; aging adds this much per `aging_per_class`.
pub const CLASS_STEP: u64 = 100;

impl Priority {
    pub const LOW: Priority = Priority(100);
    pub const NORMAL: Priority = Priority(200);
    pub const HIGH: Priority = Priority(300);
    pub const URGENT: Priority = Priority(400);
    pub const MAX: Priority = Priority(1000);

    const NAMES: [(&'static str, Priority); 4] = [
        ("low", Priority::LOW),
        ("normal", Priority::NORMAL),
        ("high", Priority::HIGH),
        ("urgent", Priority::URGENT),
    ];

    /// A priority from a number, refused above [`Priority::MAX`].
    pub fn new(value: u64) -> Result<Priority, BadPriority> {
        u16::try_from(value)
            .ok()
            .filter(|v| *v <= Priority::MAX.0)
            .map(Priority)
            .ok_or_else(|| BadPriority(value.to_string()))
    }

    pub fn value(self) -> u16 {
        self.0
    }

    /// The class name when the value is exactly one of the named classes.
    pub fn name(self) -> Option<&'static str> {
        Priority::NAMES
            .iter()
            .find(|(_, p)| *p == self)
            .map(|(n, _)| *n)
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

/// A priority that is neither a class name nor a number in range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid priority {0:?}: use low, normal, high, urgent, or a number from 0 to 1000")]
pub struct BadPriority(pub String);

impl FromStr for Priority {
    type Err = BadPriority;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some((_, p)) = Priority::NAMES.iter().find(|(n, _)| *n == t) {
            return Ok(*p);
        }
        t.parse::<u64>()
            .ok()
            .and_then(|v| Priority::new(v).ok())
            .ok_or_else(|| BadPriority(s.to_string()))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Written as the class name when it is one, else as the number, so specs round-trip.
impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(n) => s.serialize_str(n),
            None => s.serialize_u16(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Priority;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("low, normal, high, urgent, or a number from 0 to 1000")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Priority, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Priority, E> {
                Priority::new(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Priority, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(BadPriority(v.to_string())))
                    .and_then(|v| Priority::new(v).map_err(E::custom))
            }
        }
        d.deserialize_any(V)
    }
}

/// How fast waiting raises rank: one class ([`CLASS_STEP`]) per `aging_per_class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aging {
    pub per_class: Duration,
}

impl Default for Aging {
    fn default() -> Self {
        Aging {
            per_class: Duration::from_secs(15 * 60),
        }
    }
}

/// The scheduler's ordering key: priority plus the aging bonus. Higher goes first; ties
/// are broken by queue time, then id (FIFO), by the caller.
pub fn rank(priority: Priority, queued_at: DateTime<Utc>, now: DateTime<Utc>, aging: Aging) -> u64 {
    let waited_ms = u64::try_from((now - queued_at).num_milliseconds()).unwrap_or(0);
    let per_class_ms = u64::try_from(aging.per_class.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let bonus = u128::from(waited_ms) * u128::from(CLASS_STEP) / u128::from(per_class_ms);
    u64::from(priority.0).saturating_add(u64::try_from(bonus).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as CD;

    #[test]
    fn names_numbers_and_errors() {
        assert_eq!("high".parse::<Priority>().unwrap(), Priority::HIGH);
        assert_eq!("350".parse::<Priority>().unwrap().value(), 350);
        assert!("1001".parse::<Priority>().is_err());
        assert!("top".parse::<Priority>().is_err());
        assert_eq!(Priority::URGENT.to_string(), "urgent");
        assert_eq!(Priority::new(7).unwrap().to_string(), "7");
        assert_eq!(serde_json::to_string(&Priority::LOW).unwrap(), "\"low\"");
        let p: Priority = serde_json::from_str("250").unwrap();
        assert_eq!(p.value(), 250);
        assert!(serde_json::from_str::<Priority>("-1").is_err());
    }

    #[test]
    fn aging_lifts_low_past_fresh_urgent() {
        let now = Utc::now();
        let a = Aging::default();
        let fresh_urgent = rank(Priority::URGENT, now, now, a);
        let old_low = rank(Priority::LOW, now - CD::minutes(46), now, a);
        assert!(old_low > fresh_urgent);
        let young_low = rank(Priority::LOW, now - CD::minutes(10), now, a);
        assert!(young_low < rank(Priority::NORMAL, now, now, a));
        // A clock that went backwards gives no bonus rather than a panic.
        assert_eq!(rank(Priority::LOW, now + CD::hours(1), now, a), 100);
    }
}
