ALTER TABLE executions ADD COLUMN callback_url TEXT;
CREATE TABLE callback_attempts (
    execution_id TEXT NOT NULL,
    at TEXT NOT NULL,
    status INTEGER,
    error TEXT
);
CREATE INDEX callback_attempts_by_execution ON callback_attempts(execution_id, at);
