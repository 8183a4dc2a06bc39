//! Executions: their records from queued to finished, callback attempts, and pruning.

use chrono::{DateTime, Utc};
use sandbox_api::{Callback, CallbackAttempt, Execution, ExecutionReason, ExecutionStatus, Language};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::{count, cursor, flag, get_flag, int, parse_time, uint, Page, Store, StoreError};

const EXECUTION_COLUMNS: &str = "SELECT id, session_id, language, status, exit_code, reason, stdout, stderr,
    stdout_truncated, stderr_truncated, duration_ms, started_at, finished_at, outputs, metrics, callback_url,
    outputs_truncated FROM executions";
const EXECUTION_SUMMARY_COLUMNS: &str = "SELECT id, session_id, language, status, exit_code, reason, '', '',
    stdout_truncated, stderr_truncated, duration_ms, started_at, finished_at, '[]', metrics, callback_url,
    outputs_truncated FROM executions";

impl Store {
    /// Adds execution `e` of tenant `tenant` (its session's, or the caller's for `/v1/run`),
    /// to run on replica `replica`.
    pub async fn insert_execution(
        &self,
        e: &Execution,
        code: &str,
        tenant: &str,
        replica: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO executions (id, session_id, language, code, status, exit_code, reason, stdout, stderr,
                stdout_truncated, stderr_truncated, duration_ms, started_at, finished_at, outputs, metrics, callback_url,
                outputs_truncated, tenant, replica)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        )
        .bind(&e.id)
        .bind(&e.session_id)
        .bind(e.language.as_str())
        .bind(code)
        .bind(e.status.as_str())
        .bind(e.exit_code)
        .bind(stored_reason(e))
        .bind(&e.stdout)
        .bind(&e.stderr)
        .bind(flag(e.stdout_truncated))
        .bind(flag(e.stderr_truncated))
        .bind(e.duration_ms.map(int))
        .bind(e.started_at.to_rfc3339())
        .bind(e.finished_at.map(|t| t.to_rfc3339()))
        .bind(outputs_json(e)?)
        .bind(metrics_json(e)?)
        .bind(e.callback.as_ref().map(|c| c.url.clone()))
        .bind(flag(e.outputs_truncated))
        .bind(tenant)
        .bind(replica)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records one attempt to deliver execution `id` to its callback URL.
    pub async fn add_callback_attempt(&self, id: &str, attempt: &CallbackAttempt) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO callback_attempts (execution_id, at, status, error) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(attempt.at.to_rfc3339())
            .bind(attempt.status.map(i32::from))
            .bind(&attempt.error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn callback_of(&self, id: &str, url: Option<String>) -> Result<Option<Callback>, StoreError> {
        let Some(url) = url else { return Ok(None) };
        let rows = sqlx::query("SELECT at, status, error FROM callback_attempts WHERE execution_id = $1 ORDER BY at")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        let attempts = rows
            .iter()
            .map(|r| {
                let at: String = r.try_get(0)?;
                let status: Option<i64> = r.try_get(1)?;
                let status = status.map(|s| u16::try_from(s).unwrap_or(0));
                Ok(CallbackAttempt { at: parse_time(id, &at)?, status, error: r.try_get(2)? })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let delivered = attempts.iter().any(|a| a.status.is_some_and(|s| (200..300).contains(&s)));
        Ok(Some(Callback { url, delivered, attempts }))
    }

    /// A queued execution got its turn.
    pub async fn mark_running(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE executions SET status = 'running' WHERE id = $1 AND status = 'queued'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores the outcome of a finished execution.
    pub async fn finish_execution(&self, e: &Execution) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE executions SET status = $2, exit_code = $3, reason = $4, stdout = $5, stderr = $6,
                stdout_truncated = $7, stderr_truncated = $8, duration_ms = $9, finished_at = $10,
                outputs = $11, metrics = $12, outputs_truncated = $13
             WHERE id = $1",
        )
        .bind(&e.id)
        .bind(e.status.as_str())
        .bind(e.exit_code)
        .bind(stored_reason(e))
        .bind(&e.stdout)
        .bind(&e.stderr)
        .bind(flag(e.stdout_truncated))
        .bind(flag(e.stderr_truncated))
        .bind(e.duration_ms.map(int))
        .bind(e.finished_at.map(|t| t.to_rfc3339()))
        .bind(outputs_json(e)?)
        .bind(metrics_json(e)?)
        .bind(flag(e.outputs_truncated))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Execution `id`; only if it is tenant `tenant`'s, if given.
    pub async fn get_execution(&self, id: &str, tenant: Option<&str>) -> Result<Option<Execution>, StoreError> {
        let row =
            sqlx::query(AssertSqlSafe(format!("{EXECUTION_COLUMNS} WHERE id = $1 AND ($2 IS NULL OR tenant = $2)")))
                .bind(id)
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let (mut e, url) = execution_of(&row)?;
        e.callback = self.callback_of(&e.id, url).await?;
        Ok(Some(e))
    }

    /// How many of tenant `tenant`'s executions are queued or running.
    pub async fn active_executions_of(&self, tenant: &str) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM executions WHERE tenant = $1 AND status IN ('queued', 'running')")
                .bind(tenant)
                .fetch_one(&self.pool)
                .await?;
        Ok(uint(n))
    }

    /// A session's executions, oldest first. Summaries (`with_outputs` false) leave `stdout`,
    /// `stderr` and `outputs` empty and never read them: a session's outputs can be large.
    pub async fn list_executions(&self, session_id: &str, with_outputs: bool) -> Result<Vec<Execution>, StoreError> {
        Ok(self.page_executions(session_id, with_outputs, usize::MAX >> 1, None).await?.items)
    }

    /// At most `limit` of a session's executions, oldest first, after `cursor`.
    pub async fn page_executions(
        &self,
        session_id: &str,
        with_outputs: bool,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Execution>, StoreError> {
        let (key, name) = cursor.map(cursor::decode).transpose()?.unwrap_or_default();
        let columns = if with_outputs { EXECUTION_COLUMNS } else { EXECUTION_SUMMARY_COLUMNS };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{columns} WHERE session_id = $1 AND (started_at, id) > ($2, $3) ORDER BY started_at, id LIMIT $4"
        )))
        .bind(session_id)
        .bind(key)
        .bind(name)
        .bind(int(limit as u64).saturating_add(1))
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(|r| execution_of(r).map(|(e, _)| e)).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::of(items, limit, |e| (e.started_at.to_rfc3339(), e.id.clone())))
    }

    /// Deletes finished executions that finished before `finished_before`, and those older than
    /// the newest `keep_per_session` of each session (and of `/v1/run`'s, which have none),
    /// with their callback attempts. Queued and running ones count among the newest but are
    /// never deleted. Returns how many went.
    pub async fn prune_executions(
        &self,
        finished_before: Option<DateTime<Utc>>,
        keep_per_session: Option<usize>,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        if let Some(before) = finished_before {
            let done = sqlx::query(
                "DELETE FROM executions WHERE finished_at IS NOT NULL AND finished_at < $1
                    AND status NOT IN ('queued', 'running')",
            )
            .bind(before.to_rfc3339())
            .execute(&self.pool)
            .await?;
            removed += count(done.rows_affected());
        }
        if let Some(keep) = keep_per_session {
            let keep = int(keep as u64);
            let crowded: Vec<Option<String>> =
                sqlx::query_scalar("SELECT session_id FROM executions GROUP BY session_id HAVING COUNT(*) > $1")
                    .bind(keep)
                    .fetch_all(&self.pool)
                    .await?;
            for session in crowded {
                // LIMIT before OFFSET, as SQLite requires: the largest, i.e. every row.
                let done = sqlx::query(
                    "DELETE FROM executions WHERE id IN (
                        SELECT id FROM (SELECT id, status FROM executions WHERE session_id IS NOT DISTINCT FROM $1
                                        ORDER BY started_at DESC, id DESC LIMIT 9223372036854775807 OFFSET $2) AS older
                        WHERE status NOT IN ('queued', 'running'))",
                )
                .bind(session)
                .bind(keep)
                .execute(&self.pool)
                .await?;
                removed += count(done.rows_affected());
            }
        }
        if removed > 0 {
            sqlx::query("DELETE FROM callback_attempts WHERE execution_id NOT IN (SELECT id FROM executions)")
                .execute(&self.pool)
                .await?;
        }
        Ok(removed)
    }
}

/// An execution's reason as stored: its name, and for a signal, which (`signal 9`).
fn stored_reason(e: &Execution) -> Option<String> {
    match (e.reason, e.signal) {
        (Some(ExecutionReason::Signal), Some(n)) => Some(format!("signal {n}")),
        (reason, _) => reason.map(|r| r.as_str().to_string()),
    }
}

fn metrics_json(e: &Execution) -> Result<Option<String>, StoreError> {
    e.metrics
        .map(|m| serde_json::to_string(&m))
        .transpose()
        .map_err(|err| StoreError::Corrupt { id: e.id.clone(), detail: err.to_string() })
}

fn outputs_json(e: &Execution) -> Result<String, StoreError> {
    serde_json::to_string(&e.outputs).map_err(|err| StoreError::Corrupt { id: e.id.clone(), detail: err.to_string() })
}

/// The execution of a row of [`EXECUTION_COLUMNS`], and its callback URL.
fn execution_of(r: &AnyRow) -> Result<(Execution, Option<String>), StoreError> {
    let id: String = r.try_get(0)?;
    let corrupt = |detail: String| StoreError::Corrupt { id: id.clone(), detail };
    let language: String = r.try_get(2)?;
    let language: Language =
        serde_json::from_value(serde_json::Value::String(language)).map_err(|e| corrupt(e.to_string()))?;
    let status: String = r.try_get(3)?;
    let status = ExecutionStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?;
    let reason: Option<String> = r.try_get(5)?;
    let outputs: String = r.try_get(13)?;
    let metrics: Option<String> = r.try_get(14)?;
    let callback_url: Option<String> = r.try_get(15)?;
    let exit_code: Option<i64> = r.try_get(4)?;
    let duration_ms: Option<i64> = r.try_get(10)?;
    let started_at: String = r.try_get(11)?;
    let finished_at: Option<String> = r.try_get(12)?;
    let e = Execution {
        session_id: r.try_get(1)?,
        language,
        status,
        exit_code: exit_code.map(|c| i32::try_from(c).unwrap_or(i32::MIN)),
        reason: reason.as_deref().and_then(ExecutionReason::parse),
        signal: reason.as_deref().and_then(|r| r.strip_prefix("signal ")).and_then(|n| n.parse().ok()),
        stdout: r.try_get(6)?,
        stderr: r.try_get(7)?,
        stdout_truncated: get_flag(r, 8)?,
        stderr_truncated: get_flag(r, 9)?,
        duration_ms: duration_ms.map(uint),
        outputs: serde_json::from_str(&outputs).map_err(|e| corrupt(e.to_string()))?,
        outputs_truncated: get_flag(r, 16)?,
        metrics: metrics.as_deref().map(serde_json::from_str).transpose().map_err(|e| corrupt(e.to_string()))?,
        callback: callback_url.clone().map(|url| Callback { url, delivered: false, attempts: Vec::new() }),
        started_at: parse_time(&id, &started_at)?,
        finished_at: finished_at.as_deref().map(|t| parse_time(&id, t)).transpose()?,
        id,
    };
    Ok((e, callback_url))
}
