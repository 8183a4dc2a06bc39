//! API keys: who may call sandboxd, for which tenant. Only a hash of each key's secret is
//! kept; the secret is shown once, when the key is made (`sandbox-service`'s `access/auth.rs`).

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use crate::{Store, StoreError};

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

const KEY_COLUMNS: &str = "id, tenant, admin, created_at, revoked_at";

fn key_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ApiKey, String)> {
    let time = |i: usize, at: String| {
        DateTime::parse_from_rfc3339(&at)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
    };
    let revoked: Option<String> = row.get(4)?;
    let key = ApiKey {
        id: row.get(0)?,
        tenant: row.get(1)?,
        admin: row.get(2)?,
        created_at: time(3, row.get(3)?)?,
        revoked_at: revoked.map(|at| time(4, at)).transpose()?,
    };
    Ok((key, row.get(5)?))
}

impl Store {
    /// Records `key`, whose secret hashes to `secret_sha256` (hex).
    pub fn insert_key(&self, key: &ApiKey, secret_sha256: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO api_keys (id, tenant, admin, secret_sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key.id, key.tenant, key.admin, secret_sha256, key.created_at.to_rfc3339()],
        )?;
        Ok(())
    }

    /// Every key, revoked ones too, oldest first.
    pub fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys ORDER BY created_at, id"))?;
        let rows = stmt.query_map([], key_of)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().map(|(key, _)| key).collect())
    }

    /// Key `id` with its secret's hash, if it exists (revoked or not).
    pub fn key_with_hash(&self, id: &str) -> Result<Option<(ApiKey, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys WHERE id = ?1"))?;
        Ok(stmt.query_row(params![id], key_of).optional()?)
    }

    /// Revokes key `id`; false if there is no such key or it was revoked already.
    pub fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let changed = self.conn().execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at.to_rfc3339()],
        )?;
        Ok(changed > 0)
    }

    /// Whether any key is in force: from the first one on, every request needs one.
    pub fn has_keys(&self) -> Result<bool, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)")?;
        Ok(stmt.query_row([], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_found_and_revoked() -> Result<(), StoreError> {
        let store = Store::open_in_memory()?;
        assert!(!store.has_keys()?);
        let key = ApiKey {
            id: "key_1".into(),
            tenant: "acme".into(),
            admin: false,
            created_at: Utc::now(),
            revoked_at: None,
        };
        store.insert_key(&key, "abc123")?;
        assert!(store.has_keys()?);
        let (found, hash) = store.key_with_hash("key_1")?.expect("the key");
        assert_eq!((found.tenant.as_str(), found.admin, hash.as_str()), ("acme", false, "abc123"));
        assert!(store.key_with_hash("key_2")?.is_none());
        assert!(store.revoke_key("key_1", Utc::now())?);
        assert!(!store.revoke_key("key_1", Utc::now())?, "revoked once");
        assert!(!store.has_keys()?, "a revoked key is not in force");
        assert!(store.keys()?[0].revoked_at.is_some());
        Ok(())
    }
}
