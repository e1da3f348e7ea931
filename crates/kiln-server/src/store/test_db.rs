//! The databases store tests run on: SQLite always, and PostgreSQL when the environment names
//! a server (`KILN_TEST_POSTGRES_URL`, which `scripts/test-env.sh` writes and CI always has);
//! each test gets a database of its own there, so concurrent tests never share state.

use kiln_task::run_id::RunIdPrefix;

use super::{DatabaseUrl, Store};

/// Where one run of a test keeps its store: a SQLite file in a temporary directory, or a
/// PostgreSQL database of its own, created for it on the server `KILN_TEST_POSTGRES_URL` names.
pub(crate) enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { server: String, name: String },
}

/// The backends every store test runs on: SQLite, and PostgreSQL when the environment has one
/// (`scripts/test-env.sh` starts it; CI always does).
pub(crate) async fn backends() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::Sqlite(tempfile::tempdir().unwrap())];
    if let Ok(server) = std::env::var("KILN_TEST_POSTGRES_URL") {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("kiln_t_unit_{}_{n}", std::process::id());
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&server).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        dbs.push(TestDb::Postgres { server, name });
    }
    dbs
}

impl TestDb {
    /// The store on this database with run IDs `kb…` (again: reopening sees what was
    /// written; a second store at once is a second server).
    pub(crate) async fn open(&self) -> Store {
        self.open_prefixed("kb").await
    }

    pub(crate) async fn open_prefixed(&self, prefix: &str) -> Store {
        let prefix = RunIdPrefix::new(prefix).unwrap();
        match self {
            Self::Sqlite(dir) => Store::open(dir.path(), prefix).await.unwrap(),
            Self::Postgres { server, name } => {
                eprintln!("on PostgreSQL database {name}");
                let (base, _) = server.rsplit_once('/').expect("a database URL");
                let url = DatabaseUrl::Postgres(format!("{base}/{name}"));
                Store::connect(&url, prefix).await.unwrap()
            }
        }
    }

    /// Removes a PostgreSQL test database (one a failed test left is dropped by
    /// `scripts/test-env.sh` when it next starts the server).
    pub(crate) async fn drop(self) {
        if let Self::Postgres { server, name } = self {
            let mut admin =
                <sqlx::PgConnection as sqlx::Connection>::connect(&server).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
}
