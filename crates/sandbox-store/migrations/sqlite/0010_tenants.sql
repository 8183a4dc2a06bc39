-- Rows from before tenants belong to the tenant of requests made with no key.
ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE executions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sessions_by_tenant ON sessions(tenant, created_at, id);
