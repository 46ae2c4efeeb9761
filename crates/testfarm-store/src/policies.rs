//! The `policies` table: admin-managed scheduling policies.

use chrono::{DateTime, Utc};
use sqlx::Row;
use testfarm_core::policy::{Policy, PolicyRule};

use crate::{Result, Store, StoreError, Tx, from_json, is_unique_violation, to_json};

impl Store {
    pub async fn list_policies(&self) -> Result<Vec<Policy>> {
        let rows =
            sqlx::query("SELECT name, priority, rule FROM policies ORDER BY priority DESC, name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let prio: i64 = r.try_get("priority")?;
                Ok(Policy {
                    name: r.try_get("name")?,
                    priority: i32::try_from(prio).unwrap_or(0),
                    rule: from_json::<PolicyRule>("policy rule", r.try_get("rule")?)?,
                })
            })
            .collect()
    }
}

impl Tx {
    pub async fn insert_policy(&mut self, p: &Policy, now: DateTime<Utc>) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO policies (name, priority, rule, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&p.name)
        .bind(i64::from(p.priority))
        .bind(to_json(&p.rule))
        .bind(now)
        .execute(self.conn())
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate {
                what: "policy",
                name: p.name.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_policy(&mut self, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM policies WHERE name = ?")
            .bind(name)
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "policy",
                name: name.to_string(),
            });
        }
        Ok(())
    }
}
