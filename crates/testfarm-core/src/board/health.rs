//! Reading a health probe: the probe command prints `key=value` lines (`temp_c=61.5`,
//! `power_w=4.2`, `link=up`); numeric values are compared with the board's thresholds.
//! Unknown keys are kept for display, not judged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Past `warn` the board shows a warning; past `degraded` it is degraded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub warn: Option<f64>,
    pub degraded: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthLevel {
    Ok,
    Warning,
    Degraded,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub level: HealthLevel,
    pub values: BTreeMap<String, String>,
    /// One sentence per threshold passed, or per thresholded key the probe did not print.
    pub findings: Vec<String>,
}

pub fn evaluate(thresholds: &BTreeMap<String, Threshold>, probe_output: &str) -> HealthReport {
    let values: BTreeMap<String, String> = probe_output
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect();
    let mut level = HealthLevel::Ok;
    let mut findings = Vec::new();
    for (key, t) in thresholds {
        let Some(raw) = values.get(key) else {
            findings.push(format!("the probe did not report `{key}`"));
            level = level.max(HealthLevel::Warning);
            continue;
        };
        let Ok(v) = raw.parse::<f64>() else {
            findings.push(format!("`{key}` is `{raw}`, not a number"));
            level = level.max(HealthLevel::Warning);
            continue;
        };
        if let Some(d) = t.degraded
            && v >= d
        {
            findings.push(format!(
                "`{key}` is {v}, at or above the degraded threshold {d}"
            ));
            level = level.max(HealthLevel::Degraded);
        } else if let Some(w) = t.warn
            && v >= w
        {
            findings.push(format!(
                "`{key}` is {v}, at or above the warning threshold {w}"
            ));
            level = level.max(HealthLevel::Warning);
        }
    }
    HealthReport {
        level,
        values,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_grade_the_probe() {
        let t = BTreeMap::from([(
            "temp_c".to_string(),
            Threshold {
                warn: Some(70.0),
                degraded: Some(85.0),
            },
        )]);
        assert_eq!(evaluate(&t, "temp_c=61\nlink=up").level, HealthLevel::Ok);
        assert_eq!(evaluate(&t, "temp_c = 71.5").level, HealthLevel::Warning);
        let r = evaluate(&t, "temp_c=90");
        assert_eq!(r.level, HealthLevel::Degraded);
        assert!(r.findings[0].contains("degraded"), "{:?}", r.findings);
        assert_eq!(evaluate(&t, "link=up").level, HealthLevel::Warning);
    }
}
