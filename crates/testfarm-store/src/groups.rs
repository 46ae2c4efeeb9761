//! The `groups` table: named label selectors.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use testfarm_api::group::Group;

use crate::{Result, Store, StoreError, Tx, is_unique_violation};

fn from_row(row: &SqliteRow) -> Result<Group> {
    Ok(Group {
        name: row.try_get("name")?,
        selector: row.try_get("selector")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    pub async fn list_groups(&self) -> Result<Vec<Group>> {
        let rows =
            sqlx::query("SELECT name, selector, description, created_at FROM groups ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_group(&self, name: &str) -> Result<Group> {
        let row = sqlx::query(
            "SELECT name, selector, description, created_at FROM groups WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "group",
            name: name.to_string(),
        })?;
        from_row(&row)
    }
}

impl Tx {
    pub async fn insert_group(&mut self, g: &Group) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO groups (name, selector, description, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&g.name)
        .bind(&g.selector)
        .bind(&g.description)
        .bind(g.created_at)
        .execute(self.conn())
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate {
                what: "group",
                name: g.name.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_group(&mut self, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM groups WHERE name = ?")
            .bind(name)
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "group",
                name: name.to_string(),
            });
        }
        Ok(())
    }
}
