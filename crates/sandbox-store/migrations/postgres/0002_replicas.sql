-- The sandboxd processes sharing this database, and who runs what. Heartbeats are the
-- database's own clock in milliseconds, so replicas whose clocks differ agree on a lapse.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    adopted_by TEXT
);
ALTER TABLE sessions ADD COLUMN owner TEXT;
ALTER TABLE executions ADD COLUMN replica TEXT;
CREATE INDEX sessions_by_owner ON sessions(owner, status);
CREATE INDEX executions_by_replica ON executions(replica, status);
