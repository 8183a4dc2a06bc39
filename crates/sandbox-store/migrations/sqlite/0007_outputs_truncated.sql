ALTER TABLE executions ADD COLUMN outputs_truncated INTEGER NOT NULL DEFAULT 0;
CREATE INDEX executions_by_finish ON executions(finished_at);
