//! Fetching the commit a push names, as a webhook-triggered run does, from a repository with
//! history (`git daemon` on loopback), next to the `git` CLI on the same server in the same run:
//!
//! * kiln, the branch's tip commit by its full id (a push): fetched shallow as that ref;
//! * kiln, the same commit abbreviated: the full-history path (what every push cost before);
//! * baseline: `git fetch --depth 1 origin main` and a full `git fetch origin main` into empty
//!   repositories.
//!
//! `cargo bench --bench git_fetch`. Sizes: `KILN_BENCH_COMMITS` (300 commits, each rewriting a
//! 64 KiB file of incompressible bytes), `KILN_BENCH_SAMPLES` (5, the median is shown).

#[path = "../tests/support/git.rs"]
mod git;

use std::time::Instant;

use git::{GitDaemon, Repo, Root, git};
use kiln_plan::remote::detect;
use kiln_worker::build::remote::fetch;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// `len` bytes that do not compress (xorshift), different for each `seed`.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect()
}

fn main() {
    let commits = setting("KILN_BENCH_COMMITS", 300);
    let samples = setting("KILN_BENCH_SAMPLES", 5);
    let root = Root::new();
    let repo = Repo::init();
    let mut tip = String::new();
    for i in 0..commits {
        tip = repo.commit_file("data.txt", &noise(i as u64, 64 * 1024), &format!("c{i}"));
    }
    repo.push(&root.bare("app"), "main");
    let daemon = GitDaemon::start(root.path());
    let url = daemon.url("app");

    let kiln = |reference: &str| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let remote = detect(&format!("{url}#{reference}")).unwrap().unwrap();
        let times = (0..samples)
            .map(|_| {
                let dest = tempfile::tempdir().unwrap();
                let clock = Instant::now();
                let fetched = runtime
                    .block_on(fetch(&remote, &dest.path().join("ctx"), None, None, &|_: &[u8]| {}))
                    .unwrap();
                assert_eq!(fetched.commit.as_deref(), Some(tip.as_str()));
                clock.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        median(times)
    };
    let cli = |depth: Option<&str>| {
        let times = (0..samples)
            .map(|_| {
                let dest = tempfile::tempdir().unwrap();
                let clock = Instant::now();
                git(dest.path(), &["init", "-q"]);
                let mut args = vec!["fetch", "-q"];
                args.extend(depth);
                args.extend([url.as_str(), "main"]);
                git(dest.path(), &args);
                git(dest.path(), &["checkout", "-q", "FETCH_HEAD"]);
                clock.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        median(times)
    };
    let tip_ms = kiln(&tip);
    let abbreviated_ms = kiln(&tip[..12]);
    let cli_shallow_ms = cli(Some("--depth=1"));
    let cli_full_ms = cli(None);
    println!(
        "git fetch of a pushed commit, {commits} commits of 64 KiB, git daemon, median of {samples}:"
    );
    println!("  kiln, full commit id (a push's tip):  {tip_ms:8.1} ms");
    println!("  kiln, abbreviated id (full history):  {abbreviated_ms:8.1} ms");
    println!("  git CLI, fetch --depth 1 + checkout:  {cli_shallow_ms:8.1} ms");
    println!("  git CLI, full fetch + checkout:       {cli_full_ms:8.1} ms");
    println!("  ratio kiln tip / git --depth 1:       {:8.2}", tip_ms / cli_shallow_ms);
    println!("  ratio kiln tip / kiln full history:   {:8.2}", tip_ms / abbreviated_ms);
}
