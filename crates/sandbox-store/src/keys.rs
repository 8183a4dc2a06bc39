//! API keys: who may call sandboxd, for which tenant. Only a hash of each key's secret is
//! kept; the secret is shown once, when the key is made (`sandbox-service`'s `access/auth.rs`).

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::{flag, get_flag, parse_time, Store, StoreError};

/// An API key as the store keeps it (without its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    /// Sees every tenant's sessions, not only its own.
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const KEY_COLUMNS: &str = "id, tenant, admin, created_at, revoked_at, secret_sha256";

/// A key and its secret's hash, from a row of [`KEY_COLUMNS`].
fn key_of(row: &AnyRow) -> Result<(ApiKey, String), StoreError> {
    let id: String = row.try_get(0)?;
    let created_at: String = row.try_get(3)?;
    let revoked_at: Option<String> = row.try_get(4)?;
    let key = ApiKey {
        tenant: row.try_get(1)?,
        admin: get_flag(row, 2)?,
        created_at: parse_time(&id, &created_at)?,
        revoked_at: revoked_at.map(|at| parse_time(&id, &at)).transpose()?,
        id,
    };
    Ok((key, row.try_get(5)?))
}

impl Store {
    /// Records `key`, whose secret hashes to `secret_sha256` (hex).
    pub async fn insert_key(&self, key: &ApiKey, secret_sha256: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_keys (id, tenant, admin, secret_sha256, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&key.id)
            .bind(&key.tenant)
            .bind(flag(key.admin))
            .bind(secret_sha256)
            .bind(key.created_at.to_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every key, revoked ones too, oldest first.
    pub async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| key_of(r).map(|(key, _)| key)).collect()
    }

    /// Key `id` with its secret's hash, if it exists (revoked or not).
    pub async fn key_with_hash(&self, id: &str) -> Result<Option<(ApiKey, String)>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_of).transpose()
    }

    /// Revokes key `id`; false if there is no such key or it was revoked already.
    pub async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(at.to_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether any key is in force: from the first one on, every request needs one.
    pub async fn has_keys(&self) -> Result<bool, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL").fetch_one(&self.pool).await?;
        Ok(n > 0)
    }
}
