-- When each part of a run's log arrived, kept beside the log so the log's bytes (and the byte
-- offsets followers resume by) stay exactly what was written: a row says the bytes from
-- `byte_offset` on arrived at `at_ms` (Unix milliseconds), until the next row's offset.
CREATE TABLE log_times (
    run_id      TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    byte_offset BIGINT NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (run_id, byte_offset)
);
