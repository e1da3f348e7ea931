-- PostgreSQL twin of migrations/0006_agents.sql: the same SQL.
-- Agents (issue 12): the machines that lease runs over the network. An agent is made by an
-- admin (name, pool, labels, and the SHA-256 hash of its token, which is shown once) and tells
-- the server what it is each time it asks for work (version, platforms, capacity, when).
-- `labels` is a JSON object and `platforms` a JSON array of `os/arch[/variant]`.
CREATE TABLE agents (
    name         TEXT   PRIMARY KEY,
    pool         TEXT,
    labels       TEXT   NOT NULL,
    token_hash   TEXT   NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    version      TEXT,
    platforms    TEXT   NOT NULL,
    capacity     BIGINT,
    last_seen_at BIGINT
);
CREATE INDEX agents_pool ON agents (pool);

-- Which agent holds (or held) a run, and which pool the run asked for (NULL: any agent).
ALTER TABLE runs ADD COLUMN agent_name TEXT;
ALTER TABLE runs ADD COLUMN agent_pool TEXT;
CREATE INDEX runs_agent_name ON runs (agent_name);
