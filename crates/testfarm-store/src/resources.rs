//! The `resources` table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, Row, params};
use testfarm_core::resource::{
    Resource, ResourceKind, ResourceState, Selectable, derived_labels, takes_whole_lease,
};
use ulid::Ulid;

use crate::sql::{
    exec, get_json, get_json_opt, get_ts, get_ts_opt, get_u64, get_ulid, query_all, query_opt,
    to_json, ts, ts_opt, unique,
};
use crate::{Result, Store, StoreError, Tx};

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

/// A column holding a name from one of the domain's enums (`kind`, `state`).
fn parsed<T: std::str::FromStr>(row: &Row<'_>, col: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.get(col)?;
    text.parse::<T>()
        .map_err(|e| corrupt(format!("{col}: {e}")))
}

fn from_row(row: &Row<'_>) -> Result<Resource> {
    Ok(Resource {
        id: get_ulid(row, "resource", "id")?,
        name: row.get("name")?,
        kind: parsed(row, "kind")?,
        labels: get_json(row, "resource labels", "labels")?,
        capabilities: get_json(row, "resource capabilities", "capabilities")?,
        board: get_json_opt(row, "resource board", "board")?,
        state: parsed(row, "state")?,
        health: get_json(row, "resource health", "health")?,
        maintenance: get_json_opt(row, "resource maintenance", "maintenance")?,
        retired_reason: row.get("retired_reason")?,
        agent: row.get("agent")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        last_seen: get_ts_opt(row, "last_seen")?,
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

fn fetch_by(conn: &Connection, sql: &str, key: &str) -> Result<Resource> {
    query_opt(conn, sql, [key], from_row)?.ok_or_else(|| StoreError::NotFound {
        what: "resource",
        name: key.to_string(),
    })
}

const BY_NAME: &str = concat!(
    "SELECT ",
    resource_columns!(),
    " FROM resources WHERE name = ?"
);
const BY_ID: &str = concat!(
    "SELECT ",
    resource_columns!(),
    " FROM resources WHERE id = ?"
);

impl Store {
    pub async fn get_resource(&self, name: &str) -> Result<Resource> {
        self.read(|c| fetch_by(c, BY_NAME, name))
    }

    pub async fn get_resource_by_id(&self, id: Ulid) -> Result<Resource> {
        self.read(|c| fetch_by(c, BY_ID, &id.to_string()))
    }

    /// What selectors see of every resource not retired (of `kind`, if given): no
    /// health, capabilities or timestamps to decode, for matching on every lease request.
    pub async fn list_selectable(&self, kind: Option<ResourceKind>) -> Result<Vec<Selectable>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT id, name, kind, state, labels, json_extract(capabilities, '$.arch') AS arch,
                        json_extract(board, '$.board_type') AS board_type
                 FROM resources WHERE state != 'retired' AND (?1 IS NULL OR kind = ?1) ORDER BY id",
                [kind.map(|k| k.as_str())],
                |r| {
                    let name: String = r.get("name")?;
                    let kind: ResourceKind = parsed(r, "kind")?;
                    let arch: Option<String> = r.get("arch")?;
                    let board_type: Option<String> = r.get("board_type")?;
                    Ok(Selectable {
                        id: get_ulid(r, "resource", "id")?,
                        labels: derived_labels(
                            get_json(r, "resource labels", "labels")?,
                            kind,
                            &name,
                            arch.as_deref(),
                            board_type.as_deref(),
                        ),
                        name,
                        kind,
                        state: parsed(r, "state")?,
                    })
                },
            )
        })
    }

    /// [`Store::list_selectable`], served from memory while no resource has been added,
    /// deleted, relabelled or retired since it was read (see [`SelectableCache`]). What
    /// every lease request matches its selector against; `state` in it may be stale, so
    /// anything that reports states reads [`Store::list_selectable`] instead.
    pub async fn selectable(&self, kind: Option<ResourceKind>) -> Result<Arc<Vec<Selectable>>> {
        let cache = &self.inner.selectable;
        // Read the generation before the rows: a change committed after this point bumps
        // it, so rows read before that change can never be served as current.
        let generation = cache.generation();
        if let Some(rows) = cache.get(kind, generation) {
            return Ok(rows);
        }
        let rows = Arc::new(self.list_selectable(kind).await?);
        cache.put(kind, generation, Arc::clone(&rows));
        Ok(rows)
    }

    /// Just a resource's name (`None` once it has been deleted).
    pub async fn resource_name(&self, id: Ulid) -> Result<Option<String>> {
        self.read(|c| name_of(c, id))
    }

    /// Resources matching `filter`, ordered by id (creation order).
    pub async fn list_resources(&self, filter: &ResourceFilter) -> Result<Vec<Resource>> {
        self.read(|c| {
            query_all(
                c,
                concat!(
                    "SELECT ",
                    resource_columns!(),
                    " FROM resources
                     WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR id > ?3)
                     ORDER BY id"
                ),
                params![
                    filter.kind.map(|k| k.as_str()),
                    filter.state.map(|s| s.as_str()),
                    filter.after.map(|u| u.to_string()),
                ],
                from_row,
            )
        })
    }
}

fn name_of(conn: &Connection, id: Ulid) -> Result<Option<String>> {
    query_opt(
        conn,
        "SELECT name FROM resources WHERE id = ?",
        [id.to_string()],
        |r| Ok(r.get(0)?),
    )
}

/// The resource a whole lease may take, as [`Tx::free_resource_lru`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeResource {
    pub id: Ulid,
    pub name: String,
    /// The fencing epoch of the newest lease ever granted on it.
    pub last_epoch: u64,
}

/// The selectable rows per kind, valid for one generation of the resource set. Every
/// transaction that inserts, deletes or rewrites a resource row (or retires one) bumps
/// the generation when it commits; a lease taking or giving back a board only changes
/// its state ([`Tx::insert_lease`], [`Tx::write_ended_lease`]) and keeps the cache.
/// Rows read while the resource set was at generation `.0`.
type Generation = (u64, Arc<Vec<Selectable>>);

#[derive(Default)]
pub(crate) struct SelectableCache {
    generation: AtomicU64,
    rows: Mutex<HashMap<Option<ResourceKind>, Generation>>,
}

impl SelectableCache {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn get(&self, kind: Option<ResourceKind>, generation: u64) -> Option<Arc<Vec<Selectable>>> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        match rows.get(&kind) {
            Some((g, r)) if *g == generation => Some(Arc::clone(r)),
            _ => None,
        }
    }

    fn put(&self, kind: Option<ResourceKind>, generation: u64, rows: Arc<Vec<Selectable>>) {
        let mut all = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        if all.get(&kind).is_none_or(|(g, _)| *g <= generation) {
            all.insert(kind, (generation, rows));
        }
    }

    /// After a commit that changed the resource set.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Tx {
    /// The resources registered by one agent (what its heartbeat speaks for).
    pub async fn resources_of_agent(&mut self, agent: &str) -> Result<Vec<Resource>> {
        query_all(
            self.conn(),
            concat!(
                "SELECT ",
                resource_columns!(),
                " FROM resources WHERE agent = ? ORDER BY id"
            ),
            [agent],
            from_row,
        )
    }

    pub async fn get_resource(&mut self, name: &str) -> Result<Resource> {
        fetch_by(self.conn(), BY_NAME, name)
    }

    /// Of the resources `ids`, the least recently used (never used first) without an
    /// active lease that a whole lease may take (`core::resource::takes_whole_lease`),
    /// with its last fencing epoch. Read under the write lock, so it cannot be stale.
    pub async fn free_resource_lru(&mut self, ids: &[Ulid]) -> Result<Option<FreeResource>> {
        let ids = to_json(&ids.iter().map(Ulid::to_string).collect::<Vec<_>>());
        let mut stmt = self.conn().prepare_cached(
            // Driven by the candidate list and joined by key: `id IN (SELECT … json_each)`
            // built a temporary index per call (a b-tree, a page cache and zeroed pages),
            // ~5% of a lease's instructions.
            "SELECT r.id, r.name, r.last_epoch, r.state, json_extract(r.health, '$.status') AS health
             FROM json_each(?) j JOIN resources r ON r.id = j.value
             WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.resource_id = r.id AND l.state = 'active')
             ORDER BY r.last_lease_end IS NOT NULL, r.last_lease_end, r.id",
        )?;
        let mut rows = stmt.query([ids])?;
        while let Some(r) = rows.next()? {
            if takes_whole_lease(parsed(r, "state")?, parsed(r, "health")?) {
                return Ok(Some(FreeResource {
                    id: get_ulid(r, "resource", "id")?,
                    name: r.get("name")?,
                    last_epoch: get_u64(r, "resource", "last_epoch")?,
                }));
            }
        }
        Ok(None)
    }

    pub async fn get_resource_by_id(&mut self, id: &str) -> Result<Resource> {
        fetch_by(self.conn(), BY_ID, id)
    }

    pub async fn insert_resource(&mut self, r: &Resource) -> Result<()> {
        let res = exec(
            self.conn(),
            concat!(
                "INSERT INTO resources (",
                resource_columns!(),
                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            params![
                r.id.to_string(),
                r.name,
                r.kind.as_str(),
                to_json(&r.labels),
                to_json(&r.capabilities),
                r.board.as_ref().map(to_json),
                r.state.as_str(),
                to_json(&r.health),
                r.maintenance.as_ref().map(to_json),
                r.retired_reason,
                r.agent,
                ts(r.created_at),
                ts(r.updated_at),
                ts_opt(r.last_seen),
            ],
        );
        self.resources_changed();
        unique(res, "resource", &r.name)
    }

    /// Writes every mutable column of `r` (matched by id).
    pub async fn update_resource(&mut self, r: &Resource) -> Result<()> {
        let n = exec(
            self.conn(),
            "UPDATE resources SET labels = ?, capabilities = ?, board = ?, state = ?, health = ?,
             maintenance = ?, retired_reason = ?, agent = ?, updated_at = ?, last_seen = ?
             WHERE id = ?",
            params![
                to_json(&r.labels),
                to_json(&r.capabilities),
                r.board.as_ref().map(to_json),
                r.state.as_str(),
                to_json(&r.health),
                r.maintenance.as_ref().map(to_json),
                r.retired_reason,
                r.agent,
                ts(r.updated_at),
                ts_opt(r.last_seen),
                r.id.to_string(),
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "resource",
                name: r.name.clone(),
            });
        }
        self.resources_changed();
        Ok(())
    }

    pub async fn delete_resource(&mut self, name: &str) -> Result<()> {
        let n = exec(self.conn(), "DELETE FROM resources WHERE name = ?", [name])?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "resource",
                name: name.to_string(),
            });
        }
        self.resources_changed();
        Ok(())
    }
}
