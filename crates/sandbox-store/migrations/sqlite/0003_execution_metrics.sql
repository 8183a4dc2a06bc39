ALTER TABLE executions ADD COLUMN metrics TEXT;
