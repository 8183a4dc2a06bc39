//! Sessions: their records, stops and resumes, retention, and what admission control counts.

use sandbox_api::{Limits, Session, SessionStatus, Timestamp};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::{cursor, int, parse_time, uint, Page, StatusCounts, Store, StoreError};

/// The parts of a session kept as one JSON column (they are only ever read whole).
#[derive(Serialize, Deserialize)]
struct SessionSpec {
    env: std::collections::BTreeMap<String, String>,
    limits: Limits,
    timeout_s: f64,
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    from_pool: bool,
    #[serde(default = "sandbox_api::default_idle_timeout_s")]
    idle_timeout_s: u64,
    #[serde(default = "sandbox_api::default_max_lifetime_s")]
    max_lifetime_s: u64,
    #[serde(default = "yes")]
    auto_resume: bool,
}

fn yes() -> bool {
    true
}

const SESSION_COLUMNS: &str =
    "id, status, template, spec, created_at, deleted_at, kernel_restarts, stop_reason, stopped_at, workspace_removed_at,
     last_kernel_death, tenant, isolation, owner";

impl Store {
    /// Adds session `s`; `owner` is the replica that runs its sandbox (it starts running).
    pub async fn insert_session(&self, s: &Session, owner: &str) -> Result<(), StoreError> {
        let spec = SessionSpec {
            env: s.env.clone(),
            limits: s.limits,
            timeout_s: s.timeout_s,
            metadata: s.metadata.clone(),
            kernel: s.kernel.clone(),
            from_pool: s.from_pool,
            idle_timeout_s: s.idle_timeout_s,
            max_lifetime_s: s.max_lifetime_s,
            auto_resume: s.auto_resume,
        };
        let spec = serde_json::to_string(&spec)
            .map_err(|e| StoreError::Corrupt { id: s.id.clone(), detail: e.to_string() })?;
        sqlx::query(
            "INSERT INTO sessions (id, status, template, spec, created_at, deleted_at, tenant, owner)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id)
        .bind(s.status.as_str())
        .bind(&s.template)
        .bind(spec)
        .bind(s.created_at.to_rfc3339())
        .bind(s.deleted_at.map(|t| t.to_rfc3339()))
        .bind(&s.tenant)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Counts a kernel that died and was replaced, and records why (`None` keeps the last word).
    pub async fn bump_kernel_restarts(&self, id: &str, why: Option<&str>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET kernel_restarts = kernel_restarts + 1,
                last_kernel_death = COALESCE($2, last_kernel_death) WHERE id = $1",
        )
        .bind(id)
        .bind(why)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the isolation layers of session `id`'s sandbox, as its runtime names them.
    pub async fn set_isolation(&self, id: &str, layers: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET isolation = $2 WHERE id = $1")
            .bind(id)
            .bind(layers)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_session_record(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Marks a session deleted; returns false if it did not exist or was already deleted.
    pub async fn mark_session_deleted(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET status = 'deleted', deleted_at = $2, owner = NULL WHERE id = $1 AND status != 'deleted'",
        )
        .bind(id)
        .bind(at.to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| session_of(&r)).transpose()
    }

    /// At most `limit` sessions, oldest first, after `cursor` (from the page before); only
    /// tenant `tenant`'s, if given.
    pub async fn page_sessions(
        &self,
        limit: usize,
        cursor: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Page<Session>, StoreError> {
        let (key, name) = cursor.map(cursor::decode).transpose()?.unwrap_or_default();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE (created_at, id) > ($1, $2) AND ($4 IS NULL OR tenant = $4)
             ORDER BY created_at, id LIMIT $3"
        )))
        .bind(key)
        .bind(name)
        .bind(int(limit as u64).saturating_add(1))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(session_of).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::of(items, limit, |s| (s.created_at.to_rfc3339(), s.id.clone())))
    }

    /// Sessions with status `status`.
    pub async fn sessions_with_status(&self, status: SessionStatus) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE status = $1 ORDER BY created_at"
        )))
        .bind(status.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_of).collect()
    }

    /// Running sessions whose sandboxes replica `owner` runs, oldest first.
    pub async fn sessions_running_on(&self, owner: &str) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'running' AND owner = $1 ORDER BY created_at"
        )))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_of).collect()
    }

    /// Marks a running session stopped; false if it was not running.
    pub async fn mark_session_stopped(&self, id: &str, reason: &str, at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET status = 'stopped', stop_reason = $2, stopped_at = $3, owner = NULL
             WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(reason)
        .bind(at.to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets session `id`'s lifetime (seconds its sandbox may run from its start).
    pub async fn set_max_lifetime(&self, id: &str, seconds: u64) -> Result<(), StoreError> {
        let spec = self.backend.json_set_int("spec", "max_lifetime_s", "$2");
        sqlx::query(AssertSqlSafe(format!("UPDATE sessions SET spec = {spec} WHERE id = $1")))
            .bind(id)
            .bind(int(seconds))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks a stopped session running again, its sandbox on replica `owner`; false if it was
    /// not stopped.
    pub async fn mark_session_resumed(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET status = 'running', stop_reason = NULL, stopped_at = NULL, owner = $2
             WHERE id = $1 AND status = 'stopped'",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn mark_workspace_removed(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET workspace_removed_at = $2 WHERE id = $1 AND workspace_removed_at IS NULL")
            .bind(id)
            .bind(at.to_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stopped or deleted sessions whose workspace is still there, and that stopped (or were
    /// deleted) before `before`: their retention is over.
    pub async fn workspaces_to_remove(&self, before: Timestamp) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, COALESCE(deleted_at, stopped_at) FROM sessions
             WHERE status IN ('stopped', 'deleted') AND workspace_removed_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut due = Vec::new();
        for row in rows {
            let id: String = row.try_get(0)?;
            let since: Option<String> = row.try_get(1)?;
            // Compared as times, not as text: RFC 3339 strings of different offsets do not sort.
            let since = since.as_deref().map(|t| parse_time(&id, t)).transpose()?;
            if since.is_some_and(|t| t < before) {
                due.push(id);
            }
        }
        Ok(due)
    }

    /// Sessions whose workspace was removed at or after `since` (RFC 3339, as stored), with
    /// that time, oldest first: what a replica still holding a copy of one removes.
    pub async fn workspaces_removed_since(&self, since: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, workspace_removed_at FROM sessions WHERE workspace_removed_at >= $1
             ORDER BY workspace_removed_at, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// How many of tenant `tenant`'s sessions are running.
    pub async fn running_sessions_of(&self, tenant: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE tenant = $1 AND status = 'running'")
            .bind(tenant)
            .fetch_one(&self.pool)
            .await?;
        Ok(uint(n))
    }

    /// Records that session `id`'s workspace holds `bytes` (as the replica that has it measured).
    pub async fn set_workspace_bytes(&self, id: &str, bytes: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET workspace_bytes = $2 WHERE id = $1")
            .bind(id)
            .bind(int(bytes))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The bytes of `tenant`'s kept workspaces as last measured, but for session `besides`'s.
    pub async fn tenant_workspace_bytes(&self, tenant: &str, besides: Option<&str>) -> Result<u64, StoreError> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(workspace_bytes), 0) AS BIGINT) FROM sessions
             WHERE tenant = $1 AND workspace_removed_at IS NULL AND ($2 IS NULL OR id != $2)",
        )
        .bind(tenant)
        .bind(besides)
        .fetch_one(&self.pool)
        .await?;
        Ok(uint(bytes))
    }

    /// The memory limits of all running sessions together, MiB (admission control counts it
    /// on every create: summed here rather than by loading every session).
    pub async fn running_memory_mb(&self) -> Result<u64, StoreError> {
        let memory = self.backend.json_int("spec", &["limits", "memory_mb"]);
        let mb: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT CAST(COALESCE(SUM({memory}), 0) AS BIGINT) FROM sessions WHERE status = 'running'"
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok(uint(mb))
    }

    /// How many sessions and executions there are of each status (for /metrics).
    pub async fn counts(&self) -> Result<(StatusCounts, StatusCounts), StoreError> {
        let mut both = Vec::new();
        for query in [
            "SELECT status, COUNT(*) FROM sessions GROUP BY status ORDER BY status",
            "SELECT status, COUNT(*) FROM executions GROUP BY status ORDER BY status",
        ] {
            let rows = sqlx::query(query).fetch_all(&self.pool).await?;
            let counts = rows
                .iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, uint(r.try_get::<i64, _>(1)?))))
                .collect::<Result<StatusCounts, sqlx::Error>>()?;
            both.push(counts);
        }
        let executions = both.pop().unwrap_or_default();
        let sessions = both.pop().unwrap_or_default();
        Ok((sessions, executions))
    }

    /// Whether any session that is not deleted uses template `name`.
    pub async fn template_in_use(&self, name: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE template = $1 AND status != 'deleted'")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}

fn session_of(r: &AnyRow) -> Result<Session, StoreError> {
    let id: String = r.try_get(0)?;
    let corrupt = |detail: String| StoreError::Corrupt { id: id.clone(), detail };
    let status: String = r.try_get(1)?;
    let spec: String = r.try_get(3)?;
    let spec: SessionSpec = serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
    let status = SessionStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?;
    let time = |i: usize| -> Result<Option<Timestamp>, StoreError> {
        let t: Option<String> = r.try_get(i)?;
        t.as_deref().map(|t| parse_time(&id, t)).transpose()
    };
    let created_at: String = r.try_get(4)?;
    Ok(Session {
        status,
        template: r.try_get(2)?,
        env: spec.env,
        limits: spec.limits,
        timeout_s: spec.timeout_s,
        metadata: spec.metadata,
        kernel: spec.kernel,
        kernel_restarts: uint(r.try_get(6)?),
        last_kernel_death: r.try_get(10)?,
        isolation: r.try_get(12)?,
        replica: r.try_get(13)?,
        from_pool: spec.from_pool,
        idle_timeout_s: spec.idle_timeout_s,
        max_lifetime_s: spec.max_lifetime_s,
        auto_resume: spec.auto_resume,
        stop_reason: r.try_get(7)?,
        stopped_at: time(8)?,
        workspace_removed_at: time(9)?,
        created_at: parse_time(&id, &created_at)?,
        deleted_at: time(5)?,
        tenant: r.try_get(11)?,
        id,
    })
}
