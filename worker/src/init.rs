//! kiln's idle init: the entry process of a fast-path step container (see
//! `kiln_plan::step_path`), and putting it where the engine can bind-mount it.
//!
//! A prepared container must start and then do nothing until the step's command arrives
//! through `exec`, whatever its image holds (no shell, no `sleep`), and as PID 1 it must reap
//! the orphans the command leaves, or they pile up as zombies. The program is the bytes of a
//! hand-written 226-byte static x86-64 ELF, like Kubernetes' `pause`, rather than a workspace
//! crate built static: a static Rust binary needs the musl target or `crt-static` flags for
//! one crate, i.e. another target or RUSTFLAGS in every build and CI command, for a program of
//! a handful of system calls. An x86-64 ELF runs natively in any Linux container on an x86-64 host,
//! also in an emulated foreign-platform one (binfmt only catches foreign binaries).
//!
//! What it does (`as --64` source, assembled and checked with `objdump`):
//!
//! ```text
//! _start: rt_sigprocmask(SIG_BLOCK, {SIGCHLD, SIGTERM}, NULL, 8)  # queue them, not drop them
//! wait:   sig = rt_sigtimedwait({SIGCHLD, SIGTERM}, NULL, NULL, 8) # sleep until one comes
//!         if sig == SIGTERM { kill(-1, SIGKILL) }          # end every process but itself
//! reap:   while wait4(-1, NULL, WNOHANG, NULL) > 0 {}      # reap every exited child
//!         goto wait
//! ```
//!
//! SIGTERM is how a step ends ([`crate::exec`]): once the step's command has exited, what it
//! left running in the background (a daemon holding a port, a writer into `/workspace`) is
//! killed at once, as it is when a classic container's command (its PID 1) exits, and the
//! container's next user of the same network namespace ([`crate::lane`]) finds the ports free.
//! The engine stops a container with SIGKILL, which ends the whole PID namespace.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the init is mounted (read-only) in a prepared container.
pub(crate) const CONTAINER_PATH: &str = "/.kiln/init";

/// The file name of the init beside the runs' workspaces (a dot file, so no workspace sweep
/// takes it for a run's directory).
const FILE_NAME: &str = ".kiln-init";

#[rustfmt::skip]
const INIT: [u8; 226] = [
    // ELF header: 64-bit, little endian, ET_EXEC, x86-64, entry 0x400078, one program header.
    0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x3e, 0x00, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x38, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // Program header: PT_LOAD, R+X, the whole file at 0x400000.
    0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xe2, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe2, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // _start: mov eax,14; xor edi,edi; lea rsi,[set]; xor edx,edx; mov r10d,8; syscall
    0xb8, 0x0e, 0x00, 0x00, 0x00, 0x31, 0xff, 0x48, 0x8d, 0x35, 0x54, 0x00, 0x00, 0x00, 0x31, 0xd2,
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, 0x0f, 0x05,
    // wait: mov eax,128; lea rdi,[set]; xor esi,esi; xor edx,edx; mov r10d,8; syscall
    0xb8, 0x80, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x3d, 0x3e, 0x00, 0x00, 0x00, 0x31, 0xf6, 0x31, 0xd2,
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, 0x0f, 0x05,
    //       cmp eax,15; jne reap; mov eax,62; mov edi,-1; mov esi,9; syscall
    0x83, 0xf8, 0x0f, 0x75, 0x11, 0xb8, 0x3e, 0x00, 0x00, 0x00, 0xbf, 0xff, 0xff, 0xff, 0xff, 0xbe,
    0x09, 0x00, 0x00, 0x00, 0x0f, 0x05,
    // reap: mov eax,61; mov edi,-1; xor esi,esi; mov edx,1; xor r10d,r10d; syscall;
    //       test eax,eax; jg reap; jmp wait
    0xb8, 0x3d, 0x00, 0x00, 0x00, 0xbf, 0xff, 0xff, 0xff, 0xff, 0x31, 0xf6, 0xba, 0x01, 0x00, 0x00,
    0x00, 0x45, 0x31, 0xd2, 0x0f, 0x05, 0x85, 0xc0, 0x7f, 0xe6, 0xeb, 0xb6,
    // set: SIGCHLD (17) and SIGTERM (15) as a 64-bit signal mask
    0x00, 0x40, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
];

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
    fn the_program_header_loads_the_whole_file_and_the_entry_follows_it() {
        assert_eq!(&INIT[..4], b"\x7fELF");
        let u64_at = |i: usize| u64::from_le_bytes(INIT[i..i + 8].try_into().expect("8 bytes"));
        assert_eq!(u64_at(24), 0x40_0000 + 0x78, "entry");
        assert_eq!(u64_at(64 + 32), INIT.len() as u64, "file size");
        assert_eq!(u64_at(64 + 40), INIT.len() as u64, "memory size");
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
