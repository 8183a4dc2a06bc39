//! The replicas sharing this database: each registers, keeps a heartbeat on the database's
//! clock, and owns the sessions whose sandboxes it runs. A replica whose heartbeat lapsed is
//! adopted by one other, exactly once (one `UPDATE` decides), and its work is released.

use sqlx::{AssertSqlSafe, Row};

use crate::{int, release, uint, Recovered, Store, StoreError};

/// A replica as the database knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaRecord {
    pub id: String,
    /// Where other replicas reach it (`--advertise-url`).
    pub address: String,
    pub version: String,
    pub started_at: String,
    /// Milliseconds since its last heartbeat, on the database's clock.
    pub heartbeat_age_ms: u64,
    /// The replica that adopted its work when its lease lapsed, if one did.
    pub adopted_by: Option<String>,
    /// Sessions whose sandboxes it runs.
    pub sessions: u64,
}

impl ReplicaRecord {
    /// Whether it holds its lease: a heartbeat within `lease_ms`, and nobody adopted it.
    pub fn alive(&self, lease_ms: u64) -> bool {
        self.adopted_by.is_none() && self.heartbeat_age_ms <= lease_ms
    }
}

/// A lapsed replica whose work this one took over, and what that released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub replica: String,
    pub released: Recovered,
}

impl Store {
    /// Records replica `id` as alive at `address` (a restart of it included: it is no longer
    /// adopted, and its heartbeat starts now).
    pub async fn register_replica(&self, id: &str, address: &str, version: &str) -> Result<(), StoreError> {
        let now = self.backend.now_ms();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO replicas (id, address, version, started_at, heartbeat_ms, adopted_by)
             VALUES ($1, $2, $3, $4, {now}, NULL)
             ON CONFLICT (id) DO UPDATE SET address = $2, version = $3, started_at = $4, heartbeat_ms = {now},
                adopted_by = NULL"
        )))
        .bind(id)
        .bind(address)
        .bind(version)
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Renews replica `id`'s lease; false when it has none any more (another replica adopted
    /// its work after its heartbeat lapsed, or its record is gone): it must stop what it runs.
    pub async fn heartbeat_replica(&self, id: &str) -> Result<bool, StoreError> {
        let now = self.backend.now_ms();
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE replicas SET heartbeat_ms = {now} WHERE id = $1 AND adopted_by IS NULL"
        )))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every replica the database knows, with the sessions each runs.
    pub async fn replicas(&self) -> Result<Vec<ReplicaRecord>, StoreError> {
        let now = self.backend.now_ms();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT r.id, r.address, r.version, r.started_at, {now} - r.heartbeat_ms, r.adopted_by,
                (SELECT COUNT(*) FROM sessions s WHERE s.owner = r.id AND s.status = 'running')
             FROM replicas r ORDER BY r.id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaRecord {
                    id: r.try_get(0)?,
                    address: r.try_get(1)?,
                    version: r.try_get(2)?,
                    started_at: r.try_get(3)?,
                    heartbeat_age_ms: uint(r.try_get(4)?),
                    adopted_by: r.try_get(5)?,
                    sessions: uint(r.try_get(6)?),
                })
            })
            .collect()
    }

    /// Adopts every replica but `me` whose heartbeat is older than `lease_ms`, and releases
    /// its work (see `release`): its sessions stop (`replica_lost`) and resume on whichever
    /// replica serves them next. One transaction: a replica is adopted once, by one adopter,
    /// and never adopted without its work released.
    /// With `keep_sessions` (sandboxes that outlive their replica), the sessions are not
    /// stopped but become `me`'s, which finds their sandboxes again.
    pub async fn adopt_lapsed_replicas(
        &self,
        me: &str,
        lease_ms: u64,
        keep_sessions: bool,
    ) -> Result<Vec<Adopted>, StoreError> {
        let now = self.backend.now_ms();
        let mut tx = self.pool.begin().await?;
        let lapsed: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "UPDATE replicas SET adopted_by = $1
             WHERE id != $1 AND adopted_by IS NULL AND heartbeat_ms < {now} - $2 RETURNING id"
        )))
        .bind(me)
        .bind(int(lease_ms))
        .fetch_all(&mut *tx)
        .await?;
        let mut adopted = Vec::new();
        for replica in lapsed {
            let released = release(&mut tx, &replica, "replica_lost", false, keep_sessions.then_some(me)).await?;
            adopted.push(Adopted { replica, released });
        }
        tx.commit().await?;
        Ok(adopted)
    }

    /// The secret named `name` that every replica of this database shares: the one stored, or
    /// `candidate` if none was (the first replica to ask sets it; the others read it).
    pub async fn shared_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1").bind(name).fetch_one(&self.pool).await?)
    }

    /// What door `kind` keeps of its client session `id`, if anything.
    pub async fn door_session(&self, kind: &str, id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT state FROM door_sessions WHERE kind = $1 AND id = $2")
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Keeps `state` for door `kind`'s client session `id` (replacing what was kept).
    pub async fn put_door_session(&self, kind: &str, id: &str, state: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO door_sessions (kind, id, state) VALUES ($1, $2, $3)
             ON CONFLICT (kind, id) DO UPDATE SET state = $3",
        )
        .bind(kind)
        .bind(id)
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets door `kind`'s client session `id`.
    pub async fn delete_door_session(&self, kind: &str, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM door_sessions WHERE kind = $1 AND id = $2")
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The replica that runs session `id`'s sandbox, if one does.
    pub async fn session_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        let owner: Option<Option<String>> =
            sqlx::query_scalar("SELECT owner FROM sessions WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(owner.flatten())
    }
}
