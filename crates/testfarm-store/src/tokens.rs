//! The `tokens` table: token ids, roles and secret hashes (never secrets).

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use testfarm_api::token::TokenInfo;
use testfarm_core::Role;

use crate::{Result, Store, StoreError, Tx, is_unique_violation};

/// A token row with its hash, for authentication.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub info: TokenInfo,
    pub secret_sha256: Vec<u8>,
}

fn from_row(row: &SqliteRow) -> Result<StoredToken> {
    let role: String = row.try_get("role")?;
    Ok(StoredToken {
        info: TokenInfo {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: role.parse::<Role>().map_err(|e| StoreError::Corrupt {
                what: "token",
                detail: e.to_string(),
            })?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
            revoked_at: row.try_get("revoked_at")?,
        },
        secret_sha256: row.try_get("secret_sha256")?,
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
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| from_row(r).map(|t| t.info)).collect()
    }

    /// Marks a token used, at most once a minute per token to keep reads cheap.
    pub async fn touch_token(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let _writer = self.write_lock.lock().await;
        sqlx::query(
            "UPDATE tokens SET last_used_at = ? WHERE id = ?
             AND (last_used_at IS NULL OR last_used_at < ?)",
        )
        .bind(now)
        .bind(id)
        .bind(now - chrono::Duration::minutes(1))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Tx {
    pub async fn insert_token(&mut self, info: &TokenInfo, secret_sha256: &[u8]) -> Result<()> {
        let res = sqlx::query(concat!(
            "INSERT INTO tokens (",
            token_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&info.id)
        .bind(&info.name)
        .bind(info.role.as_str())
        .bind(secret_sha256)
        .bind(info.created_at)
        .bind(info.last_used_at)
        .bind(info.revoked_at)
        .execute(self.conn())
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate {
                what: "token",
                name: info.name.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Revokes by name or id; returns the token as it was.
    pub async fn revoke_token(
        &mut self,
        name_or_id: &str,
        now: DateTime<Utc>,
    ) -> Result<TokenInfo> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE name = ? OR id = ?"
        ))
        .bind(name_or_id)
        .bind(name_or_id)
        .fetch_optional(self.conn())
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "token",
            name: name_or_id.to_string(),
        })?;
        let mut token = from_row(&row)?.info;
        sqlx::query("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(now)
            .bind(&token.id)
            .execute(self.conn())
            .await?;
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
        let existing = sqlx::query("SELECT id, secret_sha256, role FROM tokens WHERE name = ?")
            .bind(name)
            .fetch_optional(self.conn())
            .await?;
        if let Some(row) = existing {
            let old_id: String = row.try_get("id")?;
            let old_hash: Vec<u8> = row.try_get("secret_sha256")?;
            let old_role: String = row.try_get("role")?;
            if old_id == id && old_hash == secret_sha256 && old_role == role.as_str() {
                return Ok(false);
            }
            sqlx::query("DELETE FROM tokens WHERE name = ?")
                .bind(name)
                .execute(self.conn())
                .await?;
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
