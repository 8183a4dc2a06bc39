-- The bytes of a session's workspace when whichever replica had it last measured them: a
-- tenant's limit sums them, whatever replica its workspaces are on.
ALTER TABLE sessions ADD COLUMN workspace_bytes INTEGER NOT NULL DEFAULT 0;
-- Who builds a template's environment (NULL: nobody, the build is over), and which build the
-- environment is (replicas that did not build it fetch that one from storage).
ALTER TABLE templates ADD COLUMN builder TEXT;
ALTER TABLE templates ADD COLUMN environment TEXT;
-- A build cut off before this version: nobody holds it, so any replica may take it up.
UPDATE templates SET builder = '' WHERE json_extract(record, '$.status') = 'building';
