//! The `groups` table: named label selectors.

use rusqlite::{Row, params};
use testfarm_api::group::Group;

use crate::sql::{exec, get_ts, query_all, query_opt, ts, unique};
use crate::{Result, Store, StoreError, Tx};

fn from_row(row: &Row<'_>) -> Result<Group> {
    Ok(Group {
        name: row.get("name")?,
        selector: row.get("selector")?,
        description: row.get("description")?,
        created_at: get_ts(row, "created_at")?,
    })
}

impl Store {
    pub async fn list_groups(&self) -> Result<Vec<Group>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT name, selector, description, created_at FROM groups ORDER BY name",
                [],
                from_row,
            )
        })
    }

    pub async fn get_group(&self, name: &str) -> Result<Group> {
        self.read(|c| {
            query_opt(
                c,
                "SELECT name, selector, description, created_at FROM groups WHERE name = ?",
                [name],
                from_row,
            )
        })?
        .ok_or_else(|| StoreError::NotFound {
            what: "group",
            name: name.to_string(),
        })
    }
}

impl Tx {
    pub async fn insert_group(&mut self, g: &Group) -> Result<()> {
        let res = exec(
            self.conn(),
            "INSERT INTO groups (name, selector, description, created_at) VALUES (?, ?, ?, ?)",
            params![g.name, g.selector, g.description, ts(g.created_at)],
        );
        unique(res, "group", &g.name)
    }

    pub async fn delete_group(&mut self, name: &str) -> Result<()> {
        if exec(self.conn(), "DELETE FROM groups WHERE name = ?", [name])? == 0 {
            return Err(StoreError::NotFound {
                what: "group",
                name: name.to_string(),
            });
        }
        Ok(())
    }
}
