//! The crate map (docs/architecture.md) as the compiler's dependency graph: each crate's normal
//! dependency closure, as `cargo tree` resolves it for this machine, must not reach the crates
//! its row says it must not know. A `use` across a boundary fails to compile only while the
//! dependency is missing, so this test is what keeps someone from adding it back.

use std::collections::BTreeSet;
use std::process::Command;

/// Every package `krate` depends on, directly or not, through normal (not dev, not build)
/// dependencies, by name; the crate itself included.
fn closure(krate: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--edges", "normal", "--prefix", "none", "--format", "{p}"])
        .args(["--package", krate])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "{krate}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn each_crate_knows_only_what_its_row_allows() {
    // crate, and what it must not know (docs/architecture.md, "Crate map").
    let rules: [(&str, &[&str]); 6] = [
        ("kiln-plan", &["bollard", "sqlx", "axum", "reqwest", "kiln-worker", "kiln-task", "kiln"]),
        ("kiln-task", &["bollard", "sqlx", "axum", "reqwest", "kiln-worker", "kiln"]),
        ("kiln-api", &["bollard", "sqlx", "axum", "reqwest", "kiln-worker", "kiln"]),
        ("kiln-worker", &["sqlx", "axum", "kiln-task", "kiln-api", "kiln"]),
        // Its tests drive the server's dispatcher through a dev-dependency on kiln-server.
        ("kiln-agent", &["sqlx", "axum", "kiln-server", "kiln"]),
        ("kiln-server", &["bollard", "kiln-worker", "kiln-agent", "kiln"]),
    ];
    let mut broken = Vec::new();
    for (krate, forbidden) in rules {
        let reached = closure(krate);
        assert!(reached.contains(krate), "{krate} is not in the workspace");
        for name in forbidden {
            if reached.contains(*name) {
                broken.push(format!("{krate} depends on {name}"));
            }
        }
    }
    assert!(broken.is_empty(), "the crate map is broken: {broken:?}");
}

/// The test above proves something only if the closure sees through to third-party crates.
#[test]
fn the_closure_reaches_indirect_dependencies() {
    assert!(closure("kiln-worker").contains("bollard"));
    assert!(closure("kiln").contains("sqlx"));
    // Indirect: kiln reaches bollard only through kiln-worker (its own bollard is a dev one).
    assert!(closure("kiln").contains("bollard"));
    assert!(!closure("kiln-task").contains("proptest"), "dev-dependencies are not followed");
}
