-- kiln store, schema 2: tasks and their triggers (issue 6). Same conventions as schema 1.

-- What caused a run (§6.2 sourceTrigger / timerTrigger / imageUpdateTrigger) as JSON, and the
-- run's request with its secrets, sealed with the server key (`runs.request` then holds the
-- request with secret values redacted).
ALTER TABLE runs ADD COLUMN trigger_detail TEXT;
ALTER TABLE runs ADD COLUMN sealed_request BYTEA;
CREATE INDEX runs_task_counter ON runs (task_name, counter);

-- A task: its definition redacted (what `task show` answers) and whole, sealed (secrets
-- included: `--set-secret` values, the git access token, registry passwords), and the
-- webhook secret, sealed.
CREATE TABLE tasks (
    name           TEXT    PRIMARY KEY,
    status         TEXT    NOT NULL,
    -- Disabled, Runtime or All: which base images trigger the task (the pollers' filter).
    base_image_trigger TEXT NOT NULL,
    definition     TEXT    NOT NULL,
    sealed         BYTEA   NOT NULL,
    webhook_secret BYTEA   NOT NULL,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL
);

-- Timers. `next_fire_at` is the next occurrence nobody has claimed yet: whoever moves it on
-- (compare-and-set on the old value) fires that occurrence, in the transaction that queues the
-- run, so an occurrence fires once across restarts and servers.
CREATE TABLE timers (
    task_name    TEXT    NOT NULL REFERENCES tasks (name) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    schedule     TEXT    NOT NULL,
    enabled      BOOLEAN NOT NULL,
    next_fire_at BIGINT,
    PRIMARY KEY (task_name, name)
);
CREATE INDEX timers_due ON timers (next_fire_at);

-- What happened to a task besides its runs: missed timer occurrences, ignored deliveries.
CREATE TABLE task_events (
    id         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_name  TEXT    NOT NULL REFERENCES tasks (name) ON DELETE CASCADE,
    at         BIGINT  NOT NULL,
    kind       TEXT    NOT NULL,
    detail     TEXT    NOT NULL
);
CREATE INDEX task_events_task ON task_events (task_name, id);

-- Webhook deliveries already acted on (a redelivery repeats its ID).
CREATE TABLE deliveries (
    delivery_id TEXT    PRIMARY KEY,
    task_name   TEXT    NOT NULL REFERENCES tasks (name) ON DELETE CASCADE,
    received_at BIGINT  NOT NULL,
    run_id      TEXT
);

-- Source events already queued: one run per task, event type and commit, whoever delivers it.
CREATE TABLE source_events (
    task_name  TEXT    NOT NULL REFERENCES tasks (name) ON DELETE CASCADE,
    event_type TEXT    NOT NULL,
    commit_id  TEXT    NOT NULL,
    run_id     TEXT    NOT NULL,
    PRIMARY KEY (task_name, event_type, commit_id)
);

-- Base images of the images a task's last successful run built (§5.2), with the digest the
-- tag pointed at. A changed digest is claimed by compare-and-set, like a timer.
CREATE TABLE base_images (
    task_name  TEXT    NOT NULL REFERENCES tasks (name) ON DELETE CASCADE,
    registry   TEXT    NOT NULL,
    repository TEXT    NOT NULL,
    tag        TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    PRIMARY KEY (task_name, registry, repository, tag)
);
CREATE INDEX base_images_image ON base_images (registry, repository, tag);
