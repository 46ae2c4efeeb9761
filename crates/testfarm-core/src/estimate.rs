//! How long a job will take, from the durations of similar finished jobs.
//!
//! "Similar" is the same job name (the same CI job run again), else the same kind of
//! resource. The estimate is the median of the last N durations: medians ignore the one
//! run that hung for an hour, and the last N follow a suite that grew. Used for `why`'s
//! estimated start and for preferring the build server that finishes a build soonest.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::resource::ResourceKind;

/// Default number of recent runs an estimate looks at.
pub const DEFAULT_LAST_N: usize = 20;

/// One finished job's run time, oldest first in the slice given to [`Estimator::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ResourceKind>,
    /// Where it ran, when it ran on a resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Ulid>,
    pub duration: Duration,
}

/// What an estimate was based on, for the words in `why`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "basis", rename_all = "snake_case")]
pub enum Basis {
    /// Median of the last `runs` runs of a job with the same name.
    SameName { runs: usize },
    /// Median of the last `runs` jobs on the same kind of resource.
    SameKind { runs: usize },
    /// No history: the job's own timeout, an upper bound.
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub duration: Duration,
    pub runs: usize,
}

/// Medians of the last N runs, grouped once so each question is a map lookup.
#[derive(Debug, Clone, Default)]
pub struct Estimator {
    by_name: HashMap<String, Estimate>,
    by_kind: HashMap<Option<ResourceKind>, Estimate>,
    by_name_on: HashMap<(String, Ulid), Estimate>,
}

fn median_of_last(mut durations: Vec<Duration>, n: usize) -> Estimate {
    let start = durations.len().saturating_sub(n.max(1));
    let mut last: Vec<Duration> = durations.split_off(start);
    last.sort_unstable();
    let runs = last.len();
    let duration = if runs == 0 {
        Duration::ZERO
    } else if runs % 2 == 1 {
        last[runs / 2]
    } else {
        (last[runs / 2 - 1] + last[runs / 2]) / 2
    };
    Estimate { duration, runs }
}

impl Estimator {
    /// Groups `history` (oldest first) and keeps the median of the last `last_n` per group.
    pub fn new(history: &[HistoryEntry], last_n: usize) -> Self {
        let mut by_name: HashMap<String, Vec<Duration>> = HashMap::new();
        let mut by_kind: HashMap<Option<ResourceKind>, Vec<Duration>> = HashMap::new();
        let mut by_name_on: HashMap<(String, Ulid), Vec<Duration>> = HashMap::new();
        for h in history {
            by_name.entry(h.name.clone()).or_default().push(h.duration);
            by_kind.entry(h.kind).or_default().push(h.duration);
            if let Some(r) = h.resource {
                by_name_on
                    .entry((h.name.clone(), r))
                    .or_default()
                    .push(h.duration);
            }
        }
        Estimator {
            by_name: by_name
                .into_iter()
                .map(|(k, v)| (k, median_of_last(v, last_n)))
                .collect(),
            by_kind: by_kind
                .into_iter()
                .map(|(k, v)| (k, median_of_last(v, last_n)))
                .collect(),
            by_name_on: by_name_on
                .into_iter()
                .map(|(k, v)| (k, median_of_last(v, last_n)))
                .collect(),
        }
    }

    /// Same name, else same kind; `timeout` as the last resort.
    pub fn estimate(
        &self,
        name: &str,
        kind: Option<ResourceKind>,
        timeout: Option<Duration>,
    ) -> Option<(Duration, Basis)> {
        if let Some(e) = self.by_name.get(name) {
            return Some((e.duration, Basis::SameName { runs: e.runs }));
        }
        if let Some(e) = self.by_kind.get(&kind) {
            return Some((e.duration, Basis::SameKind { runs: e.runs }));
        }
        timeout.map(|t| (t, Basis::Timeout))
    }

    /// How long a job of this name took on this resource, when it ran there before.
    pub fn estimate_on(&self, name: &str, resource: Ulid) -> Option<Duration> {
        self.by_name_on
            .get(&(name.to_string(), resource))
            .map(|e| e.duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, kind: ResourceKind, secs: u64) -> HistoryEntry {
        HistoryEntry {
            name: name.into(),
            kind: Some(kind),
            resource: None,
            duration: Duration::from_secs(secs),
        }
    }

    #[test]
    fn median_of_last_n_by_name_then_kind() {
        let hist = vec![
            h("build", ResourceKind::BuildServer, 1000), // outside the last 3
            h("build", ResourceKind::BuildServer, 10),
            h("build", ResourceKind::BuildServer, 30),
            h("build", ResourceKind::BuildServer, 20),
            h("smoke", ResourceKind::Board, 100),
            h("boot", ResourceKind::Board, 300),
        ];
        let e = Estimator::new(&hist, 3);
        assert_eq!(
            e.estimate("build", None, None),
            Some((Duration::from_secs(20), Basis::SameName { runs: 3 }))
        );
        assert_eq!(
            e.estimate("new", Some(ResourceKind::Board), None),
            Some((Duration::from_secs(200), Basis::SameKind { runs: 2 }))
        );
        assert_eq!(
            e.estimate(
                "new",
                Some(ResourceKind::QemuHost),
                Some(Duration::from_secs(9))
            ),
            Some((Duration::from_secs(9), Basis::Timeout))
        );
        assert_eq!(e.estimate("new", Some(ResourceKind::QemuHost), None), None);
    }

    #[test]
    fn per_resource() {
        let r = Ulid::from_parts(1, 1);
        let mut a = h("build", ResourceKind::BuildServer, 50);
        a.resource = Some(r);
        let e = Estimator::new(&[a], DEFAULT_LAST_N);
        assert_eq!(e.estimate_on("build", r), Some(Duration::from_secs(50)));
        assert_eq!(e.estimate_on("build", Ulid::nil()), None);
    }
}
