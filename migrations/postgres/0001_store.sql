-- kiln store, schema 1, PostgreSQL: the twin of ../0001_store.sql (each SQLite migration has one
-- here, same version and name), differing only where the dialects do: `BLOB` → `BYTEA`, SQLite's
-- `INTEGER PRIMARY KEY AUTOINCREMENT` → `BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY`. Times
-- are Unix milliseconds (UTC), JSON is TEXT, enums are TEXT. sqlx checksums applied migrations:
-- never edit a released file, add the next one.

-- The run-ID counter lives in its own row so it survives deleting runs and never goes back.
CREATE TABLE run_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last BIGINT NOT NULL
);
INSERT INTO run_counter (id, last) VALUES (1, 0);

CREATE TABLE runs (
    id                TEXT    PRIMARY KEY,
    counter           BIGINT  NOT NULL UNIQUE,
    status            TEXT    NOT NULL,
    run_type          TEXT    NOT NULL,
    trigger_kind      TEXT    NOT NULL,
    task_name         TEXT,
    request           TEXT    NOT NULL,
    timeout_secs      BIGINT  NOT NULL,
    platform          TEXT    NOT NULL,
    created_at        BIGINT  NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    updated_at        BIGINT  NOT NULL,
    error_message     TEXT,
    output_images     TEXT    NOT NULL,
    dependencies      TEXT,
    cancel_requested  BOOLEAN NOT NULL,
    epoch             BIGINT  NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    log_seq           BIGINT  NOT NULL,
    log_len           BIGINT  NOT NULL
);
CREATE INDEX runs_status_counter ON runs (status, counter);
CREATE INDEX runs_finished_at ON runs (finished_at);

CREATE TABLE log_chunks (
    run_id      TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    byte_offset BIGINT NOT NULL,
    data        BYTEA  NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX log_chunks_offset ON log_chunks (run_id, byte_offset);

CREATE TABLE tokens (
    name       TEXT    PRIMARY KEY,
    hash       TEXT    NOT NULL UNIQUE,
    is_admin   BOOLEAN NOT NULL,
    created_at BIGINT  NOT NULL
);
