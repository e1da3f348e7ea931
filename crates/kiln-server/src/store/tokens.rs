//! API tokens: random bearer secrets of which the store keeps only the SHA-256 hash, so a copy
//! of the database does not hand out access. Verifying looks the token up by its hash: an
//! attacker timing the lookup learns about hashes of their guesses, not about stored secrets.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Store, StoreError, StoreResult, from_millis, now_millis, on_db};

/// Every token starts with this, so secret scanners and people recognise it.
pub const TOKEN_PREFIX: &str = "kiln_";
/// Name of the token `ensure_admin_token` creates.
pub const ADMIN_TOKEN_NAME: &str = "admin";
/// Random bytes per token (256 bits).
const TOKEN_BYTES: usize = 32;

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

/// The SHA-256 of a token, as stored (also for agent tokens, [`super::agents`]).
pub(crate) fn hash_token(plaintext: &str) -> String {
    let digest = Sha256::digest(plaintext.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token: `prefix` then 256 random bits in hex.
pub(super) fn new_token(prefix: &str) -> StoreResult<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Randomness(e.to_string()))?;
    let mut token = String::with_capacity(prefix.len() + 2 * TOKEN_BYTES);
    token.push_str(prefix);
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    Ok(token)
}

impl Store {
    /// On first start, creates the admin token and returns its plaintext: the only time it is
    /// ever available. `None` when an admin token already exists (also when a concurrent call
    /// created it first).
    pub async fn ensure_admin_token(&self) -> StoreResult<Option<String>> {
        let token = new_token(TOKEN_PREFIX)?;
        let done = on_db!(self.db(), |pool| sqlx::query(
            "INSERT INTO tokens (name, hash, is_admin, created_at) VALUES ($1, $2, TRUE, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(ADMIN_TOKEN_NAME)
        .bind(hash_token(&token))
        .bind(now_millis())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok((done == 1).then_some(token))
    }

    /// The token's record, or `None` when `plaintext` is not a token this store issued. Agent
    /// tokens are kept apart ([`super::agents`]) and never verify here.
    pub async fn verify_token(&self, plaintext: &str) -> StoreResult<Option<TokenInfo>> {
        if !plaintext.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let row: Option<(String, bool, i64)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT name, is_admin, created_at FROM tokens WHERE hash = $1"
        )
        .bind(hash_token(plaintext))
        .fetch_optional(pool)
        .await)?;
        row.map(|(name, is_admin, created_at)| {
            Ok(TokenInfo { name, is_admin, created_at: from_millis(created_at)? })
        })
        .transpose()
    }
}
