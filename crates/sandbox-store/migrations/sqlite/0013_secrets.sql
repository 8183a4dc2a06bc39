-- Secrets every replica must hold alike: what session tokens are made from, and what
-- replicas show each other when one forwards a request.
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
