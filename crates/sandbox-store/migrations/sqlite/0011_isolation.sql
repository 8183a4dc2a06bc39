ALTER TABLE sessions ADD COLUMN isolation TEXT;
