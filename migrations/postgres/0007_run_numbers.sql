-- Run numbers from a sequence (issue 12): a row updated by every submission is locked until
-- its transaction commits, so submissions through all servers sharing the database committed
-- one at a time. A sequence hands out numbers without that lock; a submission that fails
-- after taking one leaves a gap (run IDs are unique and increasing, not gap-free). SQLite, one
-- writer at a time, keeps its `run_counter` row (migrations/0007_run_numbers.sql).
CREATE SEQUENCE run_numbers AS BIGINT MINVALUE 1;
SELECT setval('run_numbers', last) FROM run_counter WHERE last > 0;
DROP TABLE run_counter;
