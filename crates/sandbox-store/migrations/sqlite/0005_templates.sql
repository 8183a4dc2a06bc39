CREATE TABLE templates (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    created_at TEXT NOT NULL
);
