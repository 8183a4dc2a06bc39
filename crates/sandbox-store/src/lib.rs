//! The store: sessions and executions, durable across restarts of sandboxd.
//!
//! SQLite in WAL mode (one writer, many readers; commits do not wait for fsync, checkpoints
//! do). Schema changes are numbered migrations tracked in `PRAGMA user_version`. Opening the
//! store is also crash recovery: an execution still "running" was cut off by the restart and
//! is closed as `interrupted` and a session that had a sandbox as `stopped`, both with reason
//! "server_restart", so nothing stays running forever.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use sandbox_api::{
    Callback, CallbackAttempt, Execution, ExecutionReason, ExecutionStatus, Language, Limits, Session, SessionStatus,
    Template, Timestamp,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("open database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("migrate database to version {version}: {source}")]
    Migrate { version: usize, source: rusqlite::Error },
    #[error("database query: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("corrupt record {id}: {detail}")]
    Corrupt { id: String, detail: String },
}

/// One page of a listing, and the cursor of the next if there is more.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// The page of `rows` (fetched `limit + 1`, the one past saying there is more): its
    /// cursor is the last row's sort key (`key_of` its name) and name.
    fn of(
        mut rows: Vec<T>,
        limit: usize,
        name_of: impl Fn(&T) -> String,
        key_of: impl FnOnce(&str) -> rusqlite::Result<String>,
    ) -> Result<Page<T>, StoreError> {
        if rows.len() <= limit {
            return Ok(Page { items: rows, next: None });
        }
        rows.truncate(limit);
        let name = rows.last().map(name_of).unwrap_or_default();
        let next = Some(cursor::encode(&key_of(&name)?, &name));
        Ok(Page { items: rows, next })
    }
}

pub mod keys;

/// Listings are in the order of a sort key (a time) and then a unique name; a cursor is where
/// one page ended: both, hex-encoded so that it is opaque and URL-safe.
pub mod cursor {
    use super::StoreError;

    /// A cursor before every row: for a listing that shows something else first.
    pub fn start() -> String {
        encode("", "")
    }

    pub fn encode(key: &str, name: &str) -> String {
        format!("{key}\n{name}").bytes().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(cursor: &str) -> Result<(String, String), StoreError> {
        // Any cursor is a place in the order, even one no page gave: the listing goes on after
        // it, which is all a cursor can do. One that is not ours is taken as a key itself.
        let bytes: Option<Vec<u8>> = (cursor.len().is_multiple_of(2) && cursor.len() <= 2048)
            .then(|| (0..cursor.len()).step_by(2).map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok()).collect())
            .flatten();
        let text = match bytes {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => cursor.to_string(),
        };
        let (key, name) = text.split_once('\n').unwrap_or((&text, ""));
        Ok((key.to_string(), name.to_string()))
    }
}

/// Numbered schema changes; index + 1 is the version after applying it. Append only.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        template TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at TEXT NOT NULL,
        deleted_at TEXT
     );
     CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        session_id TEXT,
        language TEXT NOT NULL,
        code TEXT NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        reason TEXT,
        stdout TEXT NOT NULL,
        stderr TEXT NOT NULL,
        stdout_truncated INTEGER NOT NULL,
        stderr_truncated INTEGER NOT NULL,
        duration_ms INTEGER,
        started_at TEXT NOT NULL,
        finished_at TEXT
     );
     CREATE INDEX executions_by_session ON executions(session_id, started_at);
     CREATE INDEX executions_by_status ON executions(status);",
    "ALTER TABLE executions ADD COLUMN outputs TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE sessions ADD COLUMN kernel_restarts INTEGER NOT NULL DEFAULT 0;",
    "ALTER TABLE executions ADD COLUMN metrics TEXT;",
    "ALTER TABLE executions ADD COLUMN callback_url TEXT;
     CREATE TABLE callback_attempts (
        execution_id TEXT NOT NULL,
        at TEXT NOT NULL,
        status INTEGER,
        error TEXT
     );
     CREATE INDEX callback_attempts_by_execution ON callback_attempts(execution_id, at);",
    "CREATE TABLE templates (
        name TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        created_at TEXT NOT NULL
     );",
    "ALTER TABLE sessions ADD COLUMN stop_reason TEXT;
     ALTER TABLE sessions ADD COLUMN stopped_at TEXT;
     ALTER TABLE sessions ADD COLUMN workspace_removed_at TEXT;",
    "ALTER TABLE executions ADD COLUMN outputs_truncated INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX executions_by_finish ON executions(finished_at);",
    "ALTER TABLE sessions ADD COLUMN last_kernel_death TEXT;",
    "CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        admin INTEGER NOT NULL,
        secret_sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
     );",
    // Rows from before tenants belong to the tenant of requests made with no key.
    "ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
     ALTER TABLE executions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
     CREATE INDEX sessions_by_tenant ON sessions(tenant, created_at, id);",
    "ALTER TABLE sessions ADD COLUMN isolation TEXT;",
];

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

/// What opening the store found and closed: work a previous run of sandboxd left open.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Executions that were queued or running, now `interrupted`.
    pub executions: usize,
    /// Sessions that had a sandbox, now `stopped` (reason `server_restart`).
    pub sessions: usize,
}

/// Rows per status: `(status, count)`.
pub type StatusCounts = Vec<(String, u64)>;

const SESSION_COLUMNS: &str =
    "id, status, template, spec, created_at, deleted_at, kernel_restarts, stop_reason, stopped_at, workspace_removed_at,
     last_kernel_death, tenant, isolation";

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, migrates it, and closes what a
    /// previous run left open (see [`Recovered`]).
    pub fn open(path: &Path) -> Result<(Store, Recovered), StoreError> {
        let conn =
            Connection::open(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let store = Self::init(conn)?;
        let recovered = store.recover()?;
        Ok((store, recovered))
    }

    /// Opens the database at `path` beside a server that may be running on it (the `keys`
    /// commands): migrated, but nothing of the server's work is touched.
    pub fn open_beside(path: &Path) -> Result<Store, StoreError> {
        let conn =
            Connection::open(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn =
            Connection::open_in_memory().map_err(|source| StoreError::Open { path: ":memory:".into(), source })?;
        Self::init(conn)
    }

    fn init(mut conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let version = i + 1;
            let tx = conn.transaction().map_err(|source| StoreError::Migrate { version, source })?;
            tx.execute_batch(sql).map_err(|source| StoreError::Migrate { version, source })?;
            tx.pragma_update(None, "user_version", version)
                .map_err(|source| StoreError::Migrate { version, source })?;
            tx.commit().map_err(|source| StoreError::Migrate { version, source })?;
        }
        Ok(Store { conn: Mutex::new(conn) })
    }

    /// Closes what a previous run left open (see [`Recovered`]).
    fn recover(&self) -> Result<Recovered, StoreError> {
        let conn = self.conn();
        let now = Utc::now().to_rfc3339();
        // What was queued or running when the last run ended will never finish.
        let executions = conn.execute(
            "UPDATE executions SET status = ?2, reason = ?3, finished_at = ?1 WHERE status IN (?4, ?5)",
            params![
                now,
                ExecutionStatus::Interrupted.as_str(),
                ExecutionReason::ServerRestart.as_str(),
                ExecutionStatus::Running.as_str(),
                ExecutionStatus::Queued.as_str()
            ],
        )?;
        let sessions = conn.execute(
            "UPDATE sessions SET status = 'stopped', stop_reason = 'server_restart', stopped_at = ?1
             WHERE status = 'running'",
            params![now],
        )?;
        Ok(Recovered { executions, sessions })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Proves the database accepts writes (for /readyz).
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
        Ok(())
    }

    pub fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
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
        self.conn().execute(
            "INSERT INTO sessions (id, status, template, spec, created_at, deleted_at, tenant)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                s.id,
                s.status.as_str(),
                s.template,
                spec,
                s.created_at.to_rfc3339(),
                s.deleted_at.map(|t| t.to_rfc3339()),
                s.tenant
            ],
        )?;
        Ok(())
    }

    /// Counts one more kernel death of session `id`.
    /// Counts a kernel that died and was replaced, and records why (`None` keeps the last word).
    pub fn bump_kernel_restarts(&self, id: &str, why: Option<&str>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sessions SET kernel_restarts = kernel_restarts + 1,
                last_kernel_death = COALESCE(?2, last_kernel_death) WHERE id = ?1",
            params![id, why],
        )?;
        Ok(())
    }

    /// Records the isolation layers of session `id`'s sandbox, as its runtime names them.
    pub fn set_isolation(&self, id: &str, layers: &str) -> Result<(), StoreError> {
        self.conn().execute("UPDATE sessions SET isolation = ?2 WHERE id = ?1", params![id, layers])?;
        Ok(())
    }

    pub fn delete_session_record(&self, id: &str) -> Result<(), StoreError> {
        self.conn().execute("DELETE FROM sessions WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Marks a session deleted; returns false if it did not exist or was already deleted.
    pub fn mark_session_deleted(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE sessions SET status = 'deleted', deleted_at = ?2 WHERE id = ?1 AND status != 'deleted'",
            params![id, at.to_rfc3339()],
        )?;
        Ok(n == 1)
    }

    pub fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"))?;
        let raw = stmt.query_row(params![id], RawSession::from_row).optional()?;
        raw.map(RawSession::into_session).transpose()
    }

    /// At most `limit` sessions, oldest first, after `cursor` (from the page before); only
    /// tenant `tenant`'s, if given.
    pub fn page_sessions(
        &self,
        limit: usize,
        cursor: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Page<Session>, StoreError> {
        let (key, name) = cursor.map(cursor::decode).transpose()?.unwrap_or_default();
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE (created_at, id) > (?1, ?2) AND (?4 IS NULL OR tenant = ?4)
             ORDER BY created_at, id LIMIT ?3"
        ))?;
        let raws = stmt
            .query_map(params![key, name, limit as i64 + 1, tenant], RawSession::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let items = raws.into_iter().map(RawSession::into_session).collect::<Result<Vec<_>, _>>()?;
        Page::of(
            items,
            limit,
            |s| s.id.clone(),
            |id| conn.query_row("SELECT created_at FROM sessions WHERE id = ?1", params![id], |r| r.get(0)),
        )
    }

    /// Sessions with status `status`.
    pub fn sessions_with_status(&self, status: SessionStatus) -> Result<Vec<Session>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE status = ?1 ORDER BY created_at"))?;
        let raws = stmt.query_map(params![status.as_str()], RawSession::from_row)?.collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(RawSession::into_session).collect()
    }

    /// Marks a running session stopped; false if it was not running.
    pub fn mark_session_stopped(&self, id: &str, reason: &str, at: Timestamp) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE sessions SET status = 'stopped', stop_reason = ?2, stopped_at = ?3 WHERE id = ?1 AND status = 'running'",
            params![id, reason, at.to_rfc3339()],
        )?;
        Ok(n == 1)
    }

    /// Sets session `id`'s lifetime (seconds its sandbox may run from its start).
    pub fn set_max_lifetime(&self, id: &str, seconds: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sessions SET spec = json_set(spec, '$.max_lifetime_s', ?2) WHERE id = ?1",
            params![id, i64::try_from(seconds).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    /// Marks a stopped session running again; false if it was not stopped.
    pub fn mark_session_resumed(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE sessions SET status = 'running', stop_reason = NULL, stopped_at = NULL WHERE id = ?1 AND status = 'stopped'",
            params![id],
        )?;
        Ok(n == 1)
    }

    pub fn mark_workspace_removed(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sessions SET workspace_removed_at = ?2 WHERE id = ?1 AND workspace_removed_at IS NULL",
            params![id, at.to_rfc3339()],
        )?;
        Ok(())
    }

    /// Stopped or deleted sessions whose workspace is still there, and that stopped (or were
    /// deleted) before `before`: their retention is over.
    pub fn workspaces_to_remove(&self, before: Timestamp) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, COALESCE(deleted_at, stopped_at) FROM sessions
             WHERE status IN ('stopped', 'deleted') AND workspace_removed_at IS NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))?;
        let mut due = Vec::new();
        for row in rows {
            let (id, since) = row?;
            // Compared as times, not as text: RFC 3339 strings of different offsets do not sort.
            let since = since.as_deref().map(|t| parse_time(&id, t)).transpose()?;
            if since.is_some_and(|t| t < before) {
                due.push(id);
            }
        }
        Ok(due)
    }

    /// How many of tenant `tenant`'s sessions are running.
    pub fn running_sessions_of(&self, tenant: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM sessions WHERE tenant = ?1 AND status = 'running'",
            params![tenant],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The ids of tenant `tenant`'s sessions that still have a workspace.
    pub fn workspaces_of(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id FROM sessions WHERE tenant = ?1 AND workspace_removed_at IS NULL")?;
        let ids = stmt.query_map(params![tenant], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    /// How many of tenant `tenant`'s executions are queued or running.
    pub fn active_executions_of(&self, tenant: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM executions WHERE tenant = ?1 AND status IN ('queued', 'running')",
            params![tenant],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The memory limits of all running sessions together, MiB (admission control counts it
    /// on every create: summed here rather than by loading every session).
    pub fn running_memory_mb(&self) -> Result<u64, StoreError> {
        let mb: i64 = self.conn().query_row(
            "SELECT COALESCE(SUM(json_extract(spec, '$.limits.memory_mb')), 0) FROM sessions WHERE status = 'running'",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(mb).unwrap_or(0))
    }

    /// How many sessions and executions there are of each status (for /metrics).
    pub fn counts(&self) -> Result<(StatusCounts, StatusCounts), StoreError> {
        let conn = self.conn();
        let count = |table: &str| -> Result<StatusCounts, StoreError> {
            let mut stmt = conn.prepare_cached(&format!("SELECT status, COUNT(*) FROM {table} GROUP BY status"))?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        };
        Ok((count("sessions")?, count("executions")?))
    }

    /// Adds a template; false if one of that name exists.
    pub fn insert_template(&self, t: &Template) -> Result<bool, StoreError> {
        let record = serde_json::to_string(t).map_err(|e| corrupt_json(&t.name, e))?;
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO templates (name, record, created_at) VALUES (?1, ?2, ?3)",
            params![t.name, record, t.created_at.to_rfc3339()],
        )?;
        Ok(n == 1)
    }

    /// Replaces the record of an existing template (its build finished).
    pub fn update_template(&self, t: &Template) -> Result<(), StoreError> {
        let record = serde_json::to_string(t).map_err(|e| corrupt_json(&t.name, e))?;
        self.conn().execute("UPDATE templates SET record = ?2 WHERE name = ?1", params![t.name, record])?;
        Ok(())
    }

    pub fn get_template(&self, name: &str) -> Result<Option<Template>, StoreError> {
        let record: Option<String> = self
            .conn()
            .query_row("SELECT record FROM templates WHERE name = ?1", params![name], |r| r.get(0))
            .optional()?;
        record.map(|r| serde_json::from_str(&r).map_err(|e| corrupt_json(name, e))).transpose()
    }

    pub fn list_templates(&self) -> Result<Vec<Template>, StoreError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.page_templates(1000, cursor.as_deref(), None)?;
            all.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// At most `limit` templates, oldest first, after `cursor` (from the page before); if
    /// `tenant` is given, only the shared ones and that tenant's.
    pub fn page_templates(
        &self,
        limit: usize,
        cursor: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Page<Template>, StoreError> {
        let (key, name) = cursor.map(cursor::decode).transpose()?.unwrap_or_default();
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name, record FROM templates WHERE (created_at, name) > (?1, ?2)
                AND (?4 IS NULL OR COALESCE(json_extract(record, '$.tenant'), ?4) = ?4)
             ORDER BY created_at, name LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![key, name, limit as i64 + 1, tenant], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut items = Vec::new();
        for row in rows {
            let (name, record) = row?;
            items.push(serde_json::from_str::<Template>(&record).map_err(|e| corrupt_json(&name, e))?);
        }
        Page::of(
            items,
            limit,
            |t| t.name.clone(),
            |name| conn.query_row("SELECT created_at FROM templates WHERE name = ?1", params![name], |r| r.get(0)),
        )
    }

    /// Removes a template; false if there was none of that name.
    pub fn delete_template(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM templates WHERE name = ?1", params![name])? == 1)
    }

    /// Whether any session that is not deleted uses template `name`.
    pub fn template_in_use(&self, name: &str) -> Result<bool, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM sessions WHERE template = ?1 AND status != 'deleted'",
            params![name],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Whether any template still names `image`.
    pub fn image_in_use(&self, image: &str) -> Result<bool, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM templates WHERE json_extract(record, '$.image') = ?1",
            params![image],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Adds execution `e` of tenant `tenant` (its session's, or the caller's for `/v1/run`).
    pub fn insert_execution(&self, e: &Execution, code: &str, tenant: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO executions (id, session_id, language, code, status, exit_code, reason, stdout, stderr,
                stdout_truncated, stderr_truncated, duration_ms, started_at, finished_at, outputs, metrics, callback_url,
                outputs_truncated, tenant)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            params![
                e.id,
                e.session_id,
                e.language.as_str(),
                code,
                e.status.as_str(),
                e.exit_code,
                stored_reason(e),
                e.stdout,
                e.stderr,
                e.stdout_truncated,
                e.stderr_truncated,
                e.duration_ms,
                e.started_at.to_rfc3339(),
                e.finished_at.map(|t| t.to_rfc3339()),
                outputs_json(e)?,
                metrics_json(e)?,
                e.callback.as_ref().map(|c| c.url.clone()),
                e.outputs_truncated,
                tenant
            ],
        )?;
        Ok(())
    }

    /// Records one attempt to deliver execution `id` to its callback URL.
    pub fn add_callback_attempt(&self, id: &str, attempt: &CallbackAttempt) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO callback_attempts (execution_id, at, status, error) VALUES (?1, ?2, ?3, ?4)",
            params![id, attempt.at.to_rfc3339(), attempt.status, attempt.error],
        )?;
        Ok(())
    }

    fn callback_of(&self, id: &str, url: Option<String>) -> Result<Option<Callback>, StoreError> {
        let Some(url) = url else { return Ok(None) };
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT at, status, error FROM callback_attempts WHERE execution_id = ?1 ORDER BY at")?;
        let rows = stmt
            .query_map(params![id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<u16>>(1)?, r.get::<_, Option<String>>(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let attempts = rows
            .into_iter()
            .map(|(at, status, error)| Ok(CallbackAttempt { at: parse_time(id, &at)?, status, error }))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let delivered = attempts.iter().any(|a| a.status.is_some_and(|s| (200..300).contains(&s)));
        Ok(Some(Callback { url, delivered, attempts }))
    }

    /// A queued execution got its turn.
    pub fn mark_running(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("UPDATE executions SET status = 'running' WHERE id = ?1 AND status = 'queued'", params![id])?;
        Ok(())
    }

    /// Stores the outcome of a finished execution.
    pub fn finish_execution(&self, e: &Execution) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE executions SET status = ?2, exit_code = ?3, reason = ?4, stdout = ?5, stderr = ?6,
                stdout_truncated = ?7, stderr_truncated = ?8, duration_ms = ?9, finished_at = ?10,
                outputs = ?11, metrics = ?12, outputs_truncated = ?13
             WHERE id = ?1",
            params![
                e.id,
                e.status.as_str(),
                e.exit_code,
                stored_reason(e),
                e.stdout,
                e.stderr,
                e.stdout_truncated,
                e.stderr_truncated,
                e.duration_ms,
                e.finished_at.map(|t| t.to_rfc3339()),
                outputs_json(e)?,
                metrics_json(e)?,
                e.outputs_truncated
            ],
        )?;
        Ok(())
    }

    /// Execution `id`; only if it is tenant `tenant`'s, if given.
    pub fn get_execution(&self, id: &str, tenant: Option<&str>) -> Result<Option<Execution>, StoreError> {
        let raw = {
            let conn = self.conn();
            let mut stmt =
                conn.prepare_cached(&format!("{EXECUTION_COLUMNS} WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)"))?;
            stmt.query_row(params![id, tenant], RawExecution::from_row).optional()?
        };
        let Some(raw) = raw else { return Ok(None) };
        let url = raw.callback_url.clone();
        let mut e = raw.into_execution()?;
        e.callback = self.callback_of(&e.id, url)?;
        Ok(Some(e))
    }

    /// A session's executions, oldest first. Summaries (`with_outputs` false) leave `stdout`,
    /// `stderr` and `outputs` empty and never read them: a session's outputs can be large.
    pub fn list_executions(&self, session_id: &str, with_outputs: bool) -> Result<Vec<Execution>, StoreError> {
        Ok(self.page_executions(session_id, with_outputs, usize::MAX >> 1, None)?.items)
    }

    /// At most `limit` of a session's executions, oldest first, after `cursor`.
    pub fn page_executions(
        &self,
        session_id: &str,
        with_outputs: bool,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Execution>, StoreError> {
        let (key, name) = cursor.map(cursor::decode).transpose()?.unwrap_or_default();
        let conn = self.conn();
        let columns = if with_outputs { EXECUTION_COLUMNS } else { EXECUTION_SUMMARY_COLUMNS };
        let mut stmt = conn.prepare_cached(&format!(
            "{columns} WHERE session_id = ?1 AND (started_at, id) > (?2, ?3) ORDER BY started_at, id LIMIT ?4"
        ))?;
        let raws = stmt
            .query_map(params![session_id, key, name, (limit as i64).saturating_add(1)], RawExecution::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let items = raws.into_iter().map(RawExecution::into_execution).collect::<Result<Vec<_>, _>>()?;
        Page::of(
            items,
            limit,
            |e| e.id.clone(),
            |id| conn.query_row("SELECT started_at FROM executions WHERE id = ?1", params![id], |r| r.get(0)),
        )
    }

    /// Deletes finished executions that finished before `finished_before`, and those older than
    /// the newest `keep_per_session` of each session (and of `/v1/run`'s, which have none),
    /// with their callback attempts. Queued and running ones count among the newest but are
    /// never deleted. Returns how many went.
    pub fn prune_executions(
        &self,
        finished_before: Option<DateTime<Utc>>,
        keep_per_session: Option<usize>,
    ) -> Result<usize, StoreError> {
        let conn = self.conn();
        let mut removed = 0;
        if let Some(before) = finished_before {
            removed += conn.execute(
                "DELETE FROM executions WHERE finished_at IS NOT NULL AND finished_at < ?1
                    AND status NOT IN ('queued', 'running')",
                params![before.to_rfc3339()],
            )?;
        }
        if let Some(keep) = keep_per_session {
            let keep = i64::try_from(keep).unwrap_or(i64::MAX);
            let crowded: Vec<Option<String>> = conn
                .prepare_cached("SELECT session_id FROM executions GROUP BY session_id HAVING COUNT(*) > ?1")?
                .query_map(params![keep], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for session in crowded {
                removed += conn.execute(
                    "DELETE FROM executions WHERE id IN (
                        SELECT id FROM (SELECT id, status FROM executions WHERE session_id IS ?1
                                        ORDER BY started_at DESC, id DESC LIMIT -1 OFFSET ?2)
                        WHERE status NOT IN ('queued', 'running'))",
                    params![session, keep],
                )?;
            }
        }
        if removed > 0 {
            conn.execute("DELETE FROM callback_attempts WHERE execution_id NOT IN (SELECT id FROM executions)", [])?;
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

const EXECUTION_COLUMNS: &str = "SELECT id, session_id, language, status, exit_code, reason, stdout, stderr,
    stdout_truncated, stderr_truncated, duration_ms, started_at, finished_at, outputs, metrics, callback_url,
    outputs_truncated FROM executions";
const EXECUTION_SUMMARY_COLUMNS: &str = "SELECT id, session_id, language, status, exit_code, reason, '', '',
    stdout_truncated, stderr_truncated, duration_ms, started_at, finished_at, '[]', metrics, callback_url,
    outputs_truncated FROM executions";

fn metrics_json(e: &Execution) -> Result<Option<String>, StoreError> {
    e.metrics
        .map(|m| serde_json::to_string(&m))
        .transpose()
        .map_err(|err| StoreError::Corrupt { id: e.id.clone(), detail: err.to_string() })
}

fn outputs_json(e: &Execution) -> Result<String, StoreError> {
    serde_json::to_string(&e.outputs).map_err(|err| StoreError::Corrupt { id: e.id.clone(), detail: err.to_string() })
}

fn corrupt_json(id: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt { id: id.into(), detail: e.to_string() }
}

fn parse_time(id: &str, s: &str) -> Result<Timestamp, StoreError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt { id: id.into(), detail: format!("time {s:?}: {e}") })
}

struct RawSession {
    id: String,
    status: String,
    template: String,
    spec: String,
    created_at: String,
    deleted_at: Option<String>,
    kernel_restarts: u64,
    stop_reason: Option<String>,
    stopped_at: Option<String>,
    workspace_removed_at: Option<String>,
    last_kernel_death: Option<String>,
    tenant: String,
    isolation: Option<String>,
}

impl RawSession {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawSession {
            id: r.get(0)?,
            status: r.get(1)?,
            template: r.get(2)?,
            spec: r.get(3)?,
            created_at: r.get(4)?,
            deleted_at: r.get(5)?,
            kernel_restarts: r.get(6)?,
            stop_reason: r.get(7)?,
            stopped_at: r.get(8)?,
            workspace_removed_at: r.get(9)?,
            last_kernel_death: r.get(10)?,
            tenant: r.get(11)?,
            isolation: r.get(12)?,
        })
    }

    fn into_session(self) -> Result<Session, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { id: self.id.clone(), detail };
        let spec: SessionSpec = serde_json::from_str(&self.spec).map_err(|e| corrupt(e.to_string()))?;
        let status = SessionStatus::parse(&self.status).ok_or_else(|| corrupt(format!("status {:?}", self.status)))?;
        let time = |t: &Option<String>| t.as_deref().map(|t| parse_time(&self.id, t)).transpose();
        Ok(Session {
            status,
            template: self.template.clone(),
            env: spec.env,
            limits: spec.limits,
            timeout_s: spec.timeout_s,
            metadata: spec.metadata,
            kernel: spec.kernel,
            kernel_restarts: self.kernel_restarts,
            last_kernel_death: self.last_kernel_death.clone(),
            isolation: self.isolation.clone(),
            from_pool: spec.from_pool,
            idle_timeout_s: spec.idle_timeout_s,
            max_lifetime_s: spec.max_lifetime_s,
            auto_resume: spec.auto_resume,
            stop_reason: self.stop_reason.clone(),
            stopped_at: time(&self.stopped_at)?,
            workspace_removed_at: time(&self.workspace_removed_at)?,
            created_at: parse_time(&self.id, &self.created_at)?,
            deleted_at: time(&self.deleted_at)?,
            tenant: self.tenant,
            id: self.id,
        })
    }
}

struct RawExecution {
    id: String,
    session_id: Option<String>,
    language: String,
    status: String,
    exit_code: Option<i32>,
    reason: Option<String>,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
    duration_ms: Option<u64>,
    started_at: String,
    finished_at: Option<String>,
    outputs: String,
    metrics: Option<String>,
    callback_url: Option<String>,
    outputs_truncated: bool,
}

impl RawExecution {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawExecution {
            id: r.get(0)?,
            session_id: r.get(1)?,
            language: r.get(2)?,
            status: r.get(3)?,
            exit_code: r.get(4)?,
            reason: r.get(5)?,
            stdout: r.get(6)?,
            stderr: r.get(7)?,
            stdout_truncated: r.get(8)?,
            stderr_truncated: r.get(9)?,
            duration_ms: r.get(10)?,
            started_at: r.get(11)?,
            finished_at: r.get(12)?,
            outputs: r.get(13)?,
            metrics: r.get(14)?,
            callback_url: r.get(15)?,
            outputs_truncated: r.get(16)?,
        })
    }

    fn into_execution(self) -> Result<Execution, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { id: self.id.clone(), detail };
        let language: Language = serde_json::from_value(serde_json::Value::String(self.language.clone()))
            .map_err(|e| corrupt(e.to_string()))?;
        let status =
            ExecutionStatus::parse(&self.status).ok_or_else(|| corrupt(format!("status {:?}", self.status)))?;
        Ok(Execution {
            session_id: self.session_id,
            language,
            status,
            exit_code: self.exit_code,
            reason: self.reason.as_deref().and_then(ExecutionReason::parse),
            signal: self.reason.as_deref().and_then(|r| r.strip_prefix("signal ")).and_then(|n| n.parse().ok()),
            stdout: self.stdout,
            stderr: self.stderr,
            stdout_truncated: self.stdout_truncated,
            stderr_truncated: self.stderr_truncated,
            duration_ms: self.duration_ms,
            outputs: serde_json::from_str(&self.outputs).map_err(|e| corrupt(e.to_string()))?,
            outputs_truncated: self.outputs_truncated,
            metrics: self
                .metrics
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            callback: self.callback_url.map(|url| Callback { url, delivered: false, attempts: Vec::new() }),
            started_at: parse_time(&self.id, &self.started_at)?,
            finished_at: self.finished_at.as_deref().map(|t| parse_time(&self.id, t)).transpose()?,
            id: self.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> Session {
        Session {
            id: id.into(),
            tenant: "default".into(),
            status: SessionStatus::Running,
            template: "default".into(),
            env: [("A".to_string(), "1".to_string())].into(),
            limits: Limits { memory_mb: 512, pids: 128, cpu: 1.0 },
            timeout_s: 30.0,
            metadata: serde_json::Map::new(),
            kernel: Some("python".into()),
            kernel_restarts: 0,
            isolation: None,
            last_kernel_death: None,
            from_pool: false,
            idle_timeout_s: 900,
            max_lifetime_s: 86400,
            auto_resume: true,
            stop_reason: None,
            stopped_at: None,
            workspace_removed_at: None,
            created_at: Utc::now(),
            deleted_at: None,
        }
    }

    fn execution(id: &str, session: &str) -> Execution {
        Execution::new(id.into(), Some(session.into()), Language::Python, ExecutionStatus::Running)
    }

    #[test]
    fn templates_are_stored_whole_and_names_are_unique() {
        let store = Store::open_in_memory().expect("open");
        let now = Utc::now();
        let t = Template {
            name: "data".into(),
            tenant: Some("acme".into()),
            description: "pandas and friends".into(),
            rootfs: "host".into(),
            image: Some("acme/data:1".into()),
            limits: Limits { memory_mb: 1024, pids: 128, cpu: 2.0 },
            timeout_s: 30.0,
            kernel: Some("python".into()),
            env: [("A".to_string(), "1".to_string())].into(),
            packages: vec!["six".into()],
            pool_size: 1,
            idle_timeout_s: 60,
            max_lifetime_s: 3600,
            allowed_uploads: vec!["csv".into()],
            status: sandbox_api::TemplateStatus::Building,
            error: None,
            installed: vec![],
            builtin: false,
            created_at: now,
            updated_at: now,
        };
        assert!(store.insert_template(&t).expect("insert"));
        assert!(!store.insert_template(&t).expect("insert again"), "a second template of one name is refused");
        let ready = Template { status: sandbox_api::TemplateStatus::Ready, ..t.clone() };
        store.update_template(&ready).expect("update");
        assert_eq!(store.get_template("data").expect("get"), Some(ready.clone()));
        assert_eq!(store.list_templates().expect("list"), vec![ready]);
        assert!(!store.template_in_use("data").expect("in use"));
        store.insert_session(&Session { template: "data".into(), ..session("s1") }).expect("session");
        assert!(store.template_in_use("data").expect("in use"));
        store.mark_session_deleted("s1", Utc::now()).expect("delete");
        assert!(!store.template_in_use("data").expect("in use"));
        assert!(
            store.image_in_use("acme/data:1").expect("image") && !store.image_in_use("acme/other:1").expect("image")
        );
        assert!(store.delete_template("data").expect("delete"));
        assert!(!store.image_in_use("acme/data:1").expect("image"), "gone with its template");
        assert!(!store.delete_template("data").expect("delete again"));
        assert_eq!(store.get_template("data").expect("get"), None);
    }

    #[test]
    fn templates_come_a_page_at_a_time_in_creation_order_shared_ones_to_every_tenant() {
        let store = Store::open_in_memory().expect("open");
        let names = ["c", "a", "b"];
        let tenants = [None, Some("acme"), Some("other")];
        for (i, (name, tenant)) in names.iter().zip(tenants).enumerate() {
            let at = Utc::now() + chrono::Duration::seconds(i as i64);
            let t = Template {
                name: name.to_string(),
                tenant: tenant.map(String::from),
                description: String::new(),
                rootfs: "host".into(),
                image: None,
                limits: Limits { memory_mb: 512, pids: 64, cpu: 1.0 },
                timeout_s: 30.0,
                kernel: None,
                env: Default::default(),
                packages: vec![],
                pool_size: 0,
                idle_timeout_s: 60,
                max_lifetime_s: 3600,
                allowed_uploads: vec![],
                status: sandbox_api::TemplateStatus::Ready,
                error: None,
                installed: vec![],
                builtin: false,
                created_at: at,
                updated_at: at,
            };
            assert!(store.insert_template(&t).expect("insert"));
        }
        let first = store.page_templates(2, None, None).expect("page");
        let rest = store.page_templates(2, first.next.as_deref(), None).expect("page");
        let seen: Vec<&str> = first.items.iter().chain(&rest.items).map(|t| t.name.as_str()).collect();
        assert_eq!((seen, first.next.is_some(), rest.next), (names.to_vec(), true, None));
        let acme = store.page_templates(10, None, Some("acme")).expect("page");
        let seen: Vec<&str> = acme.items.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(seen, ["c", "a"], "the shared one and acme's");
    }

    #[test]
    fn a_tenant_scope_finds_only_that_tenants_sessions_and_executions() {
        let store = Store::open_in_memory().expect("open");
        for (id, tenant) in [("s1", "acme"), ("s2", "other"), ("s3", "acme")] {
            store.insert_session(&Session { tenant: tenant.into(), ..session(id) }).expect("insert");
            store.insert_execution(&execution(&format!("e-{id}"), id), "1", tenant).expect("insert");
        }
        let ids = |tenant| -> Vec<String> {
            let page = store.page_sessions(10, None, tenant).expect("page");
            page.items.into_iter().map(|s| s.id).collect()
        };
        assert_eq!(ids(Some("acme")), ["s1", "s3"]);
        assert_eq!(ids(Some("nobody")), Vec::<String>::new());
        assert_eq!(ids(None).len(), 3);
        assert_eq!(store.get_session("s2").expect("get").map(|s| s.tenant), Some("other".into()));
        assert!(store.get_execution("e-s2", Some("acme")).expect("get").is_none(), "not acme's");
        assert!(store.get_execution("e-s2", Some("other")).expect("get").is_some());
        assert!(store.get_execution("e-s2", None).expect("get").is_some());
    }

    #[test]
    fn sessions_and_executions_survive_reopen_and_running_ones_are_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        {
            let (store, recovered) = Store::open(&path).expect("open");
            assert_eq!(recovered, Recovered::default());
            store.insert_session(&session("s1")).expect("insert");
            let mut done = execution("e1", "s1");
            store.insert_execution(&done, "print(1)", "default").expect("insert");
            done.status = ExecutionStatus::Succeeded;
            done.exit_code = Some(0);
            done.stdout = "1\n".into();
            done.metrics = Some(sandbox_api::Metrics { wall_ms: 3, cpu_ms: Some(2), peak_memory_bytes: None });
            done.outputs =
                vec![sandbox_api::Output::Stream { name: sandbox_api::StreamName::Stdout, text: "1\n".into() }];
            done.finished_at = Some(Utc::now());
            store.finish_execution(&done).expect("finish");
            store.insert_execution(&execution("e2", "s1"), "while True: pass", "default").expect("insert");
        }
        let (store, recovered) = Store::open(&path).expect("reopen");
        assert_eq!(recovered, Recovered { executions: 1, sessions: 1 });
        let s1 = store.get_session("s1").expect("get").expect("exists");
        assert_eq!(s1.env["A"], "1");
        assert_eq!((s1.status, s1.stop_reason.as_deref()), (SessionStatus::Stopped, Some("server_restart")));
        assert!(s1.stopped_at.is_some());
        let list = store.list_executions("s1", true).expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].outputs.len(), 1);
        let summaries = store.list_executions("s1", false).expect("list");
        assert_eq!(summaries.len(), 2);
        assert!(summaries[0].outputs.is_empty() && summaries[0].stdout.is_empty(), "summaries leave outputs out");
        assert_eq!(summaries[0].metrics, list[0].metrics);
        let e1 = store.get_execution("e1", None).expect("get").expect("exists");
        assert_eq!((e1.status, e1.stdout.as_str()), (ExecutionStatus::Succeeded, "1\n"));
        assert_eq!(e1.outputs.len(), 1);
        assert_eq!(e1.metrics.map(|m| m.cpu_ms), Some(Some(2)));
        assert_eq!(store.running_memory_mb().expect("sum"), 0, "s1 was stopped by the reopen");
        store.bump_kernel_restarts("s1", Some("exited with code 3")).expect("bump");
        store.bump_kernel_restarts("s1", None).expect("bump");
        let s1 = store.get_session("s1").expect("get").expect("exists");
        assert_eq!((s1.kernel_restarts, s1.last_kernel_death.as_deref()), (2, Some("exited with code 3")));
        let e2 = store.get_execution("e2", None).expect("get").expect("exists");
        assert_eq!(
            (e2.status, e2.reason),
            (ExecutionStatus::Interrupted, Some(sandbox_api::ExecutionReason::ServerRestart))
        );
        assert!(e2.finished_at.is_some());
    }

    #[test]
    fn executions_are_pruned_by_age_and_count_never_while_pending() {
        let store = Store::open_in_memory().expect("open");
        store.insert_session(&session("s1")).expect("insert");
        store.insert_session(&session("s2")).expect("insert");
        assert_eq!(store.running_memory_mb().expect("sum"), 1024, "two running sessions of 512 MiB");
        let long_ago = Utc::now() - chrono::Duration::days(30);
        for i in 0..6 {
            let mut e = execution(&format!("e{i}"), "s1");
            e.started_at = long_ago + chrono::Duration::seconds(i);
            e.outputs_truncated = i == 5;
            store.insert_execution(&e, "1", "default").expect("insert");
            if i < 5 {
                e.status = ExecutionStatus::Succeeded;
                // e0 and e1 finished long ago; the others just now.
                e.finished_at = Some(if i < 2 { long_ago } else { Utc::now() });
                store.finish_execution(&e).expect("finish");
            }
        }
        store
            .add_callback_attempt("e0", &CallbackAttempt { at: Utc::now(), status: Some(500), error: None })
            .expect("attempt");
        let ids = |store: &Store| -> Vec<String> {
            store.list_executions("s1", false).expect("list").into_iter().map(|e| e.id).collect()
        };
        assert_eq!(store.prune_executions(Some(Utc::now() - chrono::Duration::days(7)), None).expect("prune"), 2);
        assert_eq!(ids(&store), ["e2", "e3", "e4", "e5"]);
        // Keep two per session: e5 is running (kept, and counted), so e2 and e3 go.
        assert_eq!(store.prune_executions(None, Some(2)).expect("prune"), 2);
        assert_eq!(ids(&store), ["e4", "e5"]);
        assert!(store.get_execution("e5", None).expect("get").expect("exists").outputs_truncated);
        let orphans: i64 =
            store.conn().query_row("SELECT COUNT(*) FROM callback_attempts", [], |r| r.get(0)).expect("count");
        assert_eq!(orphans, 0, "attempts of pruned executions go too");
        assert_eq!(store.prune_executions(None, Some(2)).expect("prune"), 0);
    }

    #[test]
    fn stop_resume_and_retention() {
        let store = Store::open_in_memory().expect("open");
        for id in ["s1", "s2", "s3"] {
            store.insert_session(&session(id)).expect("insert");
        }
        let long_ago = Utc::now() - chrono::Duration::hours(48);
        assert!(store.mark_session_stopped("s1", "idle", long_ago).expect("stop"));
        assert!(!store.mark_session_stopped("s1", "idle", long_ago).expect("stop again"), "only a running one");
        assert!(store.mark_session_stopped("s2", "lifetime", Utc::now()).expect("stop"));
        store.mark_session_deleted("s3", long_ago).expect("delete");
        let due = store.workspaces_to_remove(Utc::now() - chrono::Duration::hours(24)).expect("due");
        assert_eq!(due, ["s1", "s3"]);
        store.mark_workspace_removed("s1", Utc::now()).expect("removed");
        let due = store.workspaces_to_remove(Utc::now() - chrono::Duration::hours(24)).expect("due");
        assert_eq!(due, ["s3"]);
        assert!(store.mark_session_resumed("s2").expect("resume"));
        let s2 = store.get_session("s2").expect("get").expect("exists");
        assert_eq!((s2.status, s2.stop_reason, s2.stopped_at), (SessionStatus::Running, None, None));
        assert!(!store.mark_session_resumed("s3").expect("deleted"), "a deleted session never resumes");
        let (sessions, _) = store.counts().expect("counts");
        assert_eq!(sessions, [("deleted".to_string(), 1), ("running".to_string(), 1), ("stopped".to_string(), 1)]);
        assert_eq!(store.sessions_with_status(SessionStatus::Running).expect("running").len(), 1);
    }

    #[test]
    fn deleting_twice_reports_false() {
        let store = Store::open_in_memory().expect("open");
        store.insert_session(&session("s1")).expect("insert");
        assert!(store.mark_session_deleted("s1", Utc::now()).expect("delete"));
        assert!(!store.mark_session_deleted("s1", Utc::now()).expect("delete"));
        assert_eq!(store.get_session("s1").expect("get").expect("exists").status, SessionStatus::Deleted);
        assert!(store.get_session("nope").expect("get").is_none());
        store.check_writable().expect("writable");
    }
}
