ALTER TABLE sessions ADD COLUMN last_kernel_death TEXT;
