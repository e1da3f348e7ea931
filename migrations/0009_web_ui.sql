-- The web UI (issue 15).
-- A re-run names the run it repeats (same stored request, queued again).
ALTER TABLE runs ADD COLUMN rerun_of TEXT;

-- The branch a commit or pull-request run was triggered by (its `sourceTrigger.branchName`), a
-- column so that the run list filters on it through an index.
ALTER TABLE runs ADD COLUMN branch TEXT;
UPDATE runs SET branch = json_extract(trigger_detail, '$.sourceTrigger.branchName') WHERE trigger_detail IS NOT NULL;

-- Browser sessions: a signed-in API token, by the SHA-256 of the session cookie (the cookie's
-- value and the token itself are never stored), with the CSRF token every state-changing
-- request made with the cookie must repeat in a header.
CREATE TABLE sessions (
    id_hash    TEXT   PRIMARY KEY,
    token_name TEXT   NOT NULL REFERENCES tokens (name) ON DELETE CASCADE,
    csrf       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- The run list's filters walk these newest first (keyset on counter), so a filtered page reads
-- about a page of rows however many runs there are.
CREATE INDEX runs_trigger_counter ON runs (trigger_kind, counter);
CREATE INDEX runs_branch_counter ON runs (branch, counter);
CREATE INDEX runs_pool_counter ON runs (agent_pool, counter);
DROP INDEX runs_agent_name;
CREATE INDEX runs_agent_counter ON runs (agent_name, counter);
