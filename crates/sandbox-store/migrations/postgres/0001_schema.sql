-- The schema as the SQLite migrations 1 to 11 left it, in one step. Times are RFC 3339 text
-- and records JSON text, as on SQLite, so that one set of queries serves both; flags are
-- integers (0 or 1) for the same reason.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    template TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL,
    deleted_at TEXT,
    kernel_restarts BIGINT NOT NULL DEFAULT 0,
    stop_reason TEXT,
    stopped_at TEXT,
    workspace_removed_at TEXT,
    last_kernel_death TEXT,
    tenant TEXT NOT NULL DEFAULT 'default',
    isolation TEXT
);
CREATE INDEX sessions_by_tenant ON sessions(tenant, created_at, id);
CREATE INDEX sessions_by_status ON sessions(status);

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
    duration_ms BIGINT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    metrics TEXT,
    callback_url TEXT,
    outputs_truncated INTEGER NOT NULL DEFAULT 0,
    tenant TEXT NOT NULL DEFAULT 'default'
);
CREATE INDEX executions_by_session ON executions(session_id, started_at);
CREATE INDEX executions_by_status ON executions(status);
CREATE INDEX executions_by_finish ON executions(finished_at);

CREATE TABLE callback_attempts (
    execution_id TEXT NOT NULL,
    at TEXT NOT NULL,
    status INTEGER,
    error TEXT
);
CREATE INDEX callback_attempts_by_execution ON callback_attempts(execution_id, at);

CREATE TABLE templates (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    admin INTEGER NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
