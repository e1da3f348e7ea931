//! The database behind the store: SQLite (one file, the zero-configuration default) or
//! PostgreSQL (one database several servers share). Both take the same SQL (see the module
//! conventions in [`super`]); the [`on_db!`] and [`on_tx!`] macros expand each query once per
//! backend, so every query is written once and type-checked against both drivers.
//!
//! Why not sqlx's `Any` driver, which would need no macros: it cannot read SQLite `BOOLEAN`
//! columns ("Any driver does not support the SQLite type Bool", sqlx#2778, open in 0.9), and its
//! `QueryBuilder` writes `?` placeholders, which PostgreSQL refuses.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

/// `on_db!(db, |pool| EXPR)`: EXPR with `pool` bound to the [`Db`]'s `&SqlitePool` or
/// `&PgPool` (EXPR is compiled once for each).
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::db::Db::Sqlite($pool) => $body,
            $crate::store::db::Db::Postgres($pool) => $body,
        }
    };
}

/// `on_tx!(tx, |conn| EXPR)`: EXPR with `conn` bound to the `&mut Tx`'s `&mut SqliteConnection`
/// or `&mut PgConnection` (reborrow it, `&mut *conn`, to run several statements).
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::store::db::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::store::db::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

pub(crate) use {on_db, on_tx};

/// Where the store keeps its data (`kiln serve --database URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: a SQLite file (created if missing).
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, as libpq reads it.
    Postgres(String),
}

/// A `--database` value that is neither form.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a database URL: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE")]
pub struct BadDatabaseUrl(String);

impl FromStr for DatabaseUrl {
    type Err = BadDatabaseUrl;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(path) = url.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_string()))
        } else {
            Err(BadDatabaseUrl(url.to_string()))
        }
    }
}

/// A connection pool of either backend. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A transaction of either backend; dropped without [`Tx::commit`], it rolls back.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Db {
    pub(crate) async fn begin(&self) -> sqlx::Result<Tx> {
        Ok(match self {
            Self::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Self::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    pub(crate) async fn close(&self) {
        on_db!(self, |pool| pool.close().await)
    }
}

impl Tx {
    pub(crate) async fn commit(self) -> sqlx::Result<()> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }

    pub(crate) async fn rollback(self) -> sqlx::Result<()> {
        match self {
            Self::Sqlite(tx) => tx.rollback().await,
            Self::Postgres(tx) => tx.rollback().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_database_urls() {
        assert_eq!(
            "sqlite:///var/lib/kiln/kiln.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("/var/lib/kiln/kiln.db"))
        );
        assert_eq!(
            "sqlite://kiln.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("kiln.db"))
        );
        for url in ["postgres://kiln@127.0.0.1:5433/kiln", "postgresql://h/db"] {
            assert_eq!(url.parse::<DatabaseUrl>().unwrap(), DatabaseUrl::Postgres(url.into()));
        }
        for bad in ["", "sqlite://", "mysql://h/db", "/var/lib/kiln/kiln.db"] {
            assert!(bad.parse::<DatabaseUrl>().is_err(), "{bad:?}");
        }
    }
}
