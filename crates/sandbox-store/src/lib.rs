//! The store: sessions, executions, templates and API keys, durable across restarts of
//! sandboxd, on one of two backends behind one async API:
//!
//! - **SQLite** (the embedded default): a file in the data dir, in WAL mode (one writer, many
//!   readers; commits do not wait for fsync, checkpoints do).
//! - **PostgreSQL** (`postgres://...`): what several replicas share.
//!
//! Both are reached through sqlx's runtime-chosen driver, so one set of queries serves both;
//! the few places where their SQL differs (JSON paths) are [`Backend`]'s methods. Each backend
//! has its own numbered migrations (`migrations/<backend>/`, see `migrate.rs`). Errors carry
//! no backend type: [`StoreError`] holds what the driver said, as text.

mod executions;
pub mod keys;
mod migrate;
mod replicas;
mod sessions;
mod templates;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sandbox_api::{ExecutionReason, ExecutionStatus, Timestamp};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use migrate::SCHEMA_VERSIONS;
pub use replicas::{Adopted, ReplicaRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("open database {url}: {message}")]
    Open { url: String, message: String },
    #[error("migrate database to version {version}: {message}")]
    Migrate { version: usize, message: String },
    #[error(
        "the database's schema is version {found}, newer than this sandboxd knows ({known}): a newer \
         sandboxd migrated it; run that version (or newer), or restore the database it last ran with"
    )]
    SchemaTooNew { found: usize, known: usize },
    #[error("database query: {0}")]
    Query(String),
    #[error("corrupt record {id}: {detail}")]
    Corrupt { id: String, detail: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Query(e.to_string())
    }
}

/// Which database a store runs on: chosen by its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names, if it names one this build knows.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    /// The integer at `path` inside the JSON text of `column` (`NULL` if absent).
    fn json_int(self, column: &str, path: &[&str]) -> String {
        match self {
            Backend::Sqlite => format!("json_extract({column}, '$.{}')", path.join(".")),
            Backend::Postgres => format!("CAST({column}::jsonb #>> '{{{}}}' AS BIGINT)", path.join(",")),
        }
    }

    /// The string at `key` of the JSON text of `column` (`NULL` if absent or null).
    fn json_text(self, column: &str, key: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_extract({column}, '$.{key}')"),
            Backend::Postgres => format!("({column}::jsonb ->> '{key}')"),
        }
    }

    /// The database's clock now, in milliseconds since the epoch: what heartbeats are
    /// measured by, so that replicas whose own clocks differ agree on a lapse.
    fn now_ms(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The JSON text of `column` with `key` set to the integer parameter `param` (`$2`).
    fn json_set_int(self, column: &str, key: &str, param: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_set({column}, '$.{key}', {param})"),
            Backend::Postgres => {
                format!("jsonb_set({column}::jsonb, '{{{key}}}', to_jsonb(CAST({param} AS BIGINT)))::text")
            }
        }
    }
}

/// The URL of a database this build can open (`sqlite:...`, `postgres://...`); its `Debug`
/// and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match Backend::of_url(s) {
            Some(_) => Ok(DatabaseUrl(s.to_string())),
            None => Err(format!("{}: expected postgres://... or sqlite:...", redacted(s))),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", redacted(&self.0))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redacted(&self.0))
    }
}

/// A database URL with its password hidden, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// One page of a listing, and the cursor of the next if there is more.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// The page of `rows` (fetched `limit + 1`, the one past saying there is more): its
    /// cursor is the last row's sort key and name (`key_and_name`).
    fn of(mut rows: Vec<T>, limit: usize, key_and_name: impl Fn(&T) -> (String, String)) -> Page<T> {
        if rows.len() <= limit {
            return Page { items: rows, next: None };
        }
        rows.truncate(limit);
        let next = rows.last().map(|last| {
            let (key, name) = key_and_name(last);
            cursor::encode(&key, &name)
        });
        Page { items: rows, next }
    }
}

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

/// Connections a PostgreSQL store keeps at most.
const POSTGRES_CONNECTIONS: u32 = 16;
/// Connections to a SQLite file: readers run side by side in WAL mode; writers take turns.
const SQLITE_CONNECTIONS: u32 = 4;

pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to the database at `url` (`sqlite:///path?mode=rwc`, `sqlite::memory:`,
    /// `postgres://...`) and migrates it. Nothing of a previous run's work is touched: that is
    /// [`Store::recover`]'s, so that the `keys` commands can open it beside a running server.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let open_err = |message: String| StoreError::Open { url: redacted(url), message };
        let backend = Backend::of_url(url)
            .ok_or_else(|| open_err("unknown database; expected sqlite:... or postgres://...".into()))?;
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url).map_err(|e| open_err(e.to_string()))?;
        let in_memory = url.contains(":memory:");
        let pool = match backend {
            // An in-memory database lives as long as its one connection.
            Backend::Sqlite if in_memory => {
                AnyPoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
            }
            Backend::Sqlite => AnyPoolOptions::new().max_connections(SQLITE_CONNECTIONS),
            Backend::Postgres => AnyPoolOptions::new().max_connections(POSTGRES_CONNECTIONS),
        };
        let pool = pool
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; NORMAL syncs at checkpoints,
                        // not at each commit; writers wait for each other rather than fail.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        migrate::run(&pool, backend).await?;
        Ok(Store { pool, backend })
    }

    /// The SQLite database at `path`, created if missing.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        Self::connect(&sqlite_url(path)).await
    }

    /// A private SQLite database in memory (tests).
    pub async fn open_in_memory() -> Result<Store, StoreError> {
        Self::connect("sqlite::memory:").await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes what replica `replica`'s previous run left open (see [`Recovered`]): what it was
    /// running when it ended will never finish. Other replicas' work is not touched; rows from
    /// before replicas had names (no owner) are taken as this one's. With `keep_sessions`
    /// (sandboxes that outlive sandboxd), its running sessions stay running, to be found again.
    pub async fn recover(&self, replica: &str, keep_sessions: bool) -> Result<Recovered, StoreError> {
        let mut tx = self.pool.begin().await?;
        let heir = keep_sessions.then_some(replica);
        let recovered = release(&mut tx, replica, "server_restart", true, heir).await?;
        tx.commit().await?;
        Ok(recovered)
    }

    /// Proves the database accepts writes (for /readyz).
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        match self.backend {
            Backend::Sqlite => {
                // Takes the write lock, which a full disk or a read-only file refuses.
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                sqlx::query("ROLLBACK").execute(&mut *conn).await?;
            }
            Backend::Postgres => {
                let read_only: i64 =
                    sqlx::query_scalar("SELECT CAST(pg_is_in_recovery() AS INTEGER)").fetch_one(&mut *conn).await?;
                if read_only != 0 {
                    return Err(StoreError::Query("the database is a read-only standby".into()));
                }
            }
        }
        Ok(())
    }
}

/// Ends what `replica` was running: its queued and running executions become `interrupted`
/// (reason `server_restart`: the server running them went away) and its running sessions
/// `stopped` with `stop_reason`, owned by nobody, to resume wherever they are next used.
/// `unowned_too` takes rows with no owner as the replica's (a single server's own restart).
async fn release(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    replica: &str,
    stop_reason: &str,
    unowned_too: bool,
    heir: Option<&str>,
) -> Result<Recovered, StoreError> {
    let now = Utc::now().to_rfc3339();
    let executions = sqlx::query(
        "UPDATE executions SET status = $2, reason = $3, finished_at = $1
         WHERE status IN ($4, $5) AND (replica = $6 OR ($7 = 1 AND replica IS NULL))",
    )
    .bind(&now)
    .bind(ExecutionStatus::Interrupted.as_str())
    .bind(ExecutionReason::ServerRestart.as_str())
    .bind(ExecutionStatus::Running.as_str())
    .bind(ExecutionStatus::Queued.as_str())
    .bind(replica)
    .bind(flag(unowned_too))
    .execute(&mut **tx)
    .await?;
    // Sandboxes that outlive their replica (a cluster's pods) stay running, now the heir's:
    // it finds them again when they are next used. Else the sessions stop.
    if let Some(heir) = heir {
        sqlx::query(
            "UPDATE sessions SET owner = $1
             WHERE status = 'running' AND (owner = $2 OR ($3 = 1 AND owner IS NULL))",
        )
        .bind(heir)
        .bind(replica)
        .bind(flag(unowned_too))
        .execute(&mut **tx)
        .await?;
        return Ok(Recovered { executions: count(executions.rows_affected()), sessions: 0 });
    }
    let sessions = sqlx::query(
        "UPDATE sessions SET status = 'stopped', stop_reason = $2, stopped_at = $1, owner = NULL
         WHERE status = 'running' AND (owner = $3 OR ($4 = 1 AND owner IS NULL))",
    )
    .bind(&now)
    .bind(stop_reason)
    .bind(replica)
    .bind(flag(unowned_too))
    .execute(&mut **tx)
    .await?;
    Ok(Recovered { executions: count(executions.rows_affected()), sessions: count(sessions.rows_affected()) })
}

/// The URL of the SQLite database at `path`, created if missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A `u64` as the databases keep integers.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An integer the databases kept, as the `u64` it was.
fn uint(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Flags are kept as integers on both backends (sqlx's common driver reads no SQLite boolean).
fn flag(b: bool) -> i32 {
    i32::from(b)
}

fn get_flag(row: &AnyRow, i: usize) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(i)? != 0)
}

fn corrupt_json(id: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt { id: id.into(), detail: e.to_string() }
}

fn parse_time(id: &str, s: &str) -> Result<Timestamp, StoreError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt { id: id.into(), detail: format!("time {s:?}: {e}") })
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_hide_passwords() {
        assert_eq!(Backend::of_url("sqlite:///x/db?mode=rwc"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("postgres://u:p@h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("mysql://h/db"), None);
        assert_eq!(redacted("postgres://user:secret@db:5432/x"), "postgres://user:***@db:5432/x");
        assert_eq!(redacted("postgres://user@db/x"), "postgres://user@db/x");
        let url: DatabaseUrl = "postgres://user:secret@db/x".parse().expect("parses");
        assert!(!format!("{url:?} {url}").contains("secret"));
        assert!("mysql://h/db".parse::<DatabaseUrl>().is_err());
    }
}
