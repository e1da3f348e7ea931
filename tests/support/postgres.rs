//! Servers on PostgreSQL for end-to-end tests and benchmarks: a fresh database of its own on the
//! test environment's server (`KILN_TEST_POSTGRES_URL`, written by `scripts/test-env.sh`) and
//! two `kiln serve` processes sharing it and one data directory.
#![allow(dead_code)] // each includer uses its own part

use std::process::Command;

use crate::support::{Server, registry, text};

/// A database of its own on the test environment's PostgreSQL server, dropped at the end (one a
/// failed test left is dropped when `scripts/test-env.sh` next starts the server).
pub struct Database {
    server: String,
    name: String,
}

impl Database {
    pub fn fresh(label: &str) -> Database {
        let server = std::env::var("KILN_TEST_POSTGRES_URL")
            .expect("KILN_TEST_POSTGRES_URL (run scripts/test-env.sh and source its env file)");
        let name = format!("kiln_t_{label}_{}", std::process::id());
        psql(&server, &format!("DROP DATABASE IF EXISTS {name}"));
        psql(&server, &format!("CREATE DATABASE {name}"));
        Database { server, name }
    }

    pub fn url(&self) -> String {
        let (base, _) = self.server.rsplit_once('/').expect("a database URL");
        format!("{base}/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(&self.server, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .expect("psql");
    assert!(out.status.success(), "psql {sql}: {}", text(&out));
}

/// Two servers on one database and one data directory. Fields drop in order: servers first.
pub struct Pair {
    pub a: Server,
    pub b: Server,
    _db: Database,
    _dir: tempfile::TempDir,
}

impl Pair {
    pub fn start(label: &str, workers_a: usize, workers_b: usize) -> Pair {
        let db = Database::fresh(label);
        let dir = tempfile::tempdir().expect("tempdir");
        let url = db.url();
        let args = |agent| {
            ["--registry", &registry(), "--database", &url, "--agent-name", agent]
                .map(str::to_string)
        };
        let (args_a, args_b) = (args("server-a"), args("server-b"));
        let a = Server::spawn_with(
            label,
            dir.path(),
            workers_a,
            None,
            &args_a.each_ref().map(String::as_str),
        );
        // The admin token is the database's: printed by the first server only.
        let b = Server::spawn_with(
            label,
            dir.path(),
            workers_b,
            Some(a.token.clone()),
            &args_b.each_ref().map(String::as_str),
        );
        Pair { a, b, _db: db, _dir: dir }
    }
}
