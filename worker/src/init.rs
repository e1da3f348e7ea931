//! kiln's init: the entry process of a fast-path step container (see
//! `kiln_plan::step_path`) and the runner of its step's command, and putting it where the
//! engine can bind-mount it.
//!
//! A prepared container must start and then do nothing until the step's command arrives
//! through `exec`, whatever its image holds (no shell, no `sleep`), and as PID 1 it must reap
//! the orphans the command leaves, or they pile up as zombies: without arguments, the init
//! idles and reaps.
//!
//! The command itself is run as `init -- COMMAND [ARG...]` ([`command`]): an `exec`'d process
//! is not its container's PID 1, so when it exits, what it started in the background would
//! live on (holding ports, writing into `/workspace`, and holding the exec's output open,
//! which the engine then waits up to ~2 s for). The init runs the command (looked up in
//! `PATH`), waits for it, kills every other process of the container, and exits with the
//! command's status, so a step ends as a classic container does when its PID 1 exits.
//!
//! It is C (`init/init.c`), built static by the crate's build script with the C compiler and
//! libc the Rust toolchain links with, so it runs in any Linux image whatever libc it has, or
//! none; a static Rust binary would need the musl target or `crt-static` flags, i.e. another
//! target or RUSTFLAGS in every build and CI command. An x86-64 binary runs natively in any
//! Linux container on an x86-64 host, also in an emulated foreign-platform one (binfmt only
//! catches foreign binaries), and execs the image's own programs through binfmt as usual.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the init is mounted (read-only) in a prepared container.
pub(crate) const CONTAINER_PATH: &str = "/.kiln/init";

/// What `exec` runs for a step whose command is `argv`: the init running it.
pub(crate) fn command(argv: Vec<String>) -> Vec<String> {
    [CONTAINER_PATH.to_string(), "--".to_string()].into_iter().chain(argv).collect()
}

/// The file name of the init beside the runs' workspaces (a dot file, so no workspace sweep
/// takes it for a run's directory).
const FILE_NAME: &str = ".kiln-init";

/// The program, built from `init/init.c` by the crate's build script.
const INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln-init"));

/// Whether the init can run on the engine: the engine shares this machine (the workspace is
/// bind-mounted from it), so its processor is this process's.
pub(crate) fn runs_here() -> bool {
    std::env::consts::ARCH == "x86_64"
}

/// Writes the init into `dir` (the runs' workspace root) and returns its path for a bind
/// mount. Written to a temporary name and renamed, so a concurrent run never mounts a
/// half-written file, and containers already using an earlier copy keep theirs.
pub(crate) async fn install(dir: &Path) -> io::Result<PathBuf> {
    let dir = std::path::absolute(dir)?;
    tokio::task::spawn_blocking(move || {
        let path = dir.join(FILE_NAME);
        if std::fs::read(&path).is_ok_and(|bytes| bytes == INIT) {
            return Ok(path);
        }
        let temporary = dir.join(format!("{FILE_NAME}.{}", std::process::id()));
        std::fs::write(&temporary, INIT)?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o555))?;
        std::fs::rename(&temporary, &path)?;
        Ok(path)
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_an_executable_and_runs_commands_through_itself() {
        assert_eq!(&INIT[..4], b"\x7fELF");
        assert_eq!(
            command(vec!["sh".into(), "-c".into(), "true".into()]),
            ["/.kiln/init", "--", "sh", "-c", "true"]
        );
    }

    #[tokio::test]
    async fn install_is_idempotent_and_executable() {
        let dir = std::env::temp_dir().join(format!("kiln-init-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let first = install(&dir).await.expect("install");
        let second = install(&dir).await.expect("again");
        assert_eq!(first, second);
        assert_eq!(std::fs::read(&first).expect("read"), INIT);
        let mode = std::fs::metadata(&first).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o555);
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}
