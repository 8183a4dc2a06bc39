-- What a door keeps of a client's session between requests (an MCP session's `initialize`),
-- so that any replica can take up a session another began.
CREATE TABLE door_sessions (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
