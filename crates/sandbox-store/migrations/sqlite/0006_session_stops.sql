ALTER TABLE sessions ADD COLUMN stop_reason TEXT;
ALTER TABLE sessions ADD COLUMN stopped_at TEXT;
ALTER TABLE sessions ADD COLUMN workspace_removed_at TEXT;
