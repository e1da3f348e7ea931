//! Browser sessions (issue 15): signing in with an API token makes a session whose random ID
//! travels only in an HttpOnly cookie. The store keeps the ID's SHA-256 (like tokens, a copy of
//! the database signs nobody in), the token's name (a session is as strong as its token, and
//! ends with it), and the session's CSRF token, which every state-changing request made with
//! the cookie must repeat in a header. Expired sessions are removed when the next one is made.

use chrono::{DateTime, TimeDelta, Utc};

use super::tokens::{hash_token, new_token};
use super::{Store, StoreResult, TokenInfo, from_millis, now_millis, on_db};

/// Every session ID starts with this (never a valid API token: those start `kiln_`).
const SESSION_PREFIX: &str = "kses_";

/// A session as made: the cookie's value (only ever returned here) and its CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub cookie: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// A live session: the token it was signed in with and its CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub token: TokenInfo,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Signs `token` in for `ttl`; removes expired sessions first.
    pub async fn create_session(
        &self,
        token: &TokenInfo,
        ttl: TimeDelta,
    ) -> StoreResult<NewSession> {
        let now = now_millis();
        on_db!(self.db(), |pool| sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        let cookie = new_token(SESSION_PREFIX)?;
        let csrf = new_token("")?;
        let expires = now + ttl.num_milliseconds();
        on_db!(self.db(), |pool| sqlx::query(
            "INSERT INTO sessions (id_hash, token_name, csrf, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(hash_token(&cookie))
        .bind(&token.name)
        .bind(&csrf)
        .bind(now)
        .bind(expires)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(NewSession { cookie, csrf, expires_at: from_millis(expires)? })
    }

    /// The live session of cookie value `cookie`, or `None` (unknown, expired, or its token
    /// is gone).
    pub async fn verify_session(&self, cookie: &str) -> StoreResult<Option<SessionInfo>> {
        if !cookie.starts_with(SESSION_PREFIX) {
            return Ok(None);
        }
        let row: Option<(String, bool, i64, String, i64)> =
            on_db!(self.db(), |pool| sqlx::query_as(
                "SELECT t.name, t.is_admin, t.created_at, s.csrf, s.expires_at
             FROM sessions s JOIN tokens t ON t.name = s.token_name
             WHERE s.id_hash = $1 AND s.expires_at > $2"
            )
            .bind(hash_token(cookie))
            .bind(now_millis())
            .fetch_optional(pool)
            .await)?;
        row.map(|(name, is_admin, created_at, csrf, expires_at)| {
            let token = TokenInfo { name, is_admin, created_at: from_millis(created_at)? };
            Ok(SessionInfo { token, csrf, expires_at: from_millis(expires_at)? })
        })
        .transpose()
    }

    /// Ends the session of cookie value `cookie` (nothing when there is none).
    pub async fn delete_session(&self, cookie: &str) -> StoreResult<()> {
        on_db!(self.db(), |pool| sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(hash_token(cookie))
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(())
    }
}
