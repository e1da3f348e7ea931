//! Agents (issue 12): the registered machines that lease runs, each with its own bearer token.
//! An agent token is made like an API token ([`super::tokens`]: random, only its SHA-256 hash
//! kept) but lives in its own table with its own prefix, so it verifies only as an agent and
//! never as a user of the API. Besides what an admin sets (pool, labels), a row keeps what the
//! agent last reported (version, platforms, capacity, when).
//!
//! Deleting an agent ends its leases in the same transaction: its Started/Running runs end as
//! Error with their epoch bumped, as [`super::lease`] ends lost runs, so the agent's later
//! writes are fenced out.
//!
//! A server's embedded agent (`kiln serve --workers N`) is registered by that server at start,
//! without a token, and marked with the process that runs it. Only that server changes it: an
//! admin's update or delete is refused ([`StoreError::AgentEmbedded`]), as the server would
//! undo either at its next start and its agent takes no pool.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kiln_api::agents as wire;
use kiln_task::run_id::RunId;

use super::tokens::{hash_token, new_token};
use super::{Store, StoreError, StoreResult, from_millis, now_millis, on_db, on_tx};

/// Every agent token starts with this: recognisably kiln's, and recognisably not a user's.
pub const AGENT_TOKEN_PREFIX: &str = "kiln_agent_";

/// An agent as stored, with the runs it holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub name: String,
    /// The pool whose runs it takes; `None`: runs that name no pool.
    pub pool: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the agent last reported: its kiln version, …
    pub version: Option<String>,
    /// … the platforms it runs (`os/arch[/variant]`), …
    pub platforms: Vec<String>,
    /// … how many runs it takes at once, …
    pub capacity: Option<u64>,
    /// … and when.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Its Started/Running runs.
    pub runs_in_hand: u64,
    /// The server process that runs it as its embedded agent (`HOST pid N`); `None`: an agent
    /// of its own, with a token.
    pub embedded_in: Option<String>,
}

/// What registering an embedded agent found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedRegistration {
    /// Another server process that registered the same name and was seen since the given
    /// time: if it still runs, both share one agent name.
    pub other_server: Option<(String, DateTime<Utc>)>,
}

/// A pool: the agents that name it and the queued runs that ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    pub name: String,
    pub agent_count: u64,
    pub queued_run_count: u64,
}

/// The `agents` row as SQL sees it, with the count of runs in hand.
#[derive(Debug, sqlx::FromRow)]
struct AgentRow {
    name: String,
    pool: Option<String>,
    labels: String,
    created_at: i64,
    updated_at: i64,
    version: Option<String>,
    platforms: String,
    capacity: Option<i64>,
    last_seen_at: Option<i64>,
    runs_in_hand: i64,
    embedded_in: Option<String>,
}

/// `SELECT` of every column of [`AgentRow`], then `$tail` (a `WHERE`, an `ORDER BY`): one
/// static string per query, as sqlx wants.
macro_rules! select_agents {
    ($tail:literal) => {
        concat!(
            "SELECT name, pool, labels, created_at, updated_at, version, platforms, capacity,
                last_seen_at, embedded_in,
                (SELECT COUNT(*) FROM runs
                 WHERE runs.agent_name = agents.name AND runs.status IN ('Started', 'Running'))
                AS runs_in_hand
             FROM agents ",
            $tail
        )
    };
}

impl TryFrom<AgentRow> for AgentRecord {
    type Error = StoreError;

    fn try_from(row: AgentRow) -> StoreResult<Self> {
        let corrupt =
            |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("agent {}: {e}", row.name));
        let count = |field: &str, n: i64| {
            u64::try_from(n).map_err(|_| corrupt(&format!("{field} is negative: {n}")))
        };
        Ok(AgentRecord {
            labels: serde_json::from_str(&row.labels).map_err(|e| corrupt(&e))?,
            platforms: serde_json::from_str(&row.platforms).map_err(|e| corrupt(&e))?,
            capacity: row.capacity.map(|c| count("capacity", c)).transpose()?,
            runs_in_hand: count("runs_in_hand", row.runs_in_hand)?,
            created_at: from_millis(row.created_at)?,
            updated_at: from_millis(row.updated_at)?,
            last_seen_at: row.last_seen_at.map(from_millis).transpose()?,
            version: row.version,
            embedded_in: row.embedded_in,
            pool: row.pool,
            name: row.name,
        })
    }
}

/// What `update_agent` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentUpdate {
    /// `Some(None)` takes the agent out of its pool.
    pub pool: Option<Option<String>>,
    /// Replaces every label.
    pub labels: Option<BTreeMap<String, String>>,
}

/// The `runErrorMessage` of a run whose agent was deleted while it held the run.
pub fn deleted_message(agent: &str) -> String {
    format!("agent {agent} was deleted during the run")
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Maps of strings and lists of strings always serialise.
    serde_json::to_string(value).unwrap_or_default()
}

impl Store {
    /// Registers an agent and returns it with its token's plaintext: the only time the token
    /// exists outside the agent. [`StoreError::AgentExists`] if the name is taken.
    pub async fn create_agent(
        &self,
        name: &str,
        pool: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> StoreResult<(AgentRecord, String)> {
        let token = new_token(AGENT_TOKEN_PREFIX)?;
        let done = on_db!(self.db(), |conn| {
            sqlx::query(
            "INSERT INTO agents (name, pool, labels, token_hash, created_at, updated_at, platforms)
             VALUES ($1, $2, $3, $4, $5, $5, '[]')
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(pool)
        .bind(json(labels))
        .bind(hash_token(&token))
        .bind(now_millis())
        .execute(conn).await.map(|d| d.rows_affected())
        })?;
        if done == 0 {
            return Err(StoreError::AgentExists(name.to_string()));
        }
        Ok((self.get_agent(name).await?, token))
    }

    /// Every agent, by name.
    pub async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        let rows: Vec<AgentRow> =
            on_db!(self.db(), |conn| sqlx::query_as(select_agents!("ORDER BY name"))
                .fetch_all(conn)
                .await)?;
        rows.into_iter().map(AgentRecord::try_from).collect()
    }

    /// The agent named `name`, or [`StoreError::AgentNotFound`].
    pub async fn get_agent(&self, name: &str) -> StoreResult<AgentRecord> {
        let row: Option<AgentRow> =
            on_db!(self.db(), |conn| sqlx::query_as(select_agents!("WHERE name = $1"))
                .bind(name)
                .fetch_optional(conn)
                .await)?;
        row.ok_or_else(|| StoreError::AgentNotFound(name.to_string()))?.try_into()
    }

    /// Changes an agent's pool and/or labels.
    pub async fn update_agent(&self, name: &str, update: &AgentUpdate) -> StoreResult<AgentRecord> {
        // `$2`/`$4` say whether to set the pool/labels, so one statement serves every update.
        let done = on_db!(self.db(), |conn| sqlx::query(
            "UPDATE agents SET
                pool = CASE WHEN $2 THEN $3 ELSE pool END,
                labels = CASE WHEN $4 THEN $5 ELSE labels END,
                updated_at = $6
             WHERE name = $1 AND embedded_in IS NULL",
        )
        .bind(name)
        .bind(update.pool.is_some())
        .bind(update.pool.clone().flatten())
        .bind(update.labels.is_some())
        .bind(update.labels.as_ref().map(json))
        .bind(now_millis())
        .execute(conn)
        .await
        .map(|d| d.rows_affected()))?;
        if done == 0 {
            return Err(self.not_changeable(name).await);
        }
        self.get_agent(name).await
    }

    /// Why an admin's change of `name` touched no row: it is embedded, or it does not exist.
    async fn not_changeable(&self, name: &str) -> StoreError {
        match self.get_agent(name).await {
            Ok(AgentRecord { embedded_in: Some(server), .. }) => {
                StoreError::AgentEmbedded { name: name.to_string(), server }
            }
            Ok(_) => StoreError::AgentNotFound(name.to_string()),
            Err(e) => e,
        }
    }

    /// Deletes an agent and, in the same transaction, ends the runs it holds as Error
    /// ([`deleted_message`]) with their epoch bumped, so nothing it sends later is stored.
    /// Returns those runs, oldest first.
    pub async fn delete_agent(&self, name: &str) -> StoreResult<Vec<RunId>> {
        let mut tx = self.begin().await?;
        let done = on_tx!(&mut tx, |c| sqlx::query(
            "DELETE FROM agents WHERE name = $1 AND embedded_in IS NULL"
        )
        .bind(name)
        .execute(c)
        .await
        .map(|d| d.rows_affected()))?;
        if done == 0 {
            tx.rollback().await?;
            return Err(self.not_changeable(name).await);
        }
        let ids: Vec<String> = on_tx!(&mut tx, |c| sqlx::query_scalar(
            "UPDATE runs SET status = 'Error', error_message = $2, epoch = epoch + 1,
                finished_at = $3, updated_at = $3, lease_owner = NULL, lease_expires_at = NULL
             WHERE agent_name = $1 AND status IN ('Started', 'Running')
             RETURNING id",
        )
        .bind(name)
        .bind(deleted_message(name))
        .bind(now_millis())
        .fetch_all(c)
        .await)?;
        tx.commit().await?;
        let ids = self.sorted_ids(ids);
        self.runs_changed(&ids);
        Ok(ids)
    }

    /// Registers (or updates) `name` as the embedded agent of the server process `server`,
    /// seen now with its capacity, and says whether another server process had it within
    /// `recent`. [`StoreError::AgentExists`] when `name` is an agent with a token.
    pub async fn register_embedded_agent(
        &self,
        name: &str,
        server: &str,
        version: &str,
        capacity: u64,
        recent: std::time::Duration,
    ) -> StoreResult<EmbeddedRegistration> {
        let now = now_millis();
        let before = match self.get_agent(name).await {
            Ok(agent) => Some(agent),
            Err(StoreError::AgentNotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let since = now.saturating_sub(super::duration_millis(recent));
        let other_server = before.and_then(|a| match (a.embedded_in, a.last_seen_at) {
            (Some(other), Some(seen)) if other != server && super::to_millis(seen) >= since => {
                Some((other, seen))
            }
            _ => None,
        });
        let done = on_db!(self.db(), |conn| {
            sqlx::query(
            "INSERT INTO agents (name, pool, labels, token_hash, created_at, updated_at, version,
                platforms, capacity, last_seen_at, embedded_in)
             VALUES ($1, NULL, '{}', $2, $3, $3, $4, '[]', $5, $3, $6)
             ON CONFLICT (name) DO UPDATE SET updated_at = $3, version = $4, capacity = $5,
                last_seen_at = $3, embedded_in = $6
             WHERE agents.embedded_in IS NOT NULL",
        )
        .bind(name)
        .bind(format!("embedded:{name}"))
        .bind(now)
        .bind(version)
        .bind(i64::try_from(capacity).unwrap_or(i64::MAX))
        .bind(server)
        .execute(conn)
        .await
        .map(|d| d.rows_affected())
        })?;
        if done == 0 {
            return Err(StoreError::AgentExists(name.to_string()));
        }
        Ok(EmbeddedRegistration { other_server })
    }

    /// Removes `name` if it is an embedded agent not seen within `recent` (its server started
    /// again with `--workers 0` runs none); its runs, if any, end by their leases.
    pub async fn remove_embedded_agent(
        &self,
        name: &str,
        recent: std::time::Duration,
    ) -> StoreResult<()> {
        let since = now_millis().saturating_sub(super::duration_millis(recent));
        on_db!(self.db(), |conn| sqlx::query(
            "DELETE FROM agents WHERE name = $1 AND embedded_in IS NOT NULL
                AND (last_seen_at IS NULL OR last_seen_at <= $2)",
        )
        .bind(name)
        .bind(since)
        .execute(conn)
        .await
        .map(drop))?;
        Ok(())
    }

    /// The agent whose token this is, or `None` when `plaintext` is no agent's token (an API
    /// token included).
    pub async fn verify_agent_token(&self, plaintext: &str) -> StoreResult<Option<AgentRecord>> {
        if !plaintext.starts_with(AGENT_TOKEN_PREFIX) {
            return Ok(None);
        }
        let row: Option<AgentRow> =
            on_db!(self.db(), |conn| sqlx::query_as(select_agents!("WHERE token_hash = $1"))
                .bind(hash_token(plaintext))
                .fetch_optional(conn)
                .await)?;
        row.map(AgentRecord::try_from).transpose()
    }

    /// Records what an agent reports when it asks for work: its version, platforms
    /// (`os/arch[/variant]`) and capacity, seen now.
    pub async fn agent_seen(
        &self,
        name: &str,
        version: &str,
        platforms: &[String],
        capacity: u64,
    ) -> StoreResult<()> {
        let done = on_db!(self.db(), |conn| sqlx::query(
            "UPDATE agents SET version = $2, platforms = $3, capacity = $4, last_seen_at = $5
             WHERE name = $1",
        )
        .bind(name)
        .bind(version)
        .bind(json(&platforms))
        .bind(i64::try_from(capacity).unwrap_or(i64::MAX))
        .bind(now_millis())
        .execute(conn)
        .await
        .map(|d| d.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::AgentNotFound(name.to_string()));
        }
        Ok(())
    }

    /// How many runs agent `name` holds now (Started or Running).
    pub async fn runs_in_hand(&self, name: &str) -> StoreResult<u64> {
        let n: i64 = on_db!(self.db(), |conn| {
            sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE agent_name = $1 AND status IN ('Started', 'Running')",
        )
        .bind(name)
        .fetch_one(conn).await
        })?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
    }

    /// Every pool an agent names or a queued run asks for, by name, with its agents and queued
    /// runs.
    pub async fn agent_pools(&self) -> StoreResult<Vec<PoolRecord>> {
        let agents: Vec<(String, i64)> = on_db!(self.db(), |conn| sqlx::query_as(
            "SELECT pool, COUNT(*) FROM agents WHERE pool IS NOT NULL GROUP BY pool",
        )
        .fetch_all(conn)
        .await)?;
        let queued: Vec<(String, i64)> = on_db!(self.db(), |conn| sqlx::query_as(
            "SELECT agent_pool, COUNT(*) FROM runs
             WHERE status = 'Queued' AND agent_pool IS NOT NULL GROUP BY agent_pool",
        )
        .fetch_all(conn)
        .await)?;
        // Counts, agents' then queued runs'.
        let mut pools: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (name, n) in agents {
            pools.entry(name).or_default().0 = n.unsigned_abs();
        }
        for (name, n) in queued {
            pools.entry(name).or_default().1 = n.unsigned_abs();
        }
        Ok(pools
            .into_iter()
            .map(|(name, (agent_count, queued_run_count))| PoolRecord {
                name,
                agent_count,
                queued_run_count,
            })
            .collect())
    }
}

/// The API views of the registry's records.
impl From<&AgentRecord> for wire::Agent {
    fn from(record: &AgentRecord) -> Self {
        wire::Agent {
            name: record.name.clone(),
            kind: match record.embedded_in {
                Some(_) => wire::AgentKind::Embedded,
                None => wire::AgentKind::Remote,
            },
            server: record.embedded_in.clone(),
            pool: record.pool.clone(),
            labels: record.labels.clone(),
            platforms: record.platforms.iter().map(|p| kiln_api::Platform::parse(p)).collect(),
            capacity: record.capacity,
            runs_in_hand: record.runs_in_hand,
            version: record.version.clone(),
            last_seen: record.last_seen_at,
            creation_date: record.created_at,
        }
    }
}

impl From<&PoolRecord> for wire::AgentPool {
    fn from(p: &PoolRecord) -> Self {
        wire::AgentPool {
            name: p.name.clone(),
            agent_count: p.agent_count,
            queued_run_count: p.queued_run_count,
        }
    }
}

impl From<&AgentRecord> for wire::AgentWhoAmI {
    fn from(record: &AgentRecord) -> Self {
        wire::AgentWhoAmI {
            name: record.name.clone(),
            pool: record.pool.clone(),
            labels: record.labels.clone(),
        }
    }
}
