//! The `resources` table.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use testfarm_core::resource::{Resource, ResourceKind, ResourceState};
use ulid::Ulid;

use crate::{Result, Store, StoreError, Tx, from_json, is_unique_violation, to_json};

macro_rules! resource_columns {
    () => {
        "id, name, kind, labels, capabilities, board, state, health, maintenance, \
                       retired_reason, agent, created_at, updated_at, last_seen"
    };
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: "resource",
        detail: detail.to_string(),
    }
}

fn from_row(row: &SqliteRow) -> Result<Resource> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let board: Option<String> = row.try_get("board")?;
    let maintenance: Option<String> = row.try_get("maintenance")?;
    Ok(Resource {
        id: Ulid::from_string(&id).map_err(corrupt)?,
        name: row.try_get("name")?,
        kind: kind.parse::<ResourceKind>().map_err(corrupt)?,
        labels: from_json("resource labels", row.try_get("labels")?)?,
        capabilities: from_json("resource capabilities", row.try_get("capabilities")?)?,
        board: board.map(|b| from_json("resource board", &b)).transpose()?,
        state: state.parse::<ResourceState>().map_err(corrupt)?,
        health: from_json("resource health", row.try_get("health")?)?,
        maintenance: maintenance
            .map(|m| from_json("resource maintenance", &m))
            .transpose()?,
        retired_reason: row.try_get("retired_reason")?,
        agent: row.try_get("agent")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_seen: row.try_get("last_seen")?,
    })
}

/// Filters applied in SQL; label selectors are applied by the caller with the core's rules.
#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    pub kind: Option<ResourceKind>,
    pub state: Option<ResourceState>,
    /// Only resources with an id greater than this (cursor paging).
    pub after: Option<Ulid>,
}

async fn fetch_by_name(conn: &mut SqliteConnection, name: &str) -> Result<Resource> {
    let row = sqlx::query(concat!(
        "SELECT ",
        resource_columns!(),
        " FROM resources WHERE name = ?"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::NotFound {
        what: "resource",
        name: name.to_string(),
    })?;
    from_row(&row)
}

impl Store {
    pub async fn get_resource(&self, name: &str) -> Result<Resource> {
        let mut conn = self.pool.acquire().await?;
        fetch_by_name(&mut conn, name).await
    }

    /// Resources matching `filter`, ordered by id (creation order).
    pub async fn list_resources(&self, filter: &ResourceFilter) -> Result<Vec<Resource>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            resource_columns!(),
            " FROM resources
             WHERE (? IS NULL OR kind = ?) AND (? IS NULL OR state = ?) AND (? IS NULL OR id > ?)
             ORDER BY id"
        ))
        .bind(filter.kind.map(|k| k.as_str()))
        .bind(filter.kind.map(|k| k.as_str()))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.after.map(|u| u.to_string()))
        .bind(filter.after.map(|u| u.to_string()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }
}

impl Tx {
    /// The resources registered by one agent (what its heartbeat speaks for).
    pub async fn resources_of_agent(&mut self, agent: &str) -> Result<Vec<Resource>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            resource_columns!(),
            " FROM resources WHERE agent = ? ORDER BY id"
        ))
        .bind(agent)
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_resource(&mut self, name: &str) -> Result<Resource> {
        fetch_by_name(self.conn(), name).await
    }

    pub async fn get_resource_by_id(&mut self, id: &str) -> Result<Resource> {
        let row = sqlx::query(concat!(
            "SELECT ",
            resource_columns!(),
            " FROM resources WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(self.conn())
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "resource",
            name: id.to_string(),
        })?;
        from_row(&row)
    }

    pub async fn insert_resource(&mut self, r: &Resource) -> Result<()> {
        let res = sqlx::query(concat!(
            "INSERT INTO resources (",
            resource_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(r.id.to_string())
        .bind(&r.name)
        .bind(r.kind.as_str())
        .bind(to_json(&r.labels))
        .bind(to_json(&r.capabilities))
        .bind(r.board.as_ref().map(to_json))
        .bind(r.state.as_str())
        .bind(to_json(&r.health))
        .bind(r.maintenance.as_ref().map(to_json))
        .bind(&r.retired_reason)
        .bind(&r.agent)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(r.last_seen)
        .execute(self.conn())
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate {
                what: "resource",
                name: r.name.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes every mutable column of `r` (matched by id).
    pub async fn update_resource(&mut self, r: &Resource) -> Result<()> {
        let done = sqlx::query(
            "UPDATE resources SET labels = ?, capabilities = ?, board = ?, state = ?, health = ?,
             maintenance = ?, retired_reason = ?, agent = ?, updated_at = ?, last_seen = ?
             WHERE id = ?",
        )
        .bind(to_json(&r.labels))
        .bind(to_json(&r.capabilities))
        .bind(r.board.as_ref().map(to_json))
        .bind(r.state.as_str())
        .bind(to_json(&r.health))
        .bind(r.maintenance.as_ref().map(to_json))
        .bind(&r.retired_reason)
        .bind(&r.agent)
        .bind(r.updated_at)
        .bind(r.last_seen)
        .bind(r.id.to_string())
        .execute(self.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "resource",
                name: r.name.clone(),
            });
        }
        Ok(())
    }

    pub async fn delete_resource(&mut self, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM resources WHERE name = ?")
            .bind(name)
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "resource",
                name: name.to_string(),
            });
        }
        Ok(())
    }
}
