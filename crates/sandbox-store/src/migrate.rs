//! Schema migrations: numbered `.sql` files per backend (`migrations/sqlite/`,
//! `migrations/postgres/`), applied in order at start, append only. A backend's version is
//! how many of its files were applied.
//!
//! - SQLite keeps the version in `PRAGMA user_version` (as sandboxd always has, so an existing
//!   data dir upgrades in place) and migrates inside `BEGIN IMMEDIATE`, which one process at a
//!   time gets.
//! - PostgreSQL keeps it in `schema_version` and migrates under a transaction-scoped advisory
//!   lock, so replicas starting at once migrate once: the second waits, then finds nothing to do.
//!
//! A database whose version is past the files this build has was migrated by a newer sandboxd:
//! it is refused ([`StoreError::SchemaTooNew`]) rather than served with queries of an older
//! schema.

use sqlx::AnyPool;

use crate::{Backend, StoreError};

pub(crate) const SQLITE: &[&str] = &[
    include_str!("../migrations/sqlite/0001_sessions_and_executions.sql"),
    include_str!("../migrations/sqlite/0002_outputs_and_kernel_restarts.sql"),
    include_str!("../migrations/sqlite/0003_execution_metrics.sql"),
    include_str!("../migrations/sqlite/0004_callbacks.sql"),
    include_str!("../migrations/sqlite/0005_templates.sql"),
    include_str!("../migrations/sqlite/0006_session_stops.sql"),
    include_str!("../migrations/sqlite/0007_outputs_truncated.sql"),
    include_str!("../migrations/sqlite/0008_last_kernel_death.sql"),
    include_str!("../migrations/sqlite/0009_api_keys.sql"),
    include_str!("../migrations/sqlite/0010_tenants.sql"),
    include_str!("../migrations/sqlite/0011_isolation.sql"),
    include_str!("../migrations/sqlite/0012_replicas.sql"),
    include_str!("../migrations/sqlite/0013_secrets.sql"),
    include_str!("../migrations/sqlite/0014_door_sessions.sql"),
    include_str!("../migrations/sqlite/0015_shared_sizes_and_builds.sql"),
];

const POSTGRES: &[&str] = &[
    include_str!("../migrations/postgres/0001_schema.sql"),
    include_str!("../migrations/postgres/0002_replicas.sql"),
    include_str!("../migrations/postgres/0003_secrets.sql"),
    include_str!("../migrations/postgres/0004_door_sessions.sql"),
    include_str!("../migrations/postgres/0005_shared_sizes_and_builds.sql"),
];

/// The schema version this build migrates each backend to: (SQLite, PostgreSQL).
pub const SCHEMA_VERSIONS: (usize, usize) = (SQLITE.len(), POSTGRES.len());

/// The key of the advisory lock PostgreSQL migrations hold ("sbxmigr" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6278_6d69_6772;

fn steps(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

/// Brings the database at `pool` to this build's schema, or refuses a newer one.
pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let steps = steps(backend);
    let mut conn = pool.acquire().await?;
    let begin = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };
    sqlx::query(begin).execute(&mut *conn).await?;
    let outcome = async {
        let current = match backend {
            Backend::Sqlite => sqlx::query_scalar::<_, i64>("PRAGMA user_version").fetch_one(&mut *conn).await?,
            Backend::Postgres => {
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
                sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                    .fetch_one(&mut *conn)
                    .await?
            }
        };
        let current = usize::try_from(current).unwrap_or(0);
        if current > steps.len() {
            return Err(StoreError::SchemaTooNew { found: current, known: steps.len() });
        }
        for (i, sql) in steps.iter().enumerate().skip(current) {
            let version = i + 1;
            let failed = |e: sqlx::Error| StoreError::Migrate { version, message: e.to_string() };
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&mut *conn).await.map_err(failed)?;
            let record = match backend {
                // PRAGMA takes no parameter; the version is our own number.
                Backend::Sqlite => format!("PRAGMA user_version = {version}"),
                Backend::Postgres => format!("INSERT INTO schema_version (version) VALUES ({version})"),
            };
            sqlx::query(sqlx::AssertSqlSafe(record)).execute(&mut *conn).await.map_err(failed)?;
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok(())
        }
        Err(e) => {
            // What the migration said matters more than whether the rollback could be sent; a
            // connection that is gone rolls back by itself.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}
