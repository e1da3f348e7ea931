-- SQLite twin of migrations/postgres/0007_run_numbers.sql, which moves PostgreSQL's run
-- numbers to a sequence. SQLite has one writer at a time, so its `run_counter` row costs no
-- concurrency and stays: nothing to change.
SELECT 1;
