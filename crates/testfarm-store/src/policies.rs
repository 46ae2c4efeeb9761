//! The `policies` table: admin-managed scheduling policies.

use chrono::{DateTime, Utc};
use rusqlite::params;
use testfarm_core::policy::{Policy, PolicyRule};

use crate::sql::{exec, get_json, query_all, to_json, ts, unique};
use crate::{Result, Store, StoreError, Tx};

impl Store {
    pub async fn list_policies(&self) -> Result<Vec<Policy>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT name, priority, rule FROM policies ORDER BY priority DESC, name",
                [],
                |r| {
                    let prio: i64 = r.get("priority")?;
                    Ok(Policy {
                        name: r.get("name")?,
                        priority: i32::try_from(prio).unwrap_or(0),
                        rule: get_json::<PolicyRule>(r, "policy rule", "rule")?,
                    })
                },
            )
        })
    }
}

impl Tx {
    pub async fn insert_policy(&mut self, p: &Policy, now: DateTime<Utc>) -> Result<()> {
        let res = exec(
            self.conn(),
            "INSERT INTO policies (name, priority, rule, created_at) VALUES (?, ?, ?, ?)",
            params![p.name, i64::from(p.priority), to_json(&p.rule), ts(now)],
        );
        unique(res, "policy", &p.name)
    }

    pub async fn delete_policy(&mut self, name: &str) -> Result<()> {
        if exec(self.conn(), "DELETE FROM policies WHERE name = ?", [name])? == 0 {
            return Err(StoreError::NotFound {
                what: "policy",
                name: name.to_string(),
            });
        }
        Ok(())
    }
}
