//! The `tokens` table: token ids, roles and secret hashes (never secrets).

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};
use testfarm_api::token::TokenInfo;
use testfarm_core::Role;

use crate::sql::{exec, get_ts, get_ts_opt, query_all, query_opt, ts, ts_opt, unique};
use crate::{Result, Store, StoreError, Tx};

/// A token row with its hash, for authentication.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub info: TokenInfo,
    pub secret_sha256: Vec<u8>,
}

fn from_row(row: &Row<'_>) -> Result<StoredToken> {
    let role: String = row.get("role")?;
    Ok(StoredToken {
        info: TokenInfo {
            id: row.get("id")?,
            name: row.get("name")?,
            role: role.parse::<Role>().map_err(|e| StoreError::Corrupt {
                what: "token",
                detail: e.to_string(),
            })?,
            created_at: get_ts(row, "created_at")?,
            last_used_at: get_ts_opt(row, "last_used_at")?,
            revoked_at: get_ts_opt(row, "revoked_at")?,
        },
        secret_sha256: row.get("secret_sha256")?,
    })
}

macro_rules! token_columns {
    () => {
        "id, name, role, secret_sha256, created_at, last_used_at, revoked_at"
    };
}

impl Store {
    /// The token with this id, revoked or not.
    pub async fn get_token(&self, id: &str) -> Result<Option<StoredToken>> {
        self.read(|c| {
            query_opt(
                c,
                concat!("SELECT ", token_columns!(), " FROM tokens WHERE id = ?"),
                [id],
                from_row,
            )
        })
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.read(|c| {
            query_all(
                c,
                concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM tokens ORDER BY created_at, id"
                ),
                [],
                |r| from_row(r).map(|t| t.info),
            )
        })
    }

    /// Marks a token used, at most once a minute per token to keep reads cheap.
    pub async fn touch_token(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let tx = self.begin().await?;
        exec(
            tx.conn(),
            "UPDATE tokens SET last_used_at = ?1 WHERE id = ?2
             AND (last_used_at IS NULL OR last_used_at < ?3)",
            params![ts(now), id, ts(now - chrono::Duration::minutes(1))],
        )?;
        tx.commit().await?;
        Ok(())
    }
}

impl Tx {
    pub async fn insert_token(&mut self, info: &TokenInfo, secret_sha256: &[u8]) -> Result<()> {
        unique(
            exec(
                self.conn(),
                concat!(
                    "INSERT INTO tokens (",
                    token_columns!(),
                    ") VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                params![
                    info.id,
                    info.name,
                    info.role.as_str(),
                    secret_sha256,
                    ts(info.created_at),
                    ts_opt(info.last_used_at),
                    ts_opt(info.revoked_at),
                ],
            ),
            "token",
            &info.name,
        )
    }

    /// The token with this name or id.
    pub async fn find_token(&mut self, name_or_id: &str) -> Result<TokenInfo> {
        Ok(query_opt(
            self.conn(),
            concat!(
                "SELECT ",
                token_columns!(),
                " FROM tokens WHERE name = ?1 OR id = ?1"
            ),
            [name_or_id],
            from_row,
        )?
        .ok_or_else(|| StoreError::NotFound {
            what: "token",
            name: name_or_id.to_string(),
        })?
        .info)
    }

    /// How many admin tokens are not revoked.
    pub async fn count_active_admins(&mut self) -> Result<usize> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM tokens WHERE role = 'admin' AND revoked_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Revokes by name or id; returns the token as it was.
    pub async fn revoke_token(
        &mut self,
        name_or_id: &str,
        now: DateTime<Utc>,
    ) -> Result<TokenInfo> {
        let mut token = self.find_token(name_or_id).await?;
        exec(
            self.conn(),
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
            params![ts(now), token.id],
        )?;
        token.revoked_at.get_or_insert(now);
        Ok(token)
    }

    /// Installs or replaces the token called `name` (the bootstrap admin token read from
    /// `admin.token`, the built-in agent's token), so the secret the server holds is
    /// always the one that works. Returns whether anything changed.
    pub async fn upsert_named_token(
        &mut self,
        id: &str,
        name: &str,
        role: Role,
        secret_sha256: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let existing = query_opt(
            self.conn(),
            "SELECT id, secret_sha256, role FROM tokens WHERE name = ?",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>("id")?,
                    r.get::<_, Vec<u8>>("secret_sha256")?,
                    r.get::<_, String>("role")?,
                ))
            },
        )?;
        if let Some((old_id, old_hash, old_role)) = existing {
            if old_id == id && old_hash == secret_sha256 && old_role == role.as_str() {
                return Ok(false);
            }
            exec(self.conn(), "DELETE FROM tokens WHERE name = ?", [name])?;
        }
        let info = TokenInfo {
            id: id.to_string(),
            name: name.to_string(),
            role,
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        self.insert_token(&info, secret_sha256).await?;
        Ok(true)
    }
}
